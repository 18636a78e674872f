-- Specs for lua/qemu/init.lua (the `qemu` module), run against a fake `qlua.core`.

local fake_core = require "spec.helpers.fake_core" -- also puts lua/ on package.path
local error_of = fake_core.error_of

describe("qemu", function()
  local core, qemu

  -- Loads a fresh `qemu` on a fresh fake core built from opts (see fake_core.new).
  local function load(opts)
    core = fake_core.new(opts)
    qemu = fake_core.load(core)
    return qemu
  end

  before_each(function()
    load()
  end)

  after_each(function()
    fake_core.unload()
  end)

  local EVENTS = {
    { "on_translate", "translate" },
    { "on_exit", "exit" },
    { "on_vcpu_init", "vcpu_init" },
    { "on_vcpu_exit", "vcpu_exit" },
    { "on_vcpu_idle", "vcpu_idle" },
    { "on_vcpu_resume", "vcpu_resume" },
    { "on_syscall", "syscall" },
    { "on_syscall_ret", "syscall_ret" },
    { "on_flush", "flush" },
  }

  for _, pair in ipairs(EVENTS) do
    local fname, event = pair[1], pair[2]

    describe(fname, function()
      it("registers the handler with core.on under the event '" .. event .. "'", function()
        local handler = function() end
        qemu[fname](handler)
        assert.spy(core.on).was.called(1)
        assert.spy(core.on).was.called_with(event, handler)
      end)

      it("registers every handler it is given, in order", function()
        local first, second = function() end, function() end
        qemu[fname](first)
        qemu[fname](second)
        assert.spy(core.on).was.called(2)
        assert.equal(first, core.on.calls[1].vals[2])
        assert.equal(second, core.on.calls[2].vals[2])
      end)

      it("returns nothing", function()
        assert.equal(0, select("#", qemu[fname](function() end)))
      end)

      it("rejects non-functions with an error mentioning 'expects a function'", function()
        for _, bad in ipairs({ "f", 42, {}, true }) do
          local err = error_of(qemu[fname], bad)
          assert.is_string(err)
          assert.matches("qemu." .. fname .. " expects a function, got " .. type(bad), err, 1, true)
        end
        assert.matches("expects a function, got nil", error_of(qemu[fname]), 1, true)
        assert.spy(core.on).was_not.called()
      end)

      it("blames the rejection on the caller", function()
        local err = error_of(function() qemu[fname](nil) end)
        assert.matches("qemu_spec.lua:%d+: qemu%." .. fname, err)
      end)
    end)
  end

  describe("print", function()
    it("joins its arguments with tabs and ends with a newline", function()
      qemu.print("a", "b", "c")
      assert.spy(core.write).was.called(1)
      assert.spy(core.write).was.called_with("a\tb\tc\n")
    end)

    it("converts non-strings with tostring, keeping nils in place", function()
      qemu.print(1, nil, true, "x", nil)
      assert.same({ "1\tnil\ttrue\tx\tnil\n" }, core.output)
    end)

    it("writes a lone newline when called without arguments", function()
      qemu.print()
      assert.same({ "\n" }, core.output)
    end)

    it("uses __tostring metamethods", function()
      local obj = setmetatable({}, { __tostring = function() return "OBJ" end })
      qemu.print("v", obj)
      assert.same({ "v\tOBJ\n" }, core.output)
    end)
  end)

  describe("printf", function()
    it("formats like string.format without adding a newline", function()
      qemu.printf("insns: %d", 42)
      assert.spy(core.write).was.called(1)
      assert.same({ "insns: 42" }, core.output)
    end)

    it("writes the format's own newlines unchanged", function()
      qemu.printf("%s=%x\n", "pc", 255)
      assert.same({ "pc=ff\n" }, core.output)
    end)

    it("raises string.format's error for a bad argument", function()
      assert.has_error(function() qemu.printf("%d", "nope") end)
      assert.spy(core.write).was_not.called()
    end)
  end)

  describe("write", function()
    it("is core.write", function()
      assert.equal(core.write, qemu.write)
      qemu.write("raw")
      assert.same({ "raw" }, core.output)
    end)
  end)

  describe("flush", function()
    it("is core.flush", function()
      assert.equal(core.flush, qemu.flush)
    end)
  end)

  describe("counter", function()
    it("is core.counter_new", function()
      assert.equal(core.counter_new, qemu.counter)
    end)
  end)

  describe("uninstall", function()
    it("is core.uninstall", function()
      assert.equal(core.uninstall, qemu.uninstall)
    end)
  end)

  describe("binary", function()
    it("is core.binary", function()
      assert.equal(core.binary, qemu.binary)
    end)
  end)

  describe("registers, reg and read_memory", function()
    it("are the core's functions", function()
      assert.equal(core.registers, qemu.registers)
      assert.equal(core.reg, qemu.reg)
      assert.equal(core.read_memory, qemu.read_memory)
    end)
  end)

  describe("off", function()
    it("returns true when some event had the handler", function()
      assert.is_true(qemu.off(function() end))
      assert.spy(core.off).was_called()
    end)

    it("rejects a non-function", function()
      assert.has_error(function() qemu.off(42) end)
    end)
  end)

  describe("time_control and set_time", function()
    it("are the core's functions", function()
      assert.equal(core.time_control, qemu.time_control)
      assert.equal(core.set_time, qemu.set_time)
    end)
  end)

  describe("retranslate", function()
    it("is core.retranslate", function()
      assert.equal(core.retranslate, qemu.retranslate)
    end)
  end)

  describe("vcpus", function()
    it("is core.vcpus", function()
      assert.equal(core.vcpus, qemu.vcpus)
    end)
  end)

  describe("counter_mode", function()
    it("is core.counter_mode", function()
      assert.equal(core.counter_mode, qemu.counter_mode)
    end)
  end)

  describe("parse_bool", function()
    it("is qemu.args.parse_bool", function()
      assert.equal(require("qemu.args").parse_bool, qemu.parse_bool)
    end)
  end)

  describe("parse_int", function()
    it("is qemu.args.parse_int", function()
      assert.equal(require("qemu.args").parse_int, qemu.parse_int)
    end)
  end)

  describe("has", function()
    it("returns true for a feature the core reports present", function()
      assert.is_true(qemu.has("inline"))
      assert.spy(core.has).was.called_with("inline")
    end)

    it("returns false for a known feature the core reports absent", function()
      assert.is_false(qemu.has("scoreboard"))
    end)

    it("returns the core's answer, whatever the host", function()
      load({ features = { scoreboard = true, inline = false } })
      assert.is_true(qemu.has("scoreboard"))
      assert.is_false(qemu.has("inline"))
    end)

    it("raises an error listing the known features, sorted, for an unknown name", function()
      local err = error_of(qemu.has, "warp_drive")
      assert.matches("qemu.has: unknown feature 'warp_drive'; known: binary, cond_cb, hwaddr, idle, "
        .. "inline, mem_value, read_memory, registers, scoreboard, symbol, syscalls", err, 1, true)
    end)

    it("blames an unknown name on the caller", function()
      local err = error_of(function() local _ = qemu.has("warp_drive") end)
      assert.matches("qemu_spec.lua:%d+: qemu%.has: unknown feature", err)
    end)
  end)

  describe("need", function()
    it("returns nothing when the feature is present", function()
      assert.equal(0, select("#", qemu.need("inline")))
      assert.has_no.errors(function() qemu.need("syscalls") end)
    end)

    it("raises an error naming the feature and the QEMU that brings it when absent", function()
      local err = error_of(qemu.need, "scoreboard")
      assert.is_string(err)
      assert.matches("'scoreboard' feature", err, 1, true)
      assert.matches("QEMU 9.0", err, 1, true)
    end)

    it("names the script and the host's plugin API version in that error", function()
      local err = error_of(qemu.need, "registers")
      assert.matches("/x/scripts/demo.lua needs the 'registers' feature, which this QEMU "
        .. "(plugin API 1) lacks: it comes with QEMU 9.0", err, 1, true)
    end)

    it("raises qemu.has's error for an unknown feature", function()
      local err = error_of(qemu.need, "warp_drive")
      assert.matches("qemu.has: unknown feature 'warp_drive'", err, 1, true)
    end)
  end)

  describe("script", function()
    local DECL

    before_each(function()
      DECL = {
        { name = "a", type = "bool", default = false },
        { name = "b", type = "int", default = 10 },
      }
    end)

    it("parses the declared arguments from core.args() into typed values", function()
      load({ args = { "a=on", "b=4k" } })
      local values = qemu.script { name = "demo", args = DECL }
      assert.spy(core.args).was.called()
      assert.same({ a = true, b = 4096 }, values)
    end)

    it("stores the typed values in qemu.args", function()
      load({ args = { "b=0x20" } })
      local values = qemu.script { name = "demo", args = DECL }
      assert.equal(values, qemu.args)
      assert.same({ a = false, b = 32 }, qemu.args)
    end)

    it("fills in defaults when no argument is given", function()
      assert.same({ a = false, b = 10 }, qemu.script { args = DECL })
    end)

    it("raises 'demo.lua: unknown argument ...' for an undeclared argument", function()
      load({ args = { "b=1", "foo=2" } })
      assert.has_error(function() qemu.script { args = DECL } end,
        "demo.lua: unknown argument 'foo'; accepted: a, b")
    end)

    it("raises a message naming key=value for a malformed argument", function()
      load({ args = { "a=maybe" } })
      assert.has_error(function() qemu.script { args = DECL } end,
        "demo.lua: a=maybe: expected a boolean (on, off, yes, no, true, false, y, n)")
    end)

    it("leaves qemu.args as the raw strings when parsing fails", function()
      load({ args = { "foo=2" } })
      pcall(qemu.script, { args = DECL })
      assert.same({ foo = "2" }, qemu.args)
    end)

    it("treats a missing args list as no arguments", function()
      load({ args = { "x=1" } })
      assert.has_error(function() qemu.script { name = "demo" } end,
        "demo.lua: unknown argument 'x'; accepted: none")
    end)

    it("names the owner 'script' when the core reports no script path", function()
      load({ script = false, args = { "x=1" } })
      assert.has_error(function() qemu.script { args = {} } end,
        "script: unknown argument 'x'; accepted: none")
    end)

    it("raises declaration errors under the script's name", function()
      assert.has_error(function()
        qemu.script { args = { { name = "a" }, { name = "a" } } }
      end, "demo.lua: argument 'a' is declared twice")
    end)

    it("rejects a non-table with 'qemu.script expects a table'", function()
      local err = error_of(function() qemu.script("demo") end)
      assert.matches("qemu.script expects a table", err, 1, true)
    end)

    it("keeps the description for qemu.usage", function()
      local desc = { name = "demo", description = "does things", args = DECL }
      qemu.script(desc)
      assert.equal(desc, qemu.description)
    end)

    it("is not needed to read arguments: without it, qemu.args holds the raw strings", function()
      load({ args = { "a=on", "b=4k", "path=/tmp/x=y" } })
      assert.same({ a = "on", b = "4k", path = "/tmp/x=y" }, qemu.args)
    end)
  end)

  describe("usage", function()
    it("describes the declared script with its arguments", function()
      qemu.script {
        name = "demo", description = "does things",
        args = { { name = "n", type = "int", default = 3, help = "how many" } },
      }
      assert.equal("demo: does things\n  n=int (default 3)  how many", qemu.usage())
    end)

    it("falls back to the script's file name when nothing is declared", function()
      assert.equal("demo.lua\n  (no arguments)", qemu.usage())
    end)
  end)

  describe("info", function()
    it("reports the target", function()
      assert.equal("x86_64", qemu.info.target)
    end)

    it("reports mode 'user' and system=false in user emulation", function()
      assert.equal("user", qemu.info.mode)
      assert.is_false(qemu.info.system)
    end)

    it("reports mode 'system' and system=true in system emulation", function()
      load({ system = true })
      assert.equal("system", qemu.info.mode)
      assert.is_true(qemu.info.system)
    end)

    it("reports the vCPU counts in system mode only", function()
      assert.is_nil(qemu.info.smp_vcpus)
      assert.is_nil(qemu.info.max_vcpus)
      load({ system = true, smp_vcpus = 2, max_vcpus = 16 })
      assert.equal(2, qemu.info.smp_vcpus)
      assert.equal(16, qemu.info.max_vcpus)
    end)

    it("groups the plugin API versions under api.min, api.cur and api.declared", function()
      assert.same({ min = 0, cur = 1, declared = 1 }, qemu.info.api)
    end)

    it("reports the script, root, qlua version, Lua and onerror policy", function()
      assert.equal("/x/scripts/demo.lua", qemu.info.script)
      assert.equal("/x", qemu.info.root)
      assert.equal("0.1.0", qemu.info.version)
      assert.equal("LuaJIT 2.1", qemu.info.lua)
      assert.equal("fail", qemu.info.onerror)
    end)
  end)
end)
