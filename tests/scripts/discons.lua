-- discons.lua: checks that the program counters of qemu.on_discon agree with the instructions
-- the vCPU executes, as QEMU 10.2's tests/tcg/plugins/discons.c (libdiscons.so) does, with the
-- same reports, so a test can load both in one run and compare (tests/test_ports.py).
--
-- The rules (per vCPU):
--   * to_pc is where execution goes on: the next instruction executed after the event must be
--     at to_pc ("target" mismatch otherwise);
--   * from_pc is where execution left: the address after the last instruction executed, when
--     that instruction was not the last of its block (the block would have gone on there); or,
--     after another event with no instruction in between, the previous event's to_pc ("source"
--     mismatch otherwise). An exception may instead name the instruction that raised it, when
--     that instruction's callback ran.
--   Two addresses also agree when they translate to the same physical address.
--
-- Arguments:
--   abort=on|off      (default on, as QEMU's) on a mismatch, stop the run with the report as the
--                     error; off: print it and go on
--   trace-all=on|off  (default off) print "Exec insn at PC on VCPU N" for every instruction
--   out=PATH          write the reports (and trace lines) to PATH instead of the plugin log, to
--                     tell them from libdiscons.so's in the same run
-- At exit, always in the plugin log: discons: events=N insns=M mismatches=K
-- Under LuaJIT, addresses of 2^53 or more (a kernel's) are doubles that lose their low bits, so
-- two such addresses a few bytes apart compare equal and a mismatch between them goes unseen;
-- under Lua 5.4 every address is exact (and a tracer slower: a table per instruction).
local qemu = require "qemu"

local args = qemu.script {
  name = "discons",
  description = "discontinuity PCs checked against the executed instructions (libdiscons.so)",
  args = {
    { name = "abort", type = "bool", default = true, help = "stop at the first mismatch" },
    { name = "trace-all", type = "bool", default = false, help = "print every instruction" },
    { name = "out", help = "file for the reports (default: the plugin log)" },
  },
}
qemu.need("discon")
qemu.need("translate")

local out = args.out and assert(io.open(args.out, "w"))
local function say(text)
  if out then out:write(text) else qemu.write(text) end
end

local events, insns, mismatches = 0, 0, 0

local function same(a, b)
  if a == b then return true end
  local pa, pb = qemu.translate(a), qemu.translate(b)
  return pa ~= nil and pa == pb
end

local function mismatch(which, vcpu, kind, last, expected, encountered)
  if same(expected, encountered) then return end
  mismatches = mismatches + 1
  local report = string.format("Discon %s PC mismatch on VCPU %d\nExpected:      %x\n"
    .. "Encountered:   %x\nExecuted Last: %x\nEvent type:    %s\n", which, vcpu, expected,
    encountered, last, kind)
  if args.abort then error(report, 0) end
  say(report)
end

-- per vCPU: last = the last instruction executed; after = the address after it, or false when
-- it ended its block; next, next_kind = the to_pc and kind of an event no instruction has
-- followed yet (next false otherwise)
local state = {}
local function of(vcpu)
  local s = state[vcpu]
  if not s then
    s = { last = 0, after = false, next = false, next_kind = nil }
    state[vcpu] = s
  end
  return s
end

qemu.on_discon(function(vcpu, kind, from_pc, to_pc)
  events = events + 1
  local s = of(vcpu)
  if kind == "exception" and same(s.last, from_pc) then
    -- the faulting instruction's callback ran: it may name itself
  elseif s.next then
    mismatch("source", vcpu, kind, s.last, s.next, from_pc) -- an event right after an event
  elseif s.after then
    mismatch("source", vcpu, kind, s.last, s.after, from_pc)
  end
  s.after = false
  s.next, s.next_kind = to_pc, kind
end)

-- The executed instructions reach Lua through a tracer: qlua hands a thread's pending events to
-- Lua before any other callback of that thread, so by the time an event's handler runs, every
-- instruction executed before it has been seen. Each instruction's event carries tag 1 when
-- another instruction follows it in its block (then execution would go on at addr + size).
local tracer = qemu.tracer { batch = 65536, fn = function(ev, n)
  insns = insns + n
  local trace_all = args["trace-all"]
  for i = 1, n do
    local e = ev[i]
    local vcpu, pc = e.vcpu, e.addr
    local s = state[vcpu] or of(vcpu)
    s.last = pc
    s.after = e.tag == 1 and pc + e.size
    if s.next then
      mismatch("target", vcpu, s.next_kind, pc, s.next, pc)
      s.next = false
    end
    if trace_all then say(string.format("Exec insn at %x on VCPU %d\n", pc, vcpu)) end
  end
end }

local FOLLOWED, LAST = { tag = 1 }, { tag = 0 }
qemu.on_translate(function(tb)
  local n = #tb
  for insn in tb:insns() do
    insn:trace(tracer, insn.index < n and FOLLOWED or LAST)
  end
end)

qemu.on_exit(function()
  if out then out:close() end
  qemu.printf("discons: events=%d insns=%d mismatches=%d\n", events, insns, mismatches)
end)
