-- Specs for lua/qemu/hexbytes.lua: hex digits on the command line to bytes and back.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local hexbytes = require "qemu.hexbytes"

describe("qemu.hexbytes", function()
  describe("parse", function()
    it("reads two hex digits per byte, in either case", function()
      assert.equal("\x66\xb8\x01\x00\x5a\x5a", hexbytes.parse("66b801005a5a"))
      assert.equal("\xab\xcd", hexbytes.parse("AbCd"))
      assert.equal("\0", hexbytes.parse("00"))
    end)

    it("refuses an odd number of digits, saying how many", function()
      local bytes, why = hexbytes.parse("abc")
      assert.is_nil(bytes)
      assert.equal("an odd number of hex digits (3)", why)
    end)

    it("names the first character that is not a hex digit and where it is", function()
      local cases = { zz = "'z' at position 1", ["9z"] = "'z' at position 2",
        ["0x90"] = "'x' at position 2", ["90 90"] = "' ' at position 3" }
      for text, char_at in pairs(cases) do
        local bytes, why = hexbytes.parse(text)
        assert.is_nil(bytes, text)
        assert.equal(char_at .. " is not a hex digit (0-9, a-f, A-F)", why)
      end
    end)

    it("refuses the empty text and anything not a string", function()
      assert.same({ nil, "no bytes" }, { hexbytes.parse("") })
      assert.same({ nil, "expected hex digits as a string, got number" }, { hexbytes.parse(90) })
      assert.same({ nil, "expected hex digits as a string, got nil" }, { hexbytes.parse(nil) })
    end)
  end)

  describe("format", function()
    it("writes each byte as two lowercase digits", function()
      assert.equal("66b801005a5a", hexbytes.format("\x66\xb8\x01\x00\x5a\x5a"))
      assert.equal("", hexbytes.format(""))
    end)

    it("undoes parse", function()
      for _, text in ipairs({ "00", "ff", "0123456789abcdef" }) do
        assert.equal(text, hexbytes.format(hexbytes.parse(text)))
      end
    end)
  end)
end)
