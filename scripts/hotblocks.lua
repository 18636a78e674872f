-- hotblocks.lua: the most executed translated blocks, as QEMU 7.2's contrib plugin hotblocks
-- (libhotblocks.so) prints them.
--
-- Arguments:
--   inline=on|off (default off)  on: each block adds to a native counter of its own; off: each
--                                execution adds to a native tally (tb:tally), where the original
--                                takes a lock in a callback. Neither runs Lua at execution time;
--                                both print the same numbers.
--   format=text|json (default text)  json: the same report as one JSON object on one line:
--                                {"report":"hotblocks","entries":N,"rows":[{"pc":"0x%016x",
--                                "tcount":T,"icount":I,"ecount":E}, ...]} (rows as the text's;
--                                counts are numbers, see lua/qemu/json.lua for u64s past 2^53)
--   symbols=on|off (default off)  on: each row ends with the block's name, MODULE!SYMBOL+0xOFF
--                                (or MODULE+0xOFF without a symbol; "?" where nothing is known;
--                                qemu.symbolize, taken when the block is first translated), the
--                                header with ", symbol"; format=json rows get "symbol" (null
--                                where nothing is known). Off keeps the original's output.
--   symfile=PATH                 load a System.map or an ELF file with absolute addresses
--                                (vmlinux) for the names; repeatable; implies symbols=on
--
-- Output, at exit, format=text (byte for byte the original's format):
--   collected N entries in the hash table
--   pc, tcount, icount, ecount
--   0x0000004002818dc8, 1, 2, 1827        <- up to 20 rows, most executed first
-- where an entry is one (start address, instruction count) pair, tcount is how many times such a
-- block was translated, icount its instructions, ecount how many times it ran.
--
-- Differences from QEMU's plugin, on purpose:
--   * Rows with equal ecount are listed by start address, then instruction count, ascending
--     (QEMU lists them in hash-table order, which varies).
--   * Entries are keyed by the pair (pc, icount). QEMU keys its table by pc XOR icount, so two
--     different blocks whose pc ^ icount coincide share one entry: the first one's address and
--     size, with tcount and ecount of both added up. That is common: a block at
--     0x43b828 of 3 instructions and one at 0x43b82f of 4 (both XOR to 0x43b82b) merged in 9 of
--     1034 entries of tests/guests/loop.c. Here they stay apart; the rest is the same.
--   * QEMU stops its listing one entry before the end of the sorted list, so with 20 or fewer
--     entries the least executed one is never printed; here every entry up to 20 is.
--   * ecount is exact with several guest threads in both modes (qlua's native counters are
--     per-vCPU), where the original's inline adds lose counts. When a second guest thread
--     starts, qlua retranslates every block once (see docs/counters.md), which raises tcount.
-- Limit: under LuaJIT guest addresses reach Lua as doubles, exact below 2^53; blocks at higher
-- addresses (a 64-bit kernel's upper half, in system mode) may share entries there. Lua 5.4 is
-- exact.
local qemu = require "qemu"
local report = require "qemu.report"
local json = require "qemu.json"
local symbolize = require "qemu.symbolize"

local args = qemu.script {
  name = "hotblocks",
  description = "the 20 most executed translated blocks (QEMU's contrib hotblocks)",
  args = {
    { name = "inline", type = "bool", default = false,
      help = "count executions with native per-block counters instead of a Lua callback" },
    symbolize.script_args(false)[1], symbolize.script_args(false)[2],
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's report; json: the same as one JSON object on one line" },
  },
}
local named = symbolize.setup(args, false, qemu.symbolize_load)

local LIMIT = 20

local entries = {} -- entries[pc][icount] = { pc, icount, tcount, ecount | counter }
local n_entries = 0

-- Without inline=on, executions are counted natively in one tally keyed by the entry's number
-- (tb:tally: a record per execution, runs of one block merged, no Lua and no lock at execution
-- time); inline=on gives each entry a counter of its own.
local execs = qemu.tally()

qemu.on_translate(function(tb)
  local pc, icount = tb.vaddr, #tb
  local by_size = entries[pc]
  if not by_size then
    by_size = {}
    entries[pc] = by_size
  end
  local entry = by_size[icount]
  if entry then
    entry.tcount = entry.tcount + 1
  else
    entry = { pc = pc, icount = icount, tcount = 1, ecount = 0, id = n_entries + 1 }
    if named then entry.name = symbolize.format(qemu.symbolize(pc)) end
    if args.inline then entry.counter = qemu.counter() end
    by_size[icount] = entry
    n_entries = n_entries + 1
  end
  if args.inline then
    tb:count(entry.counter)
  else
    tb:tally(execs, entry.id)
  end
end)

qemu.on_exit(function()
  local list = {}
  for _, by_size in pairs(entries) do
    for _, entry in pairs(by_size) do
      entry.ecount = entry.counter and entry.counter:sum() or execs:get(entry.id)
      entry.key = { entry.pc, entry.icount }
      list[#list + 1] = entry
    end
  end
  if args.format == "json" then
    local rows = {}
    for i, e in ipairs(report.top(list, LIMIT, "ecount", "key")) do
      local kv = { "pc", json.hex(e.pc, 16), "tcount", e.tcount, "icount", e.icount,
        "ecount", json.u64(e.ecount) }
      if named then kv[#kv + 1], kv[#kv + 2] = "symbol", e.name or json.null end
      rows[i] = json.object(kv)
    end
    qemu.write(json.encode(json.object { "report", "hotblocks", "entries", n_entries,
      "rows", json.array(rows) }) .. "\n")
    return
  end
  local out = { string.format("collected %d entries in the hash table\n", n_entries) }
  if #list > 0 then
    out[#out + 1] = named and "pc, tcount, icount, ecount, symbol\n"
      or "pc, tcount, icount, ecount\n"
    local top = report.top(list, LIMIT, "ecount", "key")
    if named then
      out[#out + 1] = report.rows("0x%s, %d, %d, %s, %s\n", top, function(e)
        return report.hex(e.pc, 16), e.tcount, e.icount, report.dec(e.ecount), e.name or "?"
      end)
    else
      out[#out + 1] = report.rows("0x%s, %d, %d, %s\n", top, function(e)
        return report.hex(e.pc, 16), e.tcount, e.icount, report.dec(e.ecount)
      end)
    end
  end
  qemu.write(table.concat(out))
end)
