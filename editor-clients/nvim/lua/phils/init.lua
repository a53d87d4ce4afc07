-- phils for Neovim 0.10+: starts `phils serve` through vim.lsp for the
-- configured filetypes and shows its inline completions as ghost text.
local config = require("phils.config")
local ghost = require("phils.ghost")

local api = vim.api
local M = {}

-- Client methods are called with ":" from 0.11 on, with "." before.
local function call(client, method, ...)
  if vim.fn.has("nvim-0.11") == 1 then
    return client[method](client, ...)
  end
  return client[method](...)
end

--- The server's last phils/status notification.
M.status = { state = "stopped", message = "" }

local function builtin_available()
  return config.options.builtin ~= false and vim.lsp.inline_completion ~= nil
end

local function on_status(_, params)
  M.status = { state = params.state or "unknown", message = params.message or "", percent = params.percent }
  if M.status.state == "error" then
    vim.notify("phils: " .. M.status.message, vim.log.levels.ERROR)
  end
  vim.cmd("redrawstatus")
end

local function root_dir(buf)
  return vim.fs.root(buf, { ".git", "pyproject.toml", "setup.py" }) or vim.fn.getcwd()
end

--- Start (or reuse) the server for a buffer.
function M.start(buf)
  buf = buf or api.nvim_get_current_buf()
  if M.status.state == "stopped" then
    M.status = { state = "starting", message = "" }
  end
  return vim.lsp.start({
    name = "phils",
    cmd = config.command(),
    root_dir = root_dir(buf),
    init_options = config.server_settings(),
    handlers = { ["phils/status"] = on_status },
  }, { bufnr = buf })
end

local function clients()
  return vim.lsp.get_clients({ name = "phils" })
end

local function push_settings()
  for _, client in ipairs(clients()) do
    call(client, "notify", "workspace/didChangeConfiguration", { settings = config.server_settings() })
  end
end

function M.toggle()
  config.options.enabled = not config.options.enabled
  if not config.options.enabled then
    ghost.clear()
  end
  push_settings()
  vim.notify("phils: completions " .. (config.options.enabled and "on" or "off"))
end

function M.restart()
  local bufs = {}
  for _, client in ipairs(clients()) do
    for buf in pairs(client.attached_buffers) do
      table.insert(bufs, buf)
    end
    call(client, "stop")
  end
  M.status = { state = "stopped", message = "" }
  vim.defer_fn(function()
    for _, buf in ipairs(bufs) do
      if api.nvim_buf_is_valid(buf) then
        M.start(buf)
      end
    end
  end, 500)
end

function M.status_line()
  if #clients() == 0 then
    return "phils: not running"
  end
  local state = M.status.state
  if state == "loading" and M.status.percent then
    state = ("loading %d%%"):format(M.status.percent)
  end
  return ("phils: %s%s"):format(state, M.status.message ~= "" and (" (" .. M.status.message .. ")") or "")
end

local function map_keys(buf)
  local keys = config.options.keys
  local function map(lhs, fn, desc)
    if lhs then
      vim.keymap.set("i", lhs, fn, { buffer = buf, expr = true, replace_keycodes = true, desc = desc })
    end
  end
  if builtin_available() then
    local ic = vim.lsp.inline_completion
    map(keys.accept, function()
      if not ic.get() then
        return keys.accept
      end
    end, "phils: accept suggestion")
    local select = ic.select or ic.jump
    map(keys.next, function() select({ count = 1 }) end, "phils: next suggestion")
    map(keys.prev, function() select({ count = -1 }) end, "phils: previous suggestion")
    return
  end
  local function when_visible(action, desc, lhs)
    map(lhs, function()
      if ghost.visible(buf) then
        return "<Cmd>lua require('phils.ghost')." .. action .. "<CR>"
      end
      return lhs
    end, desc)
  end
  when_visible("accept('all')", "phils: accept suggestion", keys.accept)
  when_visible("accept('word')", "phils: accept a word", keys.accept_word)
  when_visible("accept('line')", "phils: accept a line", keys.accept_line)
  when_visible("clear()", "phils: dismiss suggestion", keys.dismiss)
  map(keys.next, function() return "<Cmd>lua require('phils.ghost').cycle(1)<CR>" end, "phils: next suggestion")
  map(keys.prev, function() return "<Cmd>lua require('phils.ghost').cycle(-1)<CR>" end, "phils: previous suggestion")
