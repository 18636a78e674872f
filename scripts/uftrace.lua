-- uftrace.lua: function entries and exits, found by following the guest's frame pointers, written
-- as a uftrace.data folder that uftrace (https://github.com/namhyung/uftrace) reads:
-- `uftrace replay`, `uftrace report`, `uftrace dump --chrome` and the rest. A port of QEMU
-- 10.2's contrib/plugins/uftrace.c (x86_64 and aarch64 guests, user and system mode); it needs
-- QEMU 9.2 or later (registers and guest memory from plugins).
--
-- Arguments (those of QEMU's plugin):
--   trace-privilege-level=on|off  (default off) one trace per vCPU and privilege level instead of
--                                 one per vCPU: x86_64 Ring0..Ring3 and RealMode (from cr0 and
--                                 cs), aarch64 S-EL0, NS-EL0, R-EL0, ... EL3 (from cpsr and
--                                 SCR_EL3); a change of level ends the stack in the old trace
--                                 and starts it again, unwound, in the new one.
--
-- Output: ./uftrace.data/ in QEMU's working directory when the script loads (no plugin log):
--   info, task.txt, sid-0.map and one TID.dat per trace, TID = (vCPU + 1) * 100 + level, named
--   "cpuN" (or "cpuN Ring3" and the like) in task.txt. The guest must keep frame pointers
--   (-fno-omit-frame-pointer; add -mno-omit-leaf-frame-pointer for leaf functions). For a guest
--   without symbols in its ELF files (a kernel), QEMU's contrib/plugins/uftrace_symbols.py writes
--   the .sym files and the system-mode sid-0.map (which a system-mode run leaves in place).
--
-- How calls are found (as QEMU's plugin does): a callback with register access runs at the first
-- instruction of every block and at each instruction that follows one whose disassembly names
-- the frame pointer (x86_64 "rbp", aarch64 " x29"). It reads the frame pointer FP: the same as
-- the top frame's: nothing; the caller frame's: a return; a frame whose saved FP (memory at FP)
-- is the top frame's: a call to the function at this pc; anything else: a discontinuity, which
-- ends the whole stack and starts again from one unwound along the saved FPs (at most 1024).
--
-- Equal to QEMU 10.2's plugin, checked by tests/test_uftrace.py on the same guest: info and
-- task.txt byte for byte, the records in the same order with the same kinds, depths and code
-- addresses (timestamps differ; addresses unwound from stack garbage vary with the environment),
-- so `uftrace report` lists the same functions with the same call counts.
--
-- Differences from QEMU's plugin, on purpose:
--   * the folder is the working directory's of the moment the script loads, resolved then: QEMU
--     opens "./uftrace.data/..." each time, so a guest that changes directory (user mode shares
--     QEMU's working directory) gets its metadata written elsewhere than its .dat files;
--   * a folder that cannot be created or written is a load error naming the path and the reason
--     (QEMU's plugin fails an assertion and aborts once the first vCPU starts);
--   * nothing is lost however QEMU ends: info, task.txt and sid-0.map are written when the script
--     loads, whenever a trace is added, before a guest execve and at exit; records reach their
--     .dat every 8192 records (128 KiB; QEMU's plugin: every 32 MiB), at a thread's end, before
--     an execve and at exit. A guest that dies of a signal ends through the exit callbacks on
--     QEMU 10.2 (both are complete then); after an execve QEMU's plugin leaves an empty .dat and
--     no info; only SIGKILL loses the last records here;
--   * a user-mode thread that ends has its stack closed (exit records at its end) and its records
--     written; a later thread with the same vCPU index goes on in the same trace. QEMU's plugin
--     sees no thread end, keeps the stale stack and, when the index comes back, truncates the
--     trace files, losing the earlier thread's records;
--   * a forked child writes nothing (its parent's records would be written twice and its own
--     would interleave with the parent's in the same files); QEMU's plugin writes both;
--   * aarch64 without SCR_EL3 (user mode, or a CPU without EL3) counts as non-secure, as the
--     plugin's code means to; QEMU 10.2's plugin then reads the register through a null handle,
--     which gives 0 in AArch64 state, so its user-mode EL0 code lands in S-EL0 (trace 100)
--     where this script writes NS-EL0 (trace 101); an SCR_EL3 with NSE set and NS clear
--     (reserved) is a Lua error, where QEMU's plugin aborts;
--   * timestamps: CLOCK_REALTIME in ns as QEMU's plugin reads it, taken when a record is made
--     (QEMU reads the clock at every callback, used or not). Lua 5.4 has no clock finer than a
--     second: with LuaSystem (Debian: lua-system) they are its wall clock at load plus its
--     monotonic clock since; without it, QEMU's processor time since the start (os.clock, 1 us
--     steps) added to the wall clock's second at load, so durations then count CPU time;
--   * under LuaJIT, addresses are doubles: exact below 2^53, which covers every user-mode
--     address; kernel addresses (system mode) are rounded to 2 KiB, which merges kernel frames.
--     The script says so when it starts in system mode under LuaJIT (the Lua 5.4 build is exact).
--
-- Kept as QEMU 10.2 does, though it is a defect: unwinding means to stop at a frame pointer seen
-- before, but 10.2's check leaves only its own inner loop, so a chain that loops is followed to
-- 1024 frames (in a static glibc program, 1023 calls of _dl_static_dtv appear at exit, from a
-- list head that points at itself) and the record at depth 1024 carries into the address bits
-- (its function's address + 1, depth 0). QEMU fixed the check after 10.2; here the traces stay
-- equal to 10.2's.
local qemu = require "qemu"
local fmt = require "qemu.uftrace_format"
local native = require "qemu.native"

local args = qemu.script {
  name = "uftrace",
  description = "function call traces from the frame pointer chain, for uftrace (./uftrace.data)",
  args = {
    { name = "trace-privilege-level", type = "bool", default = false,
      help = "one trace per vCPU and privilege level (x86_64 rings, aarch64 exception levels)" },
  },
}

-- Registers come with QEMU 9.0, guest memory reads with 9.2: naming the later one says what
-- QEMU this needs.
qemu.need("read_memory")
qemu.need("registers")

local LEVELS = args["trace-privilege-level"]
local system = qemu.info.system
local FLUSH_RECORDS = 8192

-- ---- the two architectures ----

local bytes_of = string.byte
local floor = math.floor

local ARCHES = {}

ARCHES.x86_64 = {
  fp = "rbp",
  needs = { "rbp", "cs", "cr0" },
  level_names = { "Ring0", "Ring1", "Ring2", "Ring3", "RealMode" },
  -- any operand or mnemonic naming rbp may change it
  changes_fp = function(disas) return disas:find("rbp", 1, true) ~= nil end,
  level = function(reg)
    local cr0 = reg("cr0")
    if cr0 % 2 == 0 then return 4 end -- protection disabled: real mode
    return reg("cs") % 4               -- the current privilege level is the low bits of cs
  end,
}

ARCHES.aarch64 = {
  fp = "x29",
  needs = { "x29", "cpsr" },
  level_names = { "S-EL0", "NS-EL0", "R-EL0", "S-EL1", "NS-EL1", "R-EL1", "S-EL2", "NS-EL2",
                  "R-EL2", "EL3" },
  -- the space keeps addresses in the disassembly (e.g. "#0x29") from matching
  changes_fp = function(disas) return disas:find(" x29", 1, true) ~= nil end,
  level = function(reg, has_scr_el3)
    local el = floor(reg("cpsr") / 4) % 4 -- CurrentEL is not readable; cpsr holds it in bits 2-3
    if el == 3 then return 9 end
    local state = 1 -- non-secure without EL3
    if has_scr_el3 then
      local _, raw = reg("SCR_EL3")
      local ns = bytes_of(raw, 1) % 2                  -- bit 0
      local nse = floor(bytes_of(raw, 8) / 64) % 2     -- bit 62
      if nse == 0 then
        state = ns == 0 and 0 or 1
      elseif ns == 1 then
        state = 2
      else
        error("uftrace.lua: SCR_EL3 has NSE set and NS clear, a reserved security state", 0)
      end
    end
    return el * 3 + state
  end,
}

local ARCH = ARCHES[qemu.info.target]
if not ARCH then
  error(string.format("uftrace.lua: target %s is not supported (supported: aarch64, x86_64)",
    qemu.info.target), 0)
end
local FP = ARCH.fp
local NLEVELS = LEVELS and #ARCH.level_names or 1

if system and math.type == nil then -- LuaJIT: numbers are doubles
  io.stderr:write("uftrace.lua: under LuaJIT, addresses of 2^53 and above (kernel space) are "
    .. "rounded to 2 KiB, which merges kernel frames; qlua built with Lua 5.4 is exact\n")
end

-- ---- files ----

-- The host's file system: LuaJIT's FFI where there is one, else LuaFileSystem, else the shell.
local fs = {}
do
  local ffi = native.ffi
  local has_lfs, lfs = pcall(require, "lfs")
  if ffi then
    native.cdef_once("struct qlua_uftrace_fs", [[
      struct qlua_uftrace_fs { int unused; };
      int mkdir(const char *path, unsigned int mode);
      char *getcwd(char *buf, size_t size);
      char *strerror(int errnum);
    ]])
    local C = ffi.C
    function fs.mkdir(path)
      if C.mkdir(path, tonumber("777", 8)) == 0 then return true end
      return nil, ffi.string(C.strerror(ffi.errno()))
    end
    function fs.cwd()
      local buf = ffi.new("char[?]", 4096)
      if C.getcwd(buf, 4096) == nil then return nil, ffi.string(C.strerror(ffi.errno())) end
      return ffi.string(buf)
    end
  elseif has_lfs then
    function fs.mkdir(path)
      local ok, err = lfs.mkdir(path)
      if ok then return true end
      return nil, err
    end
    function fs.cwd()
      local dir, err = lfs.currentdir()
      return dir, dir == nil and tostring(err):gsub("^.-failed: ", "") or nil
    end
  else
    function fs.mkdir(path)
      local ok = os.execute("mkdir -- '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
      if ok == true or ok == 0 then return true end
      return nil, "mkdir failed"
    end
    function fs.cwd() return os.getenv("PWD"), "PWD is not set" end
  end
end

-- rename to itself: true for anything that exists, whatever its kind
function fs.exists(path) return os.rename(path, path) == true end

local cwd, cwd_err = fs.cwd()
if not cwd then
  error("uftrace.lua: cannot tell QEMU's working directory, where uftrace.data goes: "
    .. tostring(cwd_err), 0)
end
local DIR = (cwd == "/" and "" or cwd) .. "/" .. "uftrace.data"

local start_pid = qemu.pid()
-- A forked child runs the script on; the files are the parent's.
local function in_child() return qemu.pid() ~= start_pid end

local function write_file(name, mode, text)
  local path = DIR .. "/" .. name
  local f, err = io.open(path, mode)
  if not f then error("uftrace.lua: cannot write " .. err, 0) end
  local ok, werr = f:write(text)
  f:close()
  if not ok then error("uftrace.lua: cannot write " .. path .. ": " .. tostring(werr), 0) end
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

-- ---- traces ----

local cpus = {}  -- by vCPU index: { traces, trace, level, depth, fps, pcs }
local order = {} -- every trace, by vCPU then level: the order of task.txt and info

-- The clock: ns since BASE as a double (exact for 104 days).
local now, base_lo, base_hi
do
  local ffi = native.ffi
  if ffi then
    native.cdef_once("struct qlua_uftrace_timespec", [[
      struct qlua_uftrace_timespec { int64_t sec; int64_t nsec; };
      int clock_gettime(int clock, struct qlua_uftrace_timespec *ts);
    ]])
    local C = ffi.C
    local ts = ffi.new("struct qlua_uftrace_timespec")
    local CLOCK_REALTIME = 0
    C.clock_gettime(CLOCK_REALTIME, ts)
    local sec0, nsec0 = tonumber(ts.sec), tonumber(ts.nsec)
    base_lo, base_hi = fmt.time_base(sec0, nsec0)
    now = function()
      C.clock_gettime(CLOCK_REALTIME, ts)
      return tonumber(ts.sec - sec0) * 1e9 + tonumber(ts.nsec) - nsec0
    end
  else
    local ok, system = pcall(require, "system") -- LuaSystem (Debian: lua-system)
    if ok and type(system) == "table" and system.gettime and system.monotime then
      -- the wall clock's float seconds keep only 0.2 us at today's dates: it gives the base,
      -- the monotonic clock (seconds since boot, finer) the time since
      local wall = system.gettime()
      local sec = floor(wall)
      base_lo, base_hi = fmt.time_base(sec, floor((wall - sec) * 1e9))
      local mono, m0 = system.monotime, system.monotime()
      now = function() return floor((mono() - m0) * 1e9) end
    else
      local clock, t0 = os.clock, os.clock()
      base_lo, base_hi = fmt.time_base(os.time(), 0)
      now = function() return floor((clock() - t0) * 1e9) end
    end
  end
end

local function flush(t)
  local buf = t.buf
  if not buf or buf.n == 0 then return end
  if not in_child() then write_file(t.file, "ab", buf:encode(base_lo, base_hi)) end
  buf:clear()
end

local function write_metadata()
  if in_child() then return end
  local ids = {}
  for i, t in ipairs(order) do ids[i] = t.id end
  if system then
    -- a map already there may be uftrace_symbols.py's, with the guest's binaries in it
    if not fs.exists(DIR .. "/sid-0.map") then write_file("sid-0.map", "wb", fmt.SYSTEM_MAP) end
  else
    -- user mode: the guest lives in QEMU's address space, so QEMU's maps are the guest's
    write_file("sid-0.map", "wb", read_file("/proc/self/maps") or "")
  end
  write_file("info", "wb", fmt.info(ids))
  write_file("task.txt", "wb", fmt.task(order))
end

-- Before any vCPU runs: a folder that cannot be made or written stops QEMU now, with the reason.
do
  local made, err = fs.mkdir(DIR)
  local probe, why = io.open(DIR .. "/info", "ab")
  if not probe then
    if made or fs.exists(DIR) then
      error("uftrace.lua: cannot write in " .. DIR .. ": " .. why:gsub("^.-: ", ""), 0)
    end
    error("uftrace.lua: cannot create " .. DIR .. ": " .. tostring(err), 0)
  end
  probe:close()
  write_metadata()
end

local function new_cpu(vcpu)
  local c = { traces = {}, level = 0, depth = 0, fps = {}, pcs = {} }
  for level = 0, NLEVELS - 1 do
    local id = (vcpu + 1) * 100 + level
    local name = LEVELS and string.format("cpu%d %s", vcpu, ARCH.level_names[level + 1])
      or string.format("cpu%d", vcpu)
    local t = { id = id, name = name, file = id .. ".dat", buf = nil } -- made at its first record
    c.traces[level + 1] = t
    write_file(t.file, "wb", "")
  end
  c.trace = c.traces[1]
  cpus[vcpu] = c
  local indices = {}
  for v in pairs(cpus) do indices[#indices + 1] = v end
  table.sort(indices)
  order = {}
  for _, v in ipairs(indices) do
    for _, t in ipairs(cpus[v].traces) do order[#order + 1] = t end
  end
  write_metadata()
  return c
end

-- ---- the call stack ----

local ENTRY, EXIT = fmt.ENTRY, fmt.EXIT
local reg, qemu_read_memory = qemu.reg, qemu.read_memory

local function add(t, rel, kind, depth, pc)
  local buf = t.buf
  if not buf then
    buf = fmt.buffer(FLUSH_RECORDS)
    t.buf = buf
  end
  if buf:add(rel, kind, depth, pc) then flush(t) end
end

-- Guest memory (with guest threads, qlua reads it without QEMU's mmap lock, which a translating
-- thread may hold: docs/api.md, Registers and guest memory).
local read_memory = qemu_read_memory

-- 8 bytes of guest memory, little-endian, read where QEMU's plugin reads them; 0 where unreadable.
-- read64 gives the value to compare with other frame pointers and to read at (the number
-- qemu.reg would give for it: under Lua 5.4 the integer, under LuaJIT the double, rounded at 2^53
-- and above). read_pc gives a return address for the records, which keep its low 48 bits only:
-- those bits exactly (all 64 under Lua 5.4), and whether the whole value is non-zero.
local read64, read_pc
local TOO_HIGH = 2 ^ 64 -- LuaJIT rounds values near 2^64 up to it, which qlua refuses as an address
if string.unpack then
  local unpack = string.unpack
  read64 = function(addr)
    local s = read_memory(addr, 8)
    return s and unpack("<i8", s) or 0
  end
  read_pc = function(addr)
    local v = read64(addr)
    return v, v ~= 0
  end
else
  read64 = function(addr)
    if addr >= TOO_HIGH then return 0 end
    local s = read_memory(addr, 8)
    if not s then return 0 end
    local a, b, c, d, e, f, g, h = bytes_of(s, 1, 8)
    return (((h * 256 + g) * 256 + f) * 256 + e) * 4294967296 + ((d * 256 + c) * 256 + b) * 256 + a
  end
  read_pc = function(addr)
    if addr >= TOO_HIGH then return 0, false end
    local s = read_memory(addr, 8)
    if not s then return 0, false end
    local a, b, c, d, e, f, g, h = bytes_of(s, 1, 8)
    local low48 = ((((f * 256 + e) * 256 + d) * 256 + c) * 256 + b) * 256 + a
    return low48, low48 ~= 0 or g ~= 0 or h ~= 0
  end
end

local function enter_stack(c, t, rel)
  local pcs = c.pcs
  for d = 1, c.depth do add(t, rel, ENTRY, d, pcs[d]) end
end

local function exit_stack(c, t, rel)
  local pcs = c.pcs
  for d = c.depth, 1, -1 do add(t, rel, EXIT, d, pcs[d]) end
  c.depth = 0
end

-- The stack as the saved frame pointers give it, from (fp, pc) outwards, outermost first, up to
-- 1024 frames. A chain that loops (a register used as a frame pointer that holds, say, the head of
-- an empty list pointing at itself) is followed to the limit, as QEMU 10.2 does (see the header).
local unwound_fp, unwound_pc = {}, {}
local function unwind(c, fp, pc)
  local n, more = 0, true
  repeat
    n = n + 1
    unwound_fp[n], unwound_pc[n] = fp, pc
    if fp ~= 0 then fp = read64(fp) end
    pc, more = read_pc(fp + 8) -- the return address saved beside the frame pointer
  until not (fp ~= 0 and more and n < 1024)
  local fps, pcs = c.fps, c.pcs
  for d = 1, n do
    fps[d], pcs[d] = unwound_fp[n + 1 - d], unwound_pc[n + 1 - d]
  end
  c.depth = n
end

local function track(vcpu, pc)
  local c = cpus[vcpu] or new_cpu(vcpu)
  local fp = reg(FP)
  local d = c.depth
  local fps = c.fps
  if fp == 0 and d == 0 then
    -- no frame yet: the pc stands for the function until a proper call
    c.depth, fps[1], c.pcs[1] = 1, 0, pc
    add(c.trace, now(), ENTRY, 1, pc)
    return
  end
  local top = d >= 1 and fps[d] or 0
  if fp == top then return end -- the same function
  local caller = d >= 2 and fps[d - 1] or 0
  if fp == caller then -- a return; the record has the depth left, as QEMU's plugin writes it
    c.depth = d - 1
    add(c.trace, now(), EXIT, d - 1, c.pcs[d])
    return
  end
  local saved = fp ~= 0 and read64(fp) or 0
  if saved == top then -- a call
    d = d + 1
    c.depth, fps[d], c.pcs[d] = d, fp, pc
    add(c.trace, now(), ENTRY, d, pc)
    return
  end
  -- anything else (longjmp, a context switch, a signal): start again from the frames in memory
  local rel = now()
  exit_stack(c, c.trace, rel)
  unwind(c, fp, pc)
  enter_stack(c, c.trace, rel)
end

local has_scr_el3 = false
local function track_level(vcpu, pc)
  local c = cpus[vcpu] or new_cpu(vcpu)
  local level = ARCH.level(reg, has_scr_el3)
  if level == c.level then return end
  local rel = now()
  exit_stack(c, c.trace, rel)
  c.level, c.trace = level, c.traces[level + 1]
  unwind(c, reg(FP), pc)
  enter_stack(c, c.trace, rel)
end

-- ---- instrumentation ----

local REGS = { regs = "r" }
local changes_fp = ARCH.changes_fp
local checked = false

-- The registers this needs, looked up once a vCPU exists (the first translation).
local function check_registers()
  checked = true
  local present = {}
  for _, name in ipairs(qemu.registers()) do present[name] = true end
  if not present[FP] and qemu.info.target == "aarch64" then
    error("uftrace.lua: the frame pointer register (x29) is not available; use an AArch64 CPU "
      .. "(or -cpu max)", 0)
  end
  for _, name in ipairs(ARCH.needs) do
    if not present[name] then
      error(string.format("uftrace.lua: this %s vCPU has no register '%s'", qemu.info.target,
        name), 0)
    end
  end
  has_scr_el3 = present.SCR_EL3 == true
end

-- An index loop rather than tb:insns(): with synchronous callbacks running between translations,
-- LuaJIT grew chains of up to 190 side traces on the iterator's loop, which made each translation
-- three times slower (QEMU 10.2, LuaJIT 2.1.0-beta3).
local function translate(tb)
  if not checked then
    check_registers()
  end
  if LEVELS then tb:on_exec(track_level, tb.vaddr, REGS) end
  -- a callback sees the registers before its instruction runs, so the effect of an instruction
  -- on the frame pointer shows at the next one; the first of a block is always watched, since
  -- the last instruction of the previous block may have changed it
  local watch = true
  for i = 1, #tb do
    local insn = tb[i]
    if watch then
      insn:on_exec(track, insn.vaddr, REGS)
      watch = false
    end
    if changes_fp(insn.disas) then watch = true end
  end
end
qemu.on_translate(translate)

qemu.on_vcpu_init(function(vcpu)
  local c = cpus[vcpu]
  if not c then
    new_cpu(vcpu)
  else -- a new thread on a vCPU index used before: the same traces, a new stack
    c.depth, c.level, c.trace = 0, 0, c.traces[1]
  end
end)

local function flush_all()
  for _, t in ipairs(order) do flush(t) end
  write_metadata()
end

if not system then
  -- a guest thread ends: so do its functions
  qemu.on_vcpu_exit(function(vcpu)
    local c = cpus[vcpu]
    if not c then return end
    exit_stack(c, c.trace, now())
    for _, t in ipairs(c.traces) do flush(t) end
  end)

  -- an execve replaces QEMU without its exit callbacks: write everything first
  local EXECVE = ({ x86_64 = { [59] = true, [322] = true },
                    aarch64 = { [221] = true, [281] = true } })[qemu.info.target]
  qemu.on_syscall(function(vcpu, num)
    if EXECVE[num] then flush_all() end
  end)
end

qemu.on_exit(flush_all)
