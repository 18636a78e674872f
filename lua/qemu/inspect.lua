-- qemu.inspect: reads a script's self-description without QEMU, for `qlua list` and `qlua help`.
-- The script's top level runs in a sandbox: a stand-in `qemu` module whose only working part is
-- qemu.script{} (it records the declaration and stops the chunk), no io, os, debug, package,
-- code loading or require beyond the stand-ins. A script may be anyone's file, and reading what
-- it declares must not write files, exit, or run the code it means to run inside QEMU. Time and
-- memory are bounded by the launcher, which runs this file in a process of its own.
-- Usage: luajit lua/qemu/inspect.lua SCRIPT
--   exit 0: prints "name\tdescription", then the usage text
--   exit 3: the script cannot be inspected; one line on stderr says why

local args = require "qemu.args"

-- Taken now: once the script has run, this file uses only what it had before.
local type, next, pcall, error, tostring = type, next, pcall, error, tostring
local setmetatable = setmetatable
local open, write, stderr, exit = io.open, io.write, io.stderr, os.exit
local gsub, sub, format = string.gsub, string.sub, string.format

-- Every string shares one metatable, whose __index is the real string library; a script that
-- got hold of it could change string methods under args.usage. Hidden, getmetatable("") gives
-- "string".
getmetatable("").__metatable = "string"

local M = {}

