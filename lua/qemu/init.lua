-- The `qemu` module: the API scripts use. The C core (qlua.core) offers small primitives; naming,
-- defaults, argument checks and formatting live here. Also available to scripts as the global `qemu`.

local core = require "qlua.core"
local args = require "qemu.args"

local qemu = {}

local function check_function(fn, where)
  if type(fn) ~= "function" then
    error(string.format("%s expects a function, got %s", where, type(fn)), 3)
  end
end

-- Events. Each on_X may be called more than once; handlers run in the order they were added.
local EVENTS = {
  on_translate = "translate",     -- fn(tb)
  on_exit = "exit",               -- fn()
  on_vcpu_init = "vcpu_init",     -- fn(vcpu)
  on_vcpu_exit = "vcpu_exit",     -- fn(vcpu)
  on_vcpu_idle = "vcpu_idle",     -- fn(vcpu)        system mode
  on_vcpu_resume = "vcpu_resume", -- fn(vcpu)        system mode
  on_syscall = "syscall",         -- fn(vcpu, num, a1, ..., a8)   user mode
  on_syscall_ret = "syscall_ret", -- fn(vcpu, num, ret)           user mode
  on_flush = "flush",             -- fn()
}
local USER_ONLY = { syscall = true, syscall_ret = true }
for name, event in pairs(EVENTS) do
  qemu[name] = function(fn)
    check_function(fn, "qemu." .. name)
    if USER_ONLY[event] and core.info().system then
      error(string.format("qemu.%s: syscall events exist only in user mode (qemu-ARCH), not in "
        .. "system emulation; check qemu.has(\"syscalls\") first", name), 2)
    end
    core.on(event, fn)
  end
end

--- qemu.off(fn): removes a handler added with any qemu.on_X (returns true if it was there), so a
-- probe added from the REPL can be dropped again.
function qemu.off(fn)
  check_function(fn, "qemu.off")
  for _, event in pairs(EVENTS) do
    if core.off(event, fn) then return true end
  end
  return false
end

--- qemu.memory() -> { records, records_peak, records_limit, reclaims, limit_flushes, lua }: bytes
-- held for per-translation records (native records and the references they keep), the most
-- held at once, the records= limit (0: none), how many flushes reclaimed them and how many of
-- those qlua asked for because of the limit; bytes of the Lua heap.
qemu.memory = core.memory

--- qemu.retranslate(): at the next vCPU callback QEMU flushes all translated code, so on_translate
-- handlers added since see every block again (used from the REPL; needs repl= or watch=).
qemu.retranslate = core.retranslate

--- A native 64-bit counter with one slot per vCPU: c:sum(), c:get(vcpu), c:add(n [, vcpu]),
-- c:reset(), c:values(). Translated code adds to it through tb:count, insn:count, insn:count_mem.
qemu.counter = core.counter_new

--- qemu.tally() -> a native map from whole-number keys (0 .. 2^64-1) to counts: t:add(key [, n]),
-- t:get(key), t:items() (a copy: { [key] = count }), t:size(), t:reset(). Under LuaJIT, t:add is
-- an FFI call that compiled loops make in a few ns: the cheap way to aggregate by address in
-- tracer loops and queued callbacks.
do
  local ok, ffi = pcall(require, "ffi")
  local ffi_add = ok and core.tally_add_ptr
    and ffi.cast("int (*)(void *, double, double)", core.tally_add_ptr)
  local BAD = { "key", "amount" }
  local function bad(rc, key, n)
    local got = key
    if rc == 2 then got = n end
    error(string.format("tally:add: the %s must be a whole number from 0 to 2^64-1, got %s",
      BAD[rc], tostring(got)), 3)
  end
  local methods = {}
  for _, name in ipairs { "get", "items", "size", "reset" } do
    methods[name] = function(self, ...) local raw = self.raw; return raw[name](raw, ...) end
  end
  function methods.add(self, key, n)
    if type(key) ~= "number" then bad(1, key, n) end
    if n ~= nil and type(n) ~= "number" then bad(2, key, n) end
    local rc = ffi_add(self.ptr, key, n or 1)
    if rc ~= 0 then bad(rc, key, n) end
  end
  local mt = { __index = methods, __tostring = function(self) return tostring(self.raw) end }
  function qemu.tally()
    local raw, ptr = core.tally_new()
    if not ffi_add then return raw end
    return setmetatable({ raw = raw, ptr = ffi.cast("void *", ptr) }, mt)
  end
