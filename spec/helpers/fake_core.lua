-- A stand-in for the C module `qlua.core`, which only exists inside QEMU.
--
-- fake_core.new(opts) returns a fresh core table whose functions are luassert spies, so specs can
-- check how the `qemu` module calls into the core. fake_core.load(core) installs such a table as
-- package.preload["qlua.core"] and requires a fresh `qemu` module on top of it.
--
-- Loading this file also puts the repository's lua/ folder on package.path (busted runs from the
-- repository root).

local spy = require "luassert.spy"

if not package.path:find("lua/?.lua;", 1, true) then
  package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
end

local M = {}

-- Features known to the fake host, as the C core reports them (present?) and what brings them.
M.FEATURES = {
  inline = true, scoreboard = false, symbol = true, hwaddr = false, syscalls = true,
  binary = true, idle = false, cond_cb = false, registers = false, read_memory = false,
  mem_value = false, time_control = false,
}
M.SINCE = {
  inline = "QEMU 4.2 to 8.2",
  scoreboard = "QEMU 9.0",
  symbol = "QEMU 6.1",
  hwaddr = "QEMU 6.0 in system mode",
  syscalls = "user mode (qemu-ARCH)",
  binary = "QEMU 7.0 in user mode",
  idle = "system mode (qemu-system-ARCH)",
  cond_cb = "QEMU 9.1",
  registers = "QEMU 9.0",
  read_memory = "QEMU 9.2",
  mem_value = "QEMU 9.2",
  time_control = "QEMU 9.1 in system mode",
}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- A fresh fake core.
-- opts.system (boolean), opts.script (string, or false for none), opts.args (a list of
-- "KEY=VALUE" strings, as given on the QEMU command line), opts.features (overrides of FEATURES),
-- opts.smp_vcpus / opts.max_vcpus (system mode), opts.ffi (LuaJIT: the FFI fast paths).
function M.new(opts)
  opts = opts or {}
  local features = copy(M.FEATURES)
  for name, present in pairs(opts.features or {}) do features[name] = present end
  local script = opts.script
  if script == nil then script = "/x/scripts/demo.lua" end
  if script == false then script = nil end

  local core = {}
  core.output = {} -- every string handed to core.write, in order

  core.on = spy.new(function() end)
  core.counter_new = spy.new(function() return { kind = "fake counter" } end)
  core.uninstall = spy.new(function() end)
  core.info = spy.new(function()
    local info = {
      target = "x86_64", api_min = 0, api_cur = 1, api_declared = 1,
      system = opts.system or false,
      script = script, root = "/x", qlua_version = "0.1.0", lua = "LuaJIT 2.1",
      onerror = "fail", features = copy(features),
    }
    if opts.system then
      info.smp_vcpus = opts.smp_vcpus or 4
      info.max_vcpus = opts.max_vcpus or 8
    end
    return info
  end)
  core.has = spy.new(function(name)
    if M.SINCE[name] == nil then return nil, nil end
    return features[name], M.SINCE[name]
  end)
  core.binary = spy.new(function() return nil end)
  core.counter_mode = spy.new(function() return "inline" end)
  core.vcpus = spy.new(function() return 1 end)
  core.off = spy.new(function(event) return event == "exit" end)
  core.retranslate = spy.new(function() end)
  core.time_control = spy.new(function() return true end)
  core.set_time = spy.new(function() end)
  core.registers = spy.new(function() return { "rax", "rip" } end)
  core.reg = spy.new(function() return 0 end)
  core.read_memory = spy.new(function(_, len) return string.rep("\0", len) end)
  core.write = spy.new(function(text) core.output[#core.output + 1] = text end)
  core.flush = spy.new(function() end)
  if opts.ffi then -- the LuaJIT fast paths: queued callbacks and qemu.tally's add
    local ffi = require "ffi"
    core.queued_cdef = "typedef struct { int32_t fn; int32_t data; uint32_t vcpu; "
      .. "uint32_t has_count; } qlua_queued;"
    core.queued_size = 16
    core.queued_count_type = "double"
    core.queue_drainer = spy.new(function(drain, noop) core.drain, core.noop = drain, noop end)
    core.tally_adds = {} -- { key, n } per call of the native add
    core.tally_rc = 0    -- what the native add returns (1: bad key, 2: bad amount)
    core.tally_add_ptr = ffi.cast("int (*)(void *, double, double)", function(_, key, n)
      core.tally_adds[#core.tally_adds + 1] = { key, n }
      return core.tally_rc
    end)
    core.tally_new = spy.new(function()
      local raw = { size = spy.new(function() return 7 end), get = spy.new(function() return 3 end),
                    items = spy.new(function() return { [5] = 3 } end), reset = spy.new(function() end) }
      setmetatable(raw, { __tostring = function() return "tally (7 keys)" end })
      return raw, ffi.cast("void *", 0x1000)
    end)
  end
  core.args = spy.new(function()
    local map, order = {}, {}
    for i, kv in ipairs(opts.args or {}) do
      local key, value = kv:match("^([^=]*)=(.*)$")
      order[i] = key
      map[key] = value
    end
    return map, order
  end)
  return core
end

--- Forgets any loaded `qemu`, `qemu.args` and `qlua.core`.
function M.unload()
  package.loaded["qemu"] = nil
  package.loaded["qemu.args"] = nil
  package.loaded["qlua.core"] = nil
  package.preload["qlua.core"] = nil
end

--- Makes `core` the module `qlua.core` and returns a freshly loaded `qemu` module.
function M.load(core)
  M.unload()
  package.preload["qlua.core"] = function() return core end
  return require "qemu"
end

--- The error message raised by fn(...), or nil if it ran without error.
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  return err
end

return M