-- What the stand-in qemu.script raises to stop the chunk. The declaration is kept aside before,
-- so no error object is ever examined (one the script made has the script's metamethods).
local STOP = setmetatable({}, { __metatable = false })

--- A value that answers everything with itself: the modules a script requires before it declares
-- itself (qemu.report, ...) and the parts of qemu other than script{}.
local function inert()
  local proxy = {}
  local function self() return proxy end
  setmetatable(proxy, {
    __index = self, __call = self, __newindex = function() end,
    __add = self, __sub = self, __mul = self, __div = self, __mod = self, __pow = self,
    __unm = self, __concat = self, __len = function() return 0 end,
    __tostring = function() return "(qlua inspect stand-in)" end,
    __metatable = false,
  })
  return proxy
end

-- A library the sandbox refuses: using any of it fails with a message that names the call.
local function refused(lib)
  return setmetatable({}, {
    __index = function(_, key)
      error(format("%s.%s is not available while qlua reads the declaration (call qemu.script{} "
                   .. "before using it)", lib, tostring(key)), 2)
    end,
    __newindex = function() end,
    __metatable = false,
  })
end

local function refused_function(name)
  return function()
    error(name .. " is not available while qlua reads the declaration", 2)
  end
end

local function copy(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

-- The globals a script may use before it declares itself: pure functions and copies of the pure
-- libraries (copies, so the script cannot change the ones this file and qemu.args use).
local SAFE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "rawequal",
               "rawget", "rawset", "rawlen", "select", "setmetatable", "getmetatable", "tonumber",
               "tostring", "type", "unpack", "_VERSION" }
local LIBRARIES = { "string", "table", "math", "coroutine", "utf8", "bit" }

--- Reads the script's source as luaL_loadfile would: a UTF-8 byte order mark and a first line
-- starting with '#' (a shebang) are skipped, the line count kept.
local function source(path)
  local f, err = open(path, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  if not text then return nil, path .. ": cannot be read" end
  if sub(text, 1, 3) == "\239\187\191" then text = sub(text, 4) end
  if sub(text, 1, 1) == "#" then text = gsub(text, "^[^\n]*", "", 1) end
  return text
end

-- The qemu.* library modules (qemu.report, qemu.cachemodel, ...) are the project's own pure Lua;
-- a declaration may use their values (cache.lua's evict= lists cachemodel.POLICIES). They are
-- loaded from the project's lua/ folder into the script's sandbox, once per sandbox, never shared.
-- They may load text chunks (cflow_report.lua probes for Lua 5.4's // that way): their globals
-- are the sandbox's plus a load whose chunks get the same globals, out of the script's reach.
local searchpath, lib_path = package.searchpath, package.path

local function sandbox(stand_in)
  local env, modules = {}, {}
  for _, name in next, SAFE do env[name] = _G[name] end
  for _, name in next, LIBRARIES do
    if type(_G[name]) == "table" then env[name] = copy(_G[name]) end
  end
  env._G = env
  env.qemu = stand_in
  env.print = function() end -- the script's output would mix with the declaration on stdout
  for _, lib in next, { "io", "os", "debug", "package" } do env[lib] = refused(lib) end
  for _, name in next, { "load", "loadstring", "loadfile", "dofile", "getfenv", "setfenv", "module",
                         "collectgarbage", "newproxy" } do
    env[name] = refused_function(name)
  end
  local lib_env = copy(env)
  lib_env.load = function(text, name)
    if type(text) ~= "string" then return nil, "load: only text chunks while inspecting" end
    return load(text, name, "t", lib_env)
  end
  env.require = function(name)
    if name == "qemu" then return stand_in end
    if name == "bit" and env.bit then return env.bit end
    if modules[name] then return modules[name] end
    local file = type(name) == "string" and name:match("^qemu%.[%w_]+$")
      and searchpath(name, lib_path)
    if not file then
      error(format("require %q is not available while qlua reads the declaration (only qemu and "
                   .. "its library modules are)", tostring(name)), 2)
    end
    local text, err = source(file)
    local chunk
    if text then chunk, err = load(text, "@" .. file, "t", lib_env) end
    if not chunk then error(format("require %q: %s", name, tostring(err)), 2) end
    modules[name] = chunk(name) or true
    return modules[name]
  end
  lib_env.require = env.require
  return env
end

--- A plain copy of what the script declared: strings, numbers, booleans and tables of them, read
-- raw (no metamethods run), so that formatting it cannot call back into the script.
local function plain(v, depth)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t ~= "table" or depth > 6 then return nil end
  local c = {}
  for k, x in next, v do
    local pk = plain(k, depth + 1)
    if pk ~= nil then c[pk] = plain(x, depth + 1) end
  end
  return c
end

local function one_line(msg)
  if type(msg) ~= "string" then
    return "(error object is a " .. type(msg) .. " value)"
  end
  msg = gsub(gsub(msg, "%s*\n%s*", " "), "^%s+", "")
  if #msg > 300 then msg = sub(msg, 1, 300) .. "..." end
  return msg
end

--- The declaration of the script whose source is `text`, run as in user mode or system mode;
-- or nil and why not. on_declared(declaration), when given, is called as the script declares
-- itself, before the chunk is stopped.
function M.declaration_in(text, path, system, on_declared)
  local declared
  local stand_in = setmetatable({
    info = { target = "x86_64", mode = system and "system" or "user", system = system,
             smp_vcpus = system and 1 or nil, api = { min = 0, cur = 1, declared = 1 } },
    args = {},
    has = function() return true end,
    need = function() end,
    script = function(desc)
      if type(desc) ~= "table" then error("qemu.script expects a table", 2) end
      if declared == nil then
        declared = plain(desc, 0)
        if on_declared then on_declared(declared) end
      end
      error(STOP, 0)
    end,
  }, { __index = function() return inert() end, __metatable = false })
  local env = sandbox(stand_in)
  -- text only: a binary chunk is not checked by the VM (LuaJIT's least of all)
  local chunk, err = load(text, "@" .. path, "t", env)
  if not chunk then return nil, "syntax error: " .. one_line(err) end
  local ok, res = pcall(chunk)
  -- a script that catches the stop and goes on has declared itself all the same
  if declared then return declared end
  if ok then return nil, "never calls qemu.script{}" end
  return nil, "error before qemu.script{}: " .. one_line(res)
end

--- Returns the declaration of the script at path (or nil and why). A script may refuse one mode
-- before it declares itself (hwprofile wants system mode): user mode is tried, then system.
function M.declaration(path, on_declared)
  local text, err = source(path)
  if not text then return nil, one_line(err) end
  local decl, why = M.declaration_in(text, path, false, on_declared)
  if decl then return decl end
  if sub(why, 1, 13) == "syntax error:" then return nil, why end
  local decl2 = M.declaration_in(text, path, true, on_declared)
  if decl2 then return decl2 end
  return nil, why
end

--- What `qlua help` shows of a declaration: "name\tdescription", then the usage; or nil and why.
function M.usage_text(decl, path)
  local name = decl.name or path:match("([^/]+)%.lua$") or path
  local ok, text = pcall(function()
    return tostring(name) .. "\t" .. tostring(decl.description or "") .. "\n"
      .. args.usage(decl.args or {}, name, decl.description)
  end)
  if not ok then return nil, "bad declaration: " .. one_line(text) end
  return text
end

local function finish(text, why)
  if not text then
    stderr:write(why, "\n")
    exit(3)
  end
  write(text, "\n")
  exit(0)
end

-- The answer goes out, and the process ends, as the script declares itself: a script that
-- catches the stop cannot go on.
function M.main(path)
  local _, why = M.declaration(path, function(decl) finish(M.usage_text(decl, path)) end)
  finish(nil, why)
end

if arg and arg[0] and arg[0]:match("inspect%.lua$") then
  M.main(arg[1])
end

return M
