-- Specs for lua/qemu/native.lua: cdef_once, which declares a C type once per Lua state.

require "spec.helpers.fake_core" -- puts lua/ on package.path

local native = require "qemu.native"
local ffi = native.ffi

describe("qemu.native.cdef_once", function()
  if not ffi then
    it("has nothing to declare without LuaJIT's FFI", function()
      assert.is_nil(native.ffi)
    end)
    return
  end

  local n = 0
  local function fresh()
    n = n + 1
    return "qlua_spec_t" .. n
  end

  it("declares the type, and a second call with the same name declares nothing", function()
    local name = fresh()
    native.cdef_once(name, "typedef struct { int a; } " .. name .. ";")
    assert.equal(4, ffi.sizeof(name))
    native.cdef_once(name, "typedef struct { int a; } " .. name .. ";") -- would be a redefinition
    assert.equal(4, ffi.sizeof(name))
  end)

  it("accepts a type it declared before the module was loaded again (package.loaded cleared)", function()
    local name = fresh()
    native.cdef_once(name, "typedef struct " .. name .. " { double d; } " .. name .. ";")
    package.loaded["qemu.native"] = nil
    local again = require "qemu.native"
    assert.has_no.errors(function() -- a second body for the struct tag: ffi.cdef refuses it
      again.cdef_once(name, "typedef struct " .. name .. " { double d; } " .. name .. ";")
    end)
    package.loaded["qemu.native"] = native
    assert.equal(8, ffi.sizeof(name))
  end)

  it("accepts a type a script declared itself first", function()
    local name = fresh()
    ffi.cdef("typedef struct { char c[3]; } " .. name .. ";")
    assert.has_no.errors(function()
      native.cdef_once(name, "typedef struct { char c[3]; } " .. name .. ";")
    end)
  end)

  it("raises the FFI's own error for a declaration that does not parse", function()
    local name = fresh()
    local ok, err = pcall(native.cdef_once, name, "typedef struct { int a } " .. name .. ";")
    assert.is_false(ok)
    assert.matches("expected", tostring(err))
    assert.has_error(function() return ffi.typeof(name) end)
  end)

  it("raises no Lua error on the way when the type is new", function()
    local raised = 0
    local real_pcall = pcall
    local name = fresh()
    -- count errors the way LuaJIT pays for them: each one a pcall that returns false
    local function counted(ok, ...)
      if not ok then raised = raised + 1 end
      return ok, ...
    end
    _G.pcall = function(...) return counted(real_pcall(...)) end
    local ok, err = real_pcall(native.cdef_once, name, "typedef struct { int x; } " .. name .. ";")
    _G.pcall = real_pcall
    assert.is_true(ok, err)
    assert.equal(0, raised)
  end)
end)
