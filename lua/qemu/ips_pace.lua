-- qemu.ips_pace: the arithmetic of ips.lua (QEMU's contrib/plugins/ips.c): the rate argument,
-- and a pacer that, at the end of each quantum of instructions a vCPU runs, sleeps off what the
-- vCPU ran ahead of the wall clock and moves the guest clock to (instructions run) / ips. The
-- clock, the sleep and the guest-clock setter are passed in, so the specs drive it by hand.
local M = {}

M.UPDATES_PER_SECOND = 10 -- the guest clock moves every ips / 10 instructions of a vCPU
local NS = 1e9

local SCALE = { k = 1e3, m = 1e6, g = 1e9 } -- decimal, as QEMU's plugin (not qlua's k = 1024)

--- M.parse_rate(text) -> instructions per second, or nil and what was wrong: decimal digits
-- with an optional k, m or g (either case; x1000 each), at least UPDATES_PER_SECOND, below 2^53.
function M.parse_rate(text)
  local digits, suffix = tostring(text):match("^(%d+)(%a?)$")
  if not digits then
    return nil, "expected a whole number of instructions per second, optionally with k, m or g "
      .. "(x1000, x1000000, x1000000000)"
  end
  local scale = 1
  if suffix ~= "" then
    scale = SCALE[suffix:lower()]
    if not scale then return nil, "unknown suffix '" .. suffix .. "' (k, m, g)" end
  end
  local ips = tonumber(digits) * scale
  if ips >= 2 ^ 53 then return nil, "expected a rate below 2^53" end
  if ips < M.UPDATES_PER_SECOND then
    return nil, string.format("expected at least %d instructions per second (the guest clock "
      .. "moves every ips/%d instructions)", M.UPDATES_PER_SECOND, M.UPDATES_PER_SECOND)
  end
  return ips
end

--- M.quantum(ips) -> how many instructions a vCPU runs between two moves of the guest clock
function M.quantum(ips)
  return math.floor(ips / M.UPDATES_PER_SECOND)
end

--- M.insns_in(ips, ns) -> how many instructions the rate allows in ns nanoseconds (truncated)
function M.insns_in(ips, ns)
  return math.floor(ns / NS * ips)
end

--- M.ns_for(ips, insns) -> the nanoseconds that insns instructions take at the rate (truncated)
function M.ns_for(ips, insns)
  return math.floor(insns / ips * NS)
end

local Pacer = {}
Pacer.__index = Pacer

--- M.new{ ips = n, now_ns = fn, sleep_ns = fn, set_time = fn } -> a pacer.
-- now_ns() reads the host clock, sleep_ns(ns) sleeps, set_time(ns) moves the guest clock.
function M.new(o)
  return setmetatable({ ips = o.ips, now_ns = o.now_ns, sleep_ns = o.sleep_ns,
    set_time = o.set_time, time = 0, vcpus = {} }, Pacer)
end

--- A vCPU starts: its quantum starts now, with no instruction run.
function Pacer:start(vcpu)
  self.vcpus[vcpu] = { total = 0, since = self.now_ns() }
end

--- A vCPU ran `insns` instructions since its last update (a quantum, or what is left at its end):
-- sleep for as long as it ran ahead of the rate, then move the guest clock to the time its
-- total takes at the rate, unless another vCPU already moved it further (time only goes
-- forward). Returns the nanoseconds slept and the guest time set (nil if unchanged).
function Pacer:update(vcpu, insns)
  local v = self.vcpus[vcpu]
  if not v then
    self:start(vcpu)
    v = self.vcpus[vcpu]
  end
  local allowed = M.insns_in(self.ips, self.now_ns() - v.since)
  local slept = 0
  if insns >= allowed then
    -- whole microseconds, as QEMU's plugin sleeps with g_usleep
    slept = math.floor(M.ns_for(self.ips, insns - allowed) / 1000) * 1000
    self.sleep_ns(slept)
  end
  v.total = v.total + insns
  v.since = self.now_ns()
  local t = M.ns_for(self.ips, v.total)
  if t > self.time then
    self.time = t
    self.set_time(t)
    return slept, t
  end
  return slept, nil
end

return M
