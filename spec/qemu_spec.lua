-- Specs for lua/qemu/init.lua (the `qemu` module), run against a fake `qlua.core`.

local fake_core = require "spec.helpers.fake_core" -- also puts lua/ on package.path
local error_of = fake_core.error_of
local assert_call = fake_core.assert_call
local spy = require "luassert.spy"

-- text, escaped for use inside a Lua pattern
local function lit(text) return (tostring(text):gsub("%p", "%%%0")) end

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

      it("refuses arguments after the function, even a nil", function()
        local f, unpack = function() end, table.unpack or unpack
        for _, extra in ipairs { { "data" }, { nil, n = 1 }, { 1, 2 } } do
          local err = error_of(function() qemu[fname](f, unpack(extra, 1, extra.n or #extra)) end)
          assert.matches("qemu_spec.lua:%d+: qemu%." .. fname .. "%(fn%) takes only the function "
            .. "%(a closure carries any data it needs%)", err)
        end
        assert.spy(core.on).was_not.called()
      end)
    end)
  end

  describe("on_syscall and on_syscall_ret", function()
    it("are refused in system mode, pointing to qemu.has(\"syscalls\")", function()
      load({ system = true })
      for _, fname in ipairs { "on_syscall", "on_syscall_ret" } do
        local err = error_of(function() qemu[fname](function() end) end)
        assert.matches("qemu_spec.lua:%d+: qemu%." .. fname .. ": syscall events exist only in "
          .. "user mode %(qemu%-ARCH%), not in system emulation; check qemu%.has%(\"syscalls\"%) "
          .. "first", err)
      end
      assert.spy(core.on).was_not.called()
    end)

    it("check the function before the mode", function()
      load({ system = true })
      assert.matches("qemu.on_syscall expects a function, got nil", error_of(qemu.on_syscall), 1, true)
    end)
  end)

  describe("the other events in system mode", function()
    it("are registered as in user mode", function()
      load({ system = true })
      local f = function() end
      for _, pair in ipairs(EVENTS) do
        if not pair[1]:match("^on_syscall") then qemu[pair[1]](f) end
      end
      assert.spy(core.on).was.called(#EVENTS - 2)
      assert.spy(core.on).was.called_with("vcpu_idle", f)
    end)
  end)

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

  describe("off", function()
    it("returns true when some event had the handler", function()
      assert.is_true(qemu.off(function() end))
      assert.spy(core.off).was_called()
    end)

    it("returns false when no event had it, after asking every event", function()
      core.off = spy.new(function() return false end)
      assert.is_false(qemu.off(function() end))
      assert.spy(core.off).was.called(#EVENTS + 1) -- and on_discon's
    end)

    it("removes an on_discon handler too", function()
      local fn = function() end
      core.off = spy.new(function(event) return event == "discon" end)
      assert.is_true(qemu.off(fn))
      assert.spy(core.off).was.called_with("discon", fn)
    end)

    it("rejects a non-function", function()
      assert.matches("qemu_spec.lua:%d+: qemu.off expects a function, got number",
        error_of(function() qemu.off(42) end))
      assert.spy(core.off).was_not.called()
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
      assert.matches("qemu.has: unknown feature 'warp_drive'; known: binary, cond_cb, discon, "
        .. "hwaddr, idle, inline, mem_value, phys_memory, read_memory, registers, scoreboard, "
        .. "symbol, syscalls, time_control, translate, write_memory, write_registers",
        err, 1, true)
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

    it("asks the core for the error, with the script's path and the feature", function()
      pcall(qemu.need, "registers")
      assert_call(core.need, "/x/scripts/demo.lua", "registers")
    end)

    it("does not ask the core for an error when the feature is present", function()
      qemu.need("inline")
      assert.spy(core.need).was_not.called()
    end)

    it("blames the missing feature on the caller", function()
      local err = error_of(function() qemu.need("registers") end)
      assert.matches("^spec/qemu_spec.lua:%d+: /x/scripts/demo.lua needs the 'registers' feature", err)
    end)

    it("refuses an unknown feature, listing the known ones", function()
      local err = error_of(qemu.need, "warp_drive")
      assert.matches("qemu.need: unknown feature 'warp_drive'; known: ", err, 1, true)
    end)

    it("blames an unknown feature on the caller", function()
      local err = error_of(function() qemu.need("warp_drive") end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu.need: unknown feature", err)
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

  describe("symbolize", function()
    local function fresh_without_symbolize()
      for _, m in ipairs({ "qemu.symbolize", "qemu.report", "qemu.u64" }) do
        package.loaded[m] = nil
      end
      return load()
    end

    it("is loaded on first use, not with the qemu module (every start paid for it)", function()
      fresh_without_symbolize()
      assert.is_nil(package.loaded["qemu.symbolize"])
      assert.equal("libc.so.6!main+0x8", qemu.symbolize_format("libc.so.6", "main", 8))
      assert.is_not_nil(package.loaded["qemu.symbolize"])
    end)

    it("checks qemu.symbolize's address before the module was ever loaded", function()
      fresh_without_symbolize()
      local err = fake_core.error_of(qemu.symbolize, "0x10")
      assert.matches("qemu.symbolize: expected an address %(a whole number from 0 to 2%^64%-1%), got string", err)
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

    it("lists every feature the core knows with whether it is present", function()
      assert.same(fake_core.FEATURES, qemu.info.features)
      assert.is_false(qemu.info.features.time_control)
      load({ features = { time_control = true } })
      assert.is_true(qemu.info.features.time_control)
    end)

    it("reports the script, root, qlua version, Lua and onerror policy", function()
      assert.equal("/x/scripts/demo.lua", qemu.info.script)
      assert.equal("/x", qemu.info.root)
      assert.equal("0.1.0", qemu.info.version)
      assert.equal("LuaJIT 2.1", qemu.info.lua)
      assert.equal("fail", qemu.info.onerror)
    end)
  end)

  -- Translation handles (fake ones, as fake_core makes them) look their methods up in the
  -- core's tables, which the module fills in.
  local function tb() return fake_core.tb(core) end
  local function insn() return fake_core.insn(core) end
  local function handle(kind) return fake_core[kind](core) end
  local counter = fake_core.counter

  describe("the handle methods", function()
    it("are installed into core.tb_methods and core.insn_methods", function()
      for _, name in ipairs { "on_exec", "when", "trace" } do
        assert.is_function(core.tb_methods[name])
      end
      for _, name in ipairs { "on_exec", "on_mem", "count_mem", "when", "trace", "trace_mem" } do
        assert.is_function(core.insn_methods[name])
      end
    end)
  end)

  for _, kind in ipairs { "tb", "insn" } do
    local where = kind .. ":on_exec"
    local prim = kind .. "_on_exec"

    describe(where, function()
      it("calls core." .. prim .. "(handle, fn, data, regs, sync, counter) with regs \"none\" and "
        .. "sync false by default", function()
        local h, f, data = handle(kind), function() end, { "data" }
        h:on_exec(f, data)
        assert_call(core[prim], h, f, data, "none", false, nil)
      end)

      it("passes no data as nil", function()
        local h, f = handle(kind), function() end
        h:on_exec(f)
        assert_call(core[prim], h, f, nil, "none", false, nil)
      end)

      it("passes the options regs, sync and counter on", function()
        local h, f, c = handle(kind), function() end, counter()
        h:on_exec(f, 7, { regs = "rw", sync = true, counter = c })
        assert_call(core[prim], h, f, 7, "rw", true, c)
      end)

      it("accepts each regs value and sync = false", function()
        for _, regs in ipairs { "none", "r", "rw" } do
          handle(kind):on_exec(function() end, nil, { regs = regs, sync = false })
          assert.equal(regs, fake_core.args_of(core[prim])[4])
          assert.is_false(fake_core.args_of(core[prim])[5])
        end
      end)

      it("takes an empty options table as the defaults", function()
        local h, f = handle(kind), function() end
        h:on_exec(f, nil, {})
        assert_call(core[prim], h, f, nil, "none", false, nil)
      end)

      it("refuses an argument after the options (an old positional option, say)", function()
        local err = error_of(function() handle(kind):on_exec(function() end, nil, {}, "sync") end)
        assert.matches(where .. "(fn, data, opts) takes nothing after its options (got sync", err, 1, true)
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses an unknown option and names the accepted ones", function()
        local err = error_of(function() handle(kind):on_exec(function() end, nil, { sink = true }) end)
        assert.matches(where .. ": unknown option 'sink' (accepted: counter, regs, sync)", err, 1, true)
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses a bad option value and says what it expects", function()
        local f = function() end
        assert.matches(where .. ': option regs=w: expected "none", "r", "rw"',
          error_of(function() handle(kind):on_exec(f, nil, { regs = "w" }) end), 1, true)
        assert.matches(where .. ": option sync=1: expected true or false",
          error_of(function() handle(kind):on_exec(f, nil, { sync = 1 }) end), 1, true)
        assert.matches(where .. ": option counter=table: .*: expected a counter from qemu%.counter%(%)",
          error_of(function() handle(kind):on_exec(f, nil, { counter = {} }) end))
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses options that are not a table", function()
        local err = error_of(function() handle(kind):on_exec(function() end, nil, "sync") end)
        assert.matches(where .. ": options must be a table such as { counter = ... }, got string",
          err, 1, true)
      end)

      it("refuses a dot call and names the colon form", function()
        local h = handle(kind)
        local err = error_of(function() h.on_exec(function() end) end)
        assert.matches(where .. ": expected a " .. kind .. " as self, got function (call it with a "
          .. "colon: " .. where .. "(...))", err, 1, true)
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses the other kind of handle as self", function()
        local other = kind == "tb" and insn() or tb()
        local err = error_of(core[kind .. "_methods"].on_exec, other, function() end)
        assert.matches(where .. ": expected a " .. kind .. " as self, got table", err, 1, true)
      end)

      it("refuses a non-function", function()
        assert.matches(where .. " expects a function, got string",
          error_of(function() handle(kind):on_exec("f") end), 1, true)
        assert.matches(where .. " expects a function, got nil",
          error_of(function() handle(kind):on_exec() end), 1, true)
        assert.spy(core[prim]).was_not.called()
      end)

      it("blames every refusal on the caller", function()
        local h = handle(kind)
        for _, call in ipairs {
          function() h.on_exec(function() end) end,
          function() h:on_exec(nil) end,
          function() h:on_exec(function() end, nil, { sink = 1 }) end,
          function() h:on_exec(function() end, nil, 5) end,
        } do
          assert.matches("^spec/qemu_spec.lua:%d+: " .. where, error_of(call))
        end
      end)
    end)
  end

  describe("insn:on_mem", function()
    it("calls core.insn_on_mem(insn, fn, data, rw) with rw \"rw\" by default", function()
      local i, f = insn(), function() end
      i:on_mem(f, "d")
      assert_call(core.insn_on_mem, i, f, "d", "rw")
    end)

    it("passes opts.rw on", function()
      for _, rw in ipairs { "r", "w", "rw" } do
        local i, f = insn(), function() end
        core.insn_on_mem:clear()
        i:on_mem(f, nil, { rw = rw })
        assert_call(core.insn_on_mem, i, f, nil, rw, false, false, false, "any")
      end
    end)

    it("passes sync, phys and value on as booleans", function()
      local i, f = insn(), function() end
      i:on_mem(f, 7, { sync = true })
      assert_call(core.insn_on_mem, i, f, 7, "rw", true, false, false, "any")
      core.insn_on_mem:clear()
      i:on_mem(f, nil, { phys = true, value = true, rw = "w" })
      assert_call(core.insn_on_mem, i, f, nil, "w", false, true, true, "any")
    end)

    it("passes opts.io on, and refuses another value with the accepted ones", function()
      for _, io in ipairs { "any", "only", "skip" } do
        local i, f = insn(), function() end
        core.insn_on_mem:clear()
        i:on_mem(f, nil, { io = io })
        assert_call(core.insn_on_mem, i, f, nil, "rw", false, false, false, io)
      end
      core.insn_on_mem:clear()
      local err = error_of(function() insn():on_mem(function() end, nil, { io = "devices" }) end)
      assert.matches('^spec/qemu_spec.lua:%d+: insn:on_mem: option io=devices: expected "any", '
        .. '"only", "skip"$', err)
      assert.spy(core.insn_on_mem).was_not.called()
    end)

    it("refuses a non-boolean sync, phys or value", function()
      for _, key in ipairs { "sync", "phys", "value" } do
        local err = error_of(function() insn():on_mem(function() end, nil, { [key] = 1 }) end)
        assert.matches("insn:on_mem: option " .. key .. "=1: expected true or false", err, 1, true)
      end
    end)

    it("blames the script for the core's refusal (a feature this QEMU lacks)", function()
      core.insn_on_mem = spy.new(function() error("needs the 'mem_value' feature", 0) end)
      local err = error_of(function() insn():on_mem(function() end, nil, { value = true }) end)
      assert.matches("^spec/qemu_spec.lua:%d+: needs the 'mem_value' feature", err)
    end)

    it("refuses an unknown option and names the accepted ones", function()
      local err = error_of(function() insn():on_mem(function() end, nil, { counter = true }) end)
      assert.matches("^spec/qemu_spec.lua:%d+: insn:on_mem: unknown option 'counter' %(accepted: "
        .. "io, phys, rw, sync, value%)", err)
      assert.spy(core.insn_on_mem).was_not.called()
    end)

    it("refuses a bad rw and lists the accepted values", function()
      local err = error_of(function() insn():on_mem(function() end, nil, { rw = "x" }) end)
      assert.matches('insn:on_mem: option rw=x: expected "r", "w", "rw"', err, 1, true)
    end)

    it("refuses options that are not a table", function()
      local err = error_of(function() insn():on_mem(function() end, nil, "r") end)
      assert.matches("insn:on_mem: options must be a table such as { io = ... }, got string", err, 1, true)
    end)

    it("refuses a dot call and names the colon form", function()
      local i = insn()
      local err = error_of(function() i.on_mem(function() end) end)
      assert.matches("^spec/qemu_spec.lua:%d+: insn:on_mem: expected a insn as self, got function "
        .. "%(call it with a colon: insn:on_mem%(%.%.%.%)%)", err)
    end)

    it("refuses a non-function", function()
      local err = error_of(function() insn():on_mem({}) end)
      assert.matches("^spec/qemu_spec.lua:%d+: insn:on_mem expects a function, got table", err)
      assert.spy(core.insn_on_mem).was_not.called()
    end)
  end)

  describe("tb:on_repeat", function()
    it("calls core.tb_on_repeat(tb, fn, data, counter)", function()
      local b, f, c = tb(), function() end, counter()
      b:on_repeat(f, 7, { counter = c })
      assert_call(core.tb_on_repeat, b, f, 7, c)
    end)

    it("needs a counter of the instructions, and says how to make one", function()
      local err = error_of(function() tb():on_repeat(function() end) end)
      assert.matches("^spec/qemu_spec.lua:%d+: tb:on_repeat needs { counter = c }, a counter of the "
        .. "instructions that start", err)
      err = error_of(function() tb():on_repeat(function() end, nil, { counter = 5 }) end)
      assert.matches("tb:on_repeat: option counter=5: expected a counter from qemu.counter()", err, 1, true)
      err = error_of(function() tb():on_repeat(function() end, nil, { sync = true }) end)
      assert.matches("tb:on_repeat: unknown option 'sync' (accepted: counter)", err, 1, true)
      assert.spy(core.tb_on_repeat).was_not.called()
    end)

    it("refuses a non-function and a dot call", function()
      local b = tb()
      assert.matches("tb:on_repeat", error_of(function() b:on_repeat(nil, nil, { counter = counter() }) end), 1, true)
      assert.matches("tb:on_repeat: expected a tb as self", error_of(function() b.on_repeat(print) end), 1, true)
    end)
  end)

  describe("tb:tally, insn:tally and insn:tally_mem", function()
    it("hand the core the tally's native object, never the script's table", function()
      local t = qemu.tally()
      local raw = core.last_tally_raw
      local b, i = tb(), insn()
      b:tally(t, 7)
      assert_call(core.tb_tally, b, raw, 7)
      i:tally(t, 2^40)
      assert_call(core.insn_tally, i, raw, 2^40)
      i:tally_mem(t)
      assert_call(core.insn_tally_mem, i, raw, "rw", 1, false, "any")
      core.insn_tally_mem:clear()
      i:tally_mem(t, { rw = "w", align = 4096, phys = true, io = "skip" })
      assert_call(core.insn_tally_mem, i, raw, "w", 4096, true, "skip")
    end)

    it("refuse what is not a tally, with the script's line", function()
      for _, v in ipairs { {}, 5, setmetatable({}, { __metatable = "qlua.tally" }) } do
        local err = error_of(function() insn():tally_mem(v) end)
        assert.matches("^spec/qemu_spec.lua:%d+: insn:tally_mem: expected a tally from qemu.tally%(%), got "
          .. type(v), err)
      end
      assert.spy(core.insn_tally_mem).was_not.called()
    end)

    it("refuse keys that are not whole numbers from 0 to 2^64-1", function()
      local t = qemu.tally()
      for _, key in ipairs { -1.0, 1.5, 2^64, "1", 0/0 } do -- (a Lua 5.4 integer is a bit pattern)
        local err = error_of(function() tb():tally(t, key) end)
        assert.matches("^spec/qemu_spec.lua:%d+: tb:tally: the key must be a whole number from 0 to "
          .. "2%^64%-1, got ", err)
      end
      assert.spy(core.tb_tally).was_not.called()
    end)

    it("refuse an align that is not a power of two, and unknown options", function()
      local t = qemu.tally()
      for _, align in ipairs { 0, 3, 4095, 1.5, 2^64, "8" } do
        local err = error_of(function() insn():tally_mem(t, { align = align }) end)
        assert.matches("insn:tally_mem: option align=" .. tostring(align) .. ": expected a power of two "
          .. "from 1 to 2^63", err, 1, true)
      end
      local err = error_of(function() insn():tally_mem(t, { shift = 12 }) end)
      assert.matches("unknown option 'shift' (accepted: align, io, phys, rw)", err, 1, true)
    end)

    it("refuse a dot call and a third argument", function()
      local t = qemu.tally()
      local b = tb()
      assert.matches("tb:tally: expected a tb as self", error_of(function() b.tally(t, 1) end), 1, true)
      assert.matches("tb:tally(t, key) takes two arguments (got a third: x)",
        error_of(function() b:tally(t, 1, "x") end), 1, true)
    end)
  end)

  describe("insn:count_mem", function()
    it("calls core.insn_count_mem(insn, c, n, rw) with n 1 and rw \"rw\" by default", function()
      local i, c = insn(), counter()
      i:count_mem(c)
      assert_call(core.insn_count_mem, i, c, 1, "rw")
    end)

    it("passes n and opts.rw on", function()
      local i, c = insn(), counter()
      i:count_mem(c, 8, { rw = "w" })
      assert_call(core.insn_count_mem, i, c, 8, "w")
    end)

    it("takes nil for n = 1 before options", function()
      local i, c = insn(), counter()
      i:count_mem(c, nil, { rw = "r" })
      assert_call(core.insn_count_mem, i, c, 1, "r")
    end)

    it("accepts n = 0", function()
      local i, c = insn(), counter()
      i:count_mem(c, 0)
      assert_call(core.insn_count_mem, i, c, 0, "rw")
    end)

    it("refuses options in the n slot with a hint", function()
      local err = error_of(function() insn():count_mem(counter(), { rw = "r" }) end)
      assert.matches("^spec/qemu_spec.lua:%d+: insn:count_mem: n must be a whole number >= 0, got "
        .. "table: .* %(options go after n: use nil for n = 1%)$", err)
      assert.spy(core.insn_count_mem).was_not.called()
    end)

    it("refuses an n that is not a whole number >= 0, without the hint", function()
      for _, n in ipairs { -1, 1.5, "2" } do
        local err = error_of(function() insn():count_mem(counter(), n) end)
        assert.matches("insn:count_mem: n must be a whole number >= 0, got " .. tostring(n), err, 1, true)
        assert.not_matches("options go after n", err, 1, true)
      end
    end)

    it("refuses a bad counter", function()
      for _, c in ipairs { {}, 5, "c" } do
        local err = error_of(function() insn():count_mem(c) end)
        assert.matches("^spec/qemu_spec.lua:%d+: insn:count_mem: expected a counter from "
          .. "qemu%.counter%(%), got " .. type(c), err)
      end
      assert.matches("got nil", error_of(function() insn():count_mem() end), 1, true)
      assert.spy(core.insn_count_mem).was_not.called()
    end)

    it("refuses an unknown option, a bad rw and options that are not a table", function()
      local c = counter()
      assert.matches("insn:count_mem: unknown option 'tag' (accepted: rw)",
        error_of(function() insn():count_mem(c, 1, { tag = 1 }) end), 1, true)
      assert.matches('insn:count_mem: option rw=read: expected "r", "w", "rw"',
        error_of(function() insn():count_mem(c, 1, { rw = "read" }) end), 1, true)
      assert.matches("insn:count_mem: options must be a table such as { rw = ... }, got string",
        error_of(function() insn():count_mem(c, 1, "r") end), 1, true)
      assert.spy(core.insn_count_mem).was_not.called()
    end)

    it("refuses a dot call and names the colon form", function()
      local i = insn()
      local err = error_of(function() i.count_mem(counter()) end)
      assert.matches("insn:count_mem: expected a insn as self, got table (call it with a colon: "
        .. "insn:count_mem(...))", err, 1, true)
    end)
  end)

  for _, kind in ipairs { "tb", "insn" } do
    local where = kind .. ":when"
    local prim = kind .. "_when"

    describe(where, function()
      it("calls core." .. prim .. "(handle, c, op, value, fn, data)", function()
        local h, c, f = handle(kind), counter(), function() end
        h:when(c, ">=", 100, f, "d")
        assert_call(core[prim], h, c, ">=", 100, f, "d")
      end)

      it("passes no data as nil", function()
        local h, c, f = handle(kind), counter(), function() end
        h:when(c, "==", 0, f)
        assert_call(core[prim], h, c, "==", 0, f, nil)
      end)

      it("accepts every comparison, != as well as ~=", function()
        for _, op in ipairs { "==", "~=", "!=", "<", "<=", ">", ">=", "always", "never" } do
          handle(kind):when(counter(), op, 1, function() end)
          assert.equal(op, fake_core.args_of(core[prim])[3])
        end
        assert.spy(core[prim]).was.called(9)
      end)

      it("refuses an unknown comparison and lists the accepted ones", function()
        local err = error_of(function() handle(kind):when(counter(), "=", 1, function() end) end)
        assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. ": comparison =: expected one of "
          .. '"==", "~=", "!=", "<", "<=", ">", ">=", "always", "never"$', err)
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses a value that is not a whole number >= 0", function()
        for _, v in ipairs { -1, 0.5, "1" } do
          local err = error_of(function() handle(kind):when(counter(), "==", v, function() end) end)
          assert.matches(where .. ": value must be a whole number >= 0, got " .. tostring(v), err, 1, true)
        end
        assert.matches("got nil",
          error_of(function() handle(kind):when(counter(), "==", nil, function() end) end), 1, true)
      end)

      it("refuses a bad counter", function()
        local err = error_of(function() handle(kind):when({}, "==", 1, function() end) end)
        assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. ": expected a counter from "
          .. "qemu%.counter%(%), got table", err)
      end)

      it("refuses a non-function", function()
        local err = error_of(function() handle(kind):when(counter(), "==", 1, "f") end)
        assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. " expects a function, got string", err)
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses a dot call and names the colon form", function()
        local h = handle(kind)
        local err = error_of(function() h.when(counter(), "==", 1, function() end) end)
        assert.matches(where .. ": expected a " .. kind .. " as self, got table (call it with a "
          .. "colon: " .. where .. "(...))", err, 1, true)
      end)
    end)
  end

  describe("tracer", function()
    local f = function() end

    it("calls core.tracer_new(wrapper, batch, fn) with batch 4096 by default", function()
      qemu.tracer { fn = f }
      local a = fake_core.args_of(core.tracer_new)
      assert.spy(core.tracer_new).was.called(1)
      assert.equal(3, a.n)
      assert.is_function(a[1])
      assert.are_not.equal(f, a[1])
      assert.equal(4096, a[2])
      assert.equal(f, a[3])
    end)

    it("passes the batch it is given, up to the core's largest", function()
      qemu.tracer { fn = f, batch = 1 }
      qemu.tracer { fn = f, batch = fake_core.MAX_BATCH }
      assert.equal(1, core.tracer_new.calls[1].refs[2])
      assert.equal(fake_core.MAX_BATCH, core.tracer_new.calls[2].refs[2])
    end)

    it("returns a tracer object named after the core's id", function()
      local t0, t1 = qemu.tracer { fn = f }, qemu.tracer { fn = f }
      assert.equal("qlua.tracer", getmetatable(t0))
      assert.equal("tracer 0", tostring(t0))
      assert.equal("tracer 1", tostring(t1))
    end)

    it("refuses a batch outside 1 .. tracer_max_batch or not whole", function()
      for _, batch in ipairs { 0, -4, 1.5, fake_core.MAX_BATCH + 1, "64" } do
        local err = error_of(function() qemu.tracer { fn = f, batch = batch } end)
        assert.matches("^spec/qemu_spec.lua:%d+: qemu%.tracer: option batch=" .. lit(batch)
          .. ": expected a whole number from 1 to 1048576$", err)
      end
      assert.spy(core.tracer_new).was_not.called()
    end)

    it("refuses an unknown key and names the accepted ones", function()
      local err = error_of(function() qemu.tracer { fn = f, size = 10 } end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu%.tracer: unknown option 'size' %(accepted: batch, fn%)$", err)
    end)

    it("refuses a fn that is not a function", function()
      local err = error_of(function() qemu.tracer { fn = "f" } end)
      assert.matches("qemu.tracer: option fn=f: expected a function", err, 1, true)
    end)

    it("refuses a missing fn", function()
      local err = error_of(function() qemu.tracer { batch = 8 } end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu%.tracer{fn} expects a function, got nil$", err)
      assert.spy(core.tracer_new).was_not.called()
    end)

    it("refuses a spec that is not a table", function()
      for _, spec in ipairs { f, "x" } do
        local err = error_of(function() qemu.tracer(spec) end)
        assert.matches("^spec/qemu_spec.lua:%d+: qemu%.tracer expects a table { fn = %.%.%., batch = %.%.%. }$", err)
      end
      assert.matches("qemu.tracer expects a table", error_of(qemu.tracer), 1, true)
    end)

    describe("under Lua 5.4, the events view", function()
      if fake_core.ffi then
        pending("Lua 5.4 only (LuaJIT hands fn an FFI pointer)")
        return
      end
      -- A fake buffer as core.event reads it: records from 0, as in C.
      local function buffer(n)
        local b = {}
        for i = 0, n - 1 do
          b[i] = { addr = 0x1000 + i, pc = 0x2000 + i, tag = i, vcpu = 1, size = 4, kind = 2, flags = i % 3 }
        end
        return b
      end
      local function deliver(n, fn)
        qemu.tracer { fn = fn }
        return core.tracers[1].wrapper(buffer(n), n)
      end

      it("is 1-based: events[1] is record 0 and events[n] record n - 1", function()
        local first, last
        deliver(3, function(events) first, last = events[1], events[3] end)
        assert.same({ addr = 0x1000, pc = 0x2000, tag = 0, vcpu = 1, size = 4, kind = 2, flags = 0 }, first)
        assert.same({ addr = 0x1002, pc = 0x2002, tag = 2, vcpu = 1, size = 4, kind = 2, flags = 2 }, last)
      end)

      it("is decoded by one call into the core per delivery, not per event read", function()
        deliver(5, function(events) for i = 1, 5 do local _ = events[i].addr end end)
        assert.spy(core.events_fill).was.called(1)
        assert.equal(5, fake_core.args_of(core.events_fill)[3])
      end)

      it("answers nil past either end, and for keys that are not whole numbers", function()
        local got = {}
        deliver(3, function(events)
          got = { events[0], events[4], events[-1], events[1.5], events.addr, n = 5 }
        end)
        for i = 1, got.n do assert.is_nil(got[i]) end
      end)

      it("has length n, and fn gets n as its second argument", function()
        local len, n
        deliver(5, function(events, count) len, n = #events, count end)
        assert.equal(5, len)
        assert.equal(5, n)
      end)

      it("shows each delivery's own records and count, nothing of a larger earlier one", function()
        qemu.tracer { fn = function(events, n)
          core.seen = { n = n, len = #events, addr = events[n].addr, past = events[n + 1] }
        end }
        local wrapper = core.tracers[1].wrapper
        wrapper(buffer(4), 4)
        wrapper(buffer(2), 2)
        assert.same({ n = 2, len = 2, addr = 0x1001 }, core.seen)
        wrapper(buffer(3), 3)
        assert.same({ n = 3, len = 3, addr = 0x1002 }, core.seen)
      end)

      it("is read-only, and nothing fn did to the previous one reaches the next", function()
        local seen, errors = nil, {}
        qemu.tracer { fn = function(events, n)
          seen = { n = n, len = #events, past = events[n + 1], zero = events[0], raw = events.raw,
                   emt = getmetatable(events[1]) }
          for _, k in ipairs { n + 1, 0, -1, "x" } do
            local ok, err = pcall(function() events[k] = { addr = 1 } end)
            errors[#errors + 1] = not ok and err
          end
          errors.mt = pcall(setmetatable, events, {})
          setmetatable(events[1], { __index = function() return "stale" end })
        end }
        local wrapper = core.tracers[1].wrapper
        wrapper(buffer(2), 2)
        assert.matches("events[3] = ...: a tracer's events are read-only", errors[1], 1, true)
        assert.matches("events[x] = ...: a tracer's events are read-only", errors[4], 1, true)
        assert.is_false(errors.mt)
        wrapper(buffer(2), 2)
        assert.same({ n = 2, len = 2 }, seen)
      end)

      it("iterates with ipairs and pairs over exactly 1 .. n", function()
        local got = {}
        qemu.tracer { fn = function(events)
          for i, e in ipairs(events) do got[#got + 1] = i .. "=" .. e.tag end
          for k, e in pairs(events) do got[#got + 1] = k .. ":" .. e.tag end
        end }
        local wrapper = core.tracers[1].wrapper
        wrapper(buffer(3), 3)
        got = {}
        wrapper(buffer(2), 2)
        assert.same({ "1=0", "2=1", "1:0", "2:1" }, got)
      end)

      it("reuses its tables from one delivery to the next, as LuaJIT reuses its buffer", function()
        local kept = {}
        qemu.tracer { fn = function(events) kept[#kept + 1] = events[1] end }
        local wrapper = core.tracers[1].wrapper
        wrapper(buffer(2), 2)
        wrapper(buffer(2), 2)
        assert.equal(kept[1], kept[2])
      end)

      it("gives each tracer views of its own", function()
        local seen = {}
        qemu.tracer { fn = function(events) seen.a = events[1] end }
        qemu.tracer { fn = function(events) seen.b = events[1] end }
        core.tracers[1].wrapper(buffer(1), 1)
        core.tracers[2].wrapper(buffer(1), 1)
        assert.are_not.equal(seen.a, seen.b)
      end)

      it("returns what fn returns", function()
        assert.equal("done", deliver(1, function() return "done" end))
      end)
    end)

    describe("under LuaJIT, the events pointer", function()
      if not fake_core.ffi then
        pending("LuaJIT only (Lua 5.4 hands fn a table view)")
        return
      end
      local ffi = fake_core.ffi

      local function records(n)
        qemu.tracer { fn = function() end } -- declares qlua_event
        local a = ffi.new("qlua_event[?]", n)
        for i = 0, n - 1 do a[i].addr, a[i].tag, a[i].kind = 0x1000 + i, i, 1 end
        return a
      end

      it("declares qlua_event from core.event_cdef, with core.event_size bytes", function()
        qemu.tracer { fn = function() end }
        assert.equal(fake_core.EVENT_SIZE, ffi.sizeof("qlua_event"))
      end)

      it("is 1-based: events[1] is the first record and events[n] the last", function()
        local a = records(3)
        local got = {}
        qemu.tracer { fn = function(events, n)
          got = { n = n, first = events[1].addr, last = events[n].addr, tag = events[2].tag }
        end }
        core.tracers[2].wrapper(a, 3)
        assert.same({ n = 3, first = 0x1000, last = 0x1002, tag = 1 }, got)
      end)

      it("hands a view whose [1] .. [n] are the records and whose other indices are nil", function()
        local a = records(2)
        local first, second, before, after, len
        qemu.tracer { fn = function(events, n)
          first, second, before, after, len = events[1], events[2], events[0], events[n + 1], #events
        end }
        core.tracers[2].wrapper(a, 2)
        local base = ffi.cast("const qlua_event *", a)
        assert.equal(base[0].addr, first.addr)
        assert.equal(base[1].addr, second.addr)
        assert.is_nil(before)
        assert.is_nil(after)
        assert.equal(2, len)
      end)

      it("answers nil for keys that are not whole numbers, and refuses writes saying why", function()
        local a = records(3)
        local got, err
        qemu.tracer { fn = function(events)
          got = { events.addr, events[1.5], events[true], events["1"], n = 4 }
          err = select(2, pcall(function() events[4] = 1 end))
        end }
        core.tracers[2].wrapper(a, 3)
        for i = 1, got.n do assert.is_nil(got[i]) end
        assert.matches("events[4] = ...: a tracer's events are read-only", err, 1, true)
      end)

      it("returns what fn returns", function()
        local a = records(1)
        qemu.tracer { fn = function() return "done" end }
        assert.equal("done", core.tracers[2].wrapper(a, 1))
      end)

      it("refuses to run on a core whose record size differs", function()
        core.event_size = fake_core.EVENT_SIZE + 8
        assert.matches("qlua_event layout mismatch", error_of(qemu.tracer, { fn = function() end }), 1, true)
      end)
    end)
  end)

  local TRACES = {
    { "tb", "trace", "tb_trace", "tag" },
    { "insn", "trace", "insn_trace", "tag" },
    { "insn", "trace_mem", "insn_trace_mem", "rw, tag" },
  }
  for _, row in ipairs(TRACES) do
    local kind, method, prim, accepted = row[1], row[2], row[3], row[4]
    local where = kind .. ":" .. method
    local mem = method == "trace_mem"
    -- the call the core should get for a handle, tracer id and tag (and rw). tb and insn traces
    -- take (handle, id, tag); init.lua may pass them rw too, which the C side ignores.
    local function expect(h, id, tag, rw)
      if mem then return assert_call(core[prim], h, id, tag, rw or "rw") end
      assert.spy(core[prim]).was.called(1)
      local a = fake_core.args_of(core[prim])
      assert.is_true(rawequal(h, a[1]))
      assert.equal(id, a[2])
      assert.equal(tag, a[3])
      assert.is_true(a.n == 3 or (a.n == 4 and a[4] == "rw"), "a 4th argument other than \"rw\"")
    end

    describe(where, function()
      it("calls core." .. prim .. " with the tracer's id and tag 0" .. (mem and " and rw \"rw\"" or "")
        .. " by default", function()
        local _ = qemu.tracer { fn = function() end }
        local t = qemu.tracer { fn = function() end }
        local h = handle(kind)
        h[method](h, t)
        expect(h, 1, 0)
      end)

      it("passes opts.tag on" .. (mem and ", and opts.rw" or ""), function()
        local t, h = qemu.tracer { fn = function() end }, handle(kind)
        h[method](h, t, mem and { tag = 42, rw = "w" } or { tag = 42 })
        expect(h, 0, 42, mem and "w")
      end)

      it("refuses a tag that is not a whole number >= 0", function()
        local t, h = qemu.tracer { fn = function() end }, handle(kind)
        for _, tag in ipairs { -1, 2.5, "7" } do
          local err = error_of(function() h[method](h, t, { tag = tag }) end)
          assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. ": option tag=" .. lit(tag)
            .. ": expected a whole number >= 0$", err)
        end
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses an unknown option and names the accepted ones", function()
        local t, h = qemu.tracer { fn = function() end }, handle(kind)
        local bad = mem and "sync" or "rw"
        local err = error_of(function() h[method](h, t, { [bad] = "r" }) end)
        assert.matches(where .. ": unknown option '" .. bad .. "' (accepted: " .. accepted .. ")",
          err, 1, true)
      end)

      if mem then
        it("refuses a bad rw", function()
          local t, h = qemu.tracer { fn = function() end }, handle(kind)
          local err = error_of(function() h[method](h, t, { rw = "rw " }) end)
          assert.matches(where .. ': option rw=rw : expected "r", "w", "rw"', err, 1, true)
        end)
      end

      it("refuses options that are not a table", function()
        local t, h = qemu.tracer { fn = function() end }, handle(kind)
        local err = error_of(function() h[method](h, t, 5) end)
        assert.matches(where .. ": options must be a table such as { " .. (mem and "rw" or "tag")
          .. " = ... }, got number", err, 1, true)
      end)

      it("refuses something that is not a tracer from qemu.tracer{}", function()
        local h = handle(kind)
        for _, t in ipairs { {}, 0, function() end } do
          local err = error_of(function() h[method](h, t) end)
          assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. ": expected a tracer from "
            .. "qemu%.tracer{}, got " .. type(t) .. "$", err)
        end
        assert.spy(core[prim]).was_not.called()
      end)

      it("refuses a dot call and names the colon form", function()
        local t, h = qemu.tracer { fn = function() end }, handle(kind)
        local err = error_of(function() h[method](t) end)
        assert.matches("^spec/qemu_spec.lua:%d+: " .. where .. ": expected a " .. kind .. " as self, got "
          .. "table %(call it with a colon: " .. kind .. ":" .. method .. "%(%.%.%.%)%)$", err)
      end)
    end)
  end

  describe("EVENT", function()
    it("numbers the event kinds as the core's records do", function()
      assert.same({ tb = 0, insn = 1, load = 2, store = 3 }, qemu.EVENT)
    end)
  end)

  describe("read_counters", function()
    local counter = fake_core.counter

    it("hands the list to the core and returns what it filled", function()
      local a, b = counter(), counter()
      local list, into = { a, b }, {}
      assert.equal(into, qemu.read_counters(list, 3, into))
      assert.same({ 10, 20 }, into)
      assert_call(core.read_counters, list, 3, into)
      assert.same({ 10 }, qemu.read_counters({ a }, 0)) -- a new table without into
    end)

    it("says which element is not a counter, at the caller's line", function()
      local err = error_of(function() qemu.read_counters({ counter(), "x" }, 0) end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu%.read_counters: list%[2%] is string, expected a "
        .. "counter from qemu%.counter%(%)$", err)
    end)

    it("refuses a list that is no table, a bad vCPU index, a bad into and a fourth argument", function()
      local c = counter()
      for _, case in ipairs {
        { function() qemu.read_counters(5, 0) end,
          "expected a list of counters from qemu.counter(), got number" },
        { function() qemu.read_counters(nil, 0) end, "got nil" },
        { function() qemu.read_counters({ c }) end, "vcpu nil: expected a vCPU index" },
        { function() qemu.read_counters({ c }, 65536) end, "vcpu 65536: expected a vCPU index, a "
          .. "whole number from 0 to 65535" },
        { function() qemu.read_counters({ c }, 0.5) end, "vcpu 0.5" },
        { function() qemu.read_counters({ c }, 0, 7) end, "into: expected a table to fill, got number" },
        { function() qemu.read_counters({ c }, 0, {}, 1) end, "takes three arguments (got a fourth: 1)" },
      } do
        local err = error_of(case[1])
        assert.matches("^spec/qemu_spec.lua:%d+: qemu%.read_counters", err)
        assert.matches(case[2], err, 1, true)
      end
      assert.spy(core.read_counters).was_not.called()
    end)
  end)

  describe("count_every", function()
    it("adds a rule with rw \"rw\" for each kind, and asks the core for translations", function()
      for _, kind in ipairs { "insn", "block", "block_insns", "mem" } do
        core.count_every_rule:clear(); core.want:clear()
        local c = counter()
        qemu.count_every(kind, c)
        assert_call(core.count_every_rule, kind, c, "rw")
        assert_call(core.want, "translate")
      end
    end)

    it("adds the rule before asking for translations", function()
      local order = {}
      core.count_every_rule = spy.new(function() order[#order + 1] = "rule" end)
      core.want = spy.new(function() order[#order + 1] = "want" end)
      qemu.count_every("block", counter())
      assert.same({ "rule", "want" }, order)
    end)

    it("passes opts.rw on for \"mem\"", function()
      for _, rw in ipairs { "r", "w", "rw" } do
        core.count_every_rule:clear()
        local c = counter()
        qemu.count_every("mem", c, { rw = rw })
        assert_call(core.count_every_rule, "mem", c, rw)
      end
    end)

    it("refuses opts.rw for a kind other than \"mem\"", function()
      for _, kind in ipairs { "insn", "block", "block_insns" } do
        local err = error_of(function() qemu.count_every(kind, counter(), { rw = "r" }) end)
        assert.matches('^spec/qemu_spec.lua:%d+: qemu%.count_every: only "mem" takes the option rw$', err)
      end
      assert.spy(core.count_every_rule).was_not.called()
      assert.spy(core.want).was_not.called()
    end)

    it("refuses an unknown kind and lists the accepted ones", function()
      for _, kind in ipairs { "insns", 1 } do
        local err = error_of(function() qemu.count_every(kind, counter()) end)
        assert.matches("^spec/qemu_spec.lua:%d+: qemu%.count_every: kind " .. kind .. ": expected one of "
          .. '"insn", "block", "block_insns", "mem", "branch", "syscall", "syscall_ret", '
          .. '"syscall_error"$', err)
      end
      assert.matches("kind nil", error_of(qemu.count_every), 1, true)
      assert.spy(core.want).was_not.called()
    end)

    it("refuses a bad counter", function()
      local err = error_of(function() qemu.count_every("insn", {}) end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu%.count_every: expected a counter from "
        .. "qemu%.counter%(%) or a tally from qemu%.tally%(%), got table$", err)
      assert.spy(core.count_every_rule).was_not.called()
    end)

    it("hands a tally's rule to the core: by block, by instruction, accesses by address", function()
      local t = qemu.tally()
      local raw = core.last_tally_raw
      core.tally_rule = spy.new(function() return "RULE" end)
      qemu.count_every("block", t)
      assert_call(core.tally_rule, "block", raw, "rw", 1, false, "any")
      assert_call(core.count_every_rule, "block", "RULE")
      core.tally_rule:clear()
      qemu.count_every("mem", t, { rw = "r", align = 4096, phys = true, io = "skip" })
      assert_call(core.tally_rule, "mem", raw, "r", 4096, true, "skip")
      assert.spy(core.want).was.called_with("translate")
    end)

    it("hands edges' rule to the core for \"branch\", and only for it", function()
      local e = qemu.edges()
      core.tally_rule = spy.new(function() return "EDGES RULE" end)
      qemu.count_every("branch", e)
      assert_call(core.tally_rule, "branch", e)
      assert_call(core.count_every_rule, "branch", "EDGES RULE")
      assert.spy(core.want).was.called_with("translate")
      core.tally_rule:clear(); core.count_every_rule:clear()
      for _, case in ipairs {
        { "branch", counter(), 'qemu.count_every: "branch" counts control-flow edges: expected '
          .. "edges from qemu.edges(), got a counter" },
        { "branch", qemu.tally(), "got a tally" },
        { "branch", {}, "got table" },
        { "block", e, 'qemu.count_every: edges from qemu.edges() count kind "branch" only, not "block"' },
        { "mem", e, 'count kind "branch" only, not "mem"' },
      } do
        local err = error_of(function() qemu.count_every(case[1], case[2]) end)
        assert.matches("^spec/qemu_spec.lua:%d+: ", err)
        assert.matches(case[3], err, 1, true)
      end
      assert.matches('qemu.count_every: only "mem" takes options',
        error_of(function() qemu.count_every("branch", e, {}) end), 1, true)
      assert.spy(core.tally_rule).was_not.called()
      assert.spy(core.count_every_rule).was_not.called()
    end)

    it("hands syscall tallies to the core with the event each counts; returns need syscall_ret", function()
      local t = qemu.tally()
      local raw = core.last_tally_raw
      qemu.count_every("syscall", t)
      assert_call(core.tally_syscalls, raw, "call")
      assert.spy(core.want).was_not.called()
      for kind, on in pairs { syscall_ret = "return", syscall_error = "error" } do
        core.tally_syscalls:clear(); core.want:clear()
        qemu.count_every(kind, t)
        assert_call(core.tally_syscalls, raw, on)
        assert_call(core.want, "syscall_ret")
      end
      assert.spy(core.count_every_rule).was.called(0)
    end)

    it("refuses syscall kinds without a tally, with options, past the core's limit and in system mode", function()
      core.tally_syscalls:clear()
      for _, case in ipairs {
        { counter(), 'qemu.count_every: kind "syscall" counts by syscall number: expected a tally '
          .. "from qemu.tally(), got a counter" },
        { nil, "got nil" },
        { qemu.edges(), 'count kind "branch" only, not "syscall"' },
      } do
        local err = error_of(function() qemu.count_every("syscall", case[1]) end)
        assert.matches("^spec/qemu_spec.lua:%d+: ", err)
        assert.matches(case[2], err, 1, true)
      end
      assert.matches('qemu.count_every: kind "syscall_error" takes no options (only "mem" does)',
        error_of(function() qemu.count_every("syscall_error", qemu.tally(), { rw = "r" }) end), 1, true)
      assert.spy(core.tally_syscalls).was_not.called()
      assert.is_nil(error_of(function() qemu.count_every("syscall_error", qemu.tally(), {}) end))
      core.tally_syscalls = spy.new(function() error("a script counts syscalls into at most 16", 0) end)
      assert.matches("^spec/qemu_spec.lua:%d+: qemu%.count_every: a script counts syscalls into at most 16$",
        error_of(function() qemu.count_every("syscall", qemu.tally()) end))
      load({ system = true })
      local err = error_of(function() qemu.count_every("syscall_ret", qemu.tally()) end)
      assert.matches('^spec/qemu_spec.lua:%d+: qemu%.count_every: kind "syscall_ret": syscall events '
        .. "exist only in user mode %(qemu%-ARCH%), not in system emulation; check "
        .. 'qemu%.has%("syscalls"%) first$', err)
      assert.spy(core.tally_syscalls).was_not.called()
    end)

    it("refuses block_insns and options other than mem's with a tally", function()
      local t = qemu.tally()
      core.tally_rule = spy.new(function() return "RULE" end)
      assert.matches("qemu.count_every: a tally counts events by key: kind block_insns: expected one "
        .. 'of "insn", "block", "mem" (block_insns adds a block\'s size: use a counter)',
        error_of(function() qemu.count_every("block_insns", t) end), 1, true)
      assert.matches('qemu.count_every: only "mem" takes options',
        error_of(function() qemu.count_every("insn", t, { align = 8 }) end), 1, true)
      assert.matches("qemu.count_every: option align=6: expected a power of two",
        error_of(function() qemu.count_every("mem", t, { align = 6 }) end), 1, true)
      assert.spy(core.tally_rule).was_not.called()
    end)

    it("refuses an unknown option, a bad rw and options that are not a table", function()
      local c = counter()
      assert.matches("qemu.count_every: unknown option 'n' (accepted: rw)",
        error_of(function() qemu.count_every("mem", c, { n = 2 }) end), 1, true)
      assert.matches('qemu.count_every: option rw=x: expected "r", "w", "rw"',
        error_of(function() qemu.count_every("mem", c, { rw = "x" }) end), 1, true)
      assert.matches("qemu.count_every: options must be a table such as { rw = ... }, got string",
        error_of(function() qemu.count_every("mem", c, "r") end), 1, true)
      assert.spy(core.count_every_rule).was_not.called()
    end)
  end)
end)
