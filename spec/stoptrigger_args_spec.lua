-- Specs for lua/qemu/stoptrigger_args.lua: numbers as strtoull(base 0) reads them, N[:RC] values
-- and address lists.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local parse = require "qemu.stoptrigger_args"

describe("qemu.stoptrigger_args", function()
  it("reads decimal, 0x hex and leading-0 octal", function()
    assert.equal(250000, parse.number("250000"))
    assert.equal(0x401615, parse.number("0x401615"))
    assert.equal(0xABC, parse.number("0XaBc"))
    assert.equal(8, parse.number("010"))
    assert.equal(0, parse.number("0"))
  end)

  it("refuses what strtoull would read only in part", function()
    for _, bad in ipairs({ "", "12abc", "main", "0x", "08", "-1", "+5", " 5", "1e3", "0x1g" }) do
      assert.is_nil(parse.number(bad), bad)
    end
    assert.is_nil(parse.number(nil))
    assert.is_nil(parse.number("9007199254740992")) -- 2^53
  end)

  it("splits VALUE[:RC], RC 0 by default, 0..255", function()
    assert.same({ 100, 0 }, { parse.value_rc("100", "icount") })
    assert.same({ 100, 7 }, { parse.value_rc("100:7", "icount") })
    assert.same({ 0x401000, 255 }, { parse.value_rc("0x401000:0xff", "addr") })
    local v, why = parse.value_rc("100:256", "icount")
    assert.is_nil(v)
    assert.equal("icount: exit code '256' must be a number from 0 to 255", why)
    v, why = parse.value_rc("x:1", "addr")
    assert.is_nil(v)
    assert.equal("addr: 'x' is not a number (decimal, 0x hex or 0 octal)", why)
    assert.is_nil((parse.value_rc("5:", "icount")))
  end)

  it("wants a positive icount", function()
    assert.same({ 1, 0 }, { parse.icount("1") })
    local n, why = parse.icount("0:3")
    assert.is_nil(n)
    assert.equal("icount: '0:3' must be a positive integer", why)
  end)

  it("reads several addresses joined by +, the last code for an address winning", function()
    assert.same({ { addr = 0x401615, rc = 9 } }, parse.addrs("0x401615:9"))
    assert.same({ { addr = 16, rc = 4 }, { addr = 0x401615, rc = 0 } },
      parse.addrs("0x10:3+0x401615+16:4"))
    local list, why = parse.addrs("0x10+")
    assert.is_nil(list)
    assert.equal("addr: '' is not a number (decimal, 0x hex or 0 octal)", why)
  end)
end)
