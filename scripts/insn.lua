-- insn.lua: executed instructions, instruction sizes and watched mnemonics; a port of QEMU 7.2's
-- tests/plugin/insn.c (libinsn.so) with the same arguments and output.
--
-- Arguments:
--   inline=on|off  (default off) on: print only the total. off (QEMU's callback mode): print the
--                  count of each vCPU and the total, and report "repeat executions" (below).
--                  Instructions are counted by native counters in both modes.
--   sizes=on|off   (default off) print, instead of the counts, how many instructions of each
--                  length in bytes were *translated* (a static count, as in QEMU: an instruction
--                  translated once and executed a million times counts once).
--   match=PREFIX   report every execution of an instruction whose disassembly starts with
--                  PREFIX (e.g. match=syscall, match=mov). Repeatable, as in QEMU
--                  (match=syscall,match=ret); '|' also separates prefixes (match=syscall|ret).
--   format=text|json (default text; qlua only) json: every line below becomes one JSON object
--                  on one line, with the same numbers:
--                    at exit, the report: {"report":"insn","sizes":[{"bytes":N,"insns":K}, ...]}
--                    (sizes=on), {"report":"insn","insns":N} (inline=on), otherwise
--                    {"report":"insn","cpus":[{"cpu":V,"insns":N}, ...],"total":N};
--                    during the run, events (no "report" field, so the report is the one object
--                    that has one): {"event":"repeat","vcpu":V,"pc":"0x%016x"} and
--                    {"event":"match","vcpu":V,"pc":"0x%016x","disas":S,"hits":H,
--                    "match_hits":M,"delta":D,"avg":A}.
--
-- Output:
--   during the run, callback mode: detected repeat execution @ 0xADDR
--       when a vCPU executes the same instruction twice in a row (e.g. a rep-prefixed string
--       instruction iterating: QEMU runs one iteration per execution, or a jump to itself);
--   during the run, per matched execution:
--       0xADDR, 'DISAS', H hits, M match hits, Δ+D since last match, A avg insns/match
--       H: executions of this translated copy of the instruction (a block translated again, or
--       another block holding the same instruction, starts from 0, as in QEMU); M: executions
--       of any instruction matching this prefix on this vCPU; D: instructions this vCPU executed
--       since its previous match of the prefix (the first: since it started), counting this
--       one; A: the vCPU's mean D for the prefix, rounded down;
--   at exit: sizes=on:  len N bytes: K insns            (ascending N, K > 0)
--            inline=on: insns: N
--            otherwise: cpu V insns: N                  (each vCPU that executed something)
--                       total insns: N
--
-- How it works: every instruction adds to a native per-vCPU counter (no Lua). Repeat detection
-- needs one Lua call per executed block, not per instruction: an instruction can only follow
-- itself across a block boundary, so when a block starts it compares its first address with the
-- instruction that ran last in the vCPU's previous block, found from the counter (how many of that
-- block's instructions ran). That is exact also for blocks left early and for the phantom last
-- instruction QEMU 7.2 lists in some x86 blocks without running it (an instruction reaching into
-- a second page, backed out of the block). Still, a Lua call per block costs: on an
-- instruction-heavy loop, callback mode takes about 4x the time of QEMU's C plugin (which makes a
-- C call per instruction); inline=on runs no Lua unless match= is given. Matched instructions run
-- a Lua callback each time they execute.
--
-- Differences from QEMU's plugin, on purpose:
--   * QEMU prints the repeat address truncated to 32 bits (it passes it through a guint):
--     "@ 0x2819a4c" for an instruction at 0x4002819a4c; here the full address is printed;
--   * QEMU's sizes table loses counts: growing its array clears the slot of the longest length
--     seen so far, so each time a longer instruction first appears the count of the previous
--     longest length restarts from 0 (e.g. "len 12 bytes: 3 insns" where 17 were translated);
--     here every translated instruction counts;
--   * QEMU's inline mode never advances the per-vCPU counts that match lines use, so it prints
--     "Δ+0 since last match, 0 avg insns/match" for every hit; here the real counts;
--   * QEMU keeps 8 per-vCPU slots and folds vCPU index V into slot V % 8 (a 9th guest thread
--     shares "cpu 0" with the main thread); here every vCPU has its own line and statistics;
--   * besides repeating match=, several prefixes may share one value, separated by '|' (so a
--     prefix cannot contain '|');
--   * counts are exact with several vCPUs (QEMU's inline=on adds race).
local qemu = require "qemu"
local json = require "qemu.json"

local args = qemu.script {
  name = "insn",
  description = "executed instructions, instruction sizes, watched mnemonics (QEMU's libinsn.so)",
  args = {
    { name = "inline", type = "bool", default = false,
      help = "print only the total (no per-vCPU counts, no repeat detection)" },
    { name = "sizes", type = "bool", default = false,
      help = "print how many instructions of each length were translated" },
    { name = "match", type = "string", multiple = true,
      help = "report executions of instructions whose disassembly starts with this; repeatable, or '|' between several" },
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's lines; json: each line as one JSON object (qlua only)" },
  },
}

local as_json = args.format == "json"

-- The prefixes of match=, in the order given ('|' separates them; an empty one matches all).
local function split(text, sep)
  local parts, from = {}, 1
  while true do
    local at = string.find(text, sep, from, true)
    if not at then
      parts[#parts + 1] = string.sub(text, from)
      return parts
    end
    parts[#parts + 1] = string.sub(text, from, at - 1)
    from = at + #sep
  end
end

local matches = {}
for _, value in ipairs(args.match) do
  for _, prefix in ipairs(split(value, "|")) do
    matches[#matches + 1] = { prefix = prefix, hits = {}, last = {}, total = {} }
  end
end

local insns = qemu.counter()
local sizes = {} -- translated instructions by length in bytes

-- Callback mode: repeat detection, natively (tb:on_repeat): per vCPU, the block it entered last
-- and its instruction count then; when the next block starts, the difference says how many of
-- that block's instructions ran, hence which one ran last. This also gets blocks left early
-- right, and blocks whose last listed instruction never runs: QEMU 7.2 backs out an x86
-- instruction that reaches into a second page but still lists it in the block. Lua runs only at
-- a repeat.
local function on_repeat(vcpu, pc)
  if as_json then
    qemu.write(json.encode(json.object { "event", "repeat", "vcpu", vcpu,
      "pc", json.hex(pc, 16) }) .. "\n")
  else
    qemu.printf("detected repeat execution @ 0x%x\n", pc)
  end
end

-- A matched instruction about to execute. The counter does not include this execution yet.
local function on_match(vcpu, rec, count)
  local m = rec.match
  rec.hits = rec.hits + 1
  local icount = count + 1
  local hits = (m.hits[vcpu] or 0) + 1
  local delta = icount - (m.last[vcpu] or 0)
  local total = (m.total[vcpu] or 0) + delta
  m.hits[vcpu], m.last[vcpu], m.total[vcpu] = hits, icount, total
  if as_json then
    qemu.write(json.encode(json.object { "event", "match", "vcpu", vcpu,
      "pc", json.hex(rec.vaddr, 16), "disas", rec.disas, "hits", rec.hits, "match_hits", hits,
      "delta", delta, "avg", math.floor(total / hits) }) .. "\n")
    return
  end
  qemu.printf("0x%x, '%s', %d hits, %d match hits, \206\148+%d since last match, %d avg insns/match\n",
    rec.vaddr, rec.disas, rec.hits, hits, delta, math.floor(total / hits))
end

-- inline=on counting alone needs no Lua at translation time: qlua adds the counter to every
-- block. Otherwise each translation lists its instructions (repeat detection, sizes, matches).
local count_only = args.inline and not args.sizes and #matches == 0
if count_only then qemu.count_every("insn", insns) end

local function translate(tb)
  if not args.inline then tb:on_repeat(on_repeat, tb.vaddr, { counter = insns }) end
  for insn in tb:insns() do
    insn:count(insns)
    if args.sizes then
      local size = insn.size
      sizes[size] = (sizes[size] or 0) + 1
    end
    if #matches > 0 then
      local disas = insn.disas
      for _, m in ipairs(matches) do
        if string.sub(disas, 1, #m.prefix) == m.prefix then
          insn:on_exec(on_match, { match = m, vaddr = insn.vaddr, disas = disas, hits = 0 },
            { counter = insns })
        end
      end
    end
  end
end
if not count_only then qemu.on_translate(translate) end

-- The exit report as JSON: the same numbers as the text lines.
local function json_report()
  local kv = { "report", "insn" }
  if args.sizes then
    local lengths, rows = {}, {}
    for size in pairs(sizes) do lengths[#lengths + 1] = size end
    table.sort(lengths)
    for i, size in ipairs(lengths) do
      rows[i] = json.object { "bytes", size, "insns", sizes[size] }
    end
    kv[3], kv[4] = "sizes", json.array(rows)
  elseif args.inline then
    kv[3], kv[4] = "insns", json.u64(insns:sum())
  else
    local per, rows, total = insns:values(), {}, 0
    for vcpu = 0, #per do
      if per[vcpu] ~= 0 then
        rows[#rows + 1] = json.object { "cpu", vcpu, "insns", json.u64(per[vcpu]) }
        total = total + per[vcpu]
      end
    end
    kv[3], kv[4], kv[5], kv[6] = "cpus", json.array(rows), "total", json.u64(total)
  end
  return json.encode(json.object(kv)) .. "\n"
end

qemu.on_exit(function()
  if as_json then
    qemu.write(json_report())
    return
  end
  local out = {}
  if args.sizes then
    local lengths = {}
    for size in pairs(sizes) do lengths[#lengths + 1] = size end
    table.sort(lengths)
    for _, size in ipairs(lengths) do
      out[#out + 1] = string.format("len %d bytes: %d insns\n", size, sizes[size])
    end
  elseif args.inline then
    out[1] = string.format("insns: %d\n", insns:sum())
  else
    local per = insns:values()
    local total = 0
    for vcpu = 0, #per do
      if per[vcpu] ~= 0 then
        out[#out + 1] = string.format("cpu %d insns: %d\n", vcpu, per[vcpu])
        total = total + per[vcpu]
      end
    end
    out[#out + 1] = string.format("total insns: %d\n", total)
  end
  qemu.write(table.concat(out))
end)
