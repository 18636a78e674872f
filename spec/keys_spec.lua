-- Specs for lua/qemu/keys.lua: numbers for tuples of keys, kept in columns.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local keys = require "qemu.keys"

describe("qemu.keys", function()
  it("numbers tuples 1, 2, 3 ... in the order first seen, and says which are new", function()
    local s = keys.new(2)
    assert.are.same({ 1, true }, { s:id(0x1000, 3) })
    assert.are.same({ 2, true }, { s:id(0x1000, 5) }) -- same first part, other second
    assert.are.same({ 3, true }, { s:id(0x2000, 3) })
    assert.are.same({ 1, false }, { s:id(0x1000, 3) })
    assert.are.same({ 2, false }, { s:id(0x1000, 5) })
    assert.are.equal(3, s.n)
    assert.are.same({ 0x1000, 0x1000, 0x2000 }, s[1])
    assert.are.same({ 3, 5, 3 }, s[2])
  end)

  it("finds every tuple of a long chain sharing one first part", function()
    local s = keys.new(3)
    local m1, m2 = {}, {}
    for size = 1, 50 do
      s:id(7, size, m1)
      s:id(7, size, m2)
    end
    assert.are.equal(100, s.n)
    for size = 1, 50 do
      assert.are.equal(2 * size - 1, s:find(7, size, m1))
      assert.are.equal(2 * size, s:find(7, size, m2))
    end
    assert.is_nil(s:find(7, 51, m1))
    assert.is_nil(s:find(7, 1, {})) -- tables compare by identity
    assert.is_nil(s:find(8, 1, m1))
  end)

  it("tells big addresses apart (Lua 5.4 integers above 2^63 included)", function()
    local s = keys.new(1)
    local big = math.mininteger or 2 ^ 60
    assert.are.equal(1, (s:id(big)))
    assert.are.equal(2, (s:id(big + 4096)))
    assert.are.equal(1, (s:id(big)))
    assert.are.same({ big, big + 4096 }, s[1])
  end)

  it("keeps width 4 tuples apart on every part", function()
    local s = keys.new(4)
    assert.are.equal(1, (s:id(1, 2, 3, 4)))
    assert.are.equal(2, (s:id(1, 2, 3, 5)))
    assert.are.equal(3, (s:id(1, 2, 4, 4)))
    assert.are.equal(4, (s:id(1, 3, 3, 4)))
    assert.are.equal(3, (s:find(1, 2, 4, 4)))
    assert.are.same({ 4, 5, 4, 4 }, s[4])
  end)

  it("refuses a bad width and a first part that cannot be a table key", function()
    assert.has_error(function() keys.new(0) end,
      "qemu.keys.new: width must be a whole number from 1 to 4, got 0")
    assert.has_error(function() keys.new("2") end,
      "qemu.keys.new: width must be a whole number from 1 to 4, got 2")
    local s = keys.new(2)
    assert.has_error(function() s:id(nil, 1) end,
      "qemu.keys: the first part of a tuple must not be nil or NaN")
    assert.has_error(function() s:id(0 / 0, 1) end,
      "qemu.keys: the first part of a tuple must not be nil or NaN")
    assert.is_nil(s:find(nil, 1))
    assert.are.equal(0, s.n)
  end)
end)
