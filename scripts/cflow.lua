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
-- How: qemu.count_every("branch", edges) counts every control-flow edge natively, with no Lua
-- at execution time: a block that starts anywhere other than right after the last instruction
-- its vCPU started adds 1 to the edge (address after that instruction, block start), and marks
-- it early when that instruction was not its block's last. This script only notes, at
-- translation, each instruction's text and which instruction ends at each address, and turns
-- the edges into nodes at exit. (QEMU's plugin enters C on every taken branch: a conditional
-- callback per block, a lock and two hash lookups.)
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

local edges = qemu.edges()
qemu.count_every("branch", edges)

local nodes = {}      -- address -> node
local ending_at = {}  -- address -> the instruction (first translated) that ends there
local disas, symbols = {}, {} -- instruction address -> text, from its first translation

qemu.on_translate(function(tb)
  local n = #tb
  for insn in tb:insns() do
    local pc = insn.vaddr
    if disas[pc] == nil then
      disas[pc] = insn.disas
      symbols[pc] = insn.symbol or false
    end
    local stop = pc + insn.size
    if ending_at[stop] == nil then ending_at[stop] = pc end
    local node = nodes[pc]
    if insn.index == n then
      if not node then
        node = cflow.node(pc)
        nodes[pc] = node
      end
      node.last_count = node.last_count + 1
    elseif node then
      node.mid_count = node.mid_count + 1
    end
  end
end)

qemu.on_exit(function()
  for _, e in ipairs(edges:items()) do -- in the order first taken
    local lpc = ending_at[e.from]
    if lpc then
      local node = nodes[lpc]
      if not node then
        node = cflow.node(lpc)
        nodes[lpc] = node
      end
      cflow.branch(node, e.to, e.count, e.early)
    end
  end
  qemu.write(cflow.report(nodes, args.sort, TOP, function(addr)
    return disas[addr], symbols[addr] or nil
  end))
end)
