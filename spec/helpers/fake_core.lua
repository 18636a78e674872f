-- A stand-in for the C module `qlua.core`, which only exists inside QEMU.
--
-- fake_core.new(opts) returns a fresh core table whose functions are luassert spies, so specs can
-- check how the `qemu` module calls into the core. fake_core.load(core) installs such a table as
-- package.preload["qlua.core"] and requires a fresh `qemu` module on top of it.
--
-- Under LuaJIT the `qemu` module always takes its FFI paths (qemu.native finds the ffi module), so
-- the fake then offers what those need (queued_cdef, tally_add_ptr, event_cdef, ...); under Lua 5.4
-- it offers the classic C API's counterparts (core.events_fill, core.tally_adder).
--
-- Loading this file also puts the repository's lua/ folder on package.path (busted runs from the
-- repository root).

local spy = require "luassert.spy"

if not package.path:find("lua/?.lua;", 1, true) then
  package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
end

local M = {}

local has_ffi, ffi = pcall(require, "ffi")
--- LuaJIT's ffi module, or nil (Lua 5.4): which paths the `qemu` module takes.
M.ffi = has_ffi and ffi or nil

-- Features known to the fake host, as the C core reports them (present?) and what brings them.
-- Names and texts are those of shim/host.c's features table.
M.FEATURES = {
  inline = true, scoreboard = false, symbol = true, hwaddr = false, syscalls = true,
  binary = true, idle = false, cond_cb = false, registers = false, read_memory = false,
  mem_value = false, time_control = false, write_memory = false, phys_memory = false,
  translate = false, write_registers = false, discon = false,
}
M.SINCE = {
  inline = "QEMU 4.2 to 8.2 (raw inline adds; qlua counters work everywhere)",
  scoreboard = "QEMU 9.0",
  symbol = "QEMU 6.1",
  hwaddr = "QEMU 6.0 in system mode",
  syscalls = "user mode (qemu-ARCH)",
  binary = "QEMU 7.0 in user mode",
  idle = "system mode (qemu-system-ARCH)",
  cond_cb = "QEMU 9.1 (qlua emulates tb:when/insn:when natively before)",
  registers = "QEMU 9.0",
  read_memory = "QEMU 9.2",
  mem_value = "QEMU 9.2",
  time_control = "QEMU 9.1 in system mode",
  write_memory = "QEMU 10.1",
  phys_memory = "QEMU 10.1 in system mode",
  translate = "QEMU 10.1 in system mode",
  write_registers = "QEMU 10.1",
  discon = "QEMU 10.2 in system mode",
}

