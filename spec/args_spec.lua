-- Specs for lua/qemu/args.lua: parsing of a script's declared arguments (pure logic).

local fake_core = require "spec.helpers.fake_core" -- also puts lua/ on package.path

describe("qemu.args", function()
  local args

  before_each(function()
    fake_core.unload()
    args = require "qemu.args"
  end)

  after_each(function()
    fake_core.unload()
  end)

  describe("parse_bool", function()
    it("accepts on, yes, true and y as true", function()
      for _, word in ipairs({ "on", "yes", "true", "y" }) do
        assert.is_true(args.parse_bool(word), word)
      end
    end)

    it("accepts off, no, false and n as false", function()
      for _, word in ipairs({ "off", "no", "false", "n" }) do
        assert.is_false(args.parse_bool(word), word)
      end
    end)

    it("is case-sensitive: ON, Yes, TRUE, N are rejected", function()
      for _, word in ipairs({ "ON", "Yes", "TRUE", "N", "Off" }) do
        assert.is_nil(args.parse_bool(word), word)
      end
    end)

    it("rejects other words, numbers and the empty string", function()
      for _, word in ipairs({ "1", "0", "", "enable", "yes ", " on", "t", "f" }) do
        assert.is_nil(args.parse_bool(word), word)
      end
    end)

    it("lists the accepted words in BOOL_WORDS", function()
      assert.equal("on, off, yes, no, true, false, y, n", args.BOOL_WORDS)
    end)
  end)

  describe("parse_int", function()
    it("parses decimal integers", function()
      assert.equal(0, args.parse_int("0"))
      assert.equal(42, args.parse_int("42"))
      assert.equal(1000000, args.parse_int("1000000"))
      assert.equal(7, args.parse_int("007"))
    end)

    it("parses 0x hexadecimal, in either case", function()
      assert.equal(255, args.parse_int("0xff"))
      assert.equal(255, args.parse_int("0XFF"))
      assert.equal(0x1000, args.parse_int("0x1000"))
    end)

    it("parses 0b binary", function()
      assert.equal(5, args.parse_int("0b101"))
      assert.equal(0, args.parse_int("0B0"))
    end)

    it("scales by 1024 per k/m/g suffix, in either case", function()
      assert.equal(4096, args.parse_int("4k"))
      assert.equal(4096, args.parse_int("4K"))
      assert.equal(2 * 1024 * 1024, args.parse_int("2m"))
      assert.equal(1024 * 1024 * 1024, args.parse_int("1G"))
      assert.equal(16 * 1024, args.parse_int("0x10k"))
      assert.equal(5 * 1024 * 1024, args.parse_int("0b101M"))
    end)

    it("returns an integer (not a float) for suffixed values on Lua 5.3+", function()
      if not math.type then return end -- LuaJIT has a single number type
      assert.equal("integer", math.type(args.parse_int("2m")))
      assert.equal("integer", math.type(args.parse_int("1g")))
      assert.equal("integer", math.type(args.parse_int("12")))
    end)

    it("parses negative numbers and an explicit plus sign", function()
      assert.equal(-12, args.parse_int("-12"))
      assert.equal(-16, args.parse_int("-0x10"))
      assert.equal(-2048, args.parse_int("-2k"))
      assert.equal(5, args.parse_int("+5"))
    end)

    it("rejects trailing garbage such as 12abc", function()
      assert.is_nil(args.parse_int("12abc"))
      assert.is_nil(args.parse_int("12 "))
      assert.is_nil(args.parse_int("4kb"))
    end)

    it("rejects the empty string", function()
      assert.is_nil(args.parse_int(""))
    end)

    it("rejects a bare 0x or 0b prefix", function()
      assert.is_nil(args.parse_int("0x"))
      assert.is_nil(args.parse_int("0b"))
      assert.is_nil(args.parse_int("0xk"))
    end)

    it("rejects a lone sign or suffix, doubled signs, bad digits and decimals", function()
      for _, text in ipairs({ "-", "+", "k", "--5", "+-5", "0x1g2", "0b102", "0xfz", "1.5", "1e3" }) do
        assert.is_nil(args.parse_int(text), text)
      end
    end)

    it("rejects magnitudes of 2^53 and beyond, which LuaJIT cannot hold exactly", function()
      assert.is_nil(args.parse_int("0xffffffffffffffff"))
      assert.is_nil(args.parse_int("8589934592g"))
      assert.is_nil(args.parse_int("9007199254740992"))
      assert.equal(9007199254740991, args.parse_int("9007199254740991"))
    end)
  end)

  describe("check_declaration", function()
    it("accepts a well-formed declaration of every type", function()
      assert.has_no.errors(function()
        args.check_declaration({
          { name = "a", type = "bool" },
          { name = "b", type = "int" },
          { name = "c", type = "number" },
          { name = "d", type = "string" },
          { name = "e", type = "enum", values = { "x", "y" } },
          { name = "f" },
        }, "demo.lua")
      end)
    end)

    it("defaults a missing type to string", function()
      local decl = { { name = "f" } }
      args.check_declaration(decl, "demo.lua")
      assert.equal("string", decl[1].type)
    end)

    it("rejects a declaration that is not a table", function()
      assert.has_error(function() args.check_declaration("nope", "demo.lua") end,
        "demo.lua: args must be a list of { name = ..., type = ... } tables")
    end)

    it("rejects an entry without a string name", function()
      assert.has_error(function()
        args.check_declaration({ { name = "a" }, { type = "int" } }, "demo.lua")
      end, "demo.lua: args[2] needs a string name")
      assert.has_error(function()
        args.check_declaration({ "a" }, "demo.lua")
      end, "demo.lua: args[1] needs a string name")
    end)

    it("rejects duplicate names", function()
      assert.has_error(function()
        args.check_declaration({ { name = "a" }, { name = "b" }, { name = "a", type = "int" } }, "demo.lua")
      end, "demo.lua: argument 'a' is declared twice")
    end)

    it("rejects an unknown type, listing the known ones", function()
      assert.has_error(function()
        args.check_declaration({ { name = "a", type = "float" } }, "demo.lua")
      end, "demo.lua: argument 'a' has unknown type 'float' (types: bool, int, number, string, enum)")
    end)

    it("rejects an enum without values", function()
      assert.has_error(function()
        args.check_declaration({ { name = "mode", type = "enum" } }, "demo.lua")
      end, "demo.lua: enum argument 'mode' needs values = { ... }")
    end)

    it("rejects an enum with an empty values list", function()
      assert.has_error(function()
        args.check_declaration({ { name = "mode", type = "enum", values = {} } }, "demo.lua")
      end)
    end)
  end)

  describe("parse", function()
    it("collects every value of a repeatable argument, in order", function()
      local decl = { { name = "m", multiple = true }, { name = "n", type = "int", multiple = true } }
      local values = assert(args.parse(decl, { m = "b" }, { "m", "n", "m" }, "demo.lua", { "a", "7", "b" }))
      assert.same({ "a", "b" }, values.m)
      assert.same({ 7 }, values.n)
    end)

    it("gives an absent repeatable argument an empty list", function()
      local values = assert(args.parse({ { name = "m", multiple = true } }, {}, {}, "demo.lua"))
      assert.same({}, values.m)
    end)

    it("refuses a single-valued argument given twice", function()
      local values, err = args.parse({ { name = "n", type = "int" } }, { n = "2" }, { "n", "n" },
        "demo.lua", { "1", "2" })
      assert.is_nil(values)
      assert.equal("demo.lua: argument 'n' is given twice; it takes one value", err)
    end)

    local DECL

    before_each(function()
      DECL = {
        { name = "a", type = "bool", default = false },
        { name = "b", type = "int", default = 10 },
      }
    end)

    it("returns typed values for the given arguments", function()
      local decl = {
        { name = "on", type = "bool" },
        { name = "n", type = "int" },
        { name = "x", type = "number" },
        { name = "s", type = "string" },
        { name = "e", type = "enum", values = { "fast", "slow" } },
      }
      local values, err = args.parse(decl,
        { on = "yes", n = "0x10", x = "2.5", s = "hello", e = "slow" },
        { "on", "n", "x", "s", "e" }, "demo.lua")
      assert.is_nil(err)
      assert.same({ on = true, n = 16, x = 2.5, s = "hello", e = "slow" }, values)
    end)

    it("rejects an unknown argument, listing the accepted ones", function()
      local values, err = args.parse(DECL, { foo = "1" }, { "foo" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: unknown argument 'foo'; accepted: a, b", err)
    end)

    it("says 'accepted: none' when nothing is declared", function()
      local values, err = args.parse({}, { foo = "1" }, { "foo" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: unknown argument 'foo'; accepted: none", err)
    end)

    it("reports the first unknown argument in the order given", function()
      local _, err = args.parse(DECL, { zz = "1", yy = "2" }, { "yy", "zz" }, "NAME")
      assert.equal("NAME: unknown argument 'yy'; accepted: a, b", err)
    end)

    it("rejects a malformed bool, naming key=value and the accepted words", function()
      local values, err = args.parse(DECL, { a = "maybe" }, { "a" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: a=maybe: expected a boolean (on, off, yes, no, true, false, y, n)", err)
    end)

    it("rejects a malformed int, naming key=value and the accepted forms", function()
      local values, err = args.parse(DECL, { b = "12abc" }, { "b" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: b=12abc: expected an integer below 2^53 (decimal, 0x hex, 0b binary; k/m/g suffix)", err)
    end)

    it("rejects a malformed number", function()
      local _, err = args.parse({ { name = "x", type = "number" } }, { x = "abc" }, { "x" }, "NAME")
      assert.equal("NAME: x=abc: expected a number", err)
    end)

    it("rejects an enum value outside its values, listing them", function()
      local decl = { { name = "mode", type = "enum", values = { "fast", "slow" } } }
      local values, err = args.parse(decl, { mode = "medium" }, { "mode" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: mode=medium: expected one of fast, slow", err)
    end)

    it("matches enum values exactly (case-sensitive)", function()
      local decl = { { name = "mode", type = "enum", values = { "fast", "slow" } } }
      local values = args.parse(decl, { mode = "FAST" }, { "mode" }, "NAME")
      assert.is_nil(values)
    end)

    it("fills in defaults for arguments not given", function()
      local values, err = args.parse(DECL, { b = "3" }, { "b" }, "NAME")
      assert.is_nil(err)
      assert.same({ a = false, b = 3 }, values)
    end)

    it("leaves arguments without default and not given as nil", function()
      local values = args.parse({ { name = "s" } }, {}, {}, "NAME")
      assert.same({}, values)
    end)

    it("accepts a nil order as no arguments given", function()
      local values = args.parse(DECL, {}, nil, "NAME")
      assert.same({ a = false, b = 10 }, values)
    end)

    it("rejects a missing required argument", function()
      local decl = { { name = "out", type = "string", required = true } }
      local values, err = args.parse(decl, {}, {}, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: argument 'out' is required", err)
    end)

    it("accepts a required argument when given", function()
      local decl = { { name = "out", type = "string", required = true } }
      assert.same({ out = "f.txt" }, (args.parse(decl, { out = "f.txt" }, { "out" }, "NAME")))
    end)

    it("enforces int min and max, inclusive", function()
      local decl = { { name = "n", type = "int", min = 1, max = 8 } }
      assert.same({ n = 1 }, (args.parse(decl, { n = "1" }, { "n" }, "NAME")))
      assert.same({ n = 8 }, (args.parse(decl, { n = "8" }, { "n" }, "NAME")))
      local values, err = args.parse(decl, { n = "0" }, { "n" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: n=0: expected an integer >= 1", err)
      values, err = args.parse(decl, { n = "9" }, { "n" }, "NAME")
      assert.is_nil(values)
      assert.equal("NAME: n=9: expected an integer <= 8", err)
    end)

    it("applies min and max after suffix scaling", function()
      local decl = { { name = "n", type = "int", max = 4096 } }
      assert.same({ n = 4096 }, (args.parse(decl, { n = "4k" }, { "n" }, "NAME")))
      local _, err = args.parse(decl, { n = "5k" }, { "n" }, "NAME")
      assert.equal("NAME: n=5k: expected an integer <= 4096", err)
    end)

    it("keeps string values as given, including the empty string", function()
      local values = args.parse({ { name = "s" } }, { s = "" }, { "s" }, "NAME")
      assert.same({ s = "" }, values)
    end)

    it("raises (does not return) declaration errors", function()
      assert.has_error(function()
        args.parse({ { name = "a" }, { name = "a" } }, {}, {}, "NAME")
      end, "NAME: argument 'a' is declared twice")
    end)
  end)

  describe("usage", function()
    it("lists each argument with its type, default and help", function()
      local decl = {
        { name = "a", type = "bool", default = false, help = "turn a on" },
        { name = "b", type = "int", default = 10, help = "how many" },
        { name = "s", type = "string", help = "a name" },
      }
      assert.equal(table.concat({
        "demo: what it does",
        "  a=bool (default false)  turn a on",
        "  b=int (default 10)  how many",
        "  s=string  a name",
      }, "\n"), args.usage(decl, "demo", "what it does"))
    end)

    it("shows an enum's values as its type", function()
      local decl = { { name = "mode", type = "enum", values = { "fast", "slow" }, default = "fast" } }
      assert.equal("demo\n  mode=fast|slow (default fast)  ", args.usage(decl, "demo"))
    end)

    it("omits the description when there is none", function()
      assert.equal("demo\n  n=int  ", args.usage({ { name = "n", type = "int" } }, "demo"))
    end)

    it("says (no arguments) for an empty declaration", function()
      assert.equal("demo: counts\n  (no arguments)", args.usage({}, "demo", "counts"))
    end)

    it("shows an argument declared without a type as string once checked", function()
      local decl = { { name = "s" } }
      args.check_declaration(decl, "demo")
      assert.equal("demo\n  s=string  ", args.usage(decl, "demo"))
    end)

    it("shows an argument declared without a type as string", function()
      assert.equal("demo\n  s=string  ", args.usage({ { name = "s" } }, "demo"))
    end)
  end)
end)
