-- cflow.lua: where control flow goes: for each branch point, the places execution jumped to from
-- it, and how often blocks were left early (faults); a port of QEMU 10.0.2's
-- contrib/plugins/cflow.c (not in QEMU 7.2).
--
-- Arguments:
--   sort=hottest|early|exceptions  (default hottest) rank nodes by branches taken / early exits /
--                                  number of distinct destinations (QEMU's words: "exceptions"
--                                  is its SORT_POPDEST).
--
-- Output (at exit), as QEMU prints it:
--   collected N control flow nodes in the hash table
--   then for each of the first 10 ranked nodes that branched at least once:
--     addr: 0xADDR SYMBOL: DISASSEMBLY (branch|sync fault)
--       early exits N              only when non-zero
--       branches N
--         to 0xDEST (N)            one line per destination, in the order first seen
-- A "branch" is counted when a block starts somewhere other than right after the previous block
-- of the same vCPU; it is charged to the last instruction that vCPU started (the previous block's
-- last one, or the one it was left at early). Nodes ranked equal are listed by address, ascending
-- (QEMU's order among them is its hash table's). "sync fault" marks an instruction that was also
-- translated in the middle of a block, or one a block was left early from; a missing symbol or
-- disassembly prints "(null)", as QEMU does.
--
-- How (QEMU 10 stores the last instruction's address into per-vCPU scoreboard slots; QEMU 7.2
-- has no stores and qlua counters only add, so):
--   * counter X per vCPU holds the address right after the last instruction the vCPU started:
--     every instruction adds its size to X natively, which walks X along a block from its start
--     to its end when execution arrives linearly (X == start);
--   * a native conditional callback tb:when(X, "~=", start) calls Lua only when a block starts
--     somewhere else: a taken branch, a call, a return, a fault. The last instruction started is
--     the one that ends at X, and the previous block was left early when no block ends at X.
--     Lua records the branch and moves X to the block's start (adds modulo 2^64), so the
--     block's own adds walk it on from there.
-- So Lua runs about as often as QEMU's own callback, and never on straight-line flow. Adding per
-- instruction (not per block) also keeps QEMU 7.2's phantom instructions out: 7.2 (fixed in 8.0)
-- lists in a block an x86 instruction that would cross into the next page although the
-- translator dropped it, with no code behind it (seen in ld.so under /bin/ls); the block's size
-- would point past the real end, and every execution would look like an early exit.
-- Differences from QEMU's plugin, on purpose:
--   * QEMU creates a node for every translated instruction (cflow.c passes the last instruction's
--     pointer where a bool "is last" is meant), so its "collected N" counts every instruction
--     and any instruction ever seen mid-block is a "sync fault". Here nodes are what its comments
--     say: the last instruction of each translated block, plus instructions blocks were left
--     early from; "collected N" counts those;
--   * QEMU prints a debug line on stderr at each early exit; this script does not;
--   * a user-mode vCPU index reused by a new guest thread starts afresh (QEMU would charge a
--     branch from the ended thread's last block to the new thread's first one).
local qemu = require "qemu"
local cflow = require "qemu.cflow_report"

local args = qemu.script {
  name = "cflow",
  description = "branch points, their destinations and early exits (QEMU 10's cflow)",
  args = {
    { name = "sort", type = "enum", values = { "hottest", "early", "exceptions" },
      default = "hottest", help = "rank by branches, early exits, or distinct destinations" },
  },
}

local TOP = 10

local after = qemu.counter() -- X: per vCPU, the address after the last instruction started

-- X holds addresses modulo 2^63: Lua 5.4 sees addresses of 2^63 and more (kernel space) as
-- negative integers, which counters and conditions do not take; 2^63 apart never collide here.
-- (LuaJIT's doubles are exact below 2^53 only: fine for user mode, not for kernel addresses.)
local MIN = math.mininteger
local function key(a)
  if a < 0 then return a - MIN end
  return a
end

local nodes = {}      -- address -> node
local ending_at = {}  -- address -> the instruction (first translated) that ends there
local block_end = {}  -- address -> true when a translated block ends there
local disas, symbols = {}, {} -- instruction address -> text, from its first translation

local function branched(vcpu, pc)
  local x = key(after:get(vcpu))
  local lpc = x ~= 0 and ending_at[x]
  if lpc then
    local node = nodes[lpc]
    if not node then
      node = cflow.node(lpc)
      nodes[lpc] = node
    end
    cflow.branch(node, pc, not block_end[x])
  end
  cflow.move_slot(after, vcpu, x, key(pc))
end

-- A user-mode vCPU index reused by a new thread starts with no previous instruction.
qemu.on_vcpu_init(function(vcpu)
  cflow.move_slot(after, vcpu, key(after:get(vcpu)), 0)
end)

qemu.on_translate(function(tb)
  local start, n = tb.vaddr, #tb
  tb:when(after, "~=", key(start), branched, start)
  for insn in tb:insns() do
    local pc, size = insn.vaddr, insn.size
    if disas[pc] == nil then
      disas[pc] = insn.disas
      symbols[pc] = insn.symbol or false
    end
    local stop = key(pc + size)
    if ending_at[stop] == nil then ending_at[stop] = pc end
    local node = nodes[pc]
    if insn.index == n then
      block_end[stop] = true
      if not node then
        node = cflow.node(pc)
        nodes[pc] = node
      end
      node.last_count = node.last_count + 1
    elseif node then
      node.mid_count = node.mid_count + 1
    end
    insn:count(after, size)
  end
end)

qemu.on_exit(function()
  qemu.write(cflow.report(nodes, args.sort, TOP, function(addr)
    return disas[addr], symbols[addr] or nil
  end))
end)
