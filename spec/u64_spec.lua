-- Specs for lua/qemu/u64.lua: unsigned 64-bit compare, checks, hex and decimal text and bit
-- helpers, with the same answers under LuaJIT (doubles) and Lua 5.4 (integers and floats).

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local u64 = require "qemu.u64"

-- Lua 5.4 integers that LuaJIT cannot hold (the literals do not parse there, hence load()): a
-- table of them under Lua 5.4, nil under LuaJIT.
local INT = math.type and load([[return {
  max = math.maxinteger,        -- 2^63 - 1
  min = math.mininteger,        -- 2^63, as a negative integer
  all = -1,                     -- 2^64 - 1
  kernel = 0xffffffff81000000,  -- a kernel text address, wraps to a negative integer
  two53 = 9007199254740992,
  two53p1 = 9007199254740993,   -- 2^53 + 1: no double holds it
}]])()

describe("qemu.u64", function()
  describe("lt", function()
    it("orders small values as < does", function()
      assert.is_true(u64.lt(0, 1))
      assert.is_false(u64.lt(1, 0))
      assert.is_false(u64.lt(0, 0))
    end)

    it("orders values around 2^31, 2^32 and 2^53", function()
      assert.is_true(u64.lt(2 ^ 31 - 1, 2 ^ 31))
      assert.is_true(u64.lt(2 ^ 32 - 1, 2 ^ 32))
      assert.is_true(u64.lt(2 ^ 53 - 1, 2 ^ 53))
      assert.is_false(u64.lt(2 ^ 53, 2 ^ 53 - 1))
    end)

    it("orders floats past 2^63 as unsigned", function()
      assert.is_true(u64.lt(2 ^ 62, 2 ^ 63))
      assert.is_true(u64.lt(2 ^ 63, 2 ^ 64 - 2048))
    end)

    it("reads a negative float as 2^64 + v, above every non-negative value below it", function()
      assert.is_true(u64.lt(2 ^ 63, -1))             -- -1 is 2^64 - 1
      assert.is_false(u64.lt(-1, 2 ^ 63))
      assert.is_true(u64.lt(-2 ^ 63, 2 ^ 63 + 2048)) -- -2^63 is 2^63
      assert.is_false(u64.lt(2 ^ 63 + 2048, -2 ^ 63))
      assert.is_false(u64.lt(-2 ^ 63, 2 ^ 63))       -- the same value, both ways
      assert.is_false(u64.lt(2 ^ 63, -2 ^ 63))
      assert.is_true(u64.lt(-2, -1))
      assert.is_true(u64.lt(1, -1))
    end)

    it("orders Lua 5.4 negative integers (2^63 and more) after the positive ones", function()
      if not INT then return end
      assert.is_true(u64.lt(INT.max, INT.min))
      assert.is_true(u64.lt(INT.min, INT.kernel))
      assert.is_true(u64.lt(INT.kernel, INT.all))
      assert.is_false(u64.lt(INT.all, 0))
      assert.is_true(u64.lt(INT.two53, INT.two53p1))
    end)

    it("compares a Lua 5.4 integer with a float by their unsigned values", function()
      if not INT then return end
      assert.is_true(u64.lt(INT.max, 2 ^ 63))
      assert.is_false(u64.lt(INT.min, 2 ^ 63))
      assert.is_false(u64.lt(2 ^ 63, INT.min))
      assert.is_true(u64.lt(2 ^ 63, INT.all))
      assert.is_true(u64.lt(1.0, INT.min))
    end)
  end)

  describe("le", function()
    it("holds for equal values and for smaller ones", function()
      assert.is_true(u64.le(0, 0))
      assert.is_true(u64.le(2 ^ 32, 2 ^ 32))
      assert.is_true(u64.le(2 ^ 32 - 1, 2 ^ 32))
      assert.is_false(u64.le(2 ^ 32, 2 ^ 32 - 1))
    end)

    it("orders values of 2^63 and more as unsigned", function()
      assert.is_true(u64.le(2 ^ 63, -1))
      assert.is_false(u64.le(-1, 2 ^ 63))
      if INT then
        assert.is_true(u64.le(INT.min, INT.min))
        assert.is_false(u64.le(INT.min, INT.max))
      end
    end)
  end)

  describe("whole", function()
    it("returns whole numbers unchanged", function()
      assert.are.equal(0, u64.whole(0))
      assert.are.equal(2 ^ 53, u64.whole(2 ^ 53))
      assert.are.equal(2 ^ 64 - 2048, u64.whole(2 ^ 64 - 2048))
      assert.are.equal(-2 ^ 63, u64.whole(-2 ^ 63))
      if INT then assert.are.equal(INT.all, u64.whole(INT.all)) end
    end)

    it("refuses fractions, floats outside -2^63 .. 2^64-1 and non-numbers", function()
      assert.has_error(function() u64.whole(0.5) end)
      assert.has_error(function() u64.whole(2 ^ 64) end)
      assert.has_error(function() u64.whole(-2 ^ 63 - 2048) end)
      assert.has_error(function() u64.whole(0 / 0) end)
      assert.has_error(function() u64.whole(math.huge) end)
      assert.has_error(function() u64.whole("1") end)
    end)
  end)

  describe("hex", function()
    it("prints lowercase digits without a prefix, zero-padded to the width", function()
      assert.are.equal("0", u64.hex(0))
      assert.are.equal("0000", u64.hex(0, 4))
      assert.are.equal("0001", u64.hex(1, 4))
      assert.are.equal("12345", u64.hex(0x12345, 4))
      assert.are.equal("0000004002818dc8", u64.hex(0x4002818dc8, 16))
      assert.are.equal("abcdef", u64.hex(0xabcdef))
    end)

    it("prints values around 2^31, 2^32 and 2^53 exactly", function()
      assert.are.equal("7fffffff", u64.hex(2 ^ 31 - 1))
      assert.are.equal("80000000", u64.hex(2 ^ 31))
      assert.are.equal("ffffffff", u64.hex(2 ^ 32 - 1))
      assert.are.equal("100000000", u64.hex(2 ^ 32))
      assert.are.equal("1fffffffffffff", u64.hex(2 ^ 53 - 1))
      assert.are.equal("20000000000000", u64.hex(2 ^ 53))
      assert.are.equal("20000000000002", u64.hex(2 ^ 53 + 2))
    end)

    it("prints floats from 2^63 to 2^64-1 with all 16 digits", function()
      assert.are.equal("8000000000000000", u64.hex(2 ^ 63))
      assert.are.equal("fffffffffffff800", u64.hex(2 ^ 64 - 2048))
      assert.are.equal("ffffffff81000000", u64.hex(2 ^ 64 - 0x7f000000))
    end)

    it("prints a negative float as its 64-bit two's complement", function()
      assert.are.equal("ffffffffffffffff", u64.hex(-1))
      assert.are.equal("ffffffff80000000", u64.hex(-2 ^ 31))
      assert.are.equal("ffe0000000000000", u64.hex(-2 ^ 53))
      assert.are.equal("8000000000000000", u64.hex(-2 ^ 63))
    end)

    it("prints Lua 5.4 integers of every range as their 64-bit pattern", function()
      if not INT then return end
      assert.are.equal("7fffffffffffffff", u64.hex(INT.max))
      assert.are.equal("8000000000000000", u64.hex(INT.min, 16))
      assert.are.equal("ffffffff81000000", u64.hex(INT.kernel))
      assert.are.equal("ffffffffffffffff", u64.hex(INT.all))
      assert.are.equal("20000000000001", u64.hex(INT.two53p1))
    end)

    it("does not cut digits beyond the width", function()
      assert.are.equal("8000000000000000", u64.hex(2 ^ 63, 8))
    end)

    it("refuses fractions and values outside the range", function()
      assert.has_error(function() u64.hex(1.5) end)
      assert.has_error(function() u64.hex(2 ^ 64) end)
    end)
  end)

  describe("dec", function()
    it("prints small values and integer-valued floats without a fraction", function()
      assert.are.equal("0", u64.dec(0))
      assert.are.equal("409500", u64.dec(409500))
      assert.are.equal("4294967296", u64.dec(2 ^ 32))
    end)

    it("prints values around 2^31, 2^32 and 2^53 exactly", function()
      assert.are.equal("2147483647", u64.dec(2 ^ 31 - 1))
      assert.are.equal("2147483648", u64.dec(2 ^ 31))
      assert.are.equal("4294967295", u64.dec(2 ^ 32 - 1))
      assert.are.equal("9007199254740991", u64.dec(2 ^ 53 - 1))
      assert.are.equal("9007199254740992", u64.dec(2 ^ 53))
      assert.are.equal("9007199254740994", u64.dec(2 ^ 53 + 2))
    end)

    it("prints floats from 2^63 to 2^64-1 as unsigned", function()
      assert.are.equal("9223372036854775808", u64.dec(2 ^ 63))
      assert.are.equal("18446744073709549568", u64.dec(2 ^ 64 - 2048))
      assert.are.equal("18014398509999996", u64.dec(2 ^ 54 + 518012))
      assert.are.equal("18014398510000004", u64.dec(2 ^ 54 + 518020)) -- inner zeros kept
      assert.are.equal("10000000000000000000", u64.dec(1e19))
    end)

    it("prints a negative float as 2^64 + v", function()
      assert.are.equal("18446744073709551615", u64.dec(-1))
      assert.are.equal("18446744071562067968", u64.dec(-2 ^ 31))
      assert.are.equal("18437736874454810624", u64.dec(-2 ^ 53))
      assert.are.equal("9223372036854775808", u64.dec(-2 ^ 63))
    end)

    it("prints Lua 5.4 negative integers as unsigned", function()
      if not INT then return end
      assert.are.equal("9223372036854775807", u64.dec(INT.max))
      assert.are.equal("9223372036854775808", u64.dec(INT.min))
      assert.are.equal("18446744071578845184", u64.dec(INT.kernel))
      assert.are.equal("18446744073709551615", u64.dec(INT.all))
      assert.are.equal("9007199254740993", u64.dec(INT.two53p1))
    end)

    it("refuses fractions and values outside the range", function()
      assert.has_error(function() u64.dec(0.5) end)
      assert.has_error(function() u64.dec(2 ^ 64) end)
    end)
  end)

  describe("set_bit", function()
    it("sets a bit once, like mask |= 1 << index", function()
      local m = 0
      m = u64.set_bit(m, 0)
      m = u64.set_bit(m, 3)
      m = u64.set_bit(m, 3)
      assert.are.equal(9, m)
      assert.are.equal("0009", u64.hex(m, 4))
    end)

    it("sets bits 31, 32 and 52", function()
      assert.are.equal(2 ^ 31, u64.set_bit(0, 31))
      assert.are.equal(2 ^ 32 + 1, u64.set_bit(1, 32))
      assert.are.equal(2 ^ 52 + 2 ^ 31, u64.set_bit(2 ^ 31, 52))
      assert.are.equal(2 ^ 52, u64.set_bit(2 ^ 52, 52))
    end)

    it("keeps a Lua 5.4 integer mask an integer", function()
      if not INT then return end
      assert.are.equal("integer", math.type(u64.set_bit(0, 40)))
    end)
  end)

  describe("band32", function()
    it("ands two 32-bit words into a non-negative number", function()
      assert.are.equal(0xd5032000, u64.band32(0xd503201f, 0xfffff000))
      assert.are.equal(0xffffffff, u64.band32(0xffffffff, 0xffffffff))
      assert.are.equal(0x80000000, u64.band32(0x80000000, 0xffffffff))
      assert.are.equal(0, u64.band32(0x0f0f0f0f, 0xf0f0f0f0))
    end)

    it("looks at the low 32 bits only", function()
      assert.are.equal(1, u64.band32(2 ^ 32 + 1, 2 ^ 32 + 1))
    end)
  end)
end)