end

--- qemu.count_every(kind, counter [, rw]): qlua adds the counting ops to every block it translates
-- itself, with no Lua at translation time (the cheapest way to count everything):
--   "insn"        every instruction that starts executing (exact, like insn:count in each insn)
--   "block"       every block execution (like tb:count(c))
--   "block_insns" the block's instruction count at every block execution (tb:count(c, #tb))
--   "mem"         every memory access of kind rw ("r", "w" or "rw", the default)
qemu.count_every = core.count_every

--- Stops instrumenting: on_exit handlers run, then QEMU unloads the plugin.
qemu.uninstall = core.uninstall

--- A table that survives hot reloads (watch=on): the module is loaded once per run.
qemu.persist = {}

-- Facts about the host.
local raw = core.info()
qemu.info = {
  target = raw.target,              -- "x86_64", "aarch64", ...
  system = raw.system,              -- true in system emulation
  mode = raw.system and "system" or "user",
  smp_vcpus = raw.smp_vcpus,        -- system mode: -smp value
  max_vcpus = raw.max_vcpus,
  api = { min = raw.api_min, cur = raw.api_cur, declared = raw.api_declared },
  script = raw.script,
  root = raw.root,
  version = raw.qlua_version,
  lua = raw.lua,
  onerror = raw.onerror,
}

local FEATURES = {}
for name in pairs(raw.features) do FEATURES[#FEATURES + 1] = name end
table.sort(FEATURES)

--- qemu.has(feature) -> boolean. Unknown names are an error listing the known ones.
function qemu.has(feature)
  local present, since = core.has(feature)
  if since == nil then
    error(string.format("qemu.has: unknown feature '%s'; known: %s", tostring(feature),
      table.concat(FEATURES, ", ")), 2)
  end
  return present
end

--- qemu.need(feature): an error naming the feature and the QEMU that brings it, where absent.
function qemu.need(feature)
  if not qemu.has(feature) then
    local _, since = core.has(feature)
    error(string.format("%s needs the '%s' feature, which this QEMU (plugin API %d) lacks: it "
      .. "comes with %s", qemu.info.script, feature, qemu.info.api.cur, since), 2)
  end
end

--- User mode: { path, start_code, end_code, entry } of the guest program; nil in system mode.
qemu.binary = core.binary

--- Inside a vCPU callback: the register names (QEMU >= 9.0), a register's value (integer for up to
-- 8 bytes, little-endian; then the raw bytes), guest memory (QEMU >= 9.2; string, or nil and why).
-- Register reads need a callback registered with register access: insn:on_exec(fn, data, "r").
qemu.registers = core.registers
qemu.reg = core.reg
qemu.read_memory = core.read_memory

--- System mode, QEMU >= 9.1: qemu.time_control() takes over the guest's virtual clock (it then
-- advances only through qemu.set_time(ns), nanoseconds from 0 at start), e.g. to run the guest at
-- a fixed number of instructions per second, as QEMU's ips plugin does.
qemu.time_control = core.time_control
qemu.set_time = core.set_time

-- Tracers: execution events gathered natively per thread and handed to Lua in batches.
qemu.EVENT = { tb = 0, insn = 1, load = 2, store = 3 }

local ffi_ready = false

--- qemu.tracer{ fn = function(events, n) ... end, batch = 4096 } -> tracer, for tb:trace(t, tag),
-- insn:trace(t, tag) and insn:trace_mem(t, tag, "r"|"w"|"rw"). events[0 .. n-1] have addr, pc,
-- tag, vcpu, size, kind (qemu.EVENT), flags (1 signed, 2 big-endian); they are valid only during
-- fn (the buffer is reused: copy what you keep). LuaJIT: FFI records, no allocation; Lua 5.4: a
-- table per event read.
function qemu.tracer(spec)
  if type(spec) ~= "table" then error("qemu.tracer expects a table { fn = ..., batch = ... }", 2) end
  local fn, batch = spec.fn, spec.batch or 4096
  check_function(fn, "qemu.tracer{fn}")
  if type(batch) ~= "number" or batch < 1 or batch > 1048576 or batch % 1 ~= 0 then
    error("qemu.tracer: batch must be an integer from 1 to 1048576", 2)
  end
  local wrapper
  local ok, ffi = pcall(require, "ffi")
  if ok then
    if not ffi_ready then
      ffi.cdef(core.event_cdef)
      assert(ffi.sizeof("qlua_event") == core.event_size, "qlua_event layout mismatch")
      ffi_ready = true
    end
    local ptr_t = ffi.typeof("const qlua_event *")
    local cast = ffi.cast
    wrapper = function(p, n) return fn(cast(ptr_t, p), n) end
  else
    local event, current, count = core.event, nil, 0
    local view = setmetatable({}, { __index = function(_, i)
      if type(i) ~= "number" or i < 0 or i >= count or i % 1 ~= 0 then return nil end
      local addr, pc, tag, vcpu, size, kind, flags = event(current, i)
      return { addr = addr, pc = pc, tag = tag, vcpu = vcpu, size = size, kind = kind, flags = flags }
    end })
    wrapper = function(p, n) current, count = p, n; return fn(view, n) end
  end
  return core.tracer_new(wrapper, batch, fn)
