-- hostile_api.lua: the Lua API surface fuzzer of tests/test_hostile.py. Calls every public
-- function and method, found at run time, with hostile arguments under pcall, in the callbacks
-- where each is meant to work: qemu.* at top level and in on_exit; tb and insn methods and fields
-- in on_translate; access fields in an insn:on_mem callback; vCPU functions in synchronous and
-- queued on_exec callbacks; counters and tallies in on_exit. Prints one summary line on stderr:
--   hostile-summary: calls=N errors=E ...
-- Arguments (read before the fuzz, which calls qemu.script with garbage):
--   seed=N       fixed random seed           calls=N   random calls per site
--   raising=on   the pool's functions include ones that raise (for onerror=warn runs)
--   core=on      also fuzz the C core (require "qlua.core") directly, but core.events_fill (which takes
--                a raw pointer: tests/test_hostile.py tests it on its own) and core.uninstall
local qemu = require "qemu"
local A = {}
for k, v in pairs(qemu.args) do A[k] = v end
local SEED = tonumber(A.seed) or 1
local BUDGET = tonumber(A.calls) or 400
local RAISING = A.raising == "on"
local CORE = A.core == "on"
local TB_LIMIT = tonumber(A.tbs) or 12 -- translations fuzzed
local MEM_LIMIT = 6                    -- on_mem callbacks fuzzed
local EXEC_LIMIT = 6                   -- on_exec callbacks fuzzed
math.randomseed(SEED)

local calls, errors = 0, 0
local phase = {}
local function try(f, ...)
  calls = calls + 1
  local ok = pcall(f, ...)
  if not ok then errors = errors + 1 end
  return ok
end

-- ---- the pool of hostile values ----
local function raiser(what) return function() error("hostile " .. what) end end
local evil_mt = {}
for _, mm in ipairs { "__index", "__newindex", "__tostring", "__len", "__call", "__eq", "__lt",
                      "__le", "__concat", "__unm", "__add", "__sub", "__mul", "__div", "__mod",
                      "__pow", "__gc" } do
  evil_mt[mm] = raiser(mm)
end
evil_mt.__gc = nil -- (a raising finalizer would only warn, at a random moment)
local evil = setmetatable({}, evil_mt)
local tostring_not_string = setmetatable({}, { __tostring = function() return {} end })
local evil_named = setmetatable({}, { __metatable = "qlua.counter" }) -- forges the name check
local evil_tb_name = setmetatable({}, { __metatable = "qlua.tb" })
local evil_insn_name = setmetatable({}, { __metatable = "qlua.insn" })
local noop = function() end
local huge = string.rep("x", 1024 * 1024)
local co = coroutine.create(noop)

local pool, P = {}, 0
local function add(v) P = P + 1; pool[P] = v end
for _, v in ipairs {
  "", "x", "r", "w", "rw", "none", "insn", "block", "block_insns", "mem", "==", ">=", "always",
  "translate", "exit", "syscalls", "registers", "%s%s%s%n", "\0\255\1\127", "0x10", "-1", "1e400",
  huge, {}, { 1, 2, 3 }, evil, tostring_not_string, evil_named, evil_tb_name, evil_insn_name,
  noop, os.clock, true, false, co, io.stdout, 1 / 0, -1 / 0, -1, 0, 1, 2, 0.5, -0.5, 2 ^ 31,
  2 ^ 32, 2 ^ 53, 2 ^ 53 + 1, 2 ^ 63, 2 ^ 64, -2 ^ 63, math.huge, 4095, 65535, 65536, 1e300,
  string.rep("%", 4096), { [evil] = 1 }, { foo = 1 }, { rw = 1 }, { rw = "x" }, { rw = evil },
  { sync = "yes" }, { sync = true }, { regs = true }, { regs = "rw" }, { counter = 1 },
  { counter = evil_named }, { tag = -1 }, { tag = 0 / 0 }, { tag = 2 ^ 64 }, { tag = 1 },
  { batch = 0 }, { batch = 2 ^ 21 }, { batch = 0.5 }, { fn = 1 }, { fn = noop, batch = 1 },
  { fn = noop, batch = 0 / 0 }, { fn = noop, bogus = 1 }, { [1] = 1 }, { args = evil },
  { args = { { name = evil } } }, { args = { { name = "x", type = evil } } }, { args = "x" },
  { args = { 1, 2 } }, { name = huge, args = {} }, setmetatable({}, { __index = raiser("opts") }),
  setmetatable({ rw = "r" }, { __index = raiser("opts") }),
} do add(v) end
add(nil)
add(0 / 0)
add(-(0 / 0))
if RAISING then
  add(raiser("callback"))                -- fails when QEMU calls it
  add(print)                             -- raises on a value whose __tostring misbehaves
  add(coroutine.wrap(noop))              -- dead after its first call: raises from the second
  add(function() return evil .. "x" end) -- raises through a metamethod
