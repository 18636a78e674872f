-- Specs for lua/qemu/drcov_format.lua: maps parsing, module images, the module registry, ELF
-- entry points and the drcov file layout.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local fmt = require "qemu.drcov_format"

-- What /proc/self/maps of a QEMU running /bin/ls looked like (guest_base 0; QEMU maps guest code
-- without host PROT_EXEC, so guest images show r--p), with a host library mapped far above.
local MAPS = [[
4000000000-4000024000 r--p 00000000 fe:00 248107                     /usr/bin/ls
4000024000-4000025000 rw-p 00023000 fe:00 248107                     /usr/bin/ls
4000025000-4000026000 rw-p 00000000 00:00 0 
400280b000-4002835000 r--p 00000000 fe:00 332383                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
4002835000-4002836000 ---p 00000000 00:00 0 
4002836000-400283a000 rw-p 0002a000 fe:00 332383                     /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
4002850000-4002a1f000 r--p 00000000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
4002a1f000-4002a23000 r--p 001cf000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
4002a23000-4002a25000 rw-p 001d3000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
4002b00000-4002b01000 r--p 00000000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
4002b01000-4002b02000 r--p 00001000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
4002c00000-4002c01000 r--p 00003000 fe:00 99                         /tmp/part (deleted)
7f8632444000-7f863259a000 r-xp 00026000 fe:00 332835                     /usr/lib/x86_64-linux-gnu/libc.so.6
7ffc08675000-7ffc08696000 rw-p 00000000 00:00 0                          [stack]
]]

