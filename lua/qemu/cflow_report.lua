-- qemu.cflow_report: the control-flow nodes of scripts/cflow.lua and their report, in the text
-- QEMU 10.0.2's contrib/plugins/cflow.c prints (pure Lua, see spec/cflow_report_spec.lua).

local M = {}

local ult = require("qemu.u64").lt -- ties in the ranking go by address, unsigned

--- A node: a branch point (an instruction that ended a translated block, or one a block left
-- early from), with the places execution went to from it.
function M.node(addr)
  return { addr = addr, dests = {}, dest_index = {}, early_exit = 0, dest_count = 0,
           last_count = 0, mid_count = 0 }
end

--- Records `n` non-linear transitions from `node` to `dest`, `early` of them out of a block left
-- before its last instruction.
function M.branch(node, dest, n, early)
  if early > 0 then
    node.early_exit = node.early_exit + early
    if node.mid_count == 0 then node.mid_count = 1 end
  end
  local i = node.dest_index[dest]
  if not i then
    i = #node.dests + 1
    node.dests[i] = { addr = dest, count = 0 }
    node.dest_index[dest] = i
  end
  local d = node.dests[i]
  d.count = d.count + n
  node.dest_count = node.dest_count + n
end

-- sort=... words as QEMU reads them: "early" ranks by early exits, "exceptions" by the number
-- of distinct destinations (QEMU's SORT_POPDEST), "hottest" by branches taken.
M.SORTS = {
  hottest = function(n) return n.dest_count end,
  early = function(n) return n.early_exit end,
  exceptions = function(n) return #n.dests end,
}

--- The report: `nodes` maps address -> node; `text_of(addr)` returns the disassembly and the
-- symbol of an instruction (either may be nil, printed "(null)" as glibc prints a NULL %s).
-- Nodes that never branched are left out; the others are ranked by `sort` (descending; equal
-- values by address, ascending) and the first `top` are printed.
function M.report(nodes, sort, top, text_of)
  local key = M.SORTS[sort]
  local total, ranked = 0, {}
  for _, n in pairs(nodes) do
    total = total + 1
    if n.dest_count > 0 then ranked[#ranked + 1] = n end
  end
  table.sort(ranked, function(a, b)
    local ka, kb = key(a), key(b)
    if ka ~= kb then return ka > kb end
    return ult(a.addr, b.addr)
  end)
  local out = { string.format("collected %d control flow nodes in the hash table\n", total) }
  for i = 1, math.min(top, #ranked) do
    local n = ranked[i]
    local disas, symbol = text_of(n.addr)
    out[#out + 1] = string.format("  addr: 0x%x %s: %s (%s)\n", n.addr, symbol or "(null)",
      disas or "(null)", n.mid_count > 0 and "sync fault" or "branch")
    if n.early_exit > 0 then
      out[#out + 1] = string.format("    early exits %d\n", n.early_exit)
    end
    out[#out + 1] = string.format("    branches %d\n", n.dest_count)
    for _, d in ipairs(n.dests) do
      out[#out + 1] = string.format("      to 0x%x (%d)\n", d.addr, d.count)
    end
  end
  return table.concat(out)
end

return M
