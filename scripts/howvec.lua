-- howvec.lua: how vectorised is this code? Counts executed instructions by class, as QEMU 7.2's
-- contrib plugin howvec (libhowvec.so) does.
--
-- Arguments:
--   inline=on|off (default off)  accepted for the original's sake (its inline adds against its
--                                callback per instruction); here both count with native
--                                counters, no Lua at execution time, and print the same numbers.
--   verbose=on|off (default off) also list classes that counted nothing
--   count=CLASS (repeatable)     count CLASS's instructions one by one (listed under "Individual
--                                Instructions"); count=!CLASS: do not count CLASS at all. CLASS is
--                                a short name from the table of the guest's architecture (below).
--   format=text|json (default text)  json: the same report as one JSON object on one line:
--                                {"report":"howvec","classes":[{"name":S,"opt":S,"counted":
--                                "class"|"individually"|"not counted"[,"hits":N]}, ...],
--                                "instructions":[{"disas":S,"hits":N,"op":"0x%08x","class":S},
--                                ...]} (the lines the text lists, in its order; names unpadded)
--
-- Output, at exit, format=text (byte for byte the original's format):
--   Instruction Classes:
--   Class: Integer ALU             	(18270 hits)
--   Class: Nop/Hint                	counted individually
--   Individual Instructions:
--   Instr: nop                     	(8 hits)	(op=0x00000090/Nop/Hint)
-- Classes come in table order; a counted class is listed only if it counted something (unless
-- verbose=on). Individual instructions: up to 50, most executed first.
--
-- Class tables, chosen by the guest architecture (qemu.info.target):
--   aarch64    QEMU's table, entry for entry (names, short names, masks, default counting: UDEF
--              and NOP not counted), matched on the 32-bit instruction word.
--   sparc, sparc64  QEMU's tables, matched on the big-endian instruction word.
--   x86_64, i386    qlua's own classes (lua/qemu/x86class.lua; short names alu, muldiv, mov,
--              ldst, stack, string, atomic, cndb, branch, callret, sys, nop, x87, fpscalar, simd,
--              unclas), decoded from the instruction bytes: prefixes, REX/VEX/EVEX/XOP, opcode
--              maps, ModRM.
--   others     one class, Unclassified, counted individually (as QEMU).
--
-- Differences from QEMU's plugin, on purpose:
--   * x86: QEMU has no x86 table, so every x86 instruction is "Unclassified" and counted
--     individually, keyed by its first four bytes. qlua classifies x86 instructions for real (the
--     classes above, all counted by default, so the class hits add up to the instructions
--     executed); count=CLASS still gives the per-instruction listing.
--   * Individually counted instructions are told apart by all their bytes, not by their first four
--     (QEMU merges different x86 instructions that share a 4-byte prefix, and reads past the end of
--     shorter ones); op= shows the first four bytes, zero-padded past the end of the instruction.
--   * sparc: QEMU reads the instruction word in host byte order (little-endian on x86 hosts), so
--     its masks, written for the big-endian instruction word, match the wrong bits there (it
--     calls `mov 1, %g1` SetHi); qlua reads the word big-endian.
--   * Counts are exact with several guest threads in both modes; QEMU's callbacks and inline adds
--     increment shared counters unsynchronised and lose some (seen with 8 aarch64 threads).
--   * Rows with equal hits are listed by op, then by all the bytes (QEMU: hash-table order). QEMU
--     prints no individual instruction when only one was counted, and stops one row before the end
--     of the sorted list; here every one up to 50 is printed.
--   * count= with an unknown class is an error listing the accepted ones (QEMU ignores it).
local qemu = require "qemu"
local report = require "qemu.report"
local json = require "qemu.json"

local args = qemu.script {
  name = "howvec",
  description = "executed instructions by class (QEMU's contrib howvec)",
  args = {
    { name = "inline", type = "bool", default = false,
      help = "the original's inline adds; qlua counts natively either way (same numbers)" },
    { name = "verbose", type = "bool", default = false,
      help = "list classes that counted nothing" },
    { name = "count", type = "string", multiple = true,
      help = "CLASS: count its instructions individually; !CLASS: not at all" },
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's report; json: the same as one JSON object on one line" },
  },
}

