-- ips.lua: run a system guest at a fixed number of instructions per second; a port of QEMU
-- 10.2's contrib/plugins/ips.c (libips.so) with its argument.
--
-- Arguments:
--   ips=N[k|m|g]  (default 1000000000) instructions per second per vCPU; k, m and g multiply by
--                 1000, 1000000 and 1000000000 (decimal, as in QEMU's plugin; either case);
--                 at least 10
--
-- How (as QEMU's plugin): the script takes over the guest's virtual clock (qemu.time_control).
-- Each vCPU counts the instructions of the blocks it runs in a native counter; once it has run
-- a quantum of ips/10 instructions, a conditional callback (tb:when) sleeps for as long as the
-- vCPU ran ahead of the wall clock at that rate, then sets the guest clock to (the vCPU's
-- instructions so far) / ips, unless another vCPU already set it later (time only moves
-- forward). When a vCPU ends, its last partial quantum is accounted the same way. So the guest
-- sees time pass at its normal rate for the work it does (N instructions take N/ips seconds of
-- guest time, whatever the host's speed), and the run takes at least that long in wall time.
-- (Seen on QEMU 10.2's TCG: the guest clock cannot get ahead of the host's there; moving it
-- forward makes the vCPU wait until the host's clock reaches the new time, so a quantum's sleep
-- and the clock move both hold the guest to the rate.) The arithmetic is lua/qemu/ips_pace.lua,
-- the host clock and sleep lua/qemu/hostclock.lua.
--
-- Output: none (as QEMU's plugin).
--
-- Needs QEMU 9.1 or later in system mode (the 'time_control' feature); elsewhere it stops at load
-- naming it. Only one plugin may control time: with another loaded first (libips.so, a second
-- ips.lua) it stops at load saying so. Under Lua 5.4 it needs LuaSystem (Debian: lua-system)
-- for the host clock and sleep; LuaJIT has them through its FFI.
--
-- Differences from QEMU's plugin, on purpose:
--   * the rate must be a whole number with at most one suffix letter: QEMU's strtoull also takes
--     leading blanks, a sign ("-1" is 2^64-1 instructions per second) and "0x" (read as 0);
--   * the wall clock is the host's monotonic clock, so a change of the system time (NTP, date)
--     cannot make it sleep too long or not at all (QEMU's plugin reads the real-time clock);
--   * a quantum closes when the block after the one that filled it starts (qlua tests a
--     condition before the block's own count is added); QEMU's plugin adds first and closes it
--     as the filling block starts, counting that block's instructions before they run. The
--     clock moves one block later here, to the same time for the same instructions;
--   * an argument other than ips= is refused with the accepted list (QEMU: "option parsing
--     failed").
local qemu = require "qemu"
local pace = require "qemu.ips_pace"

local args = qemu.script {
  name = "ips",
  description = "run the guest at a fixed number of instructions per second (QEMU's libips.so)",
  args = {
    { name = "ips", default = "1000000000",
      help = "instructions per second per vCPU (k, m, g: x1000, x1000000, x1000000000)" },
  },
}

qemu.need("time_control")

local ips, why = pace.parse_rate(args.ips)
if not ips then error(string.format("ips.lua: ips=%s: %s", args.ips, why), 0) end

local clock = require "qemu.hostclock"
if clock.missing then error("ips.lua: needs " .. clock.missing, 0) end

qemu.time_control()

local pacer = pace.new { ips = ips, now_ns = clock.now_ns, sleep_ns = clock.sleep_ns,
  set_time = qemu.set_time }
local quantum = pace.quantum(ips)
local ran = qemu.counter() -- per vCPU: instructions since its last update

local function update(vcpu)
  local n = ran:get(vcpu)
  ran:set(0, vcpu)
  pacer:update(vcpu, n)
end

qemu.on_vcpu_init(function(vcpu) pacer:start(vcpu) end)
qemu.on_vcpu_exit(update)

qemu.on_translate(function(tb)
  tb:count(ran, #tb)
  tb:when(ran, ">=", quantum, update)
end)
