-- cache.lua: simulates L1 instruction and data caches (and optionally a unified L2) per core, fed
-- by every instruction fetch and every data access, like QEMU's contrib/plugins/cache.c (libcache).
--
-- Arguments (QEMU's names and defaults):
--   dcachesize=16384 dblksize=64 dassoc=8   L1 data cache: bytes, block bytes, ways
--   icachesize=16384 iblksize=64 iassoc=8   L1 instruction cache
--   l2=on|off                                 simulate a unified L2 behind both L1s (default off)
--   l2cachesize=2097152 l2blksize=64 l2assoc=16   L2 geometry; giving any of them turns L2 on
--   evict=lru|fifo|rand                       eviction policy of every cache (default lru)
--   limit=32                                  rows in each top-N table
--   cores=N                                   simulated cores, vCPU i uses core i % N (default:
--                                             user mode 1, system mode the -smp vCPUs)
--   seed=1                                    (qlua only) seed of evict=rand's generator
--   symbols=on|off                            (qlua only) on: the symbol in parentheses is the
--                                             instruction's MODULE!SYMBOL+0xOFF (MODULE+0xOFF
--                                             without a symbol; qemu.symbolize: shared libraries
--                                             too) instead of QEMU's bare symbol; default off
--   symfile=PATH                              (qlua only) load a System.map or an ELF file with
--                                             absolute addresses (vmlinux) for the names;
--                                             repeatable; implies symbols=on
--   format=text|json                          (qlua only) json: the same report as one JSON
--                                             object on one line (below); default text
--
-- Output, at exit, byte for byte in QEMU's format:
--   core #, data accesses, data misses, dmiss rate, insn accesses, insn misses, imiss rate[, l2 ...]
--   0       35910          1681            4.6811%  106362         1031            0.9693%
--   (a "sum" row when cores > 1, then an empty line)
--   address, data misses, instruction          top `limit` instructions by L1 data misses
--   0x4000a1b2c3 (symbol), 12, movq (%rax), %rbx
--   (then "address, fetch misses, instruction" and, with L2, "address, L2 misses, instruction",
--   each after an empty line)
-- format=json: {"report":"cache","cores":[{"core":0,"data_accesses":N,"data_misses":N,
--   "dmiss_rate":R,"insn_accesses":N,"insn_misses":N,"imiss_rate":R[,"l2_accesses":N,
--   "l2_misses":N,"l2_miss_rate":R]}, ...],"sum":{...same fields, no "core"}|null,
--   "data_misses":[{"addr":"0x%016x","symbol":S|null,"misses":N,"disas":S}, ...],
--   "fetch_misses":[...],"l2_misses":[...]|null}: the same rows as the text, rates as full
--   doubles (the text rounds them to 4 decimals), "sum" only when cores > 1.
-- Instruction fetches are simulated at the instruction's address (system mode: its host
-- address, as QEMU does); data accesses at the virtual address (system mode: the physical
-- address; I/O accesses are not simulated). An instruction translated again keeps its first
-- record (disassembly, symbol, miss counts).
--
-- Differences from QEMU's plugin, on purpose:
--   * Ranked tables break ties by address (ascending); QEMU's order among equal counts is
--     whatever its hash table gives.
--   * evict=rand draws ways from a seeded MINSTD generator (qemu.cachemodel.prng, seed=), so runs
--     are reproducible; QEMU uses GLib's g_rand seeded from /dev/urandom, so its rand numbers
--     change from run to run and cannot be reproduced here.
--   * Block sizes and set counts must be powers of two (QEMU asserts on the first and silently
--     leaves sets unused on the second); bad geometries are refused with QEMU's messages.
--   * l2=off turns L2 off wherever it appears; in QEMU a later l2cachesize/l2blksize/l2assoc
--     turns it back on.
--   * LRU compares full 64-bit use stamps (QEMU truncates the oldest one to an int, which goes
--     wrong after 2^31 accesses to one set).
-- Cost: every data access and every fetch that can miss runs a Lua callback (the model is Lua);
-- a fetch in the same instruction-cache block as the instruction before it in the block cannot
-- miss and is only counted, natively (below). The data each callback needs is prepared at
-- translation time and passed as its data argument.
local qemu = require "qemu"
local cachemodel = require "qemu.cachemodel"
local report = require "qemu.report"
local symbolize = require "qemu.symbolize"
local json = require "qemu.json"

local system = qemu.info.system
local floor = math.floor

