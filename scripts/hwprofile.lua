-- hwprofile.lua: which devices the guest's memory-mapped I/O goes to, how often, from which vCPUs;
-- a port of QEMU's contrib/plugins/hwprofile.c (libhwprofile.so) with its arguments and output.
-- System emulation only (qemu-system-*): user mode has no devices, and the script refuses to
-- start there. Only accesses QEMU routes to an I/O region count (access.io): RAM and ROM do not,
-- and neither does port I/O (x86 in/out), which never reaches memory callbacks.
--
-- Arguments:
--   track=read|write  count only reads, or only writes (default: both)
--   pattern=on|off    per device, list the accesses by physical address ("off:")
--   source=on|off     per device, list the accesses by the address of the accessing
--                     instruction ("pc:"); pattern and source exclude each other
--   match=NAME        count only devices of this name; repeatable (match=a,match=b), and, as in
--                     QEMU, one value may list several names separated by commas (which
--                     QEMU's -plugin syntax writes ",,"); each matching access first prints
--                     "hwprofile: match @ offsetADDR, previous hits" and the device's line
--
-- Output (at exit), without pattern or source:
--   Device, Address, RCPUs, Reads,  WCPUs, Writes
--   ioapic, 0x0, 1, 2, 1, 1
-- one line per device: name, address (see below), then for reads and for writes (only the tracked
-- ones, in the header too) the mask of vCPUs that made them (hex, bit N = vCPU N) and the count.
-- With pattern or source: no header; per device "NAME @ 0xADDRESS" and then its accesses, one
-- "  off:%08x, RCPUs, Reads, WCPUs, Writes" (or "  pc:...") line per address, ascending.
-- Devices are listed by reads + writes, descending; ties by address, then by name (QEMU's order
-- among ties is hash order).
--
-- "Address" is computed as QEMU's plugin computes it: the virtual address minus the physical
-- address of the device's first access, i.e. the offset of the guest's mapping (0 without
-- paging), not the device's base. (The plugin's names, "off" and "base", read the physical
-- address as an offset inside the device; QEMU 7.2 and 10.0 report the full physical address,
-- and the plugin API gives no region base, so that intent cannot be restored.) Likewise "off:"
-- values are physical addresses. On QEMU 7.2, QEMU's own plugin with track=read counts the
-- writes (7.2 applies the read/write filter off by one); this script counts the reads there too.
--
-- Differences from QEMU's plugin, on purpose:
--   * QEMU prints the device lines only when at least two devices were seen (a test of the list
--     length that skips a single device); here every device is listed;
--   * with match=, QEMU still lists every other device (with zero totals) and, with pattern or
--     source, still counts their accesses; here devices that do not match are ignored entirely;
--   * vCPU masks have no width limit (QEMU shifts a 32-bit int: vCPUs from 31 up are wrong).
-- Cost: one Lua call for every memory access the guest makes (the device check needs access.io),
-- so RAM-heavy guests run much slower than with QEMU's C plugin, which also calls back per access.
local qemu = require "qemu"

if not qemu.info.system then
  error("hwprofile.lua: plugin only useful for system emulation: it profiles accesses to "
    .. "devices, which exist only under qemu-system-*, not in user mode", 0)
end

local args = qemu.script {
  name = "hwprofile",
  description = "memory-mapped I/O per device: counts, vCPUs, addresses or sources (libhwprofile.so)",
  args = {
    { name = "track", type = "enum", values = { "read", "write" },
      help = "count only reads or only writes (default: both)" },
    { name = "pattern", type = "bool", default = false,
      help = "list each device's accesses by physical address" },
    { name = "source", type = "bool", default = false,
      help = "list each device's accesses by the accessing instruction's address" },
    { name = "match", multiple = true,
      help = "only devices of this name (repeatable; NAME,,NAME... also lists several)" },
  },
}

if args.pattern and args.source then
  error("hwprofile.lua: can only currently track either source or pattern.", 0)
end
qemu.need("hwaddr")

local track_reads = args.track ~= "write"
local track_writes = args.track ~= "read"
local rw = (track_reads and track_writes) and "rw" or (track_reads and "r" or "w")
local detailed = args.pattern or args.source

local matches
if #args.match > 0 then
  matches = {}
  for _, list in ipairs(args.match) do
    for name in list:gmatch("[^,]+") do matches[name] = true end
  end
end