local LIMIT = 50
local CLASS, INDIVIDUAL, NONE = "class", "individual", "none"

-- Bitwise and of an instruction word and a class mask, the same in both Luas.
local band = require("qemu.u64").band32

-- { name, opt, mask, pattern, what }: QEMU 7.2's tables, order significant (first match wins).
local AARCH64 = {
  { "  UDEF", "udef", 0xffff0000, 0x00000000, NONE },
  { "  SVE", "sve", 0x1e000000, 0x04000000, CLASS },
  { "Reserved", "res", 0x1e000000, 0x00000000, CLASS },
  { "  PCrel addr", "pcrel", 0x1f000000, 0x10000000, CLASS },
  { "  Add/Sub (imm,tags)", "asit", 0x1f800000, 0x11800000, CLASS },
  { "  Add/Sub (imm)", "asi", 0x1f000000, 0x11000000, CLASS },
  { "  Logical (imm)", "logi", 0x1f800000, 0x12000000, CLASS },
  { "  Move Wide (imm)", "movwi", 0x1f800000, 0x12800000, CLASS },
  { "  Bitfield", "bitf", 0x1f800000, 0x13000000, CLASS },
  { "  Extract", "extr", 0x1f800000, 0x13800000, CLASS },
  { "Data Proc Imm", "dpri", 0x1c000000, 0x10000000, CLASS },
  { "  Cond Branch (imm)", "cndb", 0xfe000000, 0x54000000, CLASS },
  { "  Exception Gen", "excp", 0xff000000, 0xd4000000, CLASS },
  { "    NOP", "nop", 0xffffffff, 0xd503201f, NONE },
  { "  Hints", "hint", 0xfffff000, 0xd5032000, CLASS },
  { "  Barriers", "barr", 0xfffff000, 0xd5033000, CLASS },
  { "  PSTATE", "psta", 0xfff8f000, 0xd5004000, CLASS },
  { "  System Insn", "sins", 0xffd80000, 0xd5080000, CLASS },
  { "  System Reg", "sreg", 0xffd00000, 0xd5100000, CLASS },
  { "  Branch (reg)", "breg", 0xfe000000, 0xd6000000, CLASS },
  { "  Branch (imm)", "bimm", 0x7c000000, 0x14000000, CLASS },
  { "  Cmp & Branch", "cmpb", 0x7e000000, 0x34000000, CLASS },
  { "  Tst & Branch", "tstb", 0x7e000000, 0x36000000, CLASS },
  { "Branches", "branch", 0x1c000000, 0x14000000, CLASS },
  { "  AdvSimd ldstmult", "advlsm", 0xbfbf0000, 0x0c000000, CLASS },
  { "  AdvSimd ldstmult++", "advlsmp", 0xbfb00000, 0x0c800000, CLASS },
  { "  AdvSimd ldst", "advlss", 0xbf9f0000, 0x0d000000, CLASS },
  { "  AdvSimd ldst++", "advlssp", 0xbf800000, 0x0d800000, CLASS },
  { "  ldst excl", "ldstx", 0x3f000000, 0x08000000, CLASS },
  { "    Prefetch", "prfm", 0xff000000, 0xd8000000, CLASS },
  { "  Load Reg (lit)", "ldlit", 0x1b000000, 0x18000000, CLASS },
  { "  ldst noalloc pair", "ldstnap", 0x3b800000, 0x28000000, CLASS },
  { "  ldst pair", "ldstp", 0x38000000, 0x28000000, CLASS },
  { "  ldst reg", "ldstr", 0x3b200000, 0x38000000, CLASS },
  { "  Atomic ldst", "atomic", 0x3b200c00, 0x38200000, CLASS },
  { "  ldst reg (reg off)", "ldstro", 0x3b200b00, 0x38200800, CLASS },
  { "  ldst reg (pac)", "ldstpa", 0x3b200200, 0x38200800, CLASS },
  { "  ldst reg (imm)", "ldsti", 0x3b000000, 0x39000000, CLASS },
  { "Loads & Stores", "ldst", 0x0a000000, 0x08000000, CLASS },
  { "Data Proc Reg", "dprr", 0x0e000000, 0x0a000000, CLASS },
  { "Scalar FP ", "fpsimd", 0x0e000000, 0x0e000000, CLASS },
  { "Unclassified", "unclas", 0x00000000, 0x00000000, CLASS },
}

