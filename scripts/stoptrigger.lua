-- stoptrigger.lua: stop the emulation after a number of instructions or when an address is
-- reached; a port of QEMU 10.0.2's contrib/plugins/stoptrigger.c (not in QEMU 7.2).
--
-- Arguments (at least one of the two):
--   icount=N[:RC]          exit with status RC (default 0) once a vCPU has executed N
--                          instructions, before it starts instruction N+1;
--   addr=A[:RC][+B[:RC]]   exit with status RC (default 0) when a vCPU is about to execute the
--                          instruction at address A (or B, ...).
-- Numbers are read as C's strtoull with base 0 reads them: decimal, 0x hex, octal after a leading
-- 0. RC is 0..255.
--
-- Output (plugin log), then the process exits at once:
--   icount reached at 0xPC, exiting     PC: the instruction that would have been the N+1th
--   0xA reached, exiting
--
-- How: the instruction count is a native per-vCPU counter (insn:count) and the check a native
-- conditional callback (insn:when(counter, "==", N)): Lua runs only once, to print and exit.
-- The address check is a Lua callback on the instructions at the wanted addresses only. Exit is
-- qemu.flush() then os.exit(RC), which calls C's exit() from inside the vCPU's callback, as
-- QEMU's plugin does: this was tested on QEMU 7.2 user mode (LuaJIT and Lua 5.4) with one and
-- with 8 guest threads: exit() runs the atexit handlers, so every plugin's exit callback still
-- runs (QEMU's qemu_plugin_atexit_cb, registered with atexit()), qlua's own on_exit handlers
-- included (its lock is recursive), and the process ends with status RC while the other guest
-- threads are still running, which exit() ends with the process. The guest's own unflushed
-- stdio buffers are lost, as with QEMU's plugin.
--
-- Differences from QEMU's plugin, on purpose:
--   * numbers must be whole numbers (QEMU reads "12abc" as 12 and "main" as 0 without a word);
--     an exit code above 255 is refused (exit() keeps only its low 8 bits anyway);
--   * QEMU accepts addr= several times; a qlua script sees only the last value of a repeated
--     argument, so several addresses are given in one value, joined by '+'.
local qemu = require "qemu"
local parse = require "qemu.stoptrigger_args"

local args = qemu.script {
  name = "stoptrigger",
  description = "exit after N instructions or at an address (QEMU 10's stoptrigger)",
  args = {
    { name = "icount", type = "string", help = "N[:RC]: exit with RC after N instructions" },
    { name = "addr", type = "string", help = "A[:RC][+B[:RC]...]: exit with RC at address A" },
  },
}

local function fail(why) error("stoptrigger.lua: " .. why, 0) end

local icount, icount_rc
if args.icount then
  icount, icount_rc = parse.icount(args.icount)
  if not icount then fail(icount_rc) end
end
local exits -- address -> { addr, rc }
if args.addr then
  local list, why = parse.addrs(args.addr)
  if not list then fail(why) end
  exits = {}
  for _, e in ipairs(list) do exits[e.addr] = e end
end
if not icount and not exits then fail("'icount' or 'addr' argument missing") end

local function stop(rc, message)
  qemu.write(message)
  qemu.flush()
  os.exit(rc)
end

local function icount_reached(vcpu, pc)
  stop(icount_rc, string.format("icount reached at 0x%x, exiting\n", pc))
end

local function address_reached(vcpu, e)
  stop(e.rc, string.format("0x%x reached, exiting\n", e.addr))
end

local insns = icount and qemu.counter()

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    local pc = insn.vaddr
    if insns then
      insn:when(insns, "==", icount, icount_reached, pc) -- the counter before this instruction
      insn:count(insns)
    end
    local e = exits and exits[pc]
    if e then insn:on_exec(address_reached, e, { sync = true }) end -- stop at that very instruction
  end
end)