-- ---- unsigned 64-bit numbers in both Lua flavours ----
-- Device bases are differences (vaddr - phys), negative under LuaJIT when the mapping lies below
-- the physical address: qemu.u64 prints and orders them as C's uint64_t.
local u64 = require "qemu.u64"
local hex, ult = u64.hex, u64.lt
local bytes_lt = require("qemu.report").bytes_lt -- device names in byte order, as QEMU's strcmp

-- A vCPU mask as hex: bit N set when vCPU N made an access; any number of vCPUs.
local function mask_hex(set)
  local max = -1
  for vcpu in pairs(set) do if vcpu > max then max = vcpu end end
  if max < 0 then return "0" end
  local digits = {}
  for nibble = math.floor(max / 4), 0, -1 do
    local d = 0
    for bit = 0, 3 do
      if set[nibble * 4 + bit] then d = d + 2 ^ bit end
    end
    digits[#digits + 1] = string.format("%x", d)
  end
  return table.concat(digits)
end

-- ---- counting ----
local function new_counts() return { rcpus = {}, wcpus = {}, reads = 0, writes = 0 } end

local function inc(c, store, vcpu)
  if store then
    c.writes = c.writes + 1
    c.wcpus[vcpu] = true
  else
    c.reads = c.reads + 1
    c.rcpus[vcpu] = true
  end
end

local function fmt_counts(c)
  local s = ""
  if track_reads then s = s .. string.format(", %s, %d", mask_hex(c.rcpus), c.reads) end
  if track_writes then s = s .. string.format(", %s, %d", mask_hex(c.wcpus), c.writes) end
  return s
end

local function fmt_device(dev)
  return string.format("%s, 0x%s%s\n", dev.name, hex(dev.base), fmt_counts(dev.totals))
end

local devices = {} -- name -> { name, base, totals, detail = { [off] = { off, counts } } }

-- queued, device accesses only (C leaves out the rest, which are nearly all: no Lua for them),
-- with the device and the physical address recorded at the access
local mem_opts = { rw = rw, phys = true, io = "only" }
local function on_access(vcpu, access, vaddr, pc)
  local name = access.device
  if matches and not matches[name] then return end
  local phys = access.phys
  local store = access.store
  local dev = devices[name]
  if not dev then
    dev = { name = name, base = vaddr - phys, totals = new_counts(), detail = detailed and {} }
    devices[name] = dev
  end
  if matches then
    qemu.write(string.format("hwprofile: match @ offset%s, previous hits\n", hex(phys))
      .. fmt_device(dev))
  end
  inc(dev.totals, store, vcpu)
  if detailed then
    local off = args.source and pc or phys
    local loc = dev.detail[off]
    if not loc then
      loc = { off = off, counts = new_counts() }
      dev.detail[off] = loc
    end
    inc(loc.counts, store, vcpu)
  end
end

-- the instruction's address as data only where source=on reports it (data costs a slot each)
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:on_mem(on_access, args.source and insn.vaddr or nil, mem_opts)
  end
end)

-- ---- the report ----
local function by_total(a, b)
  local ta, tb = a.totals.reads + a.totals.writes, b.totals.reads + b.totals.writes
  if ta ~= tb then return ta > tb end
  if a.base ~= b.base then return ult(a.base, b.base) end
  return bytes_lt(a.name, b.name)
end

qemu.on_exit(function()
  local out = {}
  if not detailed then
    out[1] = "Device, Address" .. (track_reads and ", RCPUs, Reads" or "")
      .. (track_writes and ",  WCPUs, Writes" or "") .. "\n"
  end
  local list = {}
  for _, dev in pairs(devices) do list[#list + 1] = dev end
  table.sort(list, by_total)
  local prefix = args.pattern and "off" or "pc"
  for _, dev in ipairs(list) do
    if detailed then
      out[#out + 1] = string.format("%s @ 0x%s\n", dev.name, hex(dev.base))
      local locs = {}
      for _, loc in pairs(dev.detail) do locs[#locs + 1] = loc end
      table.sort(locs, function(a, b) return ult(a.off, b.off) end)
      for _, loc in ipairs(locs) do
        out[#out + 1] = string.format("  %s:%s%s\n", prefix, hex(loc.off, 8), fmt_counts(loc.counts))
      end
    else
      out[#out + 1] = fmt_device(dev)
    end
  end
  qemu.write(table.concat(out))
end)