local SPARC32 = {
  { "Call", "call", 0xc0000000, 0x40000000, CLASS },
  { "Branch ICond", "bcc", 0xc1c00000, 0x00800000, CLASS },
  { "Branch Fcond", "fbcc", 0xc1c00000, 0x01800000, CLASS },
  { "SetHi", "sethi", 0xc1c00000, 0x01000000, CLASS },
  { "FPU ALU", "fpu", 0xc1f00000, 0x81a00000, CLASS },
  { "ALU", "alu", 0xc0000000, 0x80000000, CLASS },
  { "Load/Store", "ldst", 0xc0000000, 0xc0000000, CLASS },
  { "Unclassified", "unclas", 0x00000000, 0x00000000, INDIVIDUAL },
}

local SPARC64 = {
  { "SetHi & Branches", "op0", 0xc0000000, 0x00000000, CLASS },
  { "Call", "op1", 0xc0000000, 0x40000000, CLASS },
  { "Arith/Logical/Move", "op2", 0xc0000000, 0x80000000, CLASS },
  { "Arith/Logical/Move", "op3", 0xc0000000, 0xc0000000, CLASS },
  { "Unclassified", "unclas", 0x00000000, 0x00000000, INDIVIDUAL },
}

local DEFAULT = {
  { "Unclassified", "unclas", 0x00000000, 0x00000000, INDIVIDUAL },
}

-- The classes of this run, in report order: { name, opt, what, mask, pattern, count | counter }.
local target = qemu.info.target
local x86bits = (target == "x86_64" and 64) or (target == "i386" and 32) or nil
local big_endian = target == "sparc" or target == "sparc64"

