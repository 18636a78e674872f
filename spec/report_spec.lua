-- Specs for lua/qemu/report.lua: ranking, sorted iteration and number formatting for reports.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local report = require "qemu.report"

-- A Lua 5.4 integer of 2^63 or more is negative; LuaJIT has no such values (doubles).
local HIGH = math.type and math.mininteger or nil

describe("qemu.report", function()
  describe("ult", function()
    it("orders ordinary numbers as <", function()
      assert.is_true(report.ult(1, 2))
      assert.is_false(report.ult(2, 1))
      assert.is_false(report.ult(2, 2))
    end)

    it("orders Lua 5.4 negative integers (values of 2^63 and more) after positive ones", function()
      if not HIGH then return end
      assert.is_true(report.ult(0x7fffffffffffffff, HIGH))
      assert.is_false(report.ult(HIGH, 1))
      assert.is_true(report.ult(HIGH, -1))
    end)
  end)

  describe("key_lt", function()
    it("compares strings bytewise, shorter prefix first", function()
      assert.is_true(report.key_lt("\1\2", "\1\3"))
      assert.is_true(report.key_lt("\1", "\1\0"))
      assert.is_true(report.key_lt("Z", "a"))
      assert.is_true(report.key_lt("\127", "\200"))
      assert.is_false(report.key_lt("ab", "ab"))
    end)

    it("compares lists of keys lexicographically", function()
      assert.is_true(report.key_lt({ 0x400000, 3 }, { 0x400000, 11 }))
      assert.is_true(report.key_lt({ 0x400000, 11 }, { 0x400010, 1 }))
      assert.is_true(report.key_lt({ 5 }, { 5, 1 }))
      assert.is_false(report.key_lt({ 5, 1 }, { 5, 1 }))
    end)
  end)

  describe("rank", function()
    it("sorts by count descending and breaks ties by key ascending", function()
      local recs = {
        { pc = 0x30, n = 5 }, { pc = 0x10, n = 7 }, { pc = 0x20, n = 5 }, { pc = 0x05, n = 5 },
      }
      report.rank(recs, "n", "pc")
      local pcs = {}
      for i, r in ipairs(recs) do pcs[i] = r.pc end
      assert.are.same({ 0x10, 0x05, 0x20, 0x30 }, pcs)
    end)

    it("takes functions for the count and the key", function()
      local recs = { { r = 1, w = 1, a = 2 }, { r = 3, w = 0, a = 1 }, { r = 0, w = 2, a = 0 } }
      report.rank(recs, function(x) return x.r + x.w end, function(x) return x.a end)
      assert.are.same({ 1, 0, 2 }, { recs[1].a, recs[2].a, recs[3].a })
    end)

    it("gives the same order whatever order the records come in", function()
      local a = { { k = 3, n = 1 }, { k = 1, n = 1 }, { k = 2, n = 1 } }
      local b = { { k = 2, n = 1 }, { k = 3, n = 1 }, { k = 1, n = 1 } }
      report.rank(a, "n", "k")
      report.rank(b, "n", "k")
      assert.are.same(a, b)
    end)
  end)

  describe("top", function()
    it("returns the first limit ranked records as a new list", function()
      local recs = {}
      for i = 1, 30 do recs[i] = { pc = i, n = i % 7 } end
      local top = report.top(recs, 3, "n", "pc")
      assert.are.equal(3, #top)
      assert.are.same({ 6, 13, 20 }, { top[1].pc, top[2].pc, top[3].pc })
    end)

    it("returns everything when there are fewer records than the limit, or no limit", function()
      local recs = { { pc = 2, n = 1 }, { pc = 1, n = 1 } }
      assert.are.equal(2, #report.top(recs, 20, "n", "pc"))
      assert.are.equal(2, #report.top(recs, nil, "n", "pc"))
      assert.are.same({}, report.top({}, 20, "n", "pc"))
    end)

    it("picks what a full rank puts first, ties included, and leaves the list as it was", function()
      local seed = 7
      local function random(n) seed = seed * 48271 % 2147483647; return seed % n end
      for _, limit in ipairs({ 0, 1, 2, 5, 20, 99, 100 }) do
        local recs = {}
        for i = 1, 100 do recs[i] = { pc = random(1000), n = random(6) } end
        local order, order_before = {}, {}
        for i = 1, #recs do order[i], order_before[i] = recs[i], recs[i] end
        local top = report.top(recs, limit, "n", function(x) return { x.pc } end)
        local ranked = report.rank(order, "n", "pc")
        assert.are.equal(limit, #top)
        for i = 1, limit do assert.are.equal(ranked[i], top[i]) end
        for i = 1, #recs do assert.are.equal(order_before[i], recs[i]) end
      end
    end)

    it("keeps the unsigned order of counts above 2^63 (negative integers in Lua 5.4)", function()
      local big = math.mininteger or -1 -- Lua 5.4: 2^63; LuaJIT: a negative number ranks lowest
      local recs = { { pc = 1, n = 5 }, { pc = 2, n = big }, { pc = 3, n = 7 } }
      local top = report.top(recs, 2, "n", "pc")
      if math.mininteger then
        assert.are.same({ 2, 3 }, { top[1].pc, top[2].pc })
      else
        assert.are.equal(2, #top)
      end
    end)
    it("lets in a count of 2^63 or more met after the heap is full", function()
      if not math.mininteger then return end -- LuaJIT's numbers have no such count
      local big = math.mininteger
      local recs = { { pc = 1, n = 5 }, { pc = 2, n = 7 }, { pc = 3, n = 1 }, { pc = 4, n = big },
        { pc = 5, n = big + 1 }, { pc = 6, n = 6 } }
      local top = report.top(recs, 2, "n", "pc")
      assert.are.same({ 5, 4 }, { top[1].pc, top[2].pc })
    end)
  end)

  describe("sort_by", function()
    it("sorts ascending, or descending on request", function()
      local recs = { { a = 2 }, { a = 9 }, { a = 1 } }
      report.sort_by(recs, "a")
      assert.are.same({ 1, 2, 9 }, { recs[1].a, recs[2].a, recs[3].a })
      report.sort_by(recs, "a", true)
      assert.are.same({ 9, 2, 1 }, { recs[1].a, recs[2].a, recs[3].a })
    end)
  end)

  describe("sorted_pairs", function()
    it("iterates numeric keys in unsigned order and string keys bytewise", function()
      local seen = {}
      for k, v in report.sorted_pairs({ [30] = "c", [10] = "a", [20] = "b" }) do
        seen[#seen + 1] = k .. v
      end
      assert.are.same({ "10a", "20b", "30c" }, seen)
      seen = {}
      for k in report.sorted_pairs({ b = 1, a = 1, ["B"] = 1 }) do seen[#seen + 1] = k end
      assert.are.same({ "B", "a", "b" }, seen)
    end)

    it("takes a custom order", function()
      local seen = {}
      local down = function(a, b) return a > b end
      for k in report.sorted_pairs({ [1] = 1, [2] = 1, [3] = 1 }, down) do
        seen[#seen + 1] = k
      end
      assert.are.same({ 3, 2, 1 }, seen)
    end)
  end)

  describe("values", function()
    it("lists the values of a table", function()
      local v = report.values({ x = 1, y = 2 })
      table.sort(v)
      assert.are.same({ 1, 2 }, v)
    end)
  end)

  describe("hex", function()
    it("prints zero-padded lowercase digits like PRIx64", function()
      assert.are.equal("0000004002818dc8", report.hex(0x4002818dc8, 16))
      assert.are.equal("0001", report.hex(1, 4))
      assert.are.equal("12345", report.hex(0x12345, 4))
      assert.are.equal("0", report.hex(0))
    end)

    it("prints values of 2^63 and more as C does", function()
      if HIGH then
        assert.are.equal("8000000000000000", report.hex(HIGH, 16))
        assert.are.equal("ffffffff81000000", report.hex(-0x7f000000, 16))
      else
        assert.are.equal("ffffffff81000000", report.hex(0xffffffff81000000, 16))
      end
    end)

    it("refuses fractions", function()
      assert.has_error(function() report.hex(1.5) end)
    end)
  end)

  describe("dec", function()
    it("prints integers, integer-valued floats included, without a fraction", function()
      assert.are.equal("409500", report.dec(409500))
      assert.are.equal("4294967296", report.dec(2 ^ 32))
      assert.are.equal("0", report.dec(0))
    end)

    it("refuses fractions", function()
      assert.has_error(function() report.dec(0.5) end)
    end)
  end)

  describe("rows", function()
    it("formats each record with the fields function and concatenates the lines", function()
      local recs = { { a = 1, b = "x" }, { a = 2, b = "y" }, { a = 3, b = "z" } }
      local text = report.rows("%d=%s\n", recs, function(r) return r.a, r.b end)
      assert.are.equal("1=x\n2=y\n3=z\n", text)
    end)

    it("stops after limit rows", function()
      local recs = { { a = 1 }, { a = 2 }, { a = 3 } }
      assert.are.equal("1,2,", report.rows("%d,", recs, function(r) return r.a end, 2))
      assert.are.equal("", report.rows("%d,", {}, function(r) return r.a end, 2))
    end)
  end)

  describe("set_bit", function()
    it("sets a bit once, like mask |= 1 << index", function()
      local m = 0
      m = report.set_bit(m, 0)
      m = report.set_bit(m, 3)
      m = report.set_bit(m, 3)
      assert.are.equal(9, m)
      assert.are.equal("0009", report.hex(m, 4))
      assert.are.equal(2 ^ 40 + 9, report.set_bit(m, 40))
    end)
  end)
end)
