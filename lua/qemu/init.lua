-- The `qemu` module: the API scripts use, also available to scripts as the global `qemu`.
-- The C core (qlua.core) offers small positional primitives; this module owns every argument's
-- shape: it checks and normalizes each one and writes every message once. Registrations take
-- (fn, data, opts); an unknown option key or value is an error that names the accepted ones.

local core = require "qlua.core"
local args = require "qemu.args"
local native = require "qemu.native"

local qemu = {}

local function fail(level, fmt, ...)
  error(string.format(fmt, ...), level + 1)
end

local function check_function(fn, where, level)
  if type(fn) ~= "function" then
    fail((level or 2) + 1, "%s expects a function, got %s", where, type(fn))
  end
end

-- The metatables of the C objects answer getmetatable() with their name (no script can reach or
-- forge them); that name is how a value's kind is told here. (A table made to answer the same
-- name passes this check, and is then refused by the C core's own check of the real metatable.)
local function is(kind, v) return getmetatable(v) == kind end

local function check_self(kind, self, where)
  if not is("qlua." .. kind, self) then
    fail(3, "%s: expected a %s as self, got %s (call it with a colon: %s(...))", where, kind,
      type(self), where)
  end
end

-- An argument after the last one a function takes is a mistake (an option in the old positional
-- form, say), not something to ignore.
local function no_more(extra, form)
  if extra ~= nil then
    fail(3, "%s takes nothing after its options (got %s; options go in the table)", form,
      tostring(extra))
  end
end

local function check_counter(c, where, level)
  if not is("qlua.counter", c) then
    fail(level + 1, "%s: expected a counter from qemu.counter(), got %s", where, type(c))
  end
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- opts: nil or a table whose keys are all in `accepted` (name -> check(value) -> ok, expected).
local NO_OPTS = setmetatable({}, { __newindex = function() error("read-only", 2) end })
local function check_opts(opts, where, accepted, level)
  level = (level or 2) + 1
  if opts == nil then return NO_OPTS end
  if type(opts) ~= "table" then
    fail(level, "%s: options must be a table such as { %s = ... }, got %s", where,
      sorted_keys(accepted)[1], type(opts))
  end
  for k, v in pairs(opts) do
    local check = accepted[k]
    if not check then
      fail(level, "%s: unknown option '%s' (accepted: %s)", where, tostring(k),
        table.concat(sorted_keys(accepted), ", "))
    end
    local ok, expected = check(v)
    if not ok then
      fail(level, "%s: option %s=%s: expected %s", where, tostring(k), tostring(v), expected)
    end
  end
  return opts
end

local function one_of(...)
  local set, list = {}, { ... }
  for _, v in ipairs(list) do set[v] = true end
  local text = '"' .. table.concat(list, '", "') .. '"'
  return function(v) return set[v] == true, text end
end
local function boolean(v) return type(v) == "boolean", "true or false" end
local function counter(v) return is("qlua.counter", v), "a counter from qemu.counter()" end
local function whole(v)
  return type(v) == "number" and v >= 0 and v % 1 == 0, "a whole number >= 0"
end
local RW = one_of("r", "w", "rw")

-- Optional count arguments (tb:count(c, n), insn:count_mem(c, n, opts)): a whole number.
local function check_n(n, where, level)
  if n == nil then return 1 end
  if not whole(n) then
    fail(level + 1, "%s: n must be a whole number >= 0, got %s%s", where, tostring(n),
      type(n) == "table" and " (options go after n: use nil for n = 1)" or "")
  end
  return n
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
local system = core.info().system
for name, event in pairs(EVENTS) do
  qemu[name] = function(fn, ...)
    check_function(fn, "qemu." .. name)
    if select("#", ...) > 0 then
      fail(2, "qemu.%s(fn) takes only the function (a closure carries any data it needs)", name)
    end
    if USER_ONLY[event] and system then
      fail(2, "qemu.%s: syscall events exist only in user mode (qemu-ARCH), not in system "
        .. "emulation; check qemu.has(\"syscalls\") first", name)
    end
    core.on(event, fn)
  end
end

--- qemu.on_discon(fn [, { kinds = { "interrupt", "exception", "hostcall" } }]): fn(vcpu, kind,
-- from_pc, to_pc) at each discontinuity of those kinds (default: all), at the moment itself
-- (QEMU 10.2, system mode: QEMU reports none in user mode).
local DISCON_KINDS = { interrupt = 1, exception = 2, hostcall = 4 }
local function kinds_list(v)
  local expected = 'a list of "interrupt", "exception", "hostcall"'
  if type(v) ~= "table" or #v == 0 then return false, expected end
  for i, k in pairs(v) do
    if type(i) ~= "number" or not DISCON_KINDS[k] then return false, expected end
  end
  return true
end
function qemu.on_discon(fn, opts, extra)
  check_function(fn, "qemu.on_discon")
  opts = check_opts(opts, "qemu.on_discon", { kinds = kinds_list })
  no_more(extra, "qemu.on_discon(fn, opts)")
  if not system then
    fail(2, "qemu.on_discon: QEMU reports discontinuities (interrupts, exceptions, host calls) "
      .. "only in system emulation (qemu-system-ARCH, QEMU 10.2 or later), not in user mode; "
      .. "check qemu.has(\"discon\") first")
  end
  if not core.has("discon") then
    local _, err = pcall(core.need, "qemu.on_discon()", "discon")
    error(err, 2)
  end
  local mask, seen = 0, {}
  for _, k in ipairs(opts.kinds or {}) do
    if not seen[k] then seen[k], mask = true, mask + DISCON_KINDS[k] end
  end
  core.on("discon", fn, mask)
