-- Specs for the LuaJIT fast paths of lua/qemu/init.lua, against a fake `qlua.core`: the loop that
-- delivers queued on_exec records, and qemu.tally's wrapper around the native add. Both need
-- LuaJIT's FFI; under Lua 5.4 the C core does this work and these specs are pending.
local fake_core = require "spec.helpers.fake_core"
local error_of = fake_core.error_of
local has_ffi = pcall(require, "ffi")

describe("LuaJIT fast paths", function()
  if not has_ffi then
    pending("need LuaJIT's FFI (Lua 5.4 delivers queued callbacks from C)")
    return
  end
  local ffi = require "ffi"
  local core, qemu
  before_each(function()
    core = fake_core.new { ffi = true }
    qemu = fake_core.load(core)
  end)
  after_each(function() fake_core.unload() end)

  describe("the queued-callback loop", function()
    local registry = debug.getregistry()
    local refs = {}
    local function ref(v) -- like luaL_ref: a free integer slot of the registry
      local r = #registry + 1
      registry[r] = v
      refs[#refs + 1] = r
      return r
    end
    after_each(function()
      for _, r in ipairs(refs) do registry[r] = nil end
      refs = {}
    end)

    local function batch(records)
      local q = ffi.new("qlua_queued[?]", #records)
      local counts = ffi.new("double[?]", #records)
      for i, r in ipairs(records) do
        q[i - 1].fn, q[i - 1].data, q[i - 1].vcpu = r.fn, r.data or 0, r.vcpu or 0
        if r.count then q[i - 1].has_count, counts[i - 1] = 1, r.count end
      end
      return q, counts
    end

    it("is handed to the core with a no-op stand-in", function()
      assert.spy(core.queue_drainer).was.called(1)
      assert.is_function(core.drain)
      assert.is_nil(core.noop(1, 2))
    end)

    it("calls each record's function in order with (vcpu, data [, count]) from `first`", function()
      local calls = {}
      local f = ref(function(...) calls[#calls + 1] = { n = select("#", ...), ... } end)
      local data = ref({ "payload" })
      local q, counts = batch {
        { fn = f, vcpu = 9 },                             -- skipped: before `first`
        { fn = f, vcpu = 1 },                             -- no data: (vcpu, nil)
        { fn = f, vcpu = 2, data = data },                -- (vcpu, data)
        { fn = f, vcpu = 3, count = 42 },                 -- (vcpu, nil, count)
        { fn = f, vcpu = 4, data = data, count = 2^40 },  -- (vcpu, data, count)
      }
      local pos = ffi.new("uint32_t[1]")
      core.drain(q, counts, 1, 5, pos)
      assert.equal(4, #calls)
      assert.same({ n = 2, 1 }, calls[1])
      assert.equal(2, calls[2].n); assert.equal(2, calls[2][1]); assert.equal("payload", calls[2][2][1])
      assert.same({ n = 3, 3, nil, 42 }, calls[3])
      assert.equal(3, calls[4].n); assert.equal(2^40, calls[4][3])
      assert.equal(4, pos[0])
    end)

    it("leaves the failing record's index in pos when a function raises", function()
      local ok = ref(function() end)
      local bad = ref(function() error("boom") end)
      local q, counts = batch { { fn = ok }, { fn = ok }, { fn = bad }, { fn = ok } }
      local pos = ffi.new("uint32_t[1]")
      local err = error_of(core.drain, q, counts, 0, 4, pos)
      assert.matches("boom", err)
      assert.equal(2, pos[0])
    end)
  end)

  describe("qemu.tally()", function()
    it("adds through the native pointer, 1 by default", function()
      local t = qemu.tally()
      t:add(4096)
      t:add(8192, 5)
      assert.same({ { 4096, 1 }, { 8192, 5 } }, core.tally_adds)
    end)

    it("refuses a key that is not a number before the native call", function()
      local t = qemu.tally()
      assert.matches("tally:add: the key must be a whole number from 0 to 2%^64%-1, got x",
        error_of(t.add, t, "x"))
      assert.matches("the amount must be .* got y", error_of(t.add, t, 1, "y"))
      assert.same({}, core.tally_adds)
    end)

    it("names the key or the amount the native add refused", function()
      local t = qemu.tally()
      core.tally_rc = 1
      assert.matches("the key must be a whole number from 0 to 2%^64%-1, got %-1", error_of(t.add, t, -1))
      core.tally_rc = 2
      assert.matches("the amount must be a whole number from 0 to 2%^64%-1, got 0.5",
        error_of(t.add, t, 1, 0.5))
    end)

    it("reads through the native object", function()
      local t = qemu.tally()
      assert.equal(7, t:size())
      assert.equal(3, t:get(5))
      assert.same({ [5] = 3 }, t:items())
      t:reset()
      assert.equal("tally (7 keys)", tostring(t))
    end)
  end)

  it("loads twice in one Lua state (the FFI types are declared once)", function()
    assert.has_no.errors(function() fake_core.load(fake_core.new { ffi = true }) end)
  end)
end)
