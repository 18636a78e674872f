-- qemu.native: the one place that chooses between LuaJIT's FFI (hot paths as compiled code) and
-- the classic C API (Lua 5.4, or a LuaJIT without the FFI). Every other module asks here.
local M = {}

local ok, ffi = pcall(require, "ffi")
--- LuaJIT's ffi module, or nil where there is none.
M.ffi = ok and ffi or nil

--- Declares a C type once per Lua state (a reload runs the modules again in the same state, and
-- ffi.cdef refuses a second definition of a type).
function M.cdef_once(name, decl)
  if not pcall(M.ffi.typeof, name) then M.ffi.cdef(decl) end
end

return M