local args = qemu.script {
  name = "cache",
  description = "L1 instruction/data and optional L2 cache simulation per core, with the "
    .. "instructions that miss most (QEMU's libcache)",
  args = {
    { name = "dcachesize", type = "int", default = 64 * 8 * 32, help = "L1 data cache bytes" },
    { name = "dblksize", type = "int", default = 64, help = "L1 data block bytes" },
    { name = "dassoc", type = "int", default = 8, help = "L1 data ways per set" },
    { name = "icachesize", type = "int", default = 64 * 8 * 32, help = "L1 instruction cache bytes" },
    { name = "iblksize", type = "int", default = 64, help = "L1 instruction block bytes" },
    { name = "iassoc", type = "int", default = 8, help = "L1 instruction ways per set" },
    { name = "l2", type = "bool", help = "simulate a unified L2 (default off; on when an l2* size is given)" },
    { name = "l2cachesize", type = "int", help = "L2 bytes (default 2097152)" },
    { name = "l2blksize", type = "int", help = "L2 block bytes (default 64)" },
    { name = "l2assoc", type = "int", help = "L2 ways per set (default 16)" },
    { name = "evict", type = "enum", values = cachemodel.POLICIES, default = "lru",
      help = "eviction policy" },
    { name = "limit", type = "int", default = 32, min = 0, help = "rows in each top-N table" },
    { name = "cores", type = "int", min = 1,
      help = "simulated cores (default: 1 in user mode, the vCPUs in system mode)" },
    { name = "seed", type = "int", default = 1, help = "seed of evict=rand's generator (qlua only)" },
    symbolize.script_args(false)[1], symbolize.script_args(false)[2],
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's report; json: the same as one JSON object on one line (qlua only)" },
  },
}

local use_l2 = args.l2
if use_l2 == nil then
  use_l2 = args.l2cachesize ~= nil or args.l2blksize ~= nil or args.l2assoc ~= nil
end
local cores = args.cores or (system and qemu.info.smp_vcpus) or 1
local limit = args.limit
local random = cachemodel.prng(args.seed) -- one generator for all caches, as QEMU has one
local named = symbolize.setup(args, false, qemu.symbolize_load)

local function make_caches(what, size, blksize, assoc)
  local why = cachemodel.check(size, blksize, assoc)
  if why then
    error(string.format("cache.lua: %s cannot be constructed from given parameters (size %d, "
      .. "block %d, assoc %d): %s", what, size, blksize, assoc, why), 0)
  end
  local list = {}
  for i = 1, cores do
    list[i] = cachemodel.new { size = size, blksize = blksize, assoc = assoc,
      policy = args.evict, random = random }
  end
  return list
end

local dcaches = make_caches("dcache", args.dcachesize, args.dblksize, args.dassoc)
local icaches = make_caches("icache", args.icachesize, args.iblksize, args.iassoc)
local l2caches = use_l2 and make_caches("L2 cache", args.l2cachesize or 2097152,
  args.l2blksize or 64, args.l2assoc or 16)

-- One record per instruction address: { addr, disas, symbol, dmiss, imiss, l2miss }.
local records = {}

local function on_fetch(vcpu, rec)
  local k = vcpu % cores + 1
  local addr = rec.addr
  local l1 = icaches[k]
  if not l1:access(addr) then
    rec.imiss = rec.imiss + 1
    if l2caches then
      local l2 = l2caches[k]
      if not l2:access(addr) then rec.l2miss = rec.l2miss + 1 end
    end
  end
end

local function data_access(vcpu, addr, rec)
  local k = vcpu % cores + 1
  local l1 = dcaches[k]
  if not l1:access(addr) then
    rec.dmiss = rec.dmiss + 1
    if l2caches then
      local l2 = l2caches[k]
      if not l2:access(addr) then rec.l2miss = rec.l2miss + 1 end
    end
  end
end

local on_data
-- queued: in system mode the access's physical address and io are recorded at the access
local mem_opts = system and { phys = true } or nil
if system then
  on_data = function(vcpu, access, vaddr, rec)
    if access.io then return end
    data_access(vcpu, access.phys or vaddr, rec)
  end
else
  -- user mode has no physical addresses: the virtual address is the one simulated
  on_data = function(vcpu, _, vaddr, rec)
    data_access(vcpu, vaddr, rec)
  end
end

-- Fetches that cannot miss: within one run of a block, an instruction in the same L1
-- instruction-cache block as the one before it finds that cache block where the previous fetch
-- left it (nothing else reaches that cache in between: data accesses go to the data cache, and
-- L2 sees only L1 misses). Such a fetch changes nothing in the model but the access count (and
-- LRU's use order, which it keeps: the block is the set's most recent either way), so it is
-- counted natively per vCPU, with no Lua; the first instruction of each run of one cache block
-- goes through the model. Exact whatever the block does: an instruction's count runs only when
-- the instruction starts, so a block left early (a fault) counts what ran.
local known_hits = qemu.counter()
local iblksize = args.iblksize

qemu.on_translate(function(tb)
  local line -- the cache block of the previous instruction of this block
  for insn in tb:insns() do
    local addr = system and insn.haddr or insn.vaddr
    local rec = records[addr]
    if not rec then
      local symbol = named and symbolize.format(qemu.symbolize(insn.vaddr)) or insn.symbol
      rec = { addr = addr, disas = insn.disas, symbol = symbol, dmiss = 0, imiss = 0, l2miss = 0 }
      records[addr] = rec
    end
    local here = floor(addr / iblksize)
    if here == line then
      insn:count(known_hits)
    else
      insn:on_exec(on_fetch, rec)
      line = here
    end
    insn:on_mem(on_data, rec, mem_opts)
  end
end)