end

--- qemu.off(fn): removes a handler added with any qemu.on_X (returns true if it was there), so a
-- probe added from the REPL can be dropped again.
function qemu.off(fn)
  check_function(fn, "qemu.off")
  for _, event in pairs(EVENTS) do
    if core.off(event, fn) then return true end
  end
  return core.off("discon", fn)
end

--- qemu.memory() -> { records, records_peak, records_limit, reclaims, limit_flushes, lua,
-- translations }: bytes held for per-translation records (native records and the references they
-- keep), the most held at once, the records= limit (0: none), how many flushes reclaimed them and
-- how many of those qlua asked for because of the limit; bytes of the Lua heap; how many blocks
-- QEMU reported translating (after the first, only while something needs them).
qemu.memory = core.memory

--- qemu.retranslate(): at the next vCPU callback QEMU flushes all translated code, so on_translate
-- handlers added since see every block again (used from the REPL; needs repl= or watch=).
qemu.retranslate = core.retranslate

--- A native 64-bit counter with one slot per vCPU: c:sum(), c:get(vcpu), c:add(n [, vcpu]),
-- c:set(v [, vcpu]), c:reset(), c:values(). Translated code adds to it through tb:count,
-- insn:count, insn:count_mem and qemu.count_every.
qemu.counter = core.counter_new

--- qemu.read_counters(list, vcpu [, into]) -> into (or a new table) with into[i] = list[i]:get(vcpu)
-- for each counter of the list, in one call (a counter per block, read at each interval).
local read_counters = core.read_counters
function qemu.read_counters(list, vcpu, into, extra)
  if extra ~= nil then
    fail(2, "qemu.read_counters(list, vcpu [, into]) takes three arguments (got a fourth: %s)",
      tostring(extra))
  end
  if type(list) ~= "table" then
    fail(2, "qemu.read_counters: expected a list of counters from qemu.counter(), got %s", type(list))
  end
  if type(vcpu) ~= "number" or vcpu < 0 or vcpu > 65535 or vcpu % 1 ~= 0 then
    fail(2, "qemu.read_counters: vcpu %s: expected a vCPU index, a whole number from 0 to 65535",
      tostring(vcpu))
  end
  if into ~= nil and type(into) ~= "table" then
    fail(2, "qemu.read_counters: into: expected a table to fill, got %s", type(into))
  end
  local out, bad = read_counters(list, vcpu, into or {})
  if not out then
    fail(2, "qemu.read_counters: list[%d] is %s, expected a counter from qemu.counter()", bad,
      type(list[bad]))
  end
  return out
end

--- qemu.tally() -> a native map from whole-number keys (0 .. 2^64-1) to counts: t:add(key [, n]),
-- t:get(key), t:items() (a copy: { [key] = count }), t:vcpus() ({ [key] = mask of the vCPUs whose
-- natively fed adds reached it }), t:size(), t:reset(). Under LuaJIT, t:add is an FFI call that
-- compiled loops make in a few ns: the cheap way to aggregate by address in tracer loops and
-- queued callbacks; insn:tally_mem, tb:tally and insn:tally feed one with no Lua at all.
local tally_raw -- tally -> its native object, nil for anything else

-- A tally's key (amount: an amount to add): a whole number from 0 to 2^64-1; under Lua 5.4 any
-- integer too, read as its 64-bit pattern (addresses from 2^63 up arrive negative), except a
-- negative amount. C reads both forms (qlua_check_u64).
local math_type = math.type
local function is_u64(v, amount)
  if math_type and math_type(v) == "integer" then return not amount or v >= 0 end
  return type(v) == "number" and v >= 0 and v < 2^64 and v % 1 == 0
end
do
  local ffi = native.ffi
  local ffi_add = ffi and core.tally_add_ptr
    and ffi.cast("int (*)(void *, double, double)", core.tally_add_ptr)
  local WHAT = { "key", "amount" }
  local function bad(rc, key, n)
    if rc == 3 then
      fail(3, "tally:add: tally used after the garbage collector took it (a finalizer brought it "
        .. "back); keep it in a variable that outlives its use")
    end
    fail(3, "tally:add: the %s must be a whole number from 0 to 2^64-1, got %s", WHAT[rc],
      tostring(rc == 1 and key or n))
  end
  local tallies = setmetatable({}, { __mode = "k" }) -- the tables qemu.tally() made
  local function check(self, name)
    if not tallies[self] then
      fail(3, "tally:%s: expected a tally from qemu.tally() as self, got %s (call it with a "
        .. "colon: t:%s(...))", name, type(self), name)
    end
  end
  local methods = {}
  local raws = setmetatable({}, { __mode = "k" }) -- tally -> its native object
  tally_raw = function(t) return raws[t] end
  for _, name in ipairs { "get", "items", "vcpus", "size", "reset" } do
    methods[name] = function(self, ...)
      check(self, name)
      local raw = raws[self]
      -- not a tail call: C blames its errors on level 2, the script's line (each returns one value)
      return (raw[name](raw, ...))
    end
  end
  if ffi_add then
    function methods.add(self, key, n)
      local ptr = tallies[self] -- the native map's address, out of the script's reach
      if ptr == nil then check(self, "add") end
      if type(key) ~= "number" then bad(1, key, n) end
      if n ~= nil and type(n) ~= "number" then bad(2, key, n) end
      local rc = ffi_add(ptr, key, n or 1)
      if rc ~= 0 then bad(rc, key, n) end
    end
  else
    -- Lua 5.4: the method is C (core.tally_adder), with the checks and messages above
    methods.add = core.tally_adder(raws)
  end
  local mt = { __index = methods, __tostring = function(self) return tostring(raws[self]) end,
    __metatable = "qlua.tally", __newindex = function() error("a tally has no fields to set", 2) end }
  function qemu.tally()
    local raw, ptr = core.tally_new()
    local t = setmetatable({}, mt)
    tallies[t] = ffi and ffi.cast("void *", ptr) or true
    raws[t] = raw
    return t
  end