--- The largest tracer batch (shim/buffer.c's MAX_BATCH, 1 << 20).
M.MAX_BATCH = 1048576

--- The tracer record, as shim/buffer.c's qlua_buffer_open declares it for the FFI: event numbers
-- are doubles under LuaJIT, uint64_t under Lua 5.4.
local EVENT_NUM = M.ffi and "double" or "uint64_t"
M.EVENT_CDEF = "typedef struct { " .. EVENT_NUM .. " addr; " .. EVENT_NUM .. " pc; " .. EVENT_NUM
  .. " tag; uint32_t vcpu; uint16_t size; uint8_t kind; uint8_t flags; } qlua_event;"
M.EVENT_SIZE = 32

-- Fake C objects: the C metatables answer getmetatable() with their name.
local function object(name, fields, methods)
  return setmetatable(fields or {}, { __metatable = name, __index = methods })
end
--- A value that passes for a translation block handle (getmetatable(v) == "qlua.tb"); given a
-- fake core, it looks its methods up in core.tb_methods, as the C handles do.
function M.tb(core) return object("qlua.tb", nil, core and core.tb_methods) end
--- A value that passes for an instruction handle (methods from core.insn_methods).
function M.insn(core) return object("qlua.insn", nil, core and core.insn_methods) end
--- A value that passes for a counter from qemu.counter().
function M.counter() return object("qlua.counter", { kind = "fake counter" }) end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The native tally add under LuaJIT: one FFI callback for the whole run (their slots are few),
-- recording into the core made last.
local current
local tally_add_ptr = M.ffi and M.ffi.cast("int (*)(void *, double, double)", function(p, key, n)
  current.tally_adds[#current.tally_adds + 1] = { key, n, ptr = p }
  return current.tally_rc
end)

--- A fresh fake core.
-- opts.system (boolean), opts.script (string, or false for none), opts.args (a list of
-- "KEY=VALUE" strings, as given on the QEMU command line), opts.features (overrides of FEATURES),
-- opts.smp_vcpus / opts.max_vcpus (system mode).
function M.new(opts)
  opts = opts or {}
  local features = copy(M.FEATURES)
  for name, present in pairs(opts.features or {}) do features[name] = present end
  local script = opts.script
  if script == nil then script = "/x/scripts/demo.lua" end
  if script == false then script = nil end

  local core = {}
  current = core
  core.output = {} -- every string handed to core.write, in order

  core.on = spy.new(function() end)
  core.counter_new = spy.new(function() return M.counter() end)
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
  -- core.need(what, feature): raises as shim/host.c's qlua_host_need does (luaL_error from a C
  -- function: no position), after luaL_checkstring of both arguments.
  core.need = spy.new(function(what, feature)
    for i, v in ipairs { type(what), type(feature) } do
      if v ~= "string" and v ~= "number" then
        error(string.format("bad argument #%d to 'need' (string expected, got %s)", i, v), 0)
      end
    end
    if not features[feature] then
      error(string.format("%s needs the '%s' feature, which this QEMU (plugin API %d) lacks: it "
        .. "comes with %s", what, feature, 1, M.SINCE[feature] or "(null)"), 0)
    end
  end)
  core.binary = spy.new(function() return nil end)
  core.counter_mode = spy.new(function() return "inline" end)
  core.vcpus = spy.new(function() return 1 end)
  core.off = spy.new(function(event) return event == "exit" end)
  core.want = spy.new(function() end)
  core.memory = spy.new(function() return {} end)
  core.retranslate = spy.new(function() end)
  core.time_control = spy.new(function() return true end)
  core.set_time = spy.new(function() end)
  core.registers = spy.new(function() return { "rax", "rip" } end)
  core.reg = spy.new(function() return 0 end)
  core.read_memory = spy.new(function(_, len) return string.rep("\0", len) end)
  core.write_memory = spy.new(function() return true end)
  core.translate = spy.new(function(vaddr) return vaddr end)
  core.write_reg = spy.new(function() end)
  core.write = spy.new(function(text) core.output[#core.output + 1] = text end)
  core.flush = spy.new(function() end)

  -- Translation handles look their methods up here; the `qemu` module fills them in.
  core.tb_methods, core.insn_methods = {}, {}
  core.tb_on_exec = spy.new(function() end)
  core.insn_on_exec = spy.new(function() end)
  core.insn_on_mem = spy.new(function() end)
  core.insn_count_mem = spy.new(function() end)
  core.tb_tally = spy.new(function() end)
  core.tb_on_repeat = spy.new(function() end)
  core.insn_tally = spy.new(function() end)
  core.insn_tally_mem = spy.new(function() end)
  core.tb_when = spy.new(function() end)
  core.insn_when = spy.new(function() end)
  core.count_every_rule = spy.new(function() end)
  core.tally_syscalls = spy.new(function() end)

  -- Tracers: ids from 0, as shim/buffer.c hands them out; core.tracers[id + 1] keeps what
  -- tracer_new got ({ wrapper, batch, fn }), so specs can call the wrapper as C would.
  core.tracers = {}
  core.tracer_max_batch = M.MAX_BATCH
  core.tracer_new = spy.new(function(wrapper, batch, fn)
    core.tracers[#core.tracers + 1] = { wrapper = wrapper, batch = batch, fn = fn }
    return #core.tracers - 1
  end)
  core.tb_trace = spy.new(function() end)
  core.insn_trace = spy.new(function() end)
  core.insn_trace_mem = spy.new(function() end)
  core.event_cdef = M.EVENT_CDEF
  core.event_size = M.EVENT_SIZE
  -- core.events_fill(pool, ptr, n) (Lua 5.4), as C does it: records 0 .. n - 1 of a fake buffer
  -- (a table whose [i] are { addr=, pc=, tag=, vcpu=, size=, kind=, flags= }) copied into
  -- pool[1 .. n], tables kept from call to call (a metatable on one removed), listed at 1 .. n in
  -- the view pool[0] (cleared past n), whose metatable refuses writes at keys it does not hold;
  -- returns the view. Reading a record that is not there is an error, where C would read past
  -- the buffer.
  local FIELDS = { "addr", "pc", "tag", "vcpu", "size", "kind", "flags" }
  core.events_fill = spy.new(function(pool, ptr, n)
    local view = pool[0]
    if not view then
      view = setmetatable({}, { __metatable = "qlua.events",
        __newindex = function(_, k)
          error("events[" .. tostring(k) .. "] = ...: a tracer's events are read-only (the batch's "
            .. "records are reused); copy what you keep into a table of your own", 2)
        end })
      pool[0] = view
    end
    for i = 1, n do
      local e = ptr[i - 1]
      if e == nil then error("fake core.events_fill: no record " .. tostring(i - 1), 0) end
      local t = pool[i] or {}
      pool[i] = t
      setmetatable(t, nil)
      for _, k in ipairs(FIELDS) do t[k] = e[k] end
      rawset(view, i, t)
    end
    while #view > n do
      for i = n + 1, #view do rawset(view, i, nil) end
    end
    return view
  end)

  -- Tallies: tally_new() -> raw object, its address; core.tally_adds gets { key, n } per native
  -- add (the FFI pointer under LuaJIT, core.tally_adder's method under Lua 5.4).
  core.tally_adds = {}
  core.tally_rc = 0 -- what the FFI add returns (1: bad key, 2: bad amount)
  core.tally_new = spy.new(function()
    local raw = { size = spy.new(function() return 7 end), get = spy.new(function() return 3 end),
                  items = spy.new(function() return { [5] = 3 } end), reset = spy.new(function() end),
                  vcpus = spy.new(function() return { [5] = 1 } end) }
    setmetatable(raw, { __tostring = function() return "tally (7 keys)" end })
    core.last_tally_raw = raw -- the wrapper keeps it out of the script's reach
    if M.ffi then return raw, M.ffi.cast("void *", 0x1000) end
    return raw, { address = 0x1000 } -- stands for the light userdata
  end)
  core.edges_new = spy.new(function() return object("qlua.edges", { kind = "fake edges" }) end)
  -- read_counters(list, vcpu, into): into[i] = 10 * i, or nil, i at the first non-counter
  core.read_counters = spy.new(function(list, _, into)
    for i = 1, #list do
      if getmetatable(list[i]) ~= "qlua.counter" then return nil, i end
      into[i] = 10 * i
    end
    return into
  end)
  -- Lua 5.4's t:add is C (core.tally_adder(raws) -> the method): this stands for it, with its
  -- checks and messages (tests/test_counts.py holds the real one to them in QEMU)
  core.tally_adder = spy.new(function(raws)
    local function ok(v, amount)
      if math.type(v) == "integer" then return not amount or v >= 0 end
      return type(v) == "number" and v >= 0 and v < 2^64 and v % 1 == 0
    end
    return function(self, key, n)
      local raw = raws[self]
      if raw == nil then
        error(("tally:add: expected a tally from qemu.tally() as self, got %s (call it with a "
          .. "colon: t:add(...))"):format(type(self)), 2)
      end
      if not ok(key) then
        error("tally:add: the key must be a whole number from 0 to 2^64-1, got " .. tostring(key), 2)
      end
      if n ~= nil and not ok(n, true) then
        error("tally:add: the amount must be a whole number from 0 to 2^64-1, got " .. tostring(n), 2)
      end
      core.tally_adds[#core.tally_adds + 1] = { key, n or 1, raw = raw }
    end
  end)
  if M.ffi then -- the LuaJIT fast paths: queued callbacks and qemu.tally's add
    core.queued_cdef = "typedef struct { int32_t fn; int32_t data; uint32_t vcpu; "
      .. "uint32_t kind; } qlua_queued;"
    core.queued_size = 16
    core.queued_count_type = "double"
    core.queued_kinds = { count = 1, mem = 2, phys = 4, value = 8, flags_shift = 8 }
    core.access_bits = { store = 8, signed = 16, big_endian = 32,
      stale = "access used outside its on_mem callback",
      fields = "access has no field '%s'",
      not_captured = "access.%s: queued, registered without { %s = true }; use { %s = true }",
      extra_cdef = "typedef struct { double phys; double value; uint64_t value128[2]; "
        .. "const char *device; uint8_t has_phys; uint8_t io; uint8_t value_type; uint8_t pad[5]; "
        .. "} qlua_access_extra;",
      extra_size = 48 }
    core.queue_drainer = spy.new(function(drain, noop, reset)
      core.drain, core.noop, core.reset = drain, noop, reset
    end)
    core.tally_add_ptr = tally_add_ptr
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

--- Asserts that spy s was called once, with exactly these arguments (compared with rawequal, so
-- handles and functions must be the very values; the count of arguments, trailing nils
-- included, must match too).
function M.assert_call(s, ...)
  local assert = require "luassert"
  local want = { n = select("#", ...), ... }
  assert.spy(s).was.called(1)
  local got = s.calls[1].refs
  local function show(list)
    local parts = {}
    for i = 1, list.n do
      parts[i] = type(list[i]) == "string" and string.format("%q", list[i]) or tostring(list[i])
    end
    return "(" .. table.concat(parts, ", ") .. ")"
  end
  local same = got.n == want.n
  for i = 1, want.n do same = same and rawequal(got[i], want[i]) end
  assert(same, "expected the call " .. show(want) .. ", got " .. show(got))
end

--- The arguments (the values themselves, not copies; with .n) of call i (default: the last) of
-- spy s, or nil if there is no such call.
function M.args_of(s, i)
  local call = s.calls[i or #s.calls]
  return call and call.refs
end

return M
