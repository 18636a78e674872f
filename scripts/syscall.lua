-- syscall.lua: guest system calls, counted per number or printed as they happen; a port of QEMU
-- 7.2's tests/plugin/syscall.c (libsyscall.so) with the same arguments and output. User mode only
-- (system emulation has no syscall events).
--
-- Arguments:
--   print=on|off  (default off) on: print each syscall and each return as it happens, no table.
--   names=on|off  (default off; qlua only) on: name syscalls and errors (below), from tables
--                 generated from the Linux headers (lua/qemu/syscalls*.lua; x86_64, aarch64 and
--                 i386 guests; other targets print numbers only). Off keeps QEMU's format.
--   format=text|json (default text) json, with print=off: the table as one JSON object on one
--                 line: {"report":"syscall","target":T,"rows":[{"num":N,"name":S|null,
--                 "calls":C,"errors":E}, ...]} (same rows and order; "name" is always there).
--                 format=json with print=on is refused (the events are no report).
--
-- Output:
--   print=off, at exit, a table ranked by calls (most first; equal counts by ascending syscall
--   number, where QEMU's order among them depends on its hash table):
--     syscall no.  calls  errors
--     NUM          CALLS  ERRORS        ("%-13d%-6d %d")
--   A call counts when it starts; an error is a return with a negative value. A syscall that
--   never returns (exit, exit_group) has no return; a return whose start was not seen still gets
--   a row (with 0 calls), as in QEMU. With names=on the header ends in "  name" and each row
--   in the syscall's name ("%-13d%-6d %-7d %s"; "?" for a number without one).
--   print=on, during the run:
--     syscall #NUM
--     syscall #NUM returned -> RET
--   print=on names=on, during the run:
--     syscall #257 openat(AT_FDCWD, 0x4000801234, 0x80000, 0x0, 0x0, 0x0)
--     syscall #257 openat returned -> -2 (ENOENT)
--   all six argument registers are shown (the headers do not say how many a syscall takes);
--   arguments the kernel reads as an int (file descriptors, dirfd: AT_FDCWD) are decoded from
--   their low 32 bits as signed, the others are shown in hex; an error return (-4095 .. -1) gets
--   its errno name.
--
-- Cost: the table is counted natively (qemu.count_every's syscall tallies): no Lua and no lock
-- per syscall (QEMU's plugin updates a hash table in each callback). print=on runs Lua per event.
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
local json = require "qemu.json"
local syscalls = require "qemu.syscalls"

local args = qemu.script {
  name = "syscall",
  description = "guest system calls: a table of calls and errors per number (QEMU's libsyscall.so)",
  args = {
    { name = "print", type = "bool", default = false,
      help = "print every syscall and return as it happens instead of the table" },
    { name = "names", type = "bool", default = false,
      help = "name syscalls, decode int arguments (AT_FDCWD) and name errors" },
    { name = "format", type = "enum", values = { "text", "json" }, default = "text",
      help = "text: QEMU's table; json: the same as one JSON object on one line (print=off)" },
  },
}

if args.print and args.format == "json" then
  error("syscall.lua: format=json applies to the table (print=off); print=on prints text", 0)
end

qemu.need("syscalls")

local target = qemu.info.target

if args.print and args.names then
  qemu.on_syscall(function(vcpu, num, ...)
    qemu.printf("syscall #%d %s\n", num, syscalls.format_call(target, num, { ... }))
  end)
  qemu.on_syscall_ret(function(vcpu, num, ret)
    qemu.printf("syscall #%d %s returned -> %s\n", num,
      syscalls.name(target, num) or string.format("syscall_%d", num), syscalls.format_ret(ret))
  end)
  return
end

if args.print then
  qemu.on_syscall(function(vcpu, num)
    qemu.printf("syscall #%d\n", num)
  end)
  qemu.on_syscall_ret(function(vcpu, num, ret)
    qemu.printf("syscall #%d returned -> %d\n", num, ret)
  end)
  return
end

-- Counted natively per syscall number, with no Lua per syscall (qemu.count_every's syscall
-- tallies): calls at each start, returns at each return (so a return whose start was not seen
-- still makes a row), errors at each negative return.
local calls, returns, errors = qemu.tally(), qemu.tally(), qemu.tally()
qemu.count_every("syscall", calls)
qemu.count_every("syscall_ret", returns)
qemu.count_every("syscall_error", errors)

-- syscall number -> { num =, calls =, errors = }, for every number started or returned
local function table_of_stats()
  local c, r, e = calls:items(), returns:items(), errors:items()
  local stats = {}
  for _, seen in ipairs { c, r } do
    for num in pairs(seen) do
      if not stats[num] then
        stats[num] = { num = num, calls = c[num] or 0, errors = e[num] or 0 }
      end
    end
  end
  return stats
end

qemu.on_exit(function()
  local rows = report.rank(report.values(table_of_stats()), "calls", "num")
  if args.format == "json" then
    local list = {}
    for i, e in ipairs(rows) do
      list[i] = json.object { "num", e.num, "name", syscalls.name(target, e.num) or json.null,
        "calls", e.calls, "errors", e.errors }
    end
    qemu.write(json.encode(json.object { "report", "syscall", "target", target,
      "rows", json.array(list) }) .. "\n")
    return
  end
  if args.names then
    local out = { "syscall no.  calls  errors  name\n" }
    for _, e in ipairs(rows) do
      out[#out + 1] = string.format("%-13d%-6d %-7d %s\n", e.num, e.calls, e.errors,
        syscalls.name(target, e.num) or "?")
    end
    qemu.write(table.concat(out))
    return
  end
  local out = { "syscall no.  calls  errors\n" }
  for _, e in ipairs(rows) do
    out[#out + 1] = string.format("%-13d%-6d %d\n", e.num, e.calls, e.errors)
  end
  qemu.write(table.concat(out))
end)