end

--- qemu.edges() -> a native map from control-flow edges (from, to) to counts, fed by
-- qemu.count_every("branch", e): e:items(), e:get(from, to), e:size(), e:reset().
qemu.edges = core.edges_new

local COUNT_KINDS = one_of("insn", "block", "block_insns", "mem", "branch", "syscall",
  "syscall_ret", "syscall_error")
local SYSCALL_KINDS = { syscall = "call", syscall_ret = "return", syscall_error = "error" }
--- qemu.count_every(kind, counter [, opts]): qlua adds the counting ops to every block it
-- translates itself, with no Lua at translation time (the cheapest way to count everything):
--   "insn"        every instruction that starts executing (exact, like insn:count in each insn)
--   "block"       every block execution (like tb:count(c))
--   "block_insns" the block's instruction count at every block execution (tb:count(c, #tb))
--   "mem"         every memory access; opts.rw = "r", "w" or "rw" (the default)
-- With a tally from qemu.tally() instead of a counter, each event adds 1 to the tally's count of
-- a key, natively ([fed tallies]): "block" the block's address, "insn" the instruction's, "mem"
-- the accessed address rounded down to opts.align, with insn:tally_mem's options.
-- User mode, tallies only: "syscall" adds 1 to the syscall number's count at each syscall,
-- "syscall_ret" at each return, "syscall_error" at each return of a negative value (an error),
-- from C with no Lua lock.
local TALLY_KINDS = one_of("insn", "block", "mem")
local TALLY_MEM_OPTS -- (below, with insn:tally_mem)
function qemu.count_every(kind, c, opts, extra)
  no_more(extra, "qemu.count_every(kind, c, opts)")
  local ok, expected = COUNT_KINDS(kind)
  if not ok then fail(2, "qemu.count_every: kind %s: expected one of %s", tostring(kind), expected) end
  if (kind == "branch") ~= is("qlua.edges", c) then
    if kind == "branch" then
      fail(2, "qemu.count_every: \"branch\" counts control-flow edges: expected edges from "
        .. "qemu.edges(), got %s", is("qlua.counter", c) and "a counter"
        or tally_raw(c) and "a tally" or type(c))
    end
    fail(2, "qemu.count_every: edges from qemu.edges() count kind \"branch\" only, not %q", kind)
  end
  if SYSCALL_KINDS[kind] then
    if system then
      fail(2, "qemu.count_every: kind %q: syscall events exist only in user mode (qemu-ARCH), "
        .. "not in system emulation; check qemu.has(\"syscalls\") first", kind)
    end
    local raw = tally_raw(c)
    if not raw then
      fail(2, "qemu.count_every: kind %q counts by syscall number: expected a tally from "
        .. "qemu.tally(), got %s", kind, is("qlua.counter", c) and "a counter" or type(c))
    end
    if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil) then
      fail(2, "qemu.count_every: kind %q takes no options (only \"mem\" does)", kind)
    end
    local added, why = pcall(core.tally_syscalls, raw, SYSCALL_KINDS[kind])
    if not added then fail(2, "qemu.count_every: %s", why) end
    if kind ~= "syscall" then core.want("syscall_ret") end
    return
  end
  if kind == "branch" then
    if opts ~= nil then fail(2, "qemu.count_every: only \"mem\" takes options") end
    core.count_every_rule(kind, core.tally_rule(kind, c))
    core.want("translate")
    return
  end
  local raw = tally_raw(c)
  if raw then
    ok, expected = TALLY_KINDS(kind)
    if not ok then
      fail(2, "qemu.count_every: a tally counts events by key: kind %s: expected one of %s "
        .. "(block_insns adds a block's size: use a counter)", tostring(kind), expected)
    end
    opts = check_opts(opts, "qemu.count_every", TALLY_MEM_OPTS)
    if next(opts) ~= nil and kind ~= "mem" then
      fail(2, "qemu.count_every: only \"mem\" takes options")
    end
    core.count_every_rule(kind, core.tally_rule(kind, raw, opts.rw or "rw", opts.align or 1,
      opts.phys == true, opts.io or "any"))
    core.want("translate")
    return
  end
  if not is("qlua.counter", c) then
    fail(2, "qemu.count_every: expected a counter from qemu.counter() or a tally from "
      .. "qemu.tally(), got %s", type(c))
  end
  opts = check_opts(opts, "qemu.count_every", { rw = RW })
  if opts.rw and kind ~= "mem" then
    fail(2, "qemu.count_every: only \"mem\" takes the option rw")
  end
  core.count_every_rule(kind, c, opts.rw or "rw")
  core.want("translate")