end

local unpack = unpack or table.unpack
local function pick() return pool[math.random(P)] end

-- Random calls of f with 0..6 arguments drawn from the pool (and those given first, e.g. self).
local function fuzz(f, n, ...)
  local fixed = select("#", ...)
  local args = { ... }
  for _ = 1, n do
    local argc = math.random(0, 6)
    for i = 1, argc do args[fixed + i] = pick() end
    try(f, unpack(args, 1, fixed + argc))
  end
end

-- Every value once as the first (or next) argument, and no argument at all.
local function sweep(f, ...)
  local fixed = select("#", ...)
  local args = { ... }
  try(f, ...)
  for i = 1, P do
    args[fixed + 1] = pool[i]
    try(f, unpack(args, 1, fixed + 1))
  end
end

local function sorted_functions(t, skip)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not (skip and skip[k]) then
      names[#names + 1] = k
    end
  end
  table.sort(names)
  return names
end

-- The methods a handle's __index reaches: its real metatable (debug.getmetatable: getmetatable
-- answers a string by design), the table itself or the C closure's first upvalue, plus the names
-- the documentation gives (so nothing is missed if the lookup changes).
local function methods_of(handle, documented)
  local found = {}
  local mt = debug.getmetatable(handle)
  local index = mt and mt.__index
  if type(index) == "table" then
    for k, v in pairs(index) do if type(v) == "function" then found[k] = v end end
  elseif type(index) == "function" then
    local _, up = debug.getupvalue(index, 1)
    if type(up) == "table" then
      for k, v in pairs(up) do if type(v) == "function" then found[k] = v end end
    end
  end
  for _, name in ipairs(documented) do
    if found[name] == nil then
      local ok, m = pcall(function() return handle[name] end)
      if ok and type(m) == "function" then found[name] = m end
    end
  end
  return found
end

local TB_METHODS = { "insns", "count", "on_exec", "when", "trace" }
local INSN_METHODS = { "count", "count_mem", "on_exec", "on_mem", "when", "trace", "trace_mem" }
local TB_FIELDS = { "vaddr", "size", "n", "nope", 1, 0, -1, 2 ^ 63, 0.5, 1e300 }
local INSN_FIELDS = { "vaddr", "size", "bytes", "disas", "symbol", "haddr", "index", "nope", 1 }
local ACCESS_FIELDS = { "size", "store", "load", "rw", "signed", "big_endian", "vaddr", "io",
                        "phys", "device", "value", "nope", 1 }
local COUNTER_METHODS = { "sum", "get", "add", "set", "reset", "values" }
local TALLY_METHODS = { "add", "get", "items", "size", "reset" }

-- Handles to pass where they do not belong (wrong self, wrong argument).
local c1, c2 = qemu.counter(), qemu.counter()
local t1 = qemu.tally()
add(c1); add(t1)
local ok_tracer, tr = pcall(qemu.tracer, { fn = noop, batch = 1 })
if ok_tracer then add(tr) end

-- Fuzzes each method of `handle` as a method (self = handle) and as a dot call (self = junk).
local function fuzz_methods(label, handle, methods, n)
  local names = sorted_functions(methods)
  for _, name in ipairs(names) do
    local m = methods[name]
    try(m)                 -- handle.m()
    try(m, handle)         -- handle:m()
    fuzz(m, n, handle)     -- handle:m(junk...)
    fuzz(m, math.max(1, math.floor(n / 4)))   -- handle.m(junk...)
    for _, self in ipairs { 1, "x", c1, t1, evil, evil_named } do try(m, self) end
  end
  phase[label] = (phase[label] or 0) + #names
end

-- ---- phase 1: qemu.* at top level ----
local SKIP_EXIT = { uninstall = true } -- in on_exit it would unload the plugin: tested on its own
local top = sorted_functions(qemu)
for _, name in ipairs(top) do
  local f = qemu[name]
  sweep(f)
  fuzz(f, math.floor(BUDGET / 4))
end
phase.top = #top

local core = package.loaded["qlua.core"]
local CORE_SKIP = { events_fill = true, uninstall = true }
local function fuzz_core(n, ...)
  if not CORE then return end
  for _, name in ipairs(sorted_functions(core, CORE_SKIP)) do
    fuzz(core[name], n, ...)
    sweep(core[name], ...)
  end
end
fuzz_core(math.floor(BUDGET / 8))

-- ---- phase 2: translation handles ----
local kept_tb, kept_insn, kept_access
local translations, mems, execs, queued = 0, 0, 0, 0

