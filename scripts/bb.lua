-- bb.lua: executed translation blocks and the instructions they hold; a port of QEMU 7.2's
-- tests/plugin/bb.c (libbb.so) with the same arguments and output.
--
-- Arguments:
--   inline=on|off  (default off) accepted for compatibility: both modes count with native
--                  counters here (no Lua runs at execution time); it only selects the report
--                  form in system mode, as in QEMU.
--   idle=on|off    (default off) system mode: when a vCPU goes idle, print its running totals.
--                  Accepted and ignored in user mode, where vCPUs never idle.
--
-- Output (at exit):
--   user mode, or inline=on:   bb's: N, insns: M
--   system mode, inline=off:   CPU%d: bb's: N, insns: M     one line per vCPU that ran a block
--   idle=on, on each idle:     Idling CPU%d: bb's: N, insns: M
-- "insns" adds a block's instruction count each time the block starts, so a block left early
-- (a fault, an exception) counts all of its instructions, as in QEMU.
--
-- Differences from QEMU's plugin, on purpose:
--   * counts are exact with several vCPUs: QEMU's inline=on adds race (shared u64, no atomics);
--   * QEMU crashes on idle=on with inline=on in system mode (no per-vCPU records exist then);
--     here the per-vCPU counters always exist, so the Idling line is printed in both modes.
local qemu = require "qemu"

local args = qemu.script {
  name = "bb",
  description = "executed blocks and their instructions (QEMU's libbb.so)",
  args = {
    { name = "inline", type = "bool", default = false,
      help = "QEMU's inline counting; here only picks the system-mode report form" },
    { name = "idle", type = "bool", default = false,
      help = "system mode: print a vCPU's totals each time it goes idle" },
  },
}

local bbs, insns = qemu.counter(), qemu.counter()

-- tb:count(bbs) and tb:count(insns, #tb) on every block, added by qlua with no Lua at translation
qemu.count_every("block", bbs)
qemu.count_every("block_insns", insns)

local function cpu_line(vcpu)
  return string.format("CPU%d: bb's: %d, insns: %d\n", vcpu, bbs:get(vcpu), insns:get(vcpu))
end

if args.idle and qemu.has("idle") then
  qemu.on_vcpu_idle(function(vcpu)
    if bbs:get(vcpu) ~= 0 then qemu.write("Idling " .. cpu_line(vcpu)) end
  end)
end

qemu.on_exit(function()
  if args.inline or not qemu.info.system then
    qemu.printf("bb's: %d, insns: %d\n", bbs:sum(), insns:sum())
    return
  end
  local out = {}
  for vcpu = 0, (qemu.info.max_vcpus or qemu.vcpus()) - 1 do
    if bbs:get(vcpu) ~= 0 then out[#out + 1] = cpu_line(vcpu) end
  end
  qemu.write(table.concat(out))
end)
