-- :checkhealth phils
local M = {}

function M.check()
  local health = vim.health
  local config = require("phils.config")
  health.start("phils")
  if vim.fn.has("nvim-0.10") == 1 then
    health.ok("Neovim " .. tostring(vim.version()))
  else
    health.error("Neovim 0.10 or newer is needed")
  end
  local cmd = config.command()
  if vim.fn.executable(cmd[1]) == 1 then
    health.ok("server command: " .. table.concat(cmd, " "))
  else
    health.error(cmd[1] .. " is not executable", { "install phils (scripts/setup.sh) or set cmd in setup()" })
  end
  if config.options.builtin ~= false and vim.lsp.inline_completion ~= nil then
    health.ok("ghost text: Neovim's vim.lsp.inline_completion")
  else
    health.ok("ghost text: drawn by phils (inline extmarks)")
  end
  local clients = vim.lsp.get_clients({ name = "phils" })
  if #clients == 0 then
    local filetypes = config.options.filetypes
    local which = vim.tbl_contains(filetypes, "*") and "" or (table.concat(filetypes, "/") .. " ")
    health.warn("no phils server running (open a " .. which .. "file)")
  else
    local status = require("phils").status
    local report = status.state == "error" and health.error or health.ok
    report("server " .. status.state .. (status.message ~= "" and (": " .. status.message) or ""))
  end
end

return M