describe("qemu.drcov_format", function()
  local lines = fmt.parse_maps(MAPS)

  describe("parse_maps", function()
    it("reads every line with addresses, offset, permissions and path", function()
      assert.equal(14, #lines)
      local l = lines[1]
      assert.equal(0x4000000000, l.start)
      assert.equal(0x4000024000, l.stop)
      assert.equal(0, l.offset)
      assert.equal("r--p", l.perms)
      assert.equal("/usr/bin/ls", l.path)
      assert.equal("", lines[3].path)
      assert.equal(0x1cf000, lines[8].offset)
      assert.equal("[stack]", lines[14].path)
      assert.equal("/tmp/part (deleted)", lines[12].path)
    end)

    it("skips lines that are not mappings", function()
      assert.same({}, fmt.parse_maps("garbage\n\n"))
    end)
  end)

  describe("image_of", function()
    it("spans a file's load from its offset-0 mapping to its last mapping", function()
      local img = fmt.image_of(lines, 0x4002a24000)
      assert.same({ path = "/usr/lib/x86_64-linux-gnu/libc.so.6", base = 0x4002850000,
                    stop = 0x4002a25000, file = true }, img)
      assert.same(img, fmt.image_of(lines, 0x4002850000))
    end)

    it("skips anonymous gaps between the mappings of one load", function()
      local img = fmt.image_of(lines, 0x4002837000)
      assert.equal(0x400280b000, img.base)
      assert.equal(0x400283a000, img.stop)
    end)

    it("treats a second offset-0 mapping of the same file as another load", function()
      local img = fmt.image_of(lines, 0x4002b01800)
      assert.equal(0x4002b00000, img.base)
      assert.equal(0x4002b02000, img.stop)
      local first = fmt.image_of(lines, 0x4002a23000)
      assert.equal(0x4002a25000, first.stop)
    end)

    it("bases a file with no offset-0 mapping at start - offset", function()
      local img = fmt.image_of(lines, 0x4002c00010)
      assert.equal(0x4002c00000 - 0x3000, img.base)
      assert.equal(0x4002c01000, img.stop)
    end)

    it("gives anonymous and named mappings an image of their own line", function()
      assert.same({ path = "[anon]", base = 0x4000025000, stop = 0x4000026000, file = false },
        fmt.image_of(lines, 0x4000025abc))
      assert.equal("[stack]", fmt.image_of(lines, 0x7ffc08680000).path)
    end)

    it("does not reach into another file's mappings or past them", function()
      -- the host's own libc.so.6 far above, after other files, is not part of the guest's load
      local img = fmt.image_of(lines, 0x4002b00000)
      assert.equal(0x4002b02000, img.stop)
      local host = fmt.image_of(lines, 0x7f8632444000)
      assert.equal(0x7f8632444000 - 0x26000, host.base)
    end)

    it("finds nothing outside every mapping", function()
      assert.is_nil(fmt.image_of(lines, 0x4002840000))
      assert.is_nil(fmt.image_of(lines, 0x1000))
    end)
  end)

  describe("elf_entry and module_entry", function()
    local function header64(etype, entry)
      local bytes = { 0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0 }
      for _ = 9, 16 do bytes[#bytes + 1] = 0 end
      bytes[17], bytes[18] = etype % 256, 0
      for i = 19, 24 do bytes[i] = 0 end
      local v = entry
      for i = 25, 32 do bytes[i] = v % 256; v = math.floor(v / 256) end
      for i = 33, 64 do bytes[i] = 0 end
      local up = table.unpack or unpack
      return string.char(up(bytes))
    end

    it("reads e_type and e_entry of a little-endian ELF64", function()
      local t, e = fmt.elf_entry(header64(2, 0x4014f0))
      assert.equal(2, t)
      assert.equal(0x4014f0, e)
    end)

    it("reads big-endian ELF32 headers", function()
      local h = "\127ELF\1\2\1" .. string.rep("\0", 9) .. "\0\3" .. "\0\8" .. "\0\0\0\1"
        .. "\0\1\2\3" .. string.rep("\0", 8)
      local t, e = fmt.elf_entry(h)
      assert.equal(3, t)
      assert.equal(0x00010203, e)
    end)

    it("adds the base for ET_DYN only", function()
      assert.equal(0x4014f0, fmt.module_entry(header64(2, 0x4014f0), 0x400000))
      assert.equal(0x4000006000 + 0x61d0, fmt.module_entry(header64(3, 0x61d0), 0x4000006000))
    end)

    it("rejects what is not an ELF header", function()
      assert.is_nil(fmt.elf_entry("#!/bin/sh\n" .. string.rep(" ", 60)))
      assert.is_nil(fmt.elf_entry("\127ELF"))
      assert.is_nil(fmt.elf_entry(nil))
      assert.equal(0, fmt.module_entry("nope", 0x1000))
    end)
  end)

  describe("registry", function()
    it("numbers modules from 0 and keeps one per path and base", function()
      local reg = fmt.registry()
      local a = reg:add("/bin/a", 0x1000, 0x2000)
      local b = reg:add("/lib/b", 0x5000, 0x6000)
      assert.equal(0, a.id)
      assert.equal(1, b.id)
      assert.equal(a, reg:add("/bin/a", 0x1000, 0x3000))
      assert.equal(0x3000, a.stop)
      assert.equal(2, reg:add("/bin/a", 0x9000, 0xa000).id)
      assert.equal(3, #reg.list)
    end)

    it("finds active modules by address, end excluded", function()
      local reg = fmt.registry()
      local a = reg:add("/bin/a", 0x1000, 0x2000)
      local b = reg:add("/lib/b", 0x5000, 0x6000)
      assert.equal(a, reg:find(0x1000))
      assert.equal(b, reg:find(0x5fff))
      assert.equal(a, reg:find(0x1fff))
      assert.is_nil(reg:find(0x2000))
      assert.is_nil(reg:find(0x4fff))
    end)

    it("retires the modules a mapping change overlaps, and revives them when found again", function()
      local reg = fmt.registry()
      local a = reg:add("/bin/a", 0x1000, 0x2000)
      local b = reg:add("/lib/b", 0x5000, 0x6000)
      reg:invalidate(0x5800, 0x5900)
      assert.is_nil(reg:find(0x5000))
      assert.equal(a, reg:find(0x1000))
      reg:invalidate(0x2000, 0x5000) -- touches neither
      assert.equal(a, reg:find(0x1800))
      local c = reg:add("[anon]", 0x5000, 0x5400)
      assert.equal(2, c.id)
      assert.equal(c, reg:find(0x5000))
      assert.equal(b, reg:add("/lib/b", 0x5000, 0x6000))
      assert.equal(3, #reg.list)
    end)
  end)

  describe("file layout", function()
    it("writes records as u32 offset, u16 size, u16 id, little-endian", function()
      assert.equal("\x78\x56\x34\x12\x0b\x00\x02\x00", fmt.record(0x12345678, 11, 2))
      assert.equal("\0\0\0\0\1\0\0\0", fmt.record(0, 1, 0))
      assert.equal("\xff\xff\xff\xff\xff\xff\xff\xff", fmt.record(0xffffffff, 0xffff, 0xffff))
    end)

    it("refuses values that do not fit", function()
      assert.has_error(function() fmt.record(0x100000000, 1, 0) end)
      assert.has_error(function() fmt.record(0, 0x10000, 0) end)
      assert.has_error(function() fmt.record(-1, 1, 0) end)
    end)

    it("writes QEMU's header, one line per module and the BB Table line", function()
      local text = fmt.header({
        { id = 0, base = 0x400000, stop = 0x4a7000, entry = 0x4014f0, path = "/t/loop" },
        { id = 1, base = 0x4002850000, stop = 0x4002a25000, path = "/lib/libc.so.6" },
      }, 1023)
      assert.equal("DRCOV VERSION: 2\nDRCOV FLAVOR: drcov-64\n"
        .. "Module Table: version 2, count 2\nColumns: id, base, end, entry, path\n"
        .. "0, 0x400000, 0x4a7000, 0x4014f0, /t/loop\n"
        .. "1, 0x4002850000, 0x4002a25000, 0x0, /lib/libc.so.6\n"
        .. "BB Table: 1023 bbs\n", text)
    end)
  end)
end)
