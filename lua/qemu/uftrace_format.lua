-- qemu.uftrace_format: the files of a uftrace.data folder, as QEMU 10.2's uftrace plugin writes
-- them for uftrace (https://github.com/namhyung/uftrace) to read, for scripts/uftrace.lua. Pure
-- Lua, no QEMU (see spec/uftrace_format_spec.lua):
--   info         a 40-byte binary header, then "key:value" text lines (most of them left empty)
--   task.txt     one SESS and one TASK line per trace
--   sid-0.map    the address space: in user mode a copy of /proc/self/maps, in system mode a
--                stack line at the top of the 48-bit space and nothing else
--   TID.dat      16-byte records, little-endian: u64 timestamp in ns, u64 word holding the
--                record's kind (2 bits), uftrace's magic 5 (3 bits, from bit 3), the call depth
--                (10 bits, from bit 6) and the function's address (48 bits, from bit 16)
--   NAME.sym     "ADDR SIZE T NAME" lines, 12 hex digits each (as QEMU's uftrace_symbols.py
--                writes them for system-mode guests)
--
-- Numbers: addresses and timestamps are Lua numbers. Every 64-bit value is put together from two
-- 32-bit halves computed with float arithmetic, which is exact for the values given (LuaJIT:
-- doubles below 2^53; Lua 5.4: integers, negative for 2^63 and up, whose floor division and
-- modulo still give the right bits), so both Luas write the same bytes. Timestamps are kept as
-- nanoseconds since a base (a double stays exact for 104 days) and the base is added when the
-- records are encoded: nanoseconds since 1970 need 61 bits.

local M = {}

local floor, char, format = math.floor, string.char, string.format
local concat = table.concat
local pack = string.pack -- Lua 5.3+; nil in LuaJIT

local TWO16, TWO32 = 65536, 4294967296

--- The record kinds (the low two bits of a record's second word).
M.ENTRY, M.EXIT, M.LOST, M.EVENT = 0, 1, 2, 3

--- The bytes of a record: 16.
M.RECORD_SIZE = 16

-- The low `n` bytes of `v` (0 <= v < 2^(8n)), little-endian.
local function le(v, n)
  local out = {}
  for i = 1, n do
    local b = v % 256
    out[i] = b
    v = (v - b) / 256
  end
  return char((table.unpack or unpack)(out))
end

--- The info file's binary header (40 bytes): magic "Ftrace!\0", file format version 4, header
-- size 40, endian 1 (little), ELF class 2 (64-bit), the feature mask 0x1263 and the info mask
-- 0x7bff QEMU's plugin declares, max_stack 1024, and 6 unused bytes.
M.HEADER = "Ftrace!\0" .. le(4, 4) .. le(40, 2) .. le(1, 1) .. le(2, 1) .. le(0x1263, 8)
  .. le(0x7bff, 8) .. le(1024, 2) .. le(0, 6)

--- The info file for the traces `ids` (a list of trace ids, in the order of task.txt): the
-- header, then the text section with only the task list filled in (the other values, which
-- uftrace record would measure on the host, stay empty as in QEMU's plugin).
function M.info(ids)
  local tids = {}
  for i, id in ipairs(ids) do tids[i] = format("%d", id) end
  local lines = {
    "exename:",
    "build_id:" .. string.rep("0", 40),
    "exit_status:",
    "cmdline:",
    "cpuinfo:lines=2",
    "cpuinfo:nr_cpus=",
    "cpuinfo:desc=",
    "meminfo:",
    "osinfo:lines=3",
    "osinfo:kernel=",
    "osinfo:hostname=",
    "osinfo:distro=",
    "taskinfo:lines=2",
    format("taskinfo:nr_tid=%d", #ids),
    "taskinfo:tids=" .. concat(tids, ","),
    "usageinfo:lines=6",
    "usageinfo:systime=",
    "usageinfo:usrtime=",
    "usageinfo:ctxsw=",
    "usageinfo:maxrss=",
    "usageinfo:pagefault=",
    "usageinfo:iops=",
    "loadinfo:",
    "record_date:",
    "elapsed_time:",
    "pattern_type:regex",
    "uftrace_version:",
    "utc_offset:",
  }
  return M.HEADER .. concat(lines, "\n") .. "\n"
end

--- task.txt for `traces` (a list of { id = n, name = "cpu0" }): each trace is a session and a
-- task of its own, pid = tid = id, with the trace's name as the session's program name.
function M.task(traces)
  local out = {}
  for _, t in ipairs(traces) do
    out[#out + 1] = format('SESS timestamp=0.0 pid=%d sid=0 exename="%s"\n', t.id, t.name)
    out[#out + 1] = format("TASK timestamp=0.0 tid=%d pid=%d\n", t.id, t.id)
  end
  return concat(out)
end

--- sid-0.map in system mode: no mapping but a stack at the highest 48-bit address, so uftrace
-- takes no address for a kernel one.
M.SYSTEM_MAP = "# map stack on highest address possible, to prevent uftrace\n"
  .. "# from considering any kernel address\n"
  .. "ffffffffffff-ffffffffffff rw-p 00000000 00:00 0 [stack]\n"

--- The two 32-bit halves (lo, hi) of a record's second word for a record of `kind` at call depth
-- `depth` for the function at `pc`: kind + (5 << 3) + (depth << 6) + (pc << 16) modulo 2^64,
-- as QEMU's plugin adds them (a depth of 1024 or more carries into the address bits, an
-- address above 48 bits loses its top 16).
function M.word_halves(kind, depth, pc)
  local pc_lo = pc % TWO16
  local lo = kind + 40 + depth * 64 + pc_lo * TWO16
  local carry = floor(lo / TWO32)
  lo = lo - carry * TWO32
  local hi = (floor(pc / TWO16) + carry) % TWO32
  return lo, hi
end

--- The halves (lo, hi) of the timestamp sec * 10^9 + nsec, for a base of whole seconds since
-- 1970 (below 2^31) and nanoseconds (below 2^30). 10^9 = 1953125 * 2^9: the first product is
-- exact in a double, and the shift by 9 splits across the halves at bit 23.
function M.time_base(sec, nsec)
  local x = sec * 1953125
  local x_lo = x % 8388608
  local lo = x_lo * 512 + nsec
  local hi = (x - x_lo) / 8388608
  local carry = floor(lo / TWO32)
  return lo - carry * TWO32, (hi + carry) % TWO32
end

--- The halves of base + rel, for a base from time_base and rel >= 0 nanoseconds (below 2^53).
function M.time_halves(base_lo, base_hi, rel)
  local lo = base_lo + rel
  local carry = floor(lo / TWO32)
  return lo - carry * TWO32, (base_hi + carry) % TWO32
end

--- One record as its 16 bytes (the portable form; buffers below encode many at once).
function M.record(base_lo, base_hi, rel, kind, depth, pc)
  local tlo, thi = M.time_halves(base_lo, base_hi, rel)
  local wlo, whi = M.word_halves(kind, depth, pc)
  return le(tlo, 4) .. le(thi, 4) .. le(wlo, 4) .. le(whi, 4)
end

-- ---- record buffers ----
-- A buffer holds up to `capacity` records (relative timestamp, kind, depth, address) until they
-- are encoded at a flush: buf:add(rel, kind, depth, pc) returns true once the buffer is full;
-- buf:encode(base_lo, base_hi) returns the records' bytes; buf:clear() empties it; buf.n counts.
-- Under LuaJIT the records live in FFI arrays (no table growth, nothing for the GC to walk) and
-- are encoded into one native buffer; under Lua 5.4 in tables, encoded with string.pack.

local native = require "qemu.native"
local ffi = native.ffi

-- The encoded records of one flush: shared by every buffer, since flushes run one at a time (under
-- qlua's lock) and the bytes are copied into a Lua string at once.
local scratch, scratch_records = nil, 0

local function ffi_buffer(capacity)
  local cells = ffi.new("double[?]", 4 * capacity)
  if scratch_records < capacity then
    scratch, scratch_records = ffi.new("uint32_t[?]", 4 * capacity), capacity
  end
  local buf = { n = 0, capacity = capacity }

  function buf:add(rel, kind, depth, pc)
    local n = self.n
    local i = 4 * n
    cells[i], cells[i + 1], cells[i + 2], cells[i + 3] = rel, kind, depth, pc
    n = n + 1
    self.n = n
    return n >= capacity
  end

  function buf:encode(base_lo, base_hi)
    local word_halves, time_halves = M.word_halves, M.time_halves
    local out = scratch
    for i = 0, 4 * self.n - 1, 4 do
      out[i], out[i + 1] = time_halves(base_lo, base_hi, cells[i])
      out[i + 2], out[i + 3] = word_halves(cells[i + 1], cells[i + 2], cells[i + 3])
    end
    return ffi.string(out, 16 * self.n)
  end

  function buf:clear() self.n = 0 end

  return buf
end

local function table_buffer(capacity)
  local cells = {}
  local buf = { n = 0, capacity = capacity }

  function buf:add(rel, kind, depth, pc)
    local n = self.n
    local i = 4 * n
    cells[i + 1], cells[i + 2], cells[i + 3], cells[i + 4] = rel, kind, depth, pc
    n = n + 1
    self.n = n
    return n >= capacity
  end

  function buf:encode(base_lo, base_hi)
    local word_halves, time_halves = M.word_halves, M.time_halves
    local out = {}
    for r = 1, self.n do
      local i = 4 * (r - 1)
      local tlo, thi = time_halves(base_lo, base_hi, cells[i + 1])
      local wlo, whi = word_halves(cells[i + 2], cells[i + 3], cells[i + 4])
      if pack then
        out[r] = pack("<I4I4I4I4", floor(tlo), floor(thi), floor(wlo), floor(whi))
      else
        out[r] = le(tlo, 4) .. le(thi, 4) .. le(wlo, 4) .. le(whi, 4)
      end
    end
    return concat(out)
  end

  function buf:clear() self.n = 0 end

  return buf
end

--- A record buffer for `capacity` records (FFI arrays on a little-endian LuaJIT host, tables
-- elsewhere; `portable = true` forces the tables, for the specs).
function M.buffer(capacity, portable)
  assert(type(capacity) == "number" and capacity >= 1, "uftrace_format.buffer: capacity >= 1")
  if ffi and ffi.abi("le") and not portable then return ffi_buffer(capacity) end
  return table_buffer(capacity)
end

-- ---- symbols ----

--- A .sym file for `symbols` (a list of { addr, size, name }, sorted by address): each line
-- "ADDR SIZE T NAME" with ADDR (clamped to 48 bits, as uftrace's records hold addresses) and SIZE
-- in 12 hex digits; with `prefix`, names are written "prefix:name".
function M.symbols(symbols, prefix)
  local out = {}
  for i, s in ipairs(symbols) do
    local addr = s.addr % 281474976710656
    out[i] = format("%06x%06x %06x%06x T %s%s\n", floor(addr / 16777216), addr % 16777216,
      floor(s.size / 16777216), s.size % 16777216, prefix and (prefix .. ":") or "", s.name)
  end
  return concat(out)
end

return M
