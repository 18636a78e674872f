-- Specs for lua/qemu/init.lua's fast paths and qemu.tally's wrapper, against a fake `qlua.core`:
-- the LuaJIT loop that delivers queued on_exec records (Lua 5.4 delivers them from C: pending
-- there), and qemu.tally's wrapper, whose checks are shared and whose add goes through the FFI
-- pointer under LuaJIT and core.tally_adder's C method under Lua 5.4.
local fake_core = require "spec.helpers.fake_core"
local error_of = fake_core.error_of
local has_ffi = fake_core.ffi ~= nil

describe("LuaJIT fast paths", function()
  if not has_ffi then
    pending("need LuaJIT's FFI (Lua 5.4 delivers queued callbacks from C)")
    return
  end
  local ffi = require "ffi"
  local core
  before_each(function()
    core = fake_core.new()
    fake_core.load(core)
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

    -- records: { fn, data, vcpu, count } for on_exec; { fn, data, vcpu, mem = flags, vaddr,
    -- extra = { phys=, io=, device=, value=, value_type= } or nil, captured = kind bits }
    local keep = {}
    local function batch(records)
      local q = ffi.new("qlua_queued[?]", #records)
      local counts = ffi.new("double[?]", #records)
      local extras = ffi.new("qlua_access_extra[?]", #records)
      for i, r in ipairs(records) do
        q[i - 1].fn, q[i - 1].data, q[i - 1].vcpu = r.fn, r.data or 0, r.vcpu or 0
        if r.count then q[i - 1].kind, counts[i - 1] = 1, r.count end
        if r.mem then
          q[i - 1].kind = 2 + (r.captured or 0) + r.mem * 256
          counts[i - 1] = r.vaddr
          local x = r.extra
          if x then
            local e = extras[i - 1]
            e.phys, e.has_phys, e.io = x.phys or 0, x.phys and 1 or 0, x.io and 1 or 0
            if x.device then
              local s = ffi.new("char[?]", #x.device + 1, x.device)
              keep[#keep + 1] = s
              e.device = s
            end
            e.value, e.value_type = x.value or 0, x.value_type or 0
            if x.value128 then e.value128[0], e.value128[1] = x.value128[1], x.value128[2] end
          end
        end
      end
      return q, counts, extras
    end

    it("is handed to the core with a no-op stand-in and a reset", function()
      assert.spy(core.queue_drainer).was.called(1)
      assert.is_function(core.drain)
      assert.is_nil(core.noop(1, 2))
      assert.is_function(core.reset)
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
      core.drain(q, counts, nil, 1, 5, pos)
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
      local err = error_of(core.drain, q, counts, nil, 0, 4, pos)
      assert.matches("boom", err)
      assert.equal(2, pos[0])
    end)

    describe("a queued access", function()
      local seen, kept
      local function record(vcpu, access, vaddr, data)
        kept = access
        seen[#seen + 1] = { vcpu = vcpu, vaddr = vaddr, data = data, size = access.size,
          store = access.store, load = access.load, rw = access.rw, signed = access.signed,
          big_endian = access.big_endian, at = access.vaddr }
      end
      before_each(function() seen, kept = {}, nil end)

      it("calls fn(vcpu, access, vaddr, data) with the flags decoded", function()
        local f, data = ref(record), ref({ "d" })
        local q, counts, extras = batch {
          { fn = f, vcpu = 1, mem = 3, vaddr = 0x1000 },                 -- 8-byte load
          { fn = f, vcpu = 2, mem = 0 + 8 + 16, vaddr = 0x2001, data = data }, -- 1-byte signed store
          { fn = f, vcpu = 3, mem = 4 + 32, vaddr = 2^52 },              -- 16-byte big-endian load
        }
        core.drain(q, counts, extras, 0, 3, ffi.new("uint32_t[1]"))
        assert.equal(3, #seen)
        assert.same({ vcpu = 1, vaddr = 0x1000, size = 8, store = false, load = true, rw = "r",
          signed = false, big_endian = false, at = 0x1000 }, seen[1])
        assert.same({ 2, 0x2001, 1, true, false, "w", true, false },
          { seen[2].vcpu, seen[2].vaddr, seen[2].size, seen[2].store, seen[2].load, seen[2].rw,
            seen[2].signed, seen[2].big_endian })
        assert.equal("d", seen[2].data[1])
        assert.same({ 16, true, 2^52 }, { seen[3].size, seen[3].big_endian, seen[3].at })
      end)

      it("is an error to use after its call, with the synchronous access's words", function()
        local f = ref(record)
        local q, counts, extras = batch { { fn = f, mem = 2, vaddr = 8 } }
        core.drain(q, counts, extras, 0, 1, ffi.new("uint32_t[1]"))
        local err = error_of(function() return kept.size end)
        assert.matches("^spec/queue_tally_spec.lua:%d+: access used outside its on_mem callback", err)
      end)

      it("names the option that records phys, io, device or value when it was not given", function()
        for key, option in pairs { phys = "phys", io = "phys", device = "phys", value = "value" } do
          local err
          local f = ref(function(_, access) err = error_of(function() return access[key] end) end)
          local q, counts, extras = batch { { fn = f, mem = 2, vaddr = 8 } }
          core.drain(q, counts, extras, 0, 1, ffi.new("uint32_t[1]"))
          assert.matches("^spec/queue_tally_spec.lua:%d+: access%." .. key .. ": queued, registered "
            .. "without { " .. option .. " = true }", err)
        end
      end)

      local function u64(hi, lo) return ffi.new("uint64_t", hi) * 0x100000000 + lo end

      it("gives what was captured: phys, io, device; value as a number or 16 bytes", function()
        local got = {}
        local f = ref(function(_, a, _, keys)
          local t = {}
          for _, k in ipairs(keys) do t[k] = a[k] end
          got[#got + 1] = t
        end)
        local where, what, both = ref { "phys", "io", "device" }, ref { "value" },
          ref { "phys", "io", "device", "value" }
        local q, counts, extras = batch {
          { fn = f, data = where, mem = 2, vaddr = 8, captured = 4,
            extra = { phys = 0x9000, device = "ram" } },
          { fn = f, data = where, mem = 2, vaddr = 8, captured = 4, extra = { io = true } },
          { fn = f, data = what, mem = 2, vaddr = 8, captured = 8, extra = { value = 77, value_type = 3 } },
          { fn = f, data = what, mem = 4, vaddr = 8, captured = 8, extra = { value_type = 5,
            value128 = { u64(0x08070605, 0x04030201), u64(0x100f0e0d, 0x0c0b0a09) } } },
          { fn = f, data = both, mem = 2, vaddr = 8, captured = 12, extra = { value_type = 0 } },
        }
        core.drain(q, counts, extras, 0, 5, ffi.new("uint32_t[1]"))
        assert.same({ phys = 0x9000, io = false, device = "ram" }, got[1])
        assert.same({ io = true }, got[2])
        assert.same({ value = 77 }, got[3])
        assert.equal("\1\2\3\4\5\6\7\8\9\10\11\12\13\14\15\16", got[4].value)
        assert.same({ io = false }, got[5])
      end)

      it("refuses unknown fields and writes", function()
        local errs = {}
        local f = ref(function(_, a)
          errs[1] = error_of(function() return a.sizes end)
          errs[2] = error_of(function() a.size = 1 end)
        end)
        local q, counts, extras = batch { { fn = f, mem = 2, vaddr = 8 } }
        core.drain(q, counts, extras, 0, 1, ffi.new("uint32_t[1]"))
        assert.matches("access has no field 'sizes'", errs[1])
        assert.matches("read%-only", errs[2])
      end)

      it("is no longer live after a failed loop once the core calls reset", function()
        local f = ref(function(_, a) kept = a; error("boom") end)
        local q, counts, extras = batch { { fn = f, mem = 2, vaddr = 8 } }
        assert.matches("boom", error_of(core.drain, q, counts, extras, 0, 1, ffi.new("uint32_t[1]")))
        assert.equal(4, kept.size) -- live until the core's reset
        core.reset()
        assert.matches("access used outside", error_of(function() return kept.size end))
      end)

      it("mixes with on_exec records in one batch, in order", function()
        local order = {}
        local e = ref(function(vcpu) order[#order + 1] = "exec" .. vcpu end)
        local m = ref(function(vcpu, a) order[#order + 1] = "mem" .. vcpu .. ":" .. a.size end)
        local q, counts, extras = batch {
          { fn = e, vcpu = 1 }, { fn = m, vcpu = 1, mem = 1, vaddr = 4 }, { fn = e, vcpu = 2, count = 5 },
          { fn = m, vcpu = 2, mem = 2, vaddr = 4 },
        }
        core.drain(q, counts, extras, 0, 4, ffi.new("uint32_t[1]"))
        assert.same({ "exec1", "mem1:2", "exec2", "mem2:4" }, order)
      end)
    end)
  end)

  it("loads twice in one Lua state (the FFI types are declared once)", function()
    assert.has_no.errors(function()
      local q = fake_core.load(fake_core.new())
      q.tracer { fn = function() end }
      q = fake_core.load(fake_core.new())
      q.tracer { fn = function() end }
    end)
  end)
end)

describe("qemu.tally", function()
  local core, qemu
  before_each(function()
    core = fake_core.new()
    qemu = fake_core.load(core)
  end)
  after_each(function() fake_core.unload() end)

  -- the keys and amounts the native add got
  local function adds()
    local list = {}
    for i, a in ipairs(core.tally_adds) do list[i] = { a[1], a[2] } end
    return list
  end

  it("makes a new native tally each time", function()
    local a, b = qemu.tally(), qemu.tally()
    assert.spy(core.tally_new).was.called(2)
    assert.are_not.equal(a, b)
    assert.equal("qlua.tally", getmetatable(a))
  end)

  it("adds 1 by default, and the amount it is given", function()
    local t = qemu.tally()
    t:add(4096)
    t:add(8192, 5)
    t:add(0, 0)
    assert.same({ { 4096, 1 }, { 8192, 5 }, { 0, 0 } }, adds())
  end)

  it("reads through the native object, passing the arguments on", function()
    local t = qemu.tally()
    assert.equal(7, t:size())
    assert.equal(3, t:get(5))
    local raw = core.last_tally_raw
    assert.spy(raw.get).was.called_with(raw, 5)
    assert.same({ [5] = 3 }, t:items())
    t:reset()
    assert.spy(raw.reset).was.called(1)
    assert.equal("tally (7 keys)", tostring(t))
  end)

  it("refuses a dot call and names the colon form", function()
    local t = qemu.tally()
    assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: expected a tally from qemu%.tally%(%) as "
      .. "self, got string %(call it with a colon: t:add%(%.%.%.%)%)$", error_of(function() t.add("x", 5) end))
    for _, name in ipairs { "get", "items", "size", "reset" } do
      local err = error_of(function() t[name]() end)
      assert.matches("^spec/queue_tally_spec.lua:%d+: tally:" .. name .. ": expected a tally from "
        .. "qemu%.tally%(%) as self, got nil %(call it with a colon: t:" .. name .. "%(%.%.%.%)%)$", err)
    end
    assert.same({}, core.tally_adds)
  end)

  it("refuses as self a table it did not make, even one holding a tally's fields", function()
    local t = qemu.tally()
    local forged = { raw = t.raw, ptr = t.ptr }
    assert.matches("tally:add: expected a tally from qemu.tally() as self, got table",
      error_of(t.add, forged, 1), 1, true)
    assert.matches("tally:size: expected a tally from qemu.tally() as self, got table",
      error_of(t.size, forged), 1, true)
  end)

  it("refuses a key or an amount that is not a number before the native call", function()
    local t = qemu.tally()
    assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: the key must be a whole number from 0 "
      .. "to 2%^64%-1, got x$", error_of(function() t:add("x") end))
    assert.matches("tally:add: the key must be a whole number from 0 to 2^64-1, got nil",
      error_of(t.add, t), 1, true)
    assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: the amount must be a whole number from "
      .. "0 to 2%^64%-1, got y$", error_of(function() t:add(1, "y") end))
    assert.matches("the amount must be a whole number from 0 to 2^64-1, got table",
      error_of(t.add, t, 1, {}), 1, true)
    assert.same({}, core.tally_adds)
  end)

  describe("under LuaJIT", function()
    if not has_ffi then
      pending("LuaJIT only (Lua 5.4 adds through core.tally_adder's C method)")
      return
    end
    local ffi = require "ffi"

    it("adds through the FFI pointer, with the tally's address", function()
      local t = qemu.tally()
      t:add(1)
      assert.equal(0x1000, tonumber(ffi.cast("uintptr_t", core.tally_adds[1].ptr)))
      assert.spy(core.tally_adder).was_not.called()
    end)

    it("names the key or the amount the native add refused", function()
      local t = qemu.tally()
      core.tally_rc = 1
      assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: the key must be a whole number from 0 "
        .. "to 2%^64%-1, got %-1$", error_of(function() t:add(-1) end))
      core.tally_rc = 2
      assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: the amount must be a whole number "
        .. "from 0 to 2%^64%-1, got 0.5$", error_of(function() t:add(1, 0.5) end))
    end)
  end)

  describe("under Lua 5.4", function()
    if has_ffi then
      pending("Lua 5.4 only (LuaJIT adds through the FFI pointer)")
      return
    end

    it("adds through core.tally_adder's method with the raw tally, the key and the amount", function()
      local t = qemu.tally()
      t:add(4096.0, 2.0)
      assert.equal(1, #core.tally_adds)
      assert.equal(core.last_tally_raw, core.tally_adds[1].raw)
      assert.same({ { 4096, 2 } }, adds())
    end)

    it("refuses a key that is not whole or is a negative float", function()
      local t = qemu.tally()
      for _, key in ipairs { 1.5, -1.0, -0.5, 2^64, 1 / 0, 0 / 0 } do
        local err = error_of(function() t:add(key) end)
        assert.matches("^spec/queue_tally_spec.lua:%d+: tally:add: the key must be a whole number from 0 "
          .. "to 2%^64%-1, got " .. (tostring(key):gsub("%p", "%%%0")) .. "$", err)
      end
      assert.same({}, core.tally_adds)
    end)

    it("refuses an amount that is not whole or is a negative float", function()
      local t = qemu.tally()
      for _, n in ipairs { 0.5, -2.0 } do
        local err = error_of(function() t:add(1, n) end)
        assert.matches("tally:add: the amount must be a whole number from 0 to 2^64-1, got "
          .. tostring(n), err, 1, true)
      end
      assert.same({}, core.tally_adds)
    end)

    it("passes a negative integer key on unchanged (a u64 from 2^63 up, as qlua_push_u64 gives it)", function()
      local t = qemu.tally()
      t:add(-1)
      t:add(math.mininteger)
      assert.same({ { -1, 1 }, { math.mininteger, 1 } }, adds())
    end)

    it("accepts a float key from 2^63 to 2^64-1, as the C side and LuaJIT do", function()
      local t = qemu.tally()
      assert.is_nil(error_of(function() t:add(2^63) end))
      assert.is_nil(error_of(function() t:add(2^64 - 2^11) end))
      assert.equal(2, #core.tally_adds)
    end)

    it("refuses a negative integer amount, as LuaJIT does", function()
      local t = qemu.tally()
      assert.matches("tally:add: the amount must be a whole number from 0 to 2^64-1, got -1",
        error_of(function() t:add(1, -1) end), 1, true)
      assert.same({}, core.tally_adds)
    end)
  end)
end)
