-- hotblocks.lua: the most executed translated blocks, as QEMU 7.2's contrib plugin hotblocks
-- (libhotblocks.so) prints them.
--
-- Arguments:
--   inline=on|off (default off)  on: each block adds to a native counter of its own; off: each
--                                execution adds to a native tally (tb:tally), where the original
--                                calls back into C per execution. Neither runs Lua at execution
--                                time; both print the same numbers. On QEMU >= 9 (counters in
--                                QEMU's scoreboards, qemu.counter_mode() "scoreboard") off takes
--                                the counters too: a per-vCPU inline add costs less than any
--                                callback, and there the original's callback takes no lock.
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
local keys = require "qemu.keys"

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

-- An entry is a (pc, icount) pair, numbered by qemu.keys (columns, not a table per entry: a
-- translation-heavy guest has tens of thousands of them); per entry: translations, a name, and
-- its executions in the tally `execs` (inline=on: a native counter per entry).
local blocks = keys.new(2)
local tcounts, names, counters = {}, {}, {}

local execs = qemu.tally()
-- Per-block counters where they are exact per vCPU without a retranslation when a thread starts
-- (QEMU's scoreboards), or when asked for; a tally fed from a C callback otherwise.
local per_block = args.inline or qemu.counter_mode() == "scoreboard"

qemu.on_translate(function(tb)
  local pc = tb.vaddr
  local id, new = blocks:id(pc, #tb)
  if new then
    tcounts[id] = 1
    if named then names[id] = symbolize.format(qemu.symbolize(pc)) end
    if per_block then counters[id] = qemu.counter() end
  else
    tcounts[id] = tcounts[id] + 1
  end
  if per_block then
    tb:count(counters[id])
  else
    tb:tally(execs, id)
  end
end)

qemu.on_exit(function()
  local n = blocks.n
  local pcs, icounts, ids = blocks[1], blocks[2], {}
  local ecounts = per_block and {} or execs:items() -- one copy, not a call per entry
  for id = 1, n do
    ids[id] = id
    if per_block then
      ecounts[id] = counters[id]:sum()
    elseif ecounts[id] == nil then
      ecounts[id] = 0 -- translated, never executed
    end
  end
  -- most executed first; ties by (pc, icount), a key made only for the entries compared on it
  local tie_keys = {}
  local function key(id)
    local k = tie_keys[id]
    if not k then
      k = { pcs[id], icounts[id] }
      tie_keys[id] = k
    end
    return k
  end
  local top = report.top(ids, LIMIT, function(id) return ecounts[id] end, key)
  if args.format == "json" then
    local rows = {}
    for i, id in ipairs(top) do
      local kv = { "pc", json.hex(pcs[id], 16), "tcount", tcounts[id], "icount", icounts[id],
        "ecount", json.u64(ecounts[id]) }
      if named then kv[#kv + 1], kv[#kv + 2] = "symbol", names[id] or json.null end
      rows[i] = json.object(kv)
    end
    qemu.write(json.encode(json.object { "report", "hotblocks", "entries", n,
      "rows", json.array(rows) }) .. "\n")
    return
  end
  local out = { string.format("collected %d entries in the hash table\n", n) }
  if n > 0 then
    out[#out + 1] = named and "pc, tcount, icount, ecount, symbol\n"
      or "pc, tcount, icount, ecount\n"
    if named then
      out[#out + 1] = report.rows("0x%s, %d, %d, %s, %s\n", top, function(id)
        return report.hex(pcs[id], 16), tcounts[id], icounts[id], report.dec(ecounts[id]),
          names[id] or "?"
      end)
    else
      out[#out + 1] = report.rows("0x%s, %d, %d, %s\n", top, function(id)
        return report.hex(pcs[id], 16), tcounts[id], icounts[id], report.dec(ecounts[id])
      end)
    end
  end
  qemu.write(table.concat(out))
end)