end

-- Where the cursor rests (phils/didMoveCursor): the server computes the prompt there while the user
-- reads, before the first keystroke. Sent once the cursor has stood still CURSOR_REST_MS; edits are
-- left to didChange.
local CURSOR_REST_MS = 100

local function watch_cursor(buf, client)
  local timer = vim.uv.new_timer()
  local group = api.nvim_create_augroup("phils_cursor_" .. buf, { clear = true })
  local function send()
    if not config.options.enabled or api.nvim_get_current_buf() ~= buf then
      return
    end
    local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
    call(client, "notify", "phils/didMoveCursor", params)
  end
  api.nvim_create_autocmd({ "CursorMoved", "BufEnter" }, {
    group = group, buffer = buf,
    callback = function()
      timer:stop()
      timer:start(CURSOR_REST_MS, 0, vim.schedule_wrap(send))
    end,
  })
  api.nvim_create_autocmd("BufUnload", {
    group = group, buffer = buf,
    callback = function()
      timer:stop()
      if not timer:is_closing() then timer:close() end
      pcall(api.nvim_del_augroup_by_id, group)
    end,
  })
  timer:start(CURSOR_REST_MS, 0, vim.schedule_wrap(send))
end

local function on_attach(args)
  local client = vim.lsp.get_client_by_id(args.data.client_id)
  if not client or client.name ~= "phils" then
    return
  end
  if builtin_available() then
    vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
  else
    ghost.attach(args.buf)
  end
  watch_cursor(args.buf, client)
  map_keys(args.buf)
end

local function on_detach(args)
  local client = vim.lsp.get_client_by_id(args.data.client_id)
  if client and client.name == "phils" then
    ghost.detach(args.buf)
    ghost.detach_autocmds(args.buf)
    pcall(api.nvim_del_augroup_by_name, "phils_cursor_" .. args.buf)
  end
end

-- Grey in every terminal: Comment has only a GUI colour in Neovim's default scheme,
-- so in a 256-colour terminal without termguicolors a suggestion linked to it looked
-- exactly like typed code. cterm 244 / #808080 is copilot.vim's choice.
local function define_highlight()
  api.nvim_set_hl(0, "PhilsGhostText", { ctermfg = 244, fg = "#808080", italic = true, default = true })
end

--- Whether a buffer gets completions: its filetype is listed, or "*" is (then files only, not help,
--- terminal or quickfix buffers).
local function wanted(buf)
  local filetype, filetypes = vim.bo[buf].filetype, config.options.filetypes
  if vim.tbl_contains(filetypes, filetype) then
    return true
  end
  return vim.tbl_contains(filetypes, "*") and filetype ~= "" and vim.bo[buf].buftype == ""
end

function M.setup(opts)
  config.set(opts)
  define_highlight()
  local group = api.nvim_create_augroup("phils", { clear = true })
  api.nvim_create_autocmd("ColorScheme", { group = group, callback = define_highlight })
  api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = vim.tbl_contains(config.options.filetypes, "*") and "*" or config.options.filetypes,
    callback = function(args)
      if wanted(args.buf) then
        M.start(args.buf)
      end
    end,
  })
  api.nvim_create_autocmd("LspAttach", { group = group, callback = on_attach })
  api.nvim_create_autocmd("LspDetach", { group = group, callback = on_detach })
  api.nvim_create_user_command("PhilsStatus", function() print(M.status_line()) end, { desc = "phils server status" })
  api.nvim_create_user_command("PhilsToggle", M.toggle, { desc = "Turn phils completions on or off" })
  api.nvim_create_user_command("PhilsRestart", M.restart, { desc = "Restart the phils server" })
  api.nvim_create_user_command("PhilsLog", function() vim.cmd.split(vim.lsp.get_log_path()) end,
    { desc = "Open the LSP log (the server's stderr lands there)" })
  -- Buffers opened before setup ran.
  for _, buf in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(buf) and wanted(buf) then
      M.start(buf)
    end
  end
end

return M
