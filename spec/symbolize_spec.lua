-- Specs for lua/qemu/symbolize.lua: address arguments, how names print, the symbols=/symfile=
-- arguments of the shipped scripts, and renaming folded stacks.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local sym = require "qemu.symbolize"

describe("qemu.symbolize", function()
  describe("is_address", function()
    it("takes whole numbers from 0 to 2^64-1", function()
      assert.is_true(sym.is_address(0))
      assert.is_true(sym.is_address(0x401136))
      assert.is_true(sym.is_address(2 ^ 53))
      assert.is_true(sym.is_address(2 ^ 64 - 2 ^ 11)) -- the largest double below 2^64
    end)

    it("refuses what no address is", function()
      for _, v in ipairs({ "x", "0x10", true, {}, 1.5, 2 ^ 64, 1 / 0, -1 / 0, -1.5 }) do
        assert.is_false(sym.is_address(v), tostring(v))
      end
      assert.is_false(sym.is_address(nil))
      assert.is_false(sym.is_address(0 / 0))
    end)

    it("reads a negative number as Lua 5.4's integer pattern of a high address only", function()
      if math.type then
        assert.is_true(sym.is_address(-1))           -- the integer 0xffffffffffffffff
        assert.is_false(sym.is_address(-1.0))
      else
        assert.is_false(sym.is_address(-1))          -- LuaJIT: a double, negative
      end
    end)
  end)

  describe("basename", function()
    it("keeps the last part of a path", function()
      assert.equal("libc.so.6", sym.basename("/usr/lib/x86_64-linux-gnu/libc.so.6"))
      assert.equal("vmlinux", sym.basename("vmlinux"))
      assert.equal("ls", sym.basename("/usr/bin/ls"))
    end)
  end)

  describe("format", function()
    it("prints module!symbol+0xoffset with the module's basename", function()
      assert.equal("libc.so.6!__libc_start_main+0x8a",
        sym.format("/usr/lib/x86_64-linux-gnu/libc.so.6", "__libc_start_main", 0x8a))
      assert.equal("loop!main+0x0", sym.format("/work/build/tests/loop", "main", 0))
    end)

    it("prints module+0xoffset without a symbol", function()
      assert.equal("ls+0x4730", sym.format("/usr/bin/ls", nil, 0x4730))
    end)

    it("is nil where nothing is known, so format(qemu.symbolize(a)) composes", function()
      assert.is_nil(sym.format(nil))
      assert.is_nil(sym.format())
    end)

    it("prints large offsets exactly", function()
      assert.equal("k!f+0x100000000", sym.format("k", "f", 2 ^ 32))
    end)
  end)

  describe("frame", function()
    it("names a function without its offset, or nothing", function()
      assert.equal("libc.so.6!malloc", sym.frame("/lib/libc.so.6", "malloc"))
      assert.is_nil(sym.frame("/lib/libc.so.6", nil))
      assert.is_nil(sym.frame(nil, nil))
    end)
  end)

  describe("script arguments", function()
    it("declares symbols= and symfile=", function()
      local decl = sym.script_args(false)
      assert.equal("symbols", decl[1].name)
      assert.equal("bool", decl[1].type)
      assert.is_nil(decl[1].default) -- unset: symfile= may turn names on
      assert.equal("symfile", decl[2].name)
      assert.is_true(decl[2].multiple)
      assert.truthy(sym.script_args(true)[1].help:find("default on", 1, true))
    end)

    it("follows symbols= when given, else symfile=, else the script's default", function()
      local loaded = {}
      local function load(path) loaded[#loaded + 1] = path end
      assert.is_false(sym.setup({ symfile = {} }, false, load))
      assert.is_true(sym.setup({ symfile = {} }, true, load))
      assert.is_false(sym.setup({ symbols = false, symfile = {} }, true, load))
      assert.is_true(sym.setup({ symbols = true, symfile = {} }, false, load))
      assert.same({}, loaded)
      assert.is_true(sym.setup({ symfile = { "System.map" } }, false, load))
      assert.same({ "System.map" }, loaded)
      assert.is_false(sym.setup({ symbols = false, symfile = { "vmlinux" } }, false, load))
      assert.same({ "System.map", "vmlinux" }, loaded)
    end)

    it("lets a load error through", function()
      assert.has_error(function()
        sym.setup({ symfile = { "nope" } }, false, function() error("cannot read nope") end)
      end)
    end)
  end)

  describe("rename_folded", function()
    it("renames frames, merges stacks that become equal and keeps depth-first order", function()
      local lines = {
        { "0x10", 1 },
        { "0x10;0x30", 2 },
        { "0x10;0x30;c", 3 },
        { "0x10;a", 4 },
        { "0x10;b", 5 },
      }
      local names = { ["0x10"] = "m+0x10", ["0x30"] = "b" }
      local out = sym.rename_folded(lines, function(f) return names[f] end)
      assert.same({
        { "m+0x10", 1 },
        { "m+0x10;a", 4 },
        { "m+0x10;b", 7 },
        { "m+0x10;b;c", 3 },
      }, out)
    end)

    it("sorts siblings bytewise, a stack before the ones that extend it", function()
      local out = sym.rename_folded({ { "r;b", 1 }, { "r;B", 1 }, { "r", 1 }, { "r;b;x", 1 } },
        function() return nil end)
      assert.same({ { "r", 1 }, { "r;B", 1 }, { "r;b", 1 }, { "r;b;x", 1 } }, out)
    end)

    it("asks once per distinct frame", function()
      local asked = 0
      sym.rename_folded({ { "a;b", 1 }, { "a;c", 1 }, { "a", 1 } }, function()
        asked = asked + 1
      end)
      assert.equal(3, asked)
    end)
  end)
end)
