-- Ghost text for Neovim without vim.lsp.inline_completion (0.10, 0.11):
-- debounce keystrokes, ask the server for textDocument/inlineCompletion,
-- draw the answer as inline extmarks, cancel on the next keystroke.
local config = require("phils.config")

local api = vim.api
local M = {}
M.ns = api.nvim_create_namespace("phils_ghost")

local is_011 = vim.fn.has("nvim-0.11") == 1
local TRIGGER_AUTOMATIC, TRIGGER_INVOKED = 2, 1

---@type table<integer, table> per buffer: timer, pending request, items, index, shown
local buffers = {}

local function state(buf)
  local s = buffers[buf]
  if not s then
    s = { timer = vim.uv.new_timer(), items = {}, index = 1 }
    buffers[buf] = s
  end
  return s
end

local function phils_client(buf)
  return vim.lsp.get_clients({ bufnr = buf, name = "phils" })[1]
end

local function request(client, method, params, handler, buf)
  if is_011 then
    return client:request(method, params, handler, buf)
  end
  return client.request(method, params, handler, buf)
end

local function cancel(client, id)
  if is_011 then
    client:cancel_request(id)
  else
    client.cancel_request(id)
  end
end

--- Byte offset in `line` of a position counted in the client's encoding.
local function byte_col(line, index, encoding)
  if encoding == "utf-8" then
    return math.min(index, #line)
  end
  local units, b = 0, 1
  while b <= #line and units < index do
    local c = line:byte(b)
    local len = c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC0 and 2 or 1
    units = units + ((encoding == "utf-16" and len == 4) and 2 or 1)
    b = b + len
  end
  return b - 1
end

--- The text to show after the cursor for one item, or nil when the item
--- replaces text the ghost cannot show (anything but the cursor line's prefix).
local function ghost_text(item, buf, row, col, encoding)
  local text = item.insertText
  if type(text) == "table" then
    text = text.value -- a snippet: shown and inserted as its plain text
  end
  if type(text) ~= "string" or text == "" then
    return nil
  end
  text = text:gsub("\r\n?", "\n") -- a CRLF document's suggestion: Neovim's lines have no "\r" (as vim.lsp.util does)
  local range = item.range
  if not range then
    return text
  end
  if range.start.line ~= row or range["end"].line ~= row then
    return nil
  end
  local line = api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ""
  local start = byte_col(line, range.start.character, encoding)
  local finish = byte_col(line, range["end"].character, encoding)
  if start > col or finish ~= col then
    return nil
  end
  local typed = line:sub(start + 1, col)
  if text:sub(1, #typed) ~= typed then
    return nil
  end
  local rest = text:sub(#typed + 1)
  return rest ~= "" and rest or nil
end

function M.visible(buf)
  local s = buffers[buf or api.nvim_get_current_buf()]
  return s ~= nil and s.shown ~= nil
end

--- The suggestion on screen, for tests and statuslines.
function M.current_text(buf)
  local s = buffers[buf or api.nvim_get_current_buf()]
  return s and s.shown and s.shown.text or nil
end

local function hide(buf)
  local s = buffers[buf]
  if s and s.shown then
    pcall(api.nvim_buf_del_extmark, buf, M.ns, s.shown.extmark)
    s.shown = nil
  end
end

local function cancel_pending(buf)
  local s = buffers[buf]
  if s and s.pending then
    pcall(cancel, s.pending.client, s.pending.id)
    s.pending = nil
  end
end

--- Dismiss: hide the suggestion and cancel any request in flight.
function M.clear(buf)
  buf = buf or api.nvim_get_current_buf()
  local s = buffers[buf]
  if s then
    s.timer:stop()
  end
  cancel_pending(buf)
  hide(buf)
  if s then
    s.items = {}
  end
end

local function show(buf, text)
  local s = state(buf)
  hide(buf)
  local row, col = unpack(api.nvim_win_get_cursor(0))
  row = row - 1
  local lines = vim.split(text:gsub("\t", string.rep(" ", vim.bo[buf].tabstop)), "\n", { plain = true })
  local opts = { virt_text = { { lines[1], "PhilsGhostText" } }, virt_text_pos = "inline", hl_mode = "combine" }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], "PhilsGhostText" } })
    end
  end
  local extmark = api.nvim_buf_set_extmark(buf, M.ns, row, col, opts)
  s.shown = { text = text, row = row, col = col, extmark = extmark }
end

local function present(buf, index)
  local s = state(buf)
  if #s.items == 0 then
    return
  end
  s.index = (index - 1) % #s.items + 1
  show(buf, s.items[s.index])
end

