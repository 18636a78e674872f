-- qemu.inspect: reads a script's self-description without QEMU. Runs the script's top level with a
-- stand-in `qemu` module whose script{} stops the run and hands back the declaration; everything
-- else is inert. Used by `qlua list` and `qlua help`.
-- Usage: luajit lua/qemu/inspect.lua SCRIPT  -> prints "name\tdescription" then the usage text.

local args = require "qemu.args"

local M = {}

local STOP = {}

local function inert()
  local proxy
  proxy = setmetatable({}, {
    __index = function() return proxy end,
    __call = function() return proxy end,
  })
  return proxy
end

--- Returns the declaration table of the script at path (or nil and why). A script may refuse one
-- mode before it declares itself (hwprofile wants system mode): user mode is tried, then system.
function M.declaration(path)
  local decl, err = M.declaration_in(path, false)
  if decl then return decl end
  local decl2 = M.declaration_in(path, true)
  if decl2 then return decl2 end
  return nil, err
end

function M.declaration_in(path, system)
  local stand_in = setmetatable({
    info = { target = "x86_64", mode = system and "system" or "user", system = system,
             smp_vcpus = system and 1 or nil, api = { min = 0, cur = 1, declared = 1 } },
    args = {},
    has = function() return true end,
    need = function() end,
  }, { __index = function() return inert() end })
  stand_in.script = function(desc) error({ [STOP] = desc }, 0) end
  local saved = package.loaded.qemu
  package.loaded.qemu = stand_in
  local chunk, err = loadfile(path)
  if not chunk then
    package.loaded.qemu = saved
    return nil, err
  end
  local env_qemu = _G.qemu
  _G.qemu = stand_in
  local ok, res = pcall(chunk)
  _G.qemu = env_qemu
  package.loaded.qemu = saved
  if not ok and type(res) == "table" and res[STOP] then
    return res[STOP]
  end
  if ok then
    return nil, "does not declare itself with qemu.script{}"
  end
  return nil, tostring(res)
end

--- The first comment line of a file, as a fallback description.
function M.first_comment(path)
  local f = io.open(path)
  if not f then return nil end
  local line = f:read("*l") or ""
  f:close()
  return line:match("^%-%-%s*(.-)%s*$")
end

function M.main(path)
  local decl, err = M.declaration(path)
  local name = path:match("([^/]+)%.lua$") or path
  if not decl then
    print(name .. "\t" .. (M.first_comment(path) or ("(" .. err .. ")")))
    return
  end
  print((decl.name or name) .. "\t" .. (decl.description or ""))
  print(args.usage(decl.args or {}, decl.name or name, decl.description))
end

if arg and arg[0] and arg[0]:match("inspect%.lua$") then
  M.main(arg[1])
end

return M