local classes, by_opt = {}, {}
local function add_class(name, opt, what, mask, pattern)
  local c = { name = name, opt = opt, what = what, mask = mask, pattern = pattern }
  classes[#classes + 1] = c
  by_opt[opt] = by_opt[opt] or c -- count= picks the first class of that short name, as QEMU
  return c
end

local x86class = x86bits and require "qemu.x86class"
if x86bits then
  for _, c in ipairs(x86class.CLASSES) do add_class(c.name, c.opt, CLASS) end
else
  local tables = { aarch64 = AARCH64, sparc = SPARC32, sparc64 = SPARC64 }
  for _, row in ipairs(tables[target] or DEFAULT) do
    add_class(row[1], row[2], row[5], row[3], row[4])
  end
end

-- count=CLASS / count=!CLASS, in the order given (a later one overrides an earlier one)
for _, item in ipairs(args.count) do
  local what, opt = INDIVIDUAL, item
  if opt:sub(1, 1) == "!" then what, opt = NONE, opt:sub(2) end
  local c = by_opt[opt]
  if not c then
    local names = {}
    for _, k in ipairs(classes) do names[#names + 1] = k.opt end
    error(string.format("howvec.lua: count=%s: unknown class '%s' for %s; classes: %s",
      item, opt, target, table.concat(names, ", ")), 0)
  end
  c.what = what
end

-- The instruction word QEMU's tables match: the first four bytes, zero-padded.
local function word_of(bytes)
  local b1, b2, b3, b4 = bytes:byte(1, 4)
  b1, b2, b3, b4 = b1 or 0, b2 or 0, b3 or 0, b4 or 0
  if big_endian then return ((b1 * 256 + b2) * 256 + b3) * 256 + b4 end
  return ((b4 * 256 + b3) * 256 + b2) * 256 + b1
end

local function class_of(bytes)
  if x86bits then
    return by_opt[x86class.classify(bytes, x86bits)]
  end
  local word = word_of(bytes)
  for _, c in ipairs(classes) do
    if band(word, c.mask) == c.pattern then return c end
  end
end

local individuals, n_individuals = {}, 0 -- bytes -> { bytes, op, disas, class, count|counter }

local class_cache = {} -- bytes -> class: translation meets the same instructions again and again

-- Where an instruction's executions are counted: its class, its own record, or nowhere (nil).
local function counted_in(insn)
  local bytes = insn.bytes
  local c = class_cache[bytes]
  if c == nil then
    c = class_of(bytes)
    class_cache[bytes] = c
  end
  if c.what == CLASS then return c end
  if c.what == NONE then return nil end
  local rec = individuals[bytes]
  if not rec then
    rec = { bytes = bytes, op = word_of(bytes), disas = insn.disas, class = c }
    rec.key = { rec.op, bytes }
    individuals[bytes] = rec
    n_individuals = n_individuals + 1
  end
  return rec
end

-- Counted natively in both modes: QEMU's plugin adds in a callback without inline=on, but what
-- it counts is the same, and a native add per execution is the cheapest way to count it.
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    local rec = counted_in(insn)
    if rec then
      rec.counter = rec.counter or qemu.counter()
      insn:count(rec.counter)
    end
  end
end)

local function hits(rec)
  return rec.counter and rec.counter:sum() or 0
end

-- The report as JSON: the same classes and instructions as the text, in its order.
local function json_report()
  local cls = {}
  for _, c in ipairs(classes) do
    if c.what == CLASS then
      local n = hits(c)
      if n ~= 0 or args.verbose then
        cls[#cls + 1] = json.object { "name", c.name, "opt", c.opt, "counted", "class",
          "hits", json.u64(n) }
      end
    else
      cls[#cls + 1] = json.object { "name", c.name, "opt", c.opt,
        "counted", c.what == INDIVIDUAL and "individually" or "not counted" }
    end
  end
  local instrs = {}
  local list = report.values(individuals)
  for _, rec in ipairs(list) do rec.hits = hits(rec) end
  for i, rec in ipairs(report.top(list, LIMIT, "hits", "key")) do
    instrs[i] = json.object { "disas", rec.disas, "hits", json.u64(rec.hits),
      "op", json.hex(rec.op, 8), "class", rec.class.name }
  end
  return json.encode(json.object { "report", "howvec", "target", target,
    "classes", json.array(cls), "instructions", json.array(instrs) }) .. "\n"
end

qemu.on_exit(function()
  if args.format == "json" then
    qemu.write(json_report())
    return
  end
  local out = { "Instruction Classes:\n" }
  for _, c in ipairs(classes) do
    if c.what == CLASS then
      local n = hits(c)
      if n ~= 0 or args.verbose then
        out[#out + 1] = string.format("Class: %-24s\t(%s hits)\n", c.name, report.dec(n))
      end
    elseif c.what == INDIVIDUAL then
      out[#out + 1] = string.format("Class: %-24s\tcounted individually\n", c.name)
    else
      out[#out + 1] = string.format("Class: %-24s\tnot counted\n", c.name)
    end
  end
  if n_individuals > 0 then
    out[#out + 1] = "Individual Instructions:\n"
    local list = report.values(individuals)
    for _, rec in ipairs(list) do rec.hits = hits(rec) end
    out[#out + 1] = report.rows("Instr: %-24s\t(%s hits)\t(op=0x%s/%s)\n",
      report.top(list, LIMIT, "hits", "key"), function(rec)
        return rec.disas, report.dec(rec.hits), report.hex(rec.op, 8), rec.class.name
      end)
  end
  qemu.write(table.concat(out))
end)
