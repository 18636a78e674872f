-- Specs for lua/qemu/uftrace_format.lua: the files of a uftrace.data folder (info, task.txt,
-- sid-0.map, the .dat records, .sym files) as QEMU 10.2's uftrace plugin writes them.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local fmt = require "qemu.uftrace_format"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function lines(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

describe("qemu.uftrace_format", function()
  describe("HEADER", function()
    it("is the 40 bytes QEMU's plugin puts before the info text", function()
      assert.equal(40, #fmt.HEADER)
      assert.equal("4674726163652100" .. "04000000" .. "2800" .. "01" .. "02"
        .. "6312000000000000" .. "ff7b000000000000" .. "0004" .. "000000000000", hex(fmt.HEADER))
    end)
  end)

  describe("info", function()
    it("fills in the task list and leaves the host's facts empty", function()
      local text = fmt.info({ 100, 200 })
      assert.equal(fmt.HEADER, text:sub(1, 40))
      local l = lines(text:sub(41))
      assert.equal(28, #l)
      assert.equal("exename:", l[1])
      assert.equal("build_id:" .. string.rep("0", 40), l[2])
      assert.equal("taskinfo:lines=2", l[13])
      assert.equal("taskinfo:nr_tid=2", l[14])
      assert.equal("taskinfo:tids=100,200", l[15])
      assert.equal("pattern_type:regex", l[26])
      assert.equal("utc_offset:", l[28])
      assert.equal("\n", text:sub(-1))
    end)

    it("writes an empty list for no trace", function()
      local l = lines(fmt.info({}):sub(41))
      assert.equal("taskinfo:nr_tid=0", l[14])
      assert.equal("taskinfo:tids=", l[15])
    end)

    it("is 505 bytes for one trace, as QEMU's plugin writes it", function()
      assert.equal(505, #fmt.info({ 100 }))
    end)
  end)

  describe("task", function()
    it("makes each trace a session and a task of its own", function()
      assert.equal('SESS timestamp=0.0 pid=100 sid=0 exename="cpu0"\n'
        .. "TASK timestamp=0.0 tid=100 pid=100\n"
        .. 'SESS timestamp=0.0 pid=103 sid=0 exename="cpu0 Ring3"\n'
        .. "TASK timestamp=0.0 tid=103 pid=103\n",
        fmt.task({ { id = 100, name = "cpu0" }, { id = 103, name = "cpu0 Ring3" } }))
    end)

    it("is empty without traces", function()
      assert.equal("", fmt.task({}))
    end)
  end)

  describe("SYSTEM_MAP", function()
    it("maps only a stack at the top of the 48-bit space, after two comment lines", function()
      local l = lines(fmt.SYSTEM_MAP)
      assert.equal(3, #l)
      assert.equal("# map stack on", l[1]:sub(1, 14)) -- what uftrace_symbols.py looks for
      assert.equal("ffffffffffff-ffffffffffff rw-p 00000000 00:00 0 [stack]", l[3])
    end)
  end)

  describe("word_halves", function()
    it("packs kind, the magic 5, depth and address", function()
      local lo, hi = fmt.word_halves(fmt.ENTRY, 1, 0x401000)
      assert.equal(0x10000068, lo) -- 0x401000 << 16 | 1 << 6 | 5 << 3 | 0
      assert.equal(0x40, hi)
      lo, hi = fmt.word_halves(fmt.EXIT, 0, 0x401234)
      assert.equal(0x12340029, lo)
      assert.equal(0x40, hi)
    end)

    it("carries a depth of 1024 into the address, as QEMU's plugin adds them", function()
      local lo, hi = fmt.word_halves(fmt.EXIT, 1024, 0x401000)
      assert.equal(0x10010029, lo) -- the address + 1, depth 0
      assert.equal(0x40, hi)
    end)

    it("keeps the low 48 bits of an address above them", function()
      local lo, hi = fmt.word_halves(fmt.EXIT, 2, 0xffffffff81000000)
      assert.equal(0x000000a9, lo)
      assert.equal(0xffff8100, hi)
      if math.type then -- Lua 5.4: the exact integer (negative), any low bits
        lo, hi = fmt.word_halves(fmt.ENTRY, 3, math.tointeger(-0x7edcba99)) -- 0xffffffff81234567
        assert.equal(0x456700e8, lo)
        assert.equal(0xffff8123, hi)
      end
    end)
  end)

  describe("time_base and time_halves", function()
    it("splits nanoseconds since 1970 exactly", function()
      local lo, hi = fmt.time_base(1700000000, 123456789) -- 0x17979cfe3d85cd15
      assert.equal(0x3d85cd15, lo)
      assert.equal(0x17979cfe, hi)
    end)

    it("adds a relative time with its carry", function()
      local lo, hi = fmt.time_halves(0xfffffff0, 7, 0x20)
      assert.equal(0x10, lo)
      assert.equal(8, hi)
      lo, hi = fmt.time_halves(5, 1, 3 * 4294967296 + 2)
      assert.equal(7, lo)
      assert.equal(4, hi)
    end)
  end)

  describe("record", function()
    it("is 16 little-endian bytes: timestamp, then the word", function()
      local lo, hi = fmt.time_base(1700000000, 123456789)
      local r = fmt.record(lo, hi, 5, fmt.ENTRY, 1, 0x401000)
      assert.equal(fmt.RECORD_SIZE, #r)
      assert.equal("1acd853dfe9c9717" .. "6800001040000000", hex(r))
    end)
  end)

  describe("buffer", function()
    local records = {
      { 0, fmt.ENTRY, 1, 0x401000 },
      { 1500, fmt.ENTRY, 2, 0x401100 },
      { 4294967296 + 3, fmt.EXIT, 1, 0x401100 },
      { 2 ^ 40, fmt.EXIT, 1024, 0x7fffffffe000 },
    }

    local function check(portable)
      local lo, hi = fmt.time_base(1700000000, 999999999)
      local buf = fmt.buffer(4, portable)
      local expected = {}
      for i, r in ipairs(records) do
        assert.equal(i == #records, buf:add(r[1], r[2], r[3], r[4]))
        expected[i] = fmt.record(lo, hi, r[1], r[2], r[3], r[4])
      end
      assert.equal(4, buf.n)
      assert.equal(hex(table.concat(expected)), hex(buf:encode(lo, hi)))
      buf:clear()
      assert.equal(0, buf.n)
      assert.equal("", buf:encode(lo, hi))
      buf:add(7, fmt.ENTRY, 1, 0x401000)
      assert.equal(hex(fmt.record(lo, hi, 7, fmt.ENTRY, 1, 0x401000)), hex(buf:encode(lo, hi)))
    end

    it("encodes what it holds as the records one by one would be (native form)", function()
      check(false)
    end)

    it("encodes the same bytes in its portable form", function()
      check(true)
    end)

    it("says it is full at its capacity", function()
      local buf = fmt.buffer(2)
      assert.is_false(buf:add(1, fmt.ENTRY, 1, 0x1000))
      assert.is_true(buf:add(2, fmt.EXIT, 0, 0x1000))
    end)

    it("refuses a capacity below 1", function()
      assert.has_error(function() fmt.buffer(0) end)
    end)
  end)

  describe("symbols", function()
    it("writes 12-digit address and size, T and the name", function()
      assert.equal("000000401000 000000000020 T main\n"
        .. "ffffff812345 000000000100 T start_kernel\n",
        fmt.symbols({ { addr = 0x401000, size = 0x20, name = "main" },
                      { addr = 0xffffff812345, size = 0x100, name = "start_kernel" } }))
    end)

    it("clamps addresses to 48 bits and prefixes names when asked", function()
      assert.equal("ffff81000000 000000000010 T vmlinux:start\n",
        fmt.symbols({ { addr = 0xffffffff81000000, size = 16, name = "start" } }, "vmlinux"))
    end)
  end)
end)
