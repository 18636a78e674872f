-- qemu.hostclock: the host's monotonic clock and a sleep, for scripts that pace the guest against
-- wall time (ips.lua). Under LuaJIT through the FFI (clock_gettime, nanosleep: no module needed);
-- under Lua 5.4 through LuaSystem (Debian: lua-system), the one Lua module with both.
local native = require "qemu.native"

local M = {}

local ffi = native.ffi
if ffi then
  native.cdef_once("struct qlua_timespec", [[
    struct qlua_timespec { long tv_sec; long tv_nsec; };
    int clock_gettime(int clk, struct qlua_timespec *ts);
    int nanosleep(const struct qlua_timespec *req, struct qlua_timespec *rem);
  ]])
  local C = ffi.C
  local CLOCK_MONOTONIC = 1 -- Linux
  local EINTR = 4
  local now = ffi.new("struct qlua_timespec")
  local req, rem = ffi.new("struct qlua_timespec"), ffi.new("struct qlua_timespec")

  function M.now_ns()
    C.clock_gettime(CLOCK_MONOTONIC, now)
    return tonumber(now.tv_sec) * 1e9 + tonumber(now.tv_nsec)
  end

  function M.sleep_ns(ns)
    if ns <= 0 then return end
    req.tv_sec = math.floor(ns / 1e9)
    req.tv_nsec = ns % 1e9
    -- the whole time, as g_usleep sleeps it, even when a signal interrupts the sleep
    local a, b = req, rem
    while C.nanosleep(a, b) ~= 0 and ffi.errno() == EINTR do a, b = b, a end
  end
  M.source = "ffi"
else
  local ok, system = pcall(require, "system")
  if ok and type(system) == "table" and system.monotime and system.sleep then
    function M.now_ns() return math.floor(system.monotime() * 1e9) end
    function M.sleep_ns(ns)
      if ns > 0 then system.sleep(ns / 1e9) end
    end
    M.source = "system"
  else
    M.missing = "a clock and a sleep: under Lua 5.4 they come from LuaSystem (Debian: lua-system), "
      .. "which require \"system\" did not find"
  end
end

return M