--- Ask the server now, for the cursor in the current window; show its item number `first` (1).
function M.request_now(buf, trigger_kind, first)
  buf = buf or api.nvim_get_current_buf()
  if buf ~= api.nvim_get_current_buf() or not api.nvim_get_mode().mode:match("^i") or not config.options.enabled then
    return
  end
  local client = phils_client(buf)
  if not client then
    return
  end
  M.clear(buf)
  local s = state(buf)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = trigger_kind or TRIGGER_AUTOMATIC }
  local tick = api.nvim_buf_get_changedtick(buf)
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local encoding = client.offset_encoding
  local ok, id
  ok, id = request(client, "textDocument/inlineCompletion", params, function(err, result)
    if s.pending and s.pending.id == id then
      s.pending = nil
    end
    if err or not result or not api.nvim_buf_is_valid(buf) then
      return
    end
    -- Stale when the user typed or moved while the server worked.
    local now_row, now_col = unpack(api.nvim_win_get_cursor(0))
    if api.nvim_get_current_buf() ~= buf or api.nvim_buf_get_changedtick(buf) ~= tick
      or now_row ~= row or now_col ~= col or not api.nvim_get_mode().mode:match("^i") then
      return
    end
    local items = {}
    for _, item in ipairs(result.items or result) do
      local text = ghost_text(item, buf, row - 1, col, encoding)
      if text then
        table.insert(items, text)
      end
    end
    s.items = items
    present(buf, first or 1)
  end, buf)
  if ok then
    s.pending = { client = client, id = id }
  end
end

--- Debounced request after a keystroke; the old suggestion and request go at once.
function M.on_edit(buf)
  if buffers[buf] and buffers[buf].skip_tick == api.nvim_buf_get_changedtick(buf) then
    return -- our own partial accept: keep showing the rest
  end
  M.clear(buf)
  local s = state(buf)
  s.timer:start(config.options.debounce_ms, 0, vim.schedule_wrap(function()
    M.request_now(buf)
  end))
end

function M.on_cursor_moved(buf)
  local s = buffers[buf]
  if s and s.shown then
    local row, col = unpack(api.nvim_win_get_cursor(0))
    if row - 1 ~= s.shown.row or col ~= s.shown.col then
      M.clear(buf)
    end
  end
end

--- How much of `text` one accept takes: all of it, its first word, or its first line.
local function accepted_part(text, kind)
  if kind == "word" then
    return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text:match("^%s+") or text
  elseif kind == "line" then
    return text:match("^\n?[^\n]*") or text
  end
  return text
end

--- Insert (part of) the suggestion at the cursor. Returns false when none shows.
function M.accept(kind)
  local buf = api.nvim_get_current_buf()
  local s = buffers[buf]
  if not (s and s.shown) then
    return false
  end
  local text = s.shown.text
  local part = accepted_part(text, kind)
  local rest = text:sub(#part + 1)
  local row, col = s.shown.row, s.shown.col
  M.clear(buf)
  local lines = vim.split(part, "\n", { plain = true })
  api.nvim_buf_set_text(buf, row, col, row, col, lines)
  local end_row = row + #lines - 1
  local end_col = (#lines == 1 and col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { end_row + 1, end_col })
  if rest ~= "" then
    s.skip_tick = api.nvim_buf_get_changedtick(buf)
    s.items = { rest }
    present(buf, 1)
  end
  return true
end

--- The next (`step` 1) or previous (-1) suggestion. With one or none at hand, ask explicitly: the
--- server then sends its other suggestions too (completion.alternatives), and the next one shows.
function M.cycle(step)
  local buf = api.nvim_get_current_buf()
  local s = buffers[buf]
  if s and #s.items > 1 then
    present(buf, s.index + step)
  else
    M.request_now(buf, TRIGGER_INVOKED, M.visible(buf) and 1 + step or 1)
  end
end

function M.detach(buf)
  M.clear(buf)
  local s = buffers[buf]
  if s then
    s.timer:close()
    buffers[buf] = nil
  end
end

function M.detach_autocmds(buf)
  pcall(api.nvim_del_augroup_by_name, "phils_ghost_" .. buf)
end

function M.attach(buf)
  local group = api.nvim_create_augroup("phils_ghost_" .. buf, { clear = true })
  api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group, buffer = buf, callback = function() M.on_edit(buf) end,
  })
  api.nvim_create_autocmd("CursorMovedI", {
    group = group, buffer = buf, callback = function() M.on_cursor_moved(buf) end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group, buffer = buf, callback = function() M.clear(buf) end,
  })
  api.nvim_create_autocmd("BufUnload", {
    group = group, buffer = buf, callback = function() M.detach(buf); pcall(api.nvim_del_augroup_by_id, group) end,
  })
end

return M