-- core k's instruction fetches: through the model, and the known hits of its vCPUs
local function fetches(k)
  local n = icaches[k].accesses
  local per_vcpu = known_hits:values()
  for v = 0, #per_vcpu do
    if v % cores + 1 == k then n = n + per_vcpu[v] end
  end
  return n
end

-- ---- the report ----

local function rate(misses, accesses)
  return accesses > 0 and misses / accesses * 100.0 or 0.0
end

local function stats_line(out, d_acc, d_miss, i_acc, i_miss, l2_acc, l2_miss)
  out[#out + 1] = string.format("%-14d %-12d %9.4f%%  %-14d %-12d %9.4f%%",
    d_acc, d_miss, rate(d_miss, d_acc), i_acc, i_miss, rate(i_miss, i_acc))
  if l2caches then
    out[#out + 1] = string.format("  %-12d %-11d %10.4f%%", l2_acc, l2_miss, rate(l2_miss, l2_acc))
  end
  out[#out + 1] = "\n"
end

local function stats()
  local out = { "core #, data accesses, data misses, dmiss rate, insn accesses, insn misses, "
    .. "imiss rate" }
  if l2caches then out[#out + 1] = ", l2 accesses, l2 misses, l2 miss rate" end
  out[#out + 1] = "\n"
  local sum = { 0, 0, 0, 0, 0, 0 }
  for i = 1, cores do
    local d, ic, l2 = dcaches[i], icaches[i], l2caches and l2caches[i]
    local row = { d.accesses, d.misses, fetches(i), ic.misses,
      l2 and l2.accesses or 0, l2 and l2.misses or 0 }
    for j = 1, 6 do sum[j] = sum[j] + row[j] end
    out[#out + 1] = string.format("%-8d", i - 1)
    stats_line(out, row[1], row[2], row[3], row[4], row[5], row[6])
  end
  if cores > 1 then
    out[#out + 1] = string.format("%-8s", "sum")
    stats_line(out, sum[1], sum[2], sum[3], sum[4], sum[5], sum[6])
  end
  out[#out + 1] = "\n"
  return table.concat(out)
end

local function top(out, list, field, title)
  out[#out + 1] = title
  for _, rec in ipairs(report.top(list, limit, field, "addr")) do
    out[#out + 1] = string.format("0x%s%s, %s, %s\n", report.hex(rec.addr),
      rec.symbol and (" (" .. rec.symbol .. ")") or "", report.dec(rec[field]), rec.disas)
  end
end

-- ---- the report as JSON: the same numbers and rows ----

local function json_stats(core, d_acc, d_miss, i_acc, i_miss, l2_acc, l2_miss)
  local kv = {}
  if core then kv = { "core", core } end
  local fields = { "data_accesses", d_acc, "data_misses", d_miss, "dmiss_rate", rate(d_miss, d_acc),
    "insn_accesses", i_acc, "insn_misses", i_miss, "imiss_rate", rate(i_miss, i_acc) }
  if l2caches then
    fields[#fields + 1], fields[#fields + 2] = "l2_accesses", l2_acc
    fields[#fields + 1], fields[#fields + 2] = "l2_misses", l2_miss
    fields[#fields + 1], fields[#fields + 2] = "l2_miss_rate", rate(l2_miss, l2_acc)
  end
  for _, v in ipairs(fields) do kv[#kv + 1] = v end
  return json.object(kv)
end

local function json_top(list, field)
  local rows = {}
  for i, rec in ipairs(report.top(list, limit, field, "addr")) do
    rows[i] = json.object { "addr", json.hex(rec.addr, 16), "symbol", rec.symbol or json.null,
      "misses", json.u64(rec[field]), "disas", rec.disas }
  end
  return json.array(rows)
end

local function json_report()
  local per, sum = {}, { 0, 0, 0, 0, 0, 0 }
  for i = 1, cores do
    local d, ic, l2 = dcaches[i], icaches[i], l2caches and l2caches[i]
    local row = { d.accesses, d.misses, fetches(i), ic.misses,
      l2 and l2.accesses or 0, l2 and l2.misses or 0 }
    for j = 1, 6 do sum[j] = sum[j] + row[j] end
    per[i] = json_stats(i - 1, row[1], row[2], row[3], row[4], row[5], row[6])
  end
  local list = report.values(records)
  return json.encode(json.object { "report", "cache", "cores", json.array(per),
    "sum", cores > 1 and json_stats(nil, sum[1], sum[2], sum[3], sum[4], sum[5], sum[6])
      or json.null,
    "data_misses", json_top(list, "dmiss"), "fetch_misses", json_top(list, "imiss"),
    "l2_misses", l2caches and json_top(list, "l2miss") or json.null }) .. "\n"
end

qemu.on_exit(function()
  if args.format == "json" then
    qemu.write(json_report())
    return
  end
  qemu.write(stats())
  local list = report.values(records)
  local out = {}
  top(out, list, "dmiss", "address, data misses, instruction\n")
  top(out, list, "imiss", "\naddress, fetch misses, instruction\n")
  if l2caches then top(out, list, "l2miss", "\naddress, L2 misses, instruction\n") end
  qemu.write(table.concat(out))
end)
