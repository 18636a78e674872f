-- Specs for lua/qemu/hostclock.lua: a monotonic clock and a sleep, through LuaJIT's FFI or
-- LuaSystem, and a clear word when neither is there.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

-- Loads the module afresh, with qemu.native and the LuaSystem module replaced when asked.
local function load_clock(native, system)
  local saved = { native = package.loaded["qemu.native"], system = package.loaded.system,
    preload = package.preload.system }
  package.loaded["qemu.hostclock"] = nil
  if native then package.loaded["qemu.native"] = native end
  if system ~= nil then
    package.loaded.system = nil
    package.preload.system = function()
      if system == false then error("module 'system' not found") end
      return system
    end
  end
  local clock = require "qemu.hostclock"
  package.loaded["qemu.hostclock"] = nil
  package.loaded["qemu.native"] = saved.native
  package.loaded.system, package.preload.system = saved.system, saved.preload
  return clock
end

describe("qemu.hostclock", function()
  it("has a clock counting nanoseconds forward and a sleep that waits at least as long", function()
    local clock = load_clock()
    assert.is_nil(clock.missing)
    local t0 = clock.now_ns()
    clock.sleep_ns(2e6)
    local t1 = clock.now_ns()
    assert.is_true(t1 - t0 >= 2e6, "slept " .. (t1 - t0) .. " ns")
    assert.is_true(t1 - t0 < 2e9, "a 2 ms sleep took " .. (t1 - t0) .. " ns")
    clock.sleep_ns(0)
    clock.sleep_ns(-5)
    assert.is_true(clock.now_ns() >= t1)
  end)

  it("uses the FFI under LuaJIT and LuaSystem elsewhere", function()
    assert.equal(jit and "ffi" or "system", load_clock().source)
  end)

  it("takes LuaSystem's seconds and turns them into nanoseconds", function()
    local slept = {}
    local clock = load_clock({ ffi = nil },
      { monotime = function() return 12.5 end, sleep = function(s) slept[#slept + 1] = s end })
    assert.equal("system", clock.source)
    assert.equal(12.5e9, clock.now_ns())
    clock.sleep_ns(3e6)
    clock.sleep_ns(0)
    assert.same({ 0.003 }, slept)
  end)

  it("says what is missing without the FFI and without LuaSystem", function()
    local clock = load_clock({ ffi = nil }, false)
    assert.is_nil(clock.now_ns)
    assert.equal("a clock and a sleep: under Lua 5.4 they come from LuaSystem (Debian: "
      .. "lua-system), which require \"system\" did not find", clock.missing)
  end)
end)
