-- qemu.native: the one place that chooses between LuaJIT's FFI (hot paths as compiled code) and
-- the classic C API (Lua 5.4, or a LuaJIT without the FFI). Every other module asks here.
local M = {}

local ok, ffi = pcall(require, "ffi")
--- LuaJIT's ffi module, or nil where there is none.
M.ffi = ok and ffi or nil

-- The types cdef_once declared. The module loads once per Lua state; a watch=on reload runs the
-- script's top level again (uftrace.lua declares its types there), and ffi.cdef refuses a second
-- definition of a struct. (Not the registry: the launcher reads scripts' declarations where the
-- debug library is withheld.)
local declared = {}

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
