-- mem.lua: guest memory accesses; a port of QEMU's mem plugin (tests/plugin/mem.c in 7.2,
-- tests/tcg/plugins/mem.c in 10.x, libmem.so) with the arguments and output of the QEMU it runs on:
-- the 7.2 format where the plugin API is 1 (qemu.info.api.cur < 2), the 10.x format from API 2 on.
--
-- Arguments:
--   inline=on|off    (default off) count accesses natively
--   callback=on|off  (default off) count accesses (7.2: apart from inline=; 10.x: the same
--                    "mem accesses" line, and inline=on with callback=on is refused, as in QEMU 10)
--   haddr=on|off     (default off) count accesses to I/O devices apart, as "io accesses: N"
--                    (printed whenever haddr=on, as in QEMU). I/O accesses are seen only where
--                    QEMU looks at each access: callback=on (either format) or region-summary=on
--                    (10.x); with inline=on alone the line reads 0, as in QEMU; they then leave
--                    the callback count
--   track=r|w|rw     (default rw) which accesses count/print: loads, stores or both
--   print-accesses=on|off (10.x format, needs the 'mem_value' feature, QEMU >= 9.2; default off)
--                    a CSV header, then one line per access as it happens:
--                    insn_vaddr,insn_symbol,mem_vaddr,mem_hwaddr,access_size,access_type,mem_value
--                    e.g. "0xf000a,,0x1000,0x1000,32,store,0x000003e8": hex addresses, the
--                    symbol ("" when none), the physical address (0x0 in user mode), the size in
--                    BITS, load|store, the value zero-padded to the access width (16 bytes: 32 digits)
--   region-summary=on|off (10.x format, needs 'mem_value'; default off) mirrors the data stored in
--                    each 16 KiB region of virtual addresses and checks loads against it; prints
--                    "Warning: 0x%016x:OFFSET read an un-instrumented value" the first time a
--                    region's load returns a value not seen stored, and at exit
--                    "Region Base, Reads, Writes, Seen all" then per region, by address:
--                    "0x%016x, READS, WRITES, true|false"
-- On a 7.2 host (plugin API 1) print-accesses=on and region-summary=on stop with an error naming
-- the 'mem_value' feature and the QEMU that brings it.
--
-- Output at exit, in this order, each line only when its argument is on:
--   7.2 format:  inline mem accesses: N / callback mem accesses: N / io accesses: N
--   10.x format: mem accesses: N (inline=on or callback=on) / io accesses: N / region summary
--
-- Counting is native (no Lua at execution time) except where each access must be looked at:
-- callback=on with haddr=on in system mode (to tell I/O from RAM), print-accesses, region-summary.
-- In user mode no access can reach an I/O device (QEMU reports none), so the I/O count is 0.
--
-- Differences from QEMU's plugins, on purpose:
--   * QEMU 7.2 applies the read/write filter off by one: its track=r counts the stores and its
--     track=w counts every access. Here track=r counts loads and track=w counts stores (as 10.x);
--   * counts are exact with several vCPUs (QEMU 7.2's inline adds and callback counter race);
--   * 10.x with inline=on and region-summary=on counts every access twice in "mem accesses" (its
--     region callback adds too); here each access counts once;
--   * 10.x prints the region rows only when there are at least two regions (a single region gives
--     a bare header); here every region gets its row;
--   * 10.x asserts (aborts) on an access that crosses a region boundary; here its bytes go to the
--     regions they belong to, and it counts in the region of its first byte.
-- Known limit: under LuaJIT an 8-byte value of 2^53 or more reaches Lua rounded (access.value is a
-- double there), so print-accesses shows it rounded and region-summary may warn about it.
local qemu = require "qemu"
local report = require "qemu.report"

local args = qemu.script {
  name = "mem",
  description = "guest memory accesses (QEMU's libmem.so)",
  args = {
    { name = "inline", type = "bool", default = false, help = "count accesses natively" },
    { name = "callback", type = "bool", default = false, help = "count accesses (callback)" },
    { name = "haddr", type = "bool", default = false,
      help = "count accesses to I/O devices apart, as 'io accesses: N'" },
    { name = "track", type = "enum", values = { "r", "w", "rw" }, default = "rw",
      help = "which accesses count: loads, stores or both" },
    { name = "print-accesses", type = "bool", default = false,
      help = "QEMU >= 9.2: one CSV line per access (QEMU 10's format)" },
    { name = "region-summary", type = "bool", default = false,
      help = "QEMU >= 9.2: reads/writes per 16 KiB region, checking loads against stores" },
  },
}

local rw = args.track
local print_accesses, region_summary = args["print-accesses"], args["region-summary"]
local new_format = qemu.info.api.cur >= 2
for _, name in ipairs({ "print-accesses", "region-summary" }) do
  if args[name] then
    local ok, err = pcall(qemu.need, "mem_value") -- needs the values of the accesses
    if not ok then error("mem.lua: " .. name .. "=on: " .. tostring(err), 0) end
  end
end

local inline_count, cb_count, io_count = qemu.counter(), qemu.counter(), qemu.counter()

local function setup_7_2()
  -- QEMU 7.2: "inline mem accesses" and "callback mem accesses" counted apart.
  -- Only system mode has devices to tell apart; then each access goes through Lua.
  local split_io = args.callback and args.haddr and qemu.info.system
  local function on_access(vcpu, access)
    if access.io then io_count:add(1, vcpu) else cb_count:add(1, vcpu) end
  end

  -- Counting alone needs no Lua at translation time: qlua adds the counter to every block.
  if args.inline then qemu.count_every("mem", inline_count, { rw = rw }) end
  if split_io then
    qemu.on_translate(function(tb)
      for insn in tb:insns() do
        insn:on_mem(on_access, nil, { rw = rw, phys = true }) -- queued: io recorded at the access
      end
    end)
  elseif args.callback then
    qemu.count_every("mem", cb_count, { rw = rw })
  end

  qemu.on_exit(function()
    local out = {}
    if args.inline then
      out[#out + 1] = string.format("inline mem accesses: %d\n", inline_count:sum())
    end
    if args.callback then
      out[#out + 1] = string.format("callback mem accesses: %d\n", cb_count:sum())
    end
    if args.haddr then
      out[#out + 1] = string.format("io accesses: %d\n", io_count:sum())
    end
    qemu.write(table.concat(out))
  end)
end

if not new_format then
  setup_7_2()
  return
end

-- QEMU 10.x format.
if args.inline and args.callback then
  error("mem.lua: can't enable inline and callback counting at the same time "
    .. "(inline= and callback= are exclusive, as in QEMU 10's mem plugin)", 0)
end

local hex = report.hex
local mem_count = inline_count
-- I/O is told apart only where QEMU 10 runs its per-access callback.
local see_io = args.haddr and qemu.info.system and (args.callback or region_summary)
local count_in_lua = args.callback and see_io -- RAM and I/O counted apart, in Lua
local count_native = args.inline or (args.callback and not count_in_lua)
local use_lua = see_io or print_accesses or region_summary
-- queued: what the report needs of an access is recorded at the access (io and physical address,
-- the value)
local mem_opts = { rw = rw, phys = see_io or print_accesses or nil,
  value = (print_accesses or region_summary) or nil }

if print_accesses then
  qemu.write("insn_vaddr,insn_symbol,mem_vaddr,mem_hwaddr,access_size,access_type,mem_value\n")
end

-- The value of an access as the hex digits QEMU prints (zero-padded to the access width).
local WIDTH = { [1] = 2, [2] = 4, [4] = 8, [8] = 16 }
local function value_hex(v, size)
  if type(v) == "string" then -- 16 bytes, least significant first
    return (v:reverse():gsub(".", function(c) return string.format("%02x", c:byte()) end))
  end
  return hex(v, WIDTH[size])
end

-- The bytes of a value, least significant first, as a list of numbers.
local pack = string.pack
local function value_bytes(v, size)
  local b = {}
  if type(v) == "string" then
    for i = 1, #v do b[i] = v:byte(i) end
  elseif pack then -- Lua 5.4: integers, 8-byte ones of 2^63 and more are negative
    local s = pack("<i8", v)
    for i = 1, size do b[i] = s:byte(i) end
  else -- LuaJIT: a double, exact below 2^53
    for i = 1, size do
      b[i] = v % 256
      v = (v - b[i]) / 256
    end
  end
  return b
end

local REGION = 16384
local regions = {} -- base -> { base, reads, writes, data = { [offset] = byte }, seen_all }

local function region_of(base)
  local r = regions[base]
  if not r then
    r = { base = base, reads = 0, writes = 0, data = {}, seen_all = true }
    regions[base] = r
  end
  return r
end

local function track_region(access, vaddr)
  local size, store = access.size, access.store
  local bytes = value_bytes(access.value, size)
  local offset = vaddr % REGION
  local first = region_of(vaddr - offset)
  if store then first.writes = first.writes + 1 else first.reads = first.reads + 1 end
  local be = access.big_endian
  local unseen = false
  for i = 0, size - 1 do
    local byte = be and bytes[size - i] or bytes[i + 1] -- the byte at vaddr + i
    local r, off = first, offset + i
    if off >= REGION then r, off = region_of(first.base + REGION), off - REGION end
    if store then
      r.data[off] = byte
    elseif (r.data[off] or 0) ~= byte then
      unseen = true
    end
  end
  if unseen and first.seen_all then
    qemu.write(string.format("Warning: 0x%s:%d read an un-instrumented value\n",
      hex(first.base, 16), offset))
    first.seen_all = false
  end
end

local function on_access(vcpu, access, vaddr, prefix)
  if see_io then
    if access.io then
      io_count:add(1, vcpu)
    elseif count_in_lua then
      mem_count:add(1, vcpu)
    end
  end
  if region_summary then track_region(access, vaddr) end
  if print_accesses then
    local size = access.size
    qemu.write(prefix .. hex(vaddr) .. ",0x" .. hex(access.phys or 0) .. "," .. (8 * size)
      .. (access.store and ",store,0x" or ",load,0x") .. value_hex(access.value, size) .. "\n")
  end
end

-- Counting alone needs no Lua at translation time: qlua adds the counter to every block.
if count_native then qemu.count_every("mem", mem_count, { rw = rw }) end
if use_lua then
  qemu.on_translate(function(tb)
    for insn in tb:insns() do
      local prefix = false
      if print_accesses then
        prefix = "0x" .. hex(insn.vaddr) .. "," .. (insn.symbol or "") .. ",0x"
      end
      insn:on_mem(on_access, prefix, mem_opts)
    end
  end)
end

qemu.on_exit(function()
  local out = {}
  if args.inline or args.callback then
    out[#out + 1] = string.format("mem accesses: %d\n", mem_count:sum())
  end
  if args.haddr then
    out[#out + 1] = string.format("io accesses: %d\n", io_count:sum())
  end
  if region_summary then
    out[#out + 1] = "Region Base, Reads, Writes, Seen all\n"
    local list = {}
    for _, r in pairs(regions) do list[#list + 1] = r end
    table.sort(list, function(a, b) return report.ult(a.base, b.base) end)
    for _, r in ipairs(list) do
      out[#out + 1] = string.format("0x%s, %d, %d, %s\n", hex(r.base, 16), r.reads, r.writes,
        tostring(r.seen_all))
    end
  end
  qemu.write(table.concat(out))
end)
