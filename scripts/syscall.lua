-- syscall.lua: guest system calls, counted per number or printed as they happen; a port of QEMU
-- 7.2's tests/plugin/syscall.c (libsyscall.so) with the same arguments and output. User mode only
-- (system emulation has no syscall events).
--
-- Arguments:
--   print=on|off  (default off) on: print each syscall and each return as it happens, no table.
--
-- Output:
--   print=off, at exit, a table ranked by calls (most first; equal counts by ascending syscall
--   number, where QEMU's order among them depends on its hash table):
--     syscall no.  calls  errors
--     NUM          CALLS  ERRORS        ("%-13d%-6d %d")
--   A call counts when it starts; an error is a return with a negative value. A syscall that
--   never returns (exit, exit_group) has no return; a return whose start was not seen still gets
--   a row (with 0 calls), as in QEMU.
--   print=on, during the run:
--     syscall #NUM
--     syscall #NUM returned -> RET
--
-- Differences from QEMU's plugin, on purpose:
--   * rows with equal call counts are ordered by syscall number (see above);
--   * a malformed print= value stops QEMU with a message (QEMU's plugin prints a message and
--     carries on with print=off);
--   * under qemu-system-* the script refuses to start, naming the missing feature (QEMU's plugin
--     loads and prints an empty table);
--   * counts are exact with several guest threads (QEMU's are too: it takes a lock).
-- Syscalls are rare: each one runs a Lua callback, as QEMU's plugin runs a C one.
local qemu = require "qemu"
local report = require "qemu.report"

local args = qemu.script {
  name = "syscall",
  description = "guest system calls: a table of calls and errors per number (QEMU's libsyscall.so)",
  args = {
    { name = "print", type = "bool", default = false,
      help = "print every syscall and return as it happens instead of the table" },
  },
}

qemu.need("syscalls")

if args.print then
  qemu.on_syscall(function(vcpu, num)
    qemu.printf("syscall #%d\n", num)
  end)
  qemu.on_syscall_ret(function(vcpu, num, ret)
    qemu.printf("syscall #%d returned -> %d\n", num, ret)
  end)
  return
end

local stats = {} -- syscall number -> { num =, calls =, errors = }

local function entry(num)
  local e = stats[num]
  if not e then
    e = { num = num, calls = 0, errors = 0 }
    stats[num] = e
  end
  return e
end

qemu.on_syscall(function(vcpu, num)
  local e = entry(num)
  e.calls = e.calls + 1
end)

qemu.on_syscall_ret(function(vcpu, num, ret)
  local e = entry(num)
  if ret < 0 then e.errors = e.errors + 1 end
end)

qemu.on_exit(function()
  local rows = report.rank(report.values(stats), "calls", "num")
  local out = { "syscall no.  calls  errors\n" }
  for _, e in ipairs(rows) do
    out[#out + 1] = string.format("%-13d%-6d %d\n", e.num, e.calls, e.errors)
  end
  qemu.write(table.concat(out))
end)
