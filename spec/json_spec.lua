-- Specs for lua/qemu/json.lua: the writer behind the scripts' format=json reports.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local json = require "qemu.json"

local enc = json.encode
local A, O = json.array, json.object

describe("qemu.json", function()
  describe("strings", function()
    it("copies plain text and escapes quote and backslash", function()
      assert.are.equal('"abc"', enc("abc"))
      assert.are.equal('"a\\"b\\\\c"', enc('a"b\\c'))
      assert.are.equal('""', enc(""))
    end)

    it("escapes control bytes: short forms where JSON has them, \\u00XX otherwise", function()
      assert.are.equal('"\\n\\t\\r\\b\\f"', enc("\n\t\r\b\f"))
      assert.are.equal('"\\u0000\\u0001\\u001f\\u007f"', enc("\0\1\31\127"))
      assert.are.equal('"a\\u0000b"', enc("a\0b"))
    end)

    it("copies valid UTF-8 and writes each other byte as \\u00XX of the raw byte", function()
      assert.are.equal('"\206\148+1"', enc("\206\148+1"))               -- U+0394
      assert.are.equal('"\226\130\172"', enc("\226\130\172"))           -- U+20AC
      assert.are.equal('"\240\159\152\128"', enc("\240\159\152\128"))   -- U+1F600
      assert.are.equal('"\\u00ff"', enc("\255"))
      assert.are.equal('"\\u00ce"', enc("\206"))                        -- truncated sequence
      assert.are.equal('"\\u00c0\\u0080"', enc("\192\128"))             -- overlong
      assert.are.equal('"\\u00ed\\u00a0\\u0080"', enc("\237\160\128"))  -- a surrogate
      assert.are.equal('"\\u00f4\\u0090\\u0080\\u0080"', enc("\244\144\128\128")) -- > U+10FFFF
      assert.are.equal('"x\\u0080y"', enc("x\128y"))                    -- a lone continuation
    end)
  end)

  describe("numbers", function()
    it("writes integers as integers in both Luas", function()
      assert.are.equal("0", enc(0))
      assert.are.equal("-100", enc(-100))
      assert.are.equal("12285", enc(12285))
      assert.are.equal("3", enc(3.0))
      assert.are.equal("9007199254740991", enc(2 ^ 53 - 1))
    end)

    it("writes Lua 5.4 integers past 2^53 exactly", function()
      if not math.type then return end
      assert.are.equal("9007199254740993", enc(9007199254740993))
      assert.are.equal("-9223372036854775808", enc(math.mininteger))
    end)

    it("writes fractions with the fewest digits that read back the same", function()
      assert.are.equal("0.5", enc(0.5))
      assert.are.equal("0.1", enc(0.1))
      assert.are.equal(1 / 3, tonumber(enc(1 / 3)))
      assert.are.equal(5.8047976561069401, tonumber(enc(5.8047976561069401)))
      assert.are.equal("1e+300", enc(1e300))
    end)

    it("refuses NaN and infinities, naming where they are", function()
      assert.has_error(function() enc(0 / 0) end, "json.encode: NaN at $ has no JSON representation")
      assert.has_error(function() enc(O { "rows", A { 1, math.huge } }) end,
        "json.encode: inf at $.rows[1] has no JSON representation")
      assert.has_error(function() enc(-math.huge) end,
        "json.encode: -inf at $ has no JSON representation")
    end)

    it("u64: a number below 2^53, a 0x string from there on", function()
      assert.are.equal(5, json.u64(5))
      assert.are.equal(2 ^ 53 - 1, json.u64(2 ^ 53 - 1))
      assert.are.equal("0x20000000000000", json.u64(2 ^ 53))
      assert.are.equal("0xffffffffffffff9c", json.u64(-100)) -- a u64 of 2^64 - 100
      assert.has_error(function() json.u64(0.5) end)
    end)

    it("hex: always a zero-padded 0x string", function()
      assert.are.equal("0x00000000004016b0", json.hex(0x4016b0, 16))
      assert.are.equal("0x90", json.hex(0x90))
      assert.are.equal("0xffffffffffffffff", json.hex(-1, 16))
    end)
  end)

  describe("containers", function()
    it("writes an object's keys in the order given", function()
      assert.are.equal('{"z":1,"a":2,"m":3}', enc(O { "z", 1, "a", 2, "m", 3 }))
    end)

    it("tells an empty array from an empty object", function()
      assert.are.equal("[]", enc(A {}))
      assert.are.equal("{}", enc(O {}))
      assert.are.equal("[]", enc(A()))
    end)

    it("nests, on one line without spaces", function()
      local v = O { "report", "x", "rows", A { O { "pc", "0x1", "n", 2 }, O {} }, "ok", true,
        "none", json.null, "no", false }
      assert.are.equal('{"report":"x","rows":[{"pc":"0x1","n":2},{}],"ok":true,"none":null,"no":false}',
        enc(v))
    end)

    it("writes json.null in arrays, with an explicit length past trailing holes", function()
      assert.are.equal("[1,null]", enc(A { 1, json.null }))
      assert.are.equal("[null,null]", enc(A({ json.null, json.null })))
    end)

    it("refuses plain tables, nil items, odd pairs, bad and repeated keys", function()
      assert.has_error(function() enc({ 1, 2 }) end,
        "json.encode: the table at $ is neither json.array nor json.object (say which it is)")
      assert.has_error(function() enc(A({ 1 }, 2)) end, "json.encode: $[1] is nil (use json.null)")
      assert.has_error(function() O { "a" } end)
      assert.has_error(function() O { 1, 2 } end)
      assert.has_error(function() O { "a", 1, "a", 2 } end)
      assert.has_error(function() enc(print) end)
    end)

    it("escapes keys like strings", function()
      assert.are.equal('{"a\\"b\\n":1}', enc(O { 'a"b\n', 1 }))
    end)
  end)
end)
