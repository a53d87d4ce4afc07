-- Defaults for require("phils").setup{...}, and how they become the server's
-- command line and initializationOptions.
local M = {}

M.defaults = {
  cmd = { "phils", "serve" }, -- the server; extra args are appended
  profile = nil, -- a profile from phils' configs/ (cpu, gpu, gemma3, ...)
  model = nil, -- hub id or local directory (engine.model)
  device = nil, -- "auto" | "cpu" | "cuda" (engine.device)
  max_tokens = nil, -- engine.max_new_tokens
  settings = {}, -- any other phils settings, as `phils config` prints them
  filetypes = { "python" }, -- { "*" }: every file's
  enabled = true,
  debounce_ms = 75,
  builtin = "auto", -- use vim.lsp.inline_completion on Neovim 0.12+ ("auto"), or never (false)
  keys = {
    accept = "<Tab>", -- falls back to a plain <Tab> when no suggestion shows
    accept_word = "<M-Right>",
    accept_line = "<M-C-Right>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
  },
}

M.options = vim.deepcopy(M.defaults)

function M.set(opts)
  M.options = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts or {})
  return M.options
end

--- The command that starts the server.
function M.command()
  local cmd = vim.deepcopy(M.options.cmd)
  if M.options.profile then
    vim.list_extend(cmd, { "--profile", M.options.profile })
  end
  return cmd
end

--- The phils settings tree sent as initializationOptions and on change.
function M.server_settings()
  local o = M.options
  local shortcuts = { engine = {}, completion = { enabled = o.enabled } }
  shortcuts.engine.model = o.model
  shortcuts.engine.device = o.device
  shortcuts.engine.max_new_tokens = o.max_tokens
  return vim.tbl_deep_extend("force", vim.deepcopy(o.settings or {}), shortcuts)
end

return M
