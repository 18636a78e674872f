-- Specs for lua/qemu/bbv_format.lua: SimPoint lines and subtraction on add-only counters.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local bbv = require "qemu.bbv_format"

describe("qemu.bbv_format", function()
  it("writes T, then :ID:COUNT with a trailing space per entry, then a newline", function()
    assert.equal("T:1:11 :2:20 :30:990 \n", bbv.line({ { 1, 11 }, { 2, 20 }, { 30, 990 } }))
    assert.equal("T:7:100 \n", bbv.line({ { 7, 100 } }))
    assert.equal("T\n", bbv.line({}))
  end)

  it("prints large counts in full", function()
    assert.equal("T:1:123456789012 \n", bbv.line({ { 1, 123456789012 } }))
  end)

  describe("subtract", function()
    local function recorder()
      local c = { calls = {} }
      function c:add(n, vcpu) self.calls[#self.calls + 1] = { n, vcpu } end
      return c
    end

    it("adds 2^64 - 2^53 then 2^53 - d: -d modulo 2^64, each part exact", function()
      local c = recorder()
      bbv.subtract(c, 300, 3)
      assert.equal(2, #c.calls)
      local high, low = c.calls[1][1], c.calls[2][1]
      assert.equal(2047 * 2 ^ 53, high)
      assert.equal(2 ^ 53, low + 300)
      assert.equal(3, c.calls[1][2])
      assert.equal(3, c.calls[2][2])
    end)

    it("does nothing for 0 and refuses amounts out of range", function()
      local c = recorder()
      bbv.subtract(c, 0, 0)
      assert.equal(0, #c.calls)
      assert.has_error(function() bbv.subtract(c, -1, 0) end)
      assert.has_error(function() bbv.subtract(c, 2 ^ 53 + 2, 0) end)
    end)
  end)
end)
