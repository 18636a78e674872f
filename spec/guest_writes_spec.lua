-- Specs for the `qemu` module's QEMU 10.1/10.2 calls: memory and register writes, physical
-- addresses, discontinuity events (lua/qemu/init.lua), against a fake `qlua.core`.

local fake_core = require "spec.helpers.fake_core"
local error_of = fake_core.error_of
local assert_call = fake_core.assert_call

describe("the guest-changing calls", function()
  local core, qemu

  local function load(opts)
    core = fake_core.new(opts)
    qemu = fake_core.load(core)
    return qemu
  end

  before_each(function() load() end)
  after_each(function() fake_core.unload() end)

  describe("write_memory", function()
    it("hands the address, the bytes and phys = false to the core", function()
      assert.is_true(qemu.write_memory(0x1000, "\1\2"))
      assert_call(core.write_memory, 0x1000, "\1\2", false)
    end)

    it("passes { phys = true } on as true", function()
      qemu.write_memory(0x2000, "x", { phys = true })
      assert_call(core.write_memory, 0x2000, "x", true)
    end)

    it("returns the core's nil and reason", function()
      core.write_memory = spy.new(function() return nil, "invalid address" end)
      local ok, why = qemu.write_memory(1, "x", { phys = true })
      assert.is_nil(ok)
      assert.equal("invalid address", why)
    end)

    it("refuses bytes that are not a string, saying how to make them", function()
      local err = error_of(qemu.write_memory, 0x1000, 1234)
      assert.matches("qemu.write_memory: expected the bytes to write as a string", err, 1, true)
      assert.matches("got number", err, 1, true)
    end)

    it("refuses an address that is not an integer", function()
      assert.matches("qemu.write_memory: expected an address (an integer), got string",
        error_of(qemu.write_memory, "0x10", "x"), 1, true)
      assert.matches("expected an address (an integer), got 1.5",
        error_of(qemu.write_memory, 1.5, "x"), 1, true)
    end)

    it("refuses an unknown option, naming phys", function()
      local err = error_of(qemu.write_memory, 1, "x", { physical = true })
      assert.matches("qemu.write_memory: unknown option 'physical' (accepted: phys)", err, 1, true)
    end)

    it("refuses a phys option that is not a boolean", function()
      local err = error_of(qemu.write_memory, 1, "x", { phys = "yes" })
      assert.matches("option phys=yes: expected true or false", err, 1, true)
    end)

    it("refuses an argument after the options", function()
      local err = error_of(qemu.write_memory, 1, "x", {}, true)
      assert.matches("takes nothing after its options", err, 1, true)
    end)

    it("blames an error the core raises (outside a callback, say) on the caller", function()
      core.write_memory = spy.new(function() error("qemu.write_memory() works only inside", 0) end)
      local err = error_of(function() qemu.write_memory(1, "x") end)
      assert.matches("^spec/guest_writes_spec.lua:%d+: qemu.write_memory%(%) works only inside", err)
    end)

    it("blames a bad argument on the caller", function()
      local err = error_of(function() qemu.write_memory(1, {}) end)
      assert.matches("guest_writes_spec.lua:%d+: qemu.write_memory", err)
    end)
  end)

  describe("read_memory", function()
    it("reads by virtual address unless asked", function()
      qemu.read_memory(0x10, 4)
      assert_call(core.read_memory, 0x10, 4, false)
    end)

    it("reads by physical address with { phys = true }", function()
      qemu.read_memory(0x10, 4, { phys = true })
      assert_call(core.read_memory, 0x10, 4, true)
    end)

    it("refuses an unknown option", function()
      assert.matches("qemu.read_memory: unknown option 'len' (accepted: phys)",
        error_of(qemu.read_memory, 0x10, 4, { len = 2 }), 1, true)
    end)
  end)

  describe("translate", function()
    it("returns the core's physical address", function()
      core.translate = spy.new(function() return 0x5000 end)
      assert.equal(0x5000, qemu.translate(0xffff0000))
    end)

    it("refuses a non-integer address and extra arguments", function()
      assert.matches("qemu.translate: expected an address", error_of(qemu.translate, nil), 1, true)
      assert.matches("qemu.translate(vaddr) takes nothing after",
        error_of(qemu.translate, 1, 2), 1, true)
    end)
  end)

  describe("write_reg", function()
    it("hands the name and an integer value to the core", function()
      qemu.write_reg("rdi", 21)
      assert_call(core.write_reg, "rdi", 21)
    end)

    it("hands a byte string to the core as it is", function()
      qemu.write_reg("xmm0", string.rep("\0", 16))
      assert_call(core.write_reg, "xmm0", string.rep("\0", 16))
    end)

    it("refuses a name that is not a string", function()
      assert.matches("qemu.write_reg: expected a register name (qemu.registers() lists them), got "
        .. "number", error_of(qemu.write_reg, 1, 2), 1, true)
    end)

    it("refuses a value that is neither an integer nor a string", function()
      assert.matches("expected an integer or a string of the register's bytes, got table",
        error_of(qemu.write_reg, "rax", {}), 1, true)
      assert.matches("qemu.write_reg: expected an integer, got 1.5",
        error_of(qemu.write_reg, "rax", 1.5), 1, true)
    end)
  end)

  describe("on_discon", function()
    before_each(function() load({ system = true, features = { discon = true } }) end)

    it("registers the function for every kind by default (filter 0)", function()
      local fn = function() end
      qemu.on_discon(fn)
      assert_call(core.on, "discon", fn, 0)
    end)

    it("turns the kinds into the mask of shim/events.c (interrupt 1, exception 2, hostcall 4)",
      function()
        local fn = function() end
        qemu.on_discon(fn, { kinds = { "exception", "hostcall", "exception" } })
        assert_call(core.on, "discon", fn, 6)
      end)

    it("refuses an unknown kind, listing the accepted ones", function()
      local err = error_of(qemu.on_discon, function() end, { kinds = { "irq" } })
      assert.matches('expected a list of "interrupt", "exception", "hostcall"', err, 1, true)
    end)

    it("refuses an empty kinds list and kinds that are not a list", function()
      assert.matches("option kinds=", error_of(qemu.on_discon, function() end, { kinds = {} }),
        1, true)
      assert.matches("option kinds=interrupt",
        error_of(qemu.on_discon, function() end, { kinds = "interrupt" }), 1, true)
    end)

    it("refuses a function that is not one", function()
      assert.matches("qemu.on_discon expects a function, got string",
        error_of(qemu.on_discon, "f"), 1, true)
    end)

    it("names the feature and the QEMU that brings it on a system host without it", function()
      load({ system = true })
      local err = error_of(qemu.on_discon, function() end)
      assert.matches("qemu.on_discon() needs the 'discon' feature", err, 1, true)
      assert.matches("QEMU 10.2 in system mode", err, 1, true)
    end)

    it("says in user mode that QEMU reports no discontinuity there", function()
      load({ system = false, features = { discon = false } })
      local err = error_of(qemu.on_discon, function() end)
      assert.matches("only in system emulation (qemu-system-ARCH, QEMU 10.2 or later), not in "
        .. "user mode", err, 1, true)
      assert.spy(core.on).was_not.called()
    end)
  end)
end)
