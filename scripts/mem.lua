-- mem.lua: guest memory accesses; a port of QEMU 7.2's tests/plugin/mem.c (libmem.so) with the
-- same arguments and output.
--
-- Arguments:
--   inline=on|off    (default off) count accesses, report "inline mem accesses: N"
--   callback=on|off  (default off) count accesses, report "callback mem accesses: N"
--   haddr=on|off     (default off) also count accesses to I/O devices apart: with callback=on
--                    they leave the callback count and go to "io accesses: N" (printed whenever
--                    haddr=on, as in QEMU, so with callback=off it reads 0)
--   track=r|w|rw     (default rw) which accesses count: loads, stores or both
-- With neither inline=on nor callback=on nothing is counted and nothing printed, as in QEMU.
--
-- Output (at exit, in this order, each line only when its argument is on):
--   inline mem accesses: N
--   callback mem accesses: N
--   io accesses: N
--
-- All counting is native (no Lua at execution time), except callback=on with haddr=on in system
-- mode, which looks at each access in Lua to tell I/O from RAM. In user mode no access can reach
-- an I/O device (QEMU reports none), so there the I/O count is 0 and the rest stays native.
--
-- Differences from QEMU's plugin, on purpose:
--   * QEMU 7.2 applies the read/write filter off by one: its track=r counts the stores and its
--     track=w counts every access. Here track=r counts loads and track=w counts stores;
--   * counts are exact with several vCPUs (QEMU's inline adds and callback counter race).
local qemu = require "qemu"

local args = qemu.script {
  name = "mem",
  description = "guest memory accesses (QEMU's libmem.so)",
  args = {
    { name = "inline", type = "bool", default = false, help = "report 'inline mem accesses: N'" },
    { name = "callback", type = "bool", default = false,
      help = "report 'callback mem accesses: N'" },
    { name = "haddr", type = "bool", default = false,
      help = "count accesses to I/O devices apart, as 'io accesses: N'" },
    { name = "track", type = "enum", values = { "r", "w", "rw" }, default = "rw",
      help = "which accesses count: loads, stores or both" },
  },
}

local rw = args.track
local inline_count, cb_count, io_count = qemu.counter(), qemu.counter(), qemu.counter()

-- Only system mode has devices to tell apart; then each access goes through Lua.
local split_io = args.callback and args.haddr and qemu.info.system
local function on_access(vcpu, access)
  if access.io then io_count:add(1, vcpu) else cb_count:add(1, vcpu) end
end

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    if args.inline then insn:count_mem(inline_count, rw) end
    if split_io then
      insn:on_mem(on_access, rw)
    elseif args.callback then
      insn:count_mem(cb_count, rw)
    end
  end
end)

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