end

-- Queued execution callbacks (on_exec without "sync"): the C side records (function, data, vCPU)
-- per event; under LuaJIT this loop delivers a batch as compiled code, calling each function
-- straight from the registry. `pos` tells C which record failed if one raises an error. Lua 5.4
-- has no FFI: C delivers the records itself, still one lock per batch.
do
  local ok, ffi = pcall(require, "ffi")
  if ok and core.queued_cdef then
    if not pcall(ffi.typeof, "qlua_queued") then ffi.cdef(core.queued_cdef) end -- once per state
    assert(ffi.sizeof("qlua_queued") == core.queued_size, "qlua_queued layout mismatch")
    local rec_t, pos_t, cast = ffi.typeof("const qlua_queued *"), ffi.typeof("uint32_t *"), ffi.cast
    local count_t = ffi.typeof("const " .. core.queued_count_type .. " *")
    local registry = debug.getregistry()
    core.queue_drainer(function(p, counts, first, n, pos)
      local q, at = cast(rec_t, p), cast(pos_t, pos)
      for i = first, n - 1 do
        local e = q[i]
        at[0] = i
        local d = e.data -- 0: no data (a negative key would keep LuaJIT from compiling the loop)
        if e.has_count ~= 0 then
          local c = cast(count_t, counts)[i]
          if d == 0 then registry[e.fn](e.vcpu, nil, c)
          else registry[e.fn](e.vcpu, registry[d], c) end
        elseif d == 0 then registry[e.fn](e.vcpu, nil) -- (vcpu, nil) as from a synchronous call
        else registry[e.fn](e.vcpu, registry[d]) end
      end
    end, function() end)
  end
end

--- How many vCPU indices exist so far (highest index seen + 1; user mode: one per guest thread,
-- indices are reused after threads exit).
qemu.vcpus = core.vcpus

--- The native counter strategy in use ("inline", "percpu" or "scoreboard"); see docs/counters.md.
qemu.counter_mode = core.counter_mode

-- Output: buffered, handed to QEMU's plugin log (shown with -d plugin, or -D FILE), never lost.
function qemu.print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  core.write(table.concat(parts, "\t") .. "\n")
end

function qemu.printf(fmt, ...)
  core.write(string.format(fmt, ...))
end

qemu.write = core.write
qemu.flush = core.flush

-- Arguments: every KEY=VALUE the plugin does not take itself, as strings, until the script
-- declares them with qemu.script{}; then typed, checked, defaults filled in.
local given, order, texts = core.args()
qemu.args = given
qemu.parse_bool = args.parse_bool
qemu.parse_int = args.parse_int

local script_name = (raw.script or "script"):match("([^/]+)$")

--- Declares the script: { name, description, args = { { name=, type=, default=, help=, values=,
-- multiple= } } } (multiple = true: the argument may repeat; its value is a list).
-- Rejects unknown or malformed arguments with the list of accepted ones; returns the typed values
-- (also stored in qemu.args).
function qemu.script(desc)
  if type(desc) ~= "table" then error("qemu.script expects a table", 2) end
  local decl = desc.args or {}
  local values, err = args.parse(decl, given, order, script_name, texts)
  if not values then error(err, 0) end
  qemu.description = desc
  qemu.args = values
  return values
end

--- The usage text of the declared script.
function qemu.usage()
  local desc = qemu.description or {}
  return args.usage(desc.args or {}, desc.name or script_name, desc.description)
end

return qemu
