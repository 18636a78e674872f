-- qemu.native: the one place that chooses between LuaJIT's FFI (hot paths as compiled code) and
-- the classic C API (Lua 5.4, or a LuaJIT without the FFI). Every other module asks here.
local M = {}

local ok, ffi = pcall(require, "ffi")
--- LuaJIT's ffi module, or nil where there is none.
M.ffi = ok and ffi or nil

-- The types cdef_once declared in this Lua state, kept in the registry: a watch=on reload runs the
-- script's top level again in the same state (uftrace.lua declares its types there), and a
-- module reloaded by hand (package.loaded cleared) starts with fresh locals; ffi.cdef refuses a
-- second definition of a struct.
local registry = debug.getregistry()
local declared = registry["qlua.cdefs"] or {}
registry["qlua.cdefs"] = declared

--- Declares a C type once per Lua state. Asking ffi.typeof first would raise an error for each
-- type not declared yet: under LuaJIT an error is a C++-style unwind, and the first one in a
-- process costs ~150 us (the unwinder's first look at the loaded objects), each start paid it.
function M.cdef_once(name, decl)
  if declared[name] then return end
  local ok_decl, err = pcall(M.ffi.cdef, decl)
  if not ok_decl and not pcall(M.ffi.typeof, name) then error(err, 2) end -- else a script's own
  declared[name] = true
end

return M
