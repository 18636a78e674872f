-- traps.lua: interrupts, exceptions and host calls per vCPU; a port of QEMU 10.2's
-- contrib/plugins/traps.c (libtraps.so) with its output.
--
-- Arguments: none (as QEMU's plugin).
--
-- Output (at exit), one row per vCPU QEMU created, as QEMU prints it ("% 4d, % 10d, ..."):
--   VCPU, interrupts, exceptions, hostcalls
--      0,         15,         10,          0
-- The counts are QEMU's discontinuity events (qemu.on_discon): "interrupt" (asynchronous, from
-- outside the CPU), "exception" (synchronous, caused by an instruction), "hostcall" (e.g.
-- semihosting). What QEMU reports is the target's choice: x86 in 10.2 reports an exception
-- (int3, ud2, a division by zero, int $n) twice, as an exception where it is raised and as an
-- interrupt where it is delivered, so each appears in both columns.
--
-- Needs QEMU 10.2 in system mode (qemu-system-ARCH): elsewhere it stops at load naming the
-- 'discon' feature. In user mode QEMU reports no discontinuity at all; there, as QEMU's plugin
-- does, it says so and prints a table of zeros.
--
-- Differences from QEMU's plugin, on purpose:
--   * the user-mode note ends with a newline (QEMU's runs into the table's header);
--   * an argument is refused (QEMU's plugin ignores whatever it is given);
--   * on a system-mode QEMU without discontinuity events (before 10.2) it refuses to start
--     rather than print zeros that would look like a measurement.
local qemu = require "qemu"

qemu.script {
  name = "traps",
  description = "interrupts, exceptions and host calls per vCPU (QEMU 10.2's libtraps.so)",
  args = {},
}

local counts = {} -- vcpu -> { interrupt = n, exception = n, hostcall = n }

local function row(vcpu)
  local c = counts[vcpu]
  if not c then
    c = { interrupt = 0, exception = 0, hostcall = 0 }
    counts[vcpu] = c
  end
  return c
end

if qemu.info.system then
  qemu.need("discon")
  qemu.on_discon(function(vcpu, kind)
    local c = row(vcpu)
    c[kind] = c[kind] + 1
  end)
else
  qemu.print("Note: interrupts are only reported in system emulation mode.")
end

qemu.on_exit(function()
  local out = { "VCPU, interrupts, exceptions, hostcalls\n" }
  for vcpu = 0, qemu.vcpus() - 1 do
    local c = row(vcpu)
    out[#out + 1] = string.format("% 4d, % 10d, % 10d, % 10d\n", vcpu, c.interrupt, c.exception,
      c.hostcall)
  end
  qemu.write(table.concat(out))
end)
