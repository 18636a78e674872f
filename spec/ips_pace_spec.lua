-- Specs for lua/qemu/ips_pace.lua: the rate argument of ips.lua and the pacer that sleeps off
-- what a vCPU ran ahead and moves the guest clock, driven here by a hand-made clock.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local pace = require "qemu.ips_pace"

-- A pacer over a fake host clock: sleeping moves the clock; every sleep and guest-clock move is
-- recorded.
local function fake(ips)
  local host = { t = 1000, slept = {}, set = {} }
  host.pacer = pace.new {
    ips = ips,
    now_ns = function() return host.t end,
    sleep_ns = function(ns) host.slept[#host.slept + 1] = ns; host.t = host.t + ns end,
    set_time = function(ns) host.set[#host.set + 1] = ns end,
  }
  return host
end

describe("qemu.ips_pace", function()
  describe("parse_rate", function()
    it("reads decimal digits with k, m or g as powers of 1000, in either case", function()
      assert.equal(1000000000, pace.parse_rate("1000000000"))
      assert.equal(100000, pace.parse_rate("100k"))
      assert.equal(2000000, pace.parse_rate("2M"))
      assert.equal(3e9, pace.parse_rate("3g"))
      assert.equal(10, pace.parse_rate("10"))
    end)

    it("wants at least 10 instructions per second, the number of clock moves per second", function()
      for _, low in ipairs({ "0", "9", "0k" }) do
        local ips, why = pace.parse_rate(low)
        assert.is_nil(ips, low)
        assert.equal("expected at least 10 instructions per second (the guest clock moves every "
          .. "ips/10 instructions)", why)
      end
    end)

    it("refuses signs, fractions, blanks, hex and other suffixes, naming what it takes", function()
      for _, bad in ipairs({ "-5", "+5", "1.5m", " 5", "0x10", "", "abc", "1kk" }) do
        local ips, why = pace.parse_rate(bad)
        assert.is_nil(ips, bad)
        assert.matches("expected a whole number of instructions per second, optionally with k, m "
          .. "or g", why, 1, true)
      end
      assert.same({ nil, "unknown suffix 'x' (k, m, g)" }, { pace.parse_rate("1x") })
      assert.same({ nil, "expected a rate below 2^53" }, { pace.parse_rate("9007200g") })
    end)
  end)

  describe("arithmetic", function()
    it("moves the clock every tenth of a second's worth of instructions", function()
      assert.equal(100000000, pace.quantum(1e9))
      assert.equal(1, pace.quantum(10))
      assert.equal(1, pace.quantum(19))
    end)

    it("converts between instructions and nanoseconds at the rate, truncating", function()
      assert.equal(500, pace.insns_in(1000, 0.5e9))
      assert.equal(0, pace.insns_in(1000, 999999))
      assert.equal(250000000, pace.ns_for(1000, 250))
      assert.equal(333333333, pace.ns_for(3, 1))
    end)
  end)

  describe("a pacer", function()
    it("sleeps off a quantum run ahead of the rate and sets the guest clock to its time", function()
      local h = fake(1000) -- 1000 per second: 100 instructions should take 100 ms
      h.pacer:start(0)
      h.t = h.t + 20e6 -- they ran in 20 ms: 20 were allowed, 80 ahead
      local slept, set = h.pacer:update(0, 100)
      assert.equal(80e6, slept)
      assert.same({ 80e6 }, h.slept)
      assert.equal(100e6, set)
      assert.same({ 100e6 }, h.set)
    end)

    it("does not sleep for a quantum that took longer than the rate", function()
      local h = fake(1000)
      h.pacer:start(0)
      h.t = h.t + 300e6
      local slept, set = h.pacer:update(0, 100)
      assert.equal(0, slept)
      assert.same({}, h.slept)
      assert.equal(100e6, set)
    end)

    it("sleeps in whole microseconds, as g_usleep does", function()
      local h = fake(3) -- one instruction takes 333333333.3 ns
      h.pacer:start(0)
      assert.equal(333333000, (h.pacer:update(0, 1)))
    end)

    it("sets the guest clock from each vCPU's own total, never backwards", function()
      local h = fake(1000)
      h.pacer:start(0)
      h.pacer:start(1)
      h.t = h.t + 1e9
      assert.equal(300e6, select(2, h.pacer:update(0, 300)))
      assert.is_nil(select(2, h.pacer:update(1, 100)), "vCPU 1 is behind: the clock stays")
      assert.equal(400e6, select(2, h.pacer:update(0, 100)))
      assert.equal(500e6, select(2, h.pacer:update(1, 400)))
      assert.same({ 300e6, 400e6, 500e6 }, h.set)
    end)

    it("starts a quantum at each update, so the next one is timed from then", function()
      local h = fake(1000)
      h.pacer:start(0)
      h.t = h.t + 100e6
      h.pacer:update(0, 100) -- on time: no sleep
      h.t = h.t + 50e6 -- the next 100 in 50 ms: 50 ahead
      assert.equal(50e6, (h.pacer:update(0, 100)))
    end)

    it("accounts a vCPU it was not told about as starting at its first update", function()
      local h = fake(1000)
      local slept, set = h.pacer:update(2, 10)
      assert.equal(10e6, slept)
      assert.equal(10e6, set)
    end)
  end)
end)
