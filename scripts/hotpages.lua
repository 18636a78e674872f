-- hotpages.lua: the pages that saw the most memory accesses, as QEMU 7.2's contrib plugin hotpages
-- (libhotpages.so) prints them.
--
-- Arguments:
--   sortby=reads|writes|address  order of the rows (default: reads + writes, most first);
--                                address: highest address first, as QEMU does
--   io=on|off (default off)      off: count every access that is not to an I/O region, by page
--                                of its physical address in system mode (its virtual address in
--                                user mode); on: count only accesses to I/O regions (system mode;
--                                user mode has none), by page of their virtual address
--   pagesize=N (default 4096)    the page size, a power of two
--   format=text|json (default text)  json: the same rows as one JSON object on one line:
--                                {"report":"hotpages","rows":[{"addr":"0x%016x","rcpus":M,
--                                "reads":R,"wcpus":M,"writes":W}, ...]} (masks and counts are
--                                numbers, see lua/qemu/json.lua for u64s past 2^53)
--
-- Output, at exit, format=text (byte for byte the original's format), up to 50 rows:
--   Addr, RCPUs, Reads, WCPUs, Writes
--   0x000000400280a000, 0x0001, 7743, 0x0001, 6490
-- RCPUs/WCPUs are masks of the vCPUs (user mode: guest threads) that read/wrote the page.
--
-- Execution-time work: none in Lua, and none at translation either. Each access adds to a native
-- tally keyed by its page (qemu.count_every("mem", tally, ...)), which also notes the vCPU; runs
-- of accesses to one page cost one record.
--
-- Differences from QEMU's plugin, on purpose:
--   * Rows with equal counts are listed by page address, ascending (QEMU: hash-table order).
--   * QEMU prints no row at all when only one page was touched, and otherwise stops one row before
--     the end of the sorted list, so with 50 pages or fewer the last one is missing; here every
--     page up to 50 is printed.
--   * pagesize must be a power of two (QEMU silently masks with pagesize - 1 whatever it is).
--   * A vCPU mask has one bit per vCPU index up to 52 (QEMU's `1 << cpu_index` in an int is
--     undefined from index 31 on); higher indices set no bit.
--   * Counts are exact with several guest threads (the callbacks are serialized), like QEMU's.
-- Limit: under LuaJIT guest addresses reach Lua as doubles, exact below 2^53; with io=on in system
-- mode, virtual addresses above that (a 64-bit kernel's upper half) lose their low bits. Lua 5.4
-- is exact.
local qemu = require "qemu"
local report = require "qemu.report"
local json = require "qemu.json"

local args = qemu.script {
  name = "hotpages",
  description = "the 50 pages with the most memory accesses (QEMU's contrib hotpages)",
  args = {
    { name = "sortby", type = "enum", values = { "reads", "writes", "address" },
      help = "sort by reads, writes or address (default: reads + writes)" },
    { name = "io", type = "bool", default = false, help = "count only accesses to I/O regions" },
    { name = "pagesize", type = "int", default = 4096, min = 1, help = "page size in bytes" },
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's report; json: the same as one JSON object on one line" },
  },
}

local LIMIT = 50
local pagesize = args.pagesize
do
  local p = 1
  while p < pagesize do p = p * 2 end
  if p ~= pagesize then
    error(string.format("hotpages.lua: pagesize=%s: expected a power of two", pagesize), 0)
  end
end

-- Counted natively: each access adds to a tally keyed by its page, noting the vCPU (no Lua at
-- execution time); the report puts reads, writes and the vCPU masks together at exit.
local reads, writes = qemu.tally(), qemu.tally()

local opts -- what insn:tally_mem counts, nil: nothing
if not qemu.info.system then
  -- User mode: no physical addresses and no I/O regions.
  if not args.io then opts = {} end
elseif args.io then
  opts = { io = "only" } -- I/O accesses only, by virtual address
else
  opts = { phys = true } -- RAM by physical address, I/O by virtual address
end

if opts then -- on every instruction of every block, with no Lua at translation time either
  qemu.count_every("mem", reads, { rw = "r", align = pagesize, phys = opts.phys, io = opts.io })
  qemu.count_every("mem", writes, { rw = "w", align = pagesize, phys = opts.phys, io = opts.io })
end

-- page address -> { addr, reads, writes, rcpus, wcpus }
local function collect()
  local pages = {}
  local function page(addr)
    local p = pages[addr]
    if not p then
      p = { addr = addr, reads = 0, writes = 0, rcpus = 0, wcpus = 0 }
      pages[addr] = p
    end
    return p
  end
  local rmask, wmask = reads:vcpus(), writes:vcpus()
  for addr, n in pairs(reads:items()) do
    local p = page(addr)
    p.reads, p.rcpus = n, rmask[addr]
  end
  for addr, n in pairs(writes:items()) do
    local p = page(addr)
    p.writes, p.wcpus = n, wmask[addr]
  end
  return pages
end

local ORDER = {
  reads = function(p) return p.reads end,
  writes = function(p) return p.writes end,
}

qemu.on_exit(function()
  local list = report.values(collect())
  local top
  if args.sortby == "address" then
    top = report.sort_by(list, "addr", true)
  else
    local count = ORDER[args.sortby] or function(p) return p.reads + p.writes end
    top = report.rank(list, count, "addr")
  end
  if args.format == "json" then
    local rows = {}
    for i = 1, math.min(LIMIT, #top) do
      local p = top[i]
      rows[i] = json.object { "addr", json.hex(p.addr, 16), "rcpus", json.u64(p.rcpus),
        "reads", json.u64(p.reads), "wcpus", json.u64(p.wcpus), "writes", json.u64(p.writes) }
    end
    qemu.write(json.encode(json.object { "report", "hotpages", "rows", json.array(rows) }) .. "\n")
    return
  end
  qemu.write("Addr, RCPUs, Reads, WCPUs, Writes\n" ..
    report.rows("0x%s, 0x%s, %s, 0x%s, %s\n", top, function(p)
      return report.hex(p.addr, 16), report.hex(p.rcpus, 4), report.dec(p.reads),
        report.hex(p.wcpus, 4), report.dec(p.writes)
    end, LIMIT))
end)