local function fuzz_access(access, vaddr)
  for _, k in ipairs(ACCESS_FIELDS) do try(function() return access[k] end) end
  for i = 1, P, 7 do local k = pool[i]; try(function() return access[k] end) end
  try(function() access.size = 1 end)
  try(tostring, access)
  if kept_access then
    for _, k in ipairs(ACCESS_FIELDS) do try(function() return kept_access[k] end) end
  end
  kept_access = kept_access or access
  -- vCPU functions inside a vCPU callback
  fuzz(qemu.reg, 8); fuzz(qemu.read_memory, 8); fuzz(qemu.registers, 4)
  try(qemu.read_memory, vaddr, 8)
end

local function fuzz_vcpu_context()
  fuzz(qemu.reg, 8); fuzz(qemu.read_memory, 8); fuzz(qemu.registers, 4)
  fuzz_methods("counter_in_exec", c1, methods_of(c1, COUNTER_METHODS), 2)
end

local function on_mem(vcpu, access, vaddr, data)
  mems = mems + 1
  if mems > MEM_LIMIT then return end
  fuzz_access(access, vaddr)
end

local function on_sync_exec(vcpu, data)
  execs = execs + 1
  if execs > EXEC_LIMIT then return end
  fuzz_vcpu_context()
end

local function on_queued_exec(vcpu, data, count)
  queued = queued + 1
  if queued > EXEC_LIMIT then return end
  fuzz_vcpu_context() -- counter reads refused in queued callbacks: clean errors
end

qemu.on_translate(function(tb)
  translations = translations + 1
  if translations > TB_LIMIT then return end
  for _, k in ipairs(TB_FIELDS) do try(function() return tb[k] end) end
  for i = 1, P, 3 do local k = pool[i]; try(function() return tb[k] end) end
  try(function() return #tb end)
  try(tostring, tb)
  try(function() tb.vaddr = 1 end)
  fuzz_methods("tb", tb, methods_of(tb, TB_METHODS), math.floor(BUDGET / 20))
  local first = tb[1]
  if first then
    for _, k in ipairs(INSN_FIELDS) do try(function() return first[k] end) end
    for i = 1, P, 3 do local k = pool[i]; try(function() return first[k] end) end
    try(tostring, first)
    fuzz_methods("insn", first, methods_of(first, INSN_METHODS), math.floor(BUDGET / 20))
    try(first.on_mem, first, on_mem) -- queued: phys, io, device, value and vCPU reads refused
    try(first.on_mem, first, on_mem, nil, { sync = true })
    try(first.on_mem, first, on_mem, evil, { phys = true, value = qemu.has("mem_value") })
    try(first.on_exec, first, on_sync_exec, nil, { sync = true })
    try(first.on_exec, first, on_queued_exec, evil, { counter = c1 })
  end
  if kept_tb then -- a tb and an insn kept from an earlier translation
    for _, k in ipairs(TB_FIELDS) do try(function() return kept_tb[k] end) end
    fuzz_methods("stale_tb", kept_tb, methods_of(kept_tb, TB_METHODS), 4)
    try(tostring, kept_tb)
    if kept_insn then
      for _, k in ipairs(INSN_FIELDS) do try(function() return kept_insn[k] end) end
      fuzz_methods("stale_insn", kept_insn, methods_of(kept_insn, INSN_METHODS), 4)
      try(tostring, kept_insn)
    end
  end
  kept_tb, kept_insn = kept_tb or tb, kept_insn or first
  -- the iterator of tb:insns() kept, and driven with junk
  local ok, it = pcall(tb.insns, tb)
  if ok then fuzz(it, 4) end
  fuzz_core(2, tb)
  if first then fuzz_core(2, first) end
end)

-- ---- phase 3: on_exit: counters, tallies, stale handles, qemu.* again ----
qemu.on_exit(function()
  fuzz_methods("counter", c1, methods_of(c1, COUNTER_METHODS), math.floor(BUDGET / 4))
  fuzz_methods("tally", t1, methods_of(t1, TALLY_METHODS), math.floor(BUDGET / 4))
  local raw = rawget(t1, "raw")
  if raw then fuzz_methods("tally_raw", raw, methods_of(raw, TALLY_METHODS), math.floor(BUDGET / 8)) end
  try(tostring, c1); try(tostring, t1)
  if kept_tb then fuzz_methods("stale_tb_exit", kept_tb, methods_of(kept_tb, TB_METHODS), 4) end
  if kept_access then
    for _, k in ipairs(ACCESS_FIELDS) do try(function() return kept_access[k] end) end
  end
  for _, name in ipairs(sorted_functions(qemu, SKIP_EXIT)) do
    fuzz(qemu[name], math.floor(BUDGET / 8))
  end
  fuzz_core(math.floor(BUDGET / 16))
  local parts = {}
  for k, v in pairs(phase) do parts[#parts + 1] = k .. "=" .. v end
  table.sort(parts)
  io.stderr:write(string.format("hostile-summary: calls=%d errors=%d translations=%d mems=%d "
    .. "execs=%d queued=%d %s\n", calls, errors, translations, mems, execs, queued,
    table.concat(parts, " ")))
  io.stderr:flush()
end)