end

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
  qemu = raw.qemu_version,          -- the QEMU release, e.g. "10.2.0" (from its --version text)
  script = raw.script,
  root = raw.root,
  version = raw.qlua_version,
  lua = raw.lua,
  onerror = raw.onerror,
  features = raw.features,          -- name -> present
}

local FEATURES = sorted_keys(raw.features)

--- qemu.has(feature) -> boolean. Unknown names are an error listing the known ones.
function qemu.has(feature)
  local present, since = core.has(tostring(feature))
  if since == nil then
    fail(2, "qemu.has: unknown feature '%s'; known: %s", tostring(feature),
      table.concat(FEATURES, ", "))
  end
  return present
end

--- qemu.need(feature): an error naming the feature and the QEMU that brings it, where absent.
function qemu.need(feature)
  local present, since = core.has(tostring(feature))
  if since == nil then
    fail(2, "qemu.need: unknown feature '%s'; known: %s", tostring(feature),
      table.concat(FEATURES, ", "))
  end
  if not present then
    local _, err = pcall(core.need, qemu.info.script, feature)
    error(err, 2)
  end
end

--- User mode: { path, start_code, end_code, entry } of the guest program; nil in system mode.
qemu.binary = core.binary

-- ---- qemu.symbolize: names for addresses (shim/symbols.c, lua/qemu/symbolize.lua) ----
do
  -- qemu.symbolize (and the u64 and report modules it needs) loads on first use: most scripts
  -- never name an address, and loading it cost every start ~0.4 ms
  local loaded
  local function symbolize_module()
    loaded = loaded or require "qemu.symbolize"
    return loaded
  end

  --- qemu.symbolize(vaddr) -> module, symbol, offset: the path of the file mapped at guest
  -- address vaddr, the function symbol covering it (nil when none does) and vaddr's offset from
  -- that symbol (without one: from the module's base). nil when nothing known is there. Tables
  -- loaded with qemu.symbolize_load come first; user mode then looks in the mapped ELF files.
  function qemu.symbolize(vaddr, ...)
    if not symbolize_module().is_address(vaddr) then
      fail(2, "qemu.symbolize: expected an address (a whole number from 0 to 2^64-1), got %s",
        type(vaddr) == "number" and tostring(vaddr) or type(vaddr))
    end
    if select("#", ...) > 0 then fail(2, "qemu.symbolize(vaddr) takes one address") end
    return core.symbolize(vaddr)
  end

  --- qemu.symbolize_load(path [, name]) -> the number of function symbols read from a System.map
  -- ("ADDRESS TYPE NAME" lines; types T, t, W, w) or an ELF file with absolute addresses
  -- (vmlinux); its addresses then symbolize as module `name` (default: the file's basename).
  function qemu.symbolize_load(path, name, ...)
    if type(path) ~= "string" or path == "" then
      fail(2, "qemu.symbolize_load: expected a file path, got %s", type(path))
    end
    if name ~= nil and (type(name) ~= "string" or name == "") then
      fail(2, "qemu.symbolize_load: the module name must be a non-empty string, got %s",
        type(name))
    end
    if select("#", ...) > 0 then fail(2, "qemu.symbolize_load(path [, name]) takes two arguments") end
    local n, err = core.symbolize_load(path, name or symbolize_module().basename(path))
    if not n then fail(2, "qemu.symbolize_load: %s", err) end
    return n
  end

  --- qemu.symbolize_format(module, symbol, offset) -> "libc.so.6!__libc_start_main+0x8a" (or
  -- "libc.so.6+0x27d0a" without a symbol; nil without a module): qemu.symbolize's result as text.
  function qemu.symbolize_format(...) return symbolize_module().format(...) end
end
-- ---- end of qemu.symbolize ----

--- QEMU's process id: a guest that forks runs the script on in each child, with its own pid.
qemu.pid = core.pid

--- qemu.output_path(template): the file name for this process's output: "%p" becomes the pid
-- (as valgrind's --log-file does), "%%" a "%". Call it when opening the file (at exit, say), so a
-- forked child names its own file.
function qemu.output_path(template)
  if type(template) ~= "string" then
    fail(2, "qemu.output_path expects a string such as \"out.%%p.txt\", got %s", type(template))
  end
  local pid = tostring(core.pid())
  return (template:gsub("%%(.?)", function(c)
    if c == "p" then return pid end
    if c == "%" then return "%" end
    fail(4, "qemu.output_path: '%%%s' in %s: only %%p (the pid) and %%%% are known", c, template)
  end))
end

--- Inside a vCPU callback: the register names (QEMU >= 9.0), a register's value (integer for up to
-- 8 bytes, little-endian; then the raw bytes), guest memory (QEMU >= 9.2; string, or nil and why).
-- Register reads need a callback registered with register access: { regs = "r" }.
qemu.registers = core.registers
qemu.reg = core.reg

-- Calls the core's fn from a wrapper and returns its two results; an error it raises is blamed
-- on the wrapper's caller (level 2 from the wrapper), as a direct call of the core would be.
local function core_call(fn, ...)
  local ok, a, b = pcall(fn, ...)
  if not ok then error(a, 3) end
  return a, b
end

-- The memory calls take { phys = true } for a guest physical address (system mode, QEMU >= 10.1).
local MEMORY_OPTS = { phys = boolean }

local function check_address(addr, where)
  if type(addr) ~= "number" or addr % 1 ~= 0 then
    fail(3, "%s: expected an address (an integer), got %s", where,
      type(addr) == "number" and tostring(addr) or type(addr))
  end
  return addr
end

--- qemu.read_memory(addr, len [, { phys = true }]) -> string, or nil and the reason
function qemu.read_memory(addr, len, opts, extra)
  addr = check_address(addr, "qemu.read_memory")
  opts = check_opts(opts, "qemu.read_memory", MEMORY_OPTS)
  no_more(extra, "qemu.read_memory(addr, len, opts)")
  local bytes, why = core_call(core.read_memory, addr, len, opts.phys == true)
  return bytes, why
end

--- qemu.write_memory(addr, bytes [, { phys = true }]) -> true, or nil and the reason (QEMU >=
-- 10.1). Only at the moment of a vCPU event: a synchronous callback, not a queued one.
function qemu.write_memory(addr, bytes, opts, extra)
  addr = check_address(addr, "qemu.write_memory")
  if type(bytes) ~= "string" then
    fail(2, "qemu.write_memory: expected the bytes to write as a string (e.g. \"\\x90\\x90\" or "
      .. "string.pack(\"<I4\", v)), got %s", type(bytes))
  end
  opts = check_opts(opts, "qemu.write_memory", MEMORY_OPTS)
  no_more(extra, "qemu.write_memory(addr, bytes, opts)")
  local ok, why = core_call(core.write_memory, addr, bytes, opts.phys == true)
  return ok, why
end

--- qemu.translate(vaddr) -> the guest physical address, or nil (system mode, QEMU >= 10.1)
function qemu.translate(vaddr, extra)
  vaddr = check_address(vaddr, "qemu.translate")
  no_more(extra, "qemu.translate(vaddr)")
  local paddr = core_call(core.translate, vaddr)
  return paddr
end

--- qemu.write_reg(name, value): value an integer (in the register's width) or a string of the
-- register's bytes (QEMU >= 10.1), in a callback registered with { regs = "rw" }.
function qemu.write_reg(name, value, extra)
  if type(name) ~= "string" then
    fail(2, "qemu.write_reg: expected a register name (qemu.registers() lists them), got %s",
      type(name))
  end
  if type(value) ~= "number" and type(value) ~= "string" then
    fail(2, "qemu.write_reg: expected an integer or a string of the register's bytes, got %s",
      type(value))
  end
  if type(value) == "number" and value % 1 ~= 0 then
    fail(2, "qemu.write_reg: expected an integer, got %s", tostring(value))
  end
  no_more(extra, "qemu.write_reg(name, value)")
  core_call(core.write_reg, name, value)
end

--- System mode, QEMU >= 9.1: qemu.time_control() takes over the guest's virtual clock (it then
-- advances only through qemu.set_time(ns), nanoseconds from 0 at start), e.g. to run the guest at
-- a fixed number of instructions per second, as QEMU's ips plugin does.
qemu.time_control = core.time_control
qemu.set_time = core.set_time

-- Translation handles: the methods that take functions or options are written here, over the
-- core's positional primitives; core.tb_methods / core.insn_methods are where the handles look
-- their methods up.
local tb_methods, insn_methods = core.tb_methods, core.insn_methods
-- These run for every block or instruction a script instruments, at translation: the common
-- forms (no options) take one line of checks and call C directly; anything else goes through
-- the checks that write the messages.
local core_insn_on_mem, core_insn_count_mem = core.insn_on_mem, core.insn_count_mem

local EXEC_OPTS = { sync = boolean, regs = one_of("none", "r", "rw"), counter = counter }
local function exec_args(where, fn, opts)
  check_function(fn, where, 3)
  opts = check_opts(opts, where, EXEC_OPTS, 3)
  return opts.regs or "none", opts.sync == true, opts.counter
end

--- tb:on_exec(fn [, data] [, opts]) / insn:on_exec: fn(vcpu, data [, count]) at each execution;
-- opts: sync = true (at the moment itself, not queued), regs = "r"|"rw" (register access; makes
-- it synchronous), counter = c (pass c's value of the moment as the third argument).
local function exec_method(kind, register)
  local meta, where = "qlua." .. kind, kind .. ":on_exec"
  local form = where .. "(fn, data, opts)"
  return function(handle, fn, data, opts, extra)
    if opts == nil and extra == nil and type(fn) == "function" and getmetatable(handle) == meta then
      return register(handle, fn, data, "none", false, nil)
    end
    check_self(kind, handle, where)
    no_more(extra, form)
    register(handle, fn, data, exec_args(where, fn, opts))
  end
end
tb_methods.on_exec = exec_method("tb", core.tb_on_exec)
insn_methods.on_exec = exec_method("insn", core.insn_on_exec)

local REPEAT_OPTS = { counter = counter }
--- tb:on_repeat(fn, data, { counter = c }): fn(vcpu, data), queued, each time the block starts
-- right after its own first instruction started (the same instruction twice in a row: an x86
-- rep loop, a jump to itself), found natively; c must count the instructions that start
-- (insn:count(c) on each, or qemu.count_every("insn", c)).
function tb_methods.on_repeat(tb, fn, data, opts, extra)
  check_self("tb", tb, "tb:on_repeat")
  no_more(extra, "tb:on_repeat(fn, data, opts)")
  check_function(fn, "tb:on_repeat")
  opts = check_opts(opts, "tb:on_repeat", REPEAT_OPTS)
  if opts.counter == nil then
    fail(2, "tb:on_repeat needs { counter = c }, a counter of the instructions that start "
      .. "(insn:count(c) on each, or qemu.count_every(\"insn\", c))")
  end
  core.tb_on_repeat(tb, fn, data, opts.counter)
end

local MEM_OPTS = { rw = RW }
local IO = one_of("any", "only", "skip")
local ON_MEM_OPTS = { rw = RW, sync = boolean, phys = boolean, value = boolean, io = IO }
--- insn:on_mem(fn [, data] [, opts]): fn(vcpu, access, vaddr, data) per memory access, queued
-- (delivered in batches, in order, after the fact) unless opts.sync; opts.rw = "r", "w" or "rw"
-- (the default); a queued access carries its size, kind and address, and with opts.phys = true
-- its phys, io and device, with opts.value = true its value.
function insn_methods.on_mem(insn, fn, data, opts, extra)
  if opts == nil and extra == nil and type(fn) == "function" and getmetatable(insn) == "qlua.insn" then
    return core_insn_on_mem(insn, fn, data, "rw")
  end
  check_self("insn", insn, "insn:on_mem")
  no_more(extra, "insn:on_mem(fn, data, opts)")
  check_function(fn, "insn:on_mem")
  opts = check_opts(opts, "insn:on_mem", ON_MEM_OPTS)
  core_call(core.insn_on_mem, insn, fn, data, opts.rw or "rw", opts.sync == true,
    opts.phys == true, opts.value == true, opts.io or "any")
end

local function check_tally(t, where)
  local raw = tally_raw(t)
  if raw == nil then
    fail(3, "%s: expected a tally from qemu.tally(), got %s", where, type(t))
  end
  return raw
end

local function check_key(key, where)
  if not is_u64(key) then
    fail(3, "%s: the key must be a whole number from 0 to 2^64-1, got %s", where, tostring(key))
  end
end

--- tb:tally(t, key) / insn:tally(t, key): t's count of key += 1 at each execution, natively.
local function tally_method(kind, register)
  local where = kind .. ":tally"
  return function(handle, t, key, extra)
    check_self(kind, handle, where)
    if extra ~= nil then fail(2, "%s(t, key) takes two arguments (got a third: %s)", where, tostring(extra)) end
    local raw = check_tally(t, where)
    check_key(key, where)
    register(handle, raw, key)
  end
end
tb_methods.tally = tally_method("tb", core.tb_tally)
insn_methods.tally = tally_method("insn", core.insn_tally)

local function power_of_two(v)
  local ok = type(v) == "number" and v >= 1 and v <= 2^63 and v % 1 == 0
  if ok then
    local p = 1
    while p < v do p = p * 2 end
    ok = p == v
  end
  return ok, "a power of two from 1 to 2^63"
end
TALLY_MEM_OPTS = { rw = RW, align = power_of_two, phys = boolean, io = IO }
--- insn:tally_mem(t [, opts]): per memory access of kind opts.rw, t's count of the address
-- rounded down to opts.align (default 1) += 1, natively, with the vCPU noted (t:vcpus()).
-- opts.phys: RAM accesses by physical address (system mode); opts.io: "any" (default), "only"
-- or "skip" accesses to I/O devices.
function insn_methods.tally_mem(insn, t, opts, extra)
  check_self("insn", insn, "insn:tally_mem")
  no_more(extra, "insn:tally_mem(t, opts)")
  local raw = check_tally(t, "insn:tally_mem")
  opts = check_opts(opts, "insn:tally_mem", TALLY_MEM_OPTS)
  core.insn_tally_mem(insn, raw, opts.rw or "rw", opts.align or 1, opts.phys == true,
    opts.io or "any")
end

--- insn:count_mem(counter [, n = 1] [, opts]): add n per memory access of kind opts.rw.
function insn_methods.count_mem(insn, c, n, opts, extra)
  if opts == nil and extra == nil and n == nil and getmetatable(c) == "qlua.counter"
    and getmetatable(insn) == "qlua.insn" then
    return core_insn_count_mem(insn, c, 1, "rw")
  end
  check_self("insn", insn, "insn:count_mem")
  no_more(extra, "insn:count_mem(c, n, opts)")
  check_counter(c, "insn:count_mem", 2)
  n = check_n(n, "insn:count_mem", 2)
  opts = check_opts(opts, "insn:count_mem", MEM_OPTS)
  core.insn_count_mem(insn, c, n, opts.rw or "rw")
end

local OPS = one_of("==", "~=", "!=", "<", "<=", ">", ">=", "always", "never")
local function when_args(where, c, op, value, fn)
  check_counter(c, where, 3)
  local ok, expected = OPS(op)
  if not ok then fail(3, "%s: comparison %s: expected one of %s", where, tostring(op), expected) end
  if not whole(value) then
    fail(3, "%s: value must be a whole number >= 0, got %s", where, tostring(value))
  end
  check_function(fn, where, 3)
end

--- tb:when(counter, op, value, fn [, data]) / insn:when: fn(vcpu, data), synchronously, on each
-- execution at which the executing vCPU's counter compares true with value.
local function when_method(kind, register)
  local where = kind .. ":when"
  local form = where .. "(c, op, value, fn, data)"
  return function(handle, c, op, value, fn, data, extra)
    check_self(kind, handle, where)
    no_more(extra, form)
    when_args(where, c, op, value, fn)
    register(handle, c, op, value, fn, data)
  end
end
tb_methods.when = when_method("tb", core.tb_when)
insn_methods.when = when_method("insn", core.insn_when)

-- Tracers: execution events gathered natively per thread and handed to Lua in batches.
qemu.EVENT = { tb = 0, insn = 1, load = 2, store = 3 }

local tracers = {} -- tracer object -> core id
local events_t -- LuaJIT: the bounded view of a batch of records
local function events_next(v, i) -- its iterator: records 1 .. n, whatever i a script passes
  if type(i) == "number" and i >= 0 and i < v.n and i % 1 == 0 then return i + 1, v.p[i] end
end
local tracer_mt = { __metatable = "qlua.tracer",
  __tostring = function(t) return "tracer " .. tracers[t] end }

local function check_tracer(t, where)
  if tracers[t] == nil then
    fail(3, "%s: expected a tracer from qemu.tracer{}, got %s", where, type(t))
  end
  return tracers[t]
end

local TRACE_OPTS = { tag = whole }
local TRACE_MEM_OPTS = { tag = whole, rw = RW }

--- tb:trace(tracer [, opts]), insn:trace(tracer [, opts]): one event per execution; opts.tag = a
-- whole number the event carries. insn:trace_mem(tracer [, opts]): one event per memory access,
-- opts.tag and opts.rw = "r"|"w"|"rw".
local function trace_method(kind, where, accepted, register)
  local meta, form = "qlua." .. kind, where .. "(t, opts)"
  return function(handle, t, opts, extra)
    local id = tracers[t]
    if opts == nil and extra == nil and id ~= nil and getmetatable(handle) == meta then
      return register(handle, id, 0, "rw")
    end
    check_self(kind, handle, where)
    no_more(extra, form)
    local id = check_tracer(t, where)
    opts = check_opts(opts, where, accepted)
    register(handle, id, opts.tag or 0, opts.rw or "rw") -- (tb and insn traces ignore rw)
  end
end
tb_methods.trace = trace_method("tb", "tb:trace", TRACE_OPTS, core.tb_trace)
insn_methods.trace = trace_method("insn", "insn:trace", TRACE_OPTS, core.insn_trace)
insn_methods.trace_mem = trace_method("insn", "insn:trace_mem", TRACE_MEM_OPTS, core.insn_trace_mem)

--- qemu.tracer{ fn = function(events, n) ... end, batch = 4096 } -> tracer. events[1 .. n] have
-- addr, pc, tag, vcpu, size, kind (qemu.EVENT), flags (1 signed, 2 big-endian); they are valid
-- only during fn (the buffer is reused: copy what you keep). LuaJIT: FFI records, no allocation;
-- Lua 5.4: tables C fills once per batch, reused by the next batch.
local TRACER_SPEC = { fn = function(v) return type(v) == "function", "a function" end,
  batch = function(v)
    return type(v) == "number" and v >= 1 and v <= core.tracer_max_batch and v % 1 == 0,
      "a whole number from 1 to " .. core.tracer_max_batch
  end }
function qemu.tracer(spec)
  if type(spec) ~= "table" then fail(2, "qemu.tracer expects a table { fn = ..., batch = ... }") end
  check_opts(spec, "qemu.tracer", TRACER_SPEC)
  local fn, batch = spec.fn, spec.batch or 4096
  check_function(fn, "qemu.tracer{fn}")
  local wrapper
  local ffi = native.ffi
  if ffi then
    native.cdef_once("qlua_event", core.event_cdef)
    assert(ffi.sizeof("qlua_event") == core.event_size, "qlua_event layout mismatch")
    -- events[i] is record i - 1 of the batch, for i from 1 to n, as in any Lua array; any other
    -- key, nil (a raw pointer would read whatever memory lies there), as under Lua 5.4. The
    -- type and whole-number checks cost nothing once compiled (measured: 4096-event loops).
    -- (const fields: a metatype's __newindex does not run for a struct's own fields, so a
    -- writable n would let events.n = 2^31 read past the buffer)
    native.cdef_once("qlua_events",
      "typedef struct { const qlua_event *const p; const int32_t n; } qlua_events;")
    if not events_t then
      events_t = ffi.metatype("qlua_events", {
        __index = function(v, i)
          if type(i) == "number" and i >= 1 and i <= v.n and i % 1 == 0 then return v.p[i - 1] end
          return nil
        end,
        __newindex = function(_, k)
          error(("events[%s] = ...: a tracer's events are read-only (the batch's records are "
            .. "reused); copy what you keep into a table of your own"):format(tostring(k)), 2)
        end,
        __len = function(v) return v.n end,
        -- ipairs and pairs as under Lua 5.4: 1 .. n
        __ipairs = function(v) return events_next, v, 0 end,
        __pairs = function(v) return events_next, v, 0 end,
      })
    end
    -- When fn returns, its view is emptied (through a writable alias): a view a script kept
    -- would otherwise go on reading a buffer that later batches, or another thread, refill.
    native.cdef_once("qlua_events_rw", "typedef struct { const qlua_event *p; int32_t n; } qlua_events_rw;")
    local ptr_t, cast, view_t = ffi.typeof("const qlua_event *"), ffi.cast, events_t
    local rw_t = ffi.typeof("qlua_events_rw *")
    local function emptied(v, ...)
      local w = cast(rw_t, v)
      w.n, w.p = 0, nil
      return ...
    end
    wrapper = function(p, n)
      local v = view_t(cast(ptr_t, p), n)
      return emptied(v, fn(v, n))
    end
  else
    -- C decodes the batch into tables reused from batch to batch (pool) and lists them at
    -- 1 .. n in a view, reused too, that refuses writes
    local fill, pool = core.events_fill, {}
    wrapper = function(p, n) return fn(fill(pool, p, n), n) end
  end
  local t = setmetatable({}, tracer_mt)
  tracers[t] = core.tracer_new(wrapper, batch, fn)
  return t
end

-- Queued execution callbacks (on_exec and on_mem without sync): the C side records (function,
-- data, vCPU, kind) per event, and a counter's value or an access's address beside it; under
-- LuaJIT this loop delivers a batch as compiled code, calling each function straight from the
-- registry. `pos` tells C which record failed if one raises an error. Lua 5.4 has no FFI: C
-- delivers the records itself, still one lock per batch.
if native.ffi then
  local ffi, bit = native.ffi, require "bit"
  local band, rshift, lshift = bit.band, bit.rshift, bit.lshift
  native.cdef_once("qlua_queued", core.queued_cdef)
  assert(ffi.sizeof("qlua_queued") == core.queued_size, "qlua_queued layout mismatch")
  local A = core.access_bits
  native.cdef_once("qlua_access_extra", A.extra_cdef)
  assert(ffi.sizeof("qlua_access_extra") == A.extra_size, "qlua_access_extra layout mismatch")
  local K = core.queued_kinds
  local COUNT, PHYS, VALUE, SHIFT = K.count, K.phys, K.value, K.flags_shift
  local STORE, SIGNED, BIG = A.store, A.signed, A.big_endian
  local rec_t, pos_t, cast = ffi.typeof("const qlua_queued *"), ffi.typeof("uint32_t *"), ffi.cast
  local count_t = ffi.typeof("const " .. core.queued_count_type .. " *")
  local extra_t = ffi.typeof("const qlua_access_extra *")
  local registry = debug.getregistry()

  -- A queued access as its callback sees it: one table for all, whose fields are read from the
  -- record being delivered (vq[vi]); outside the call (live false) every read is an error, as a
  -- kept synchronous access is.
  local vq, vcs, vex, vi, live = nil, nil, nil, 0, false
  local function captured(key, bit_, option)
    if band(vq[vi].kind, bit_) == 0 then error(string.format(A.not_captured, key, option, option), 3) end
    return vex[vi]
  end
  local view = setmetatable({}, {
    __index = function(_, key)
      if not live then error(A.stale, 2) end
      local f = rshift(vq[vi].kind, SHIFT)
      if key == "size" then return lshift(1, band(f, 7))
      elseif key == "store" then return band(f, STORE) ~= 0
      elseif key == "vaddr" then return vcs[vi]
      elseif key == "load" then return band(f, STORE) == 0
      elseif key == "rw" then return band(f, STORE) ~= 0 and "w" or "r"
      elseif key == "signed" then return band(f, SIGNED) ~= 0
      elseif key == "big_endian" then return band(f, BIG) ~= 0
      elseif key == "io" then return captured(key, PHYS, "phys").io ~= 0
      elseif key == "phys" then
        local x = captured(key, PHYS, "phys")
        if x.has_phys ~= 0 then return x.phys end
        return nil
      elseif key == "device" then
        local x = captured(key, PHYS, "phys")
        if x.device ~= nil then return ffi.string(x.device) end
        return nil
      elseif key == "value" then
        local x = captured(key, VALUE, "value")
        local t = x.value_type
        if t == 5 then return ffi.string(x.value128, 16) end -- little-endian host: low, high
        if t ~= 0 then return x.value end
        return nil
      end
      error(string.format(A.fields, tostring(key)), 2)
    end,
    __newindex = function() error("an access is read-only", 2) end,
    __metatable = "qlua.access",
  })

  -- The casts stay outside the loop: LuaJIT cannot compile a cast from a light userdata (NYI:
  -- "unsupported C type conversion"), and one inside would leave the whole loop interpreted.
  core.queue_drainer(function(p, counts, extras, first, n, pos)
    local q, at, cs = cast(rec_t, p), cast(pos_t, pos), cast(count_t, counts)
    vq, vcs, vex, live = q, cs, cast(extra_t, extras), false
    for i = first, n - 1 do
      local e = q[i]
      at[0] = i
      local d = e.data -- 0: no data (a negative key would keep LuaJIT from compiling the loop)
      local k = e.kind
      if k == 0 then
        if d == 0 then registry[e.fn](e.vcpu, nil) -- (vcpu, nil) as from a synchronous call
        else registry[e.fn](e.vcpu, registry[d]) end
      elseif k == COUNT then
        local c = cs[i]
        if d == 0 then registry[e.fn](e.vcpu, nil, c)
        else registry[e.fn](e.vcpu, registry[d], c) end
      else -- an access (kind has MEM)
        vi, live = i, true
        if d == 0 then registry[e.fn](e.vcpu, view, cs[i], nil)
        else registry[e.fn](e.vcpu, view, cs[i], registry[d]) end
        live = false
      end
    end
  end, function() end, function() live = false end)
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
