-- Specs for lua/qemu/cflow_report.lua: nodes, branches, ranking and QEMU 10's report text.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local cflow = require "qemu.cflow_report"

local TEXT = {
  [0x4016d3] = { "jne 0x4016b0", "main" },
  [0x401700] = { "retq ", "main" },
  [0x40180c] = { "movl (%rax), %eax", nil },
  [0x401900] = { nil, nil },
}
local function text_of(addr)
  local t = TEXT[addr] or {}
  return t[1], t[2]
end

local function nodes_of(list)
  local nodes = {}
  for _, n in ipairs(list) do nodes[n.addr] = n end
  return nodes
end

describe("qemu.cflow_report", function()
  it("counts branches per destination, in the order first seen", function()
    local n = cflow.node(0x401700)
    cflow.branch(n, 0x402000, 1, 0)
    cflow.branch(n, 0x401000, 1, 0)
    cflow.branch(n, 0x402000, 4, 0)
    assert.equal(6, n.dest_count)
    assert.same({ { addr = 0x402000, count = 5 }, { addr = 0x401000, count = 1 } }, n.dests)
    assert.equal(0, n.early_exit)
    assert.equal(0, n.mid_count)
  end)

  it("counts early exits and makes the node a sync fault", function()
    local n = cflow.node(0x40180c)
    cflow.branch(n, 0x401615, 3, 2)
    assert.equal(2, n.early_exit)
    assert.equal(3, n.dest_count)
    assert.equal(1, n.mid_count)
  end)

  it("leaves a node with only ordinary branches a branch", function()
    local n = cflow.node(0x401700)
    cflow.branch(n, 0x401615, 7, 0)
    assert.equal(0, n.early_exit)
    assert.equal(0, n.mid_count)
  end)

  describe("report", function()
    local function sample()
      local hot, ret, fault, quiet, tie = cflow.node(0x4016d3), cflow.node(0x401700),
        cflow.node(0x40180c), cflow.node(0x401500), cflow.node(0x401900)
      cflow.branch(hot, 0x4016b0, 5, 0)
      cflow.branch(ret, 0x402000, 1, 0)
      cflow.branch(ret, 0x403000, 1, 0)
      cflow.branch(fault, 0x401615, 1, 1)
      cflow.branch(tie, 0x401000, 1, 0)
      cflow.branch(tie, 0x401004, 1, 0)
      return nodes_of({ hot, ret, fault, quiet, tie })
    end

    it("prints QEMU's text, ranked by branches (ties by address), without idle nodes", function()
      assert.equal("collected 5 control flow nodes in the hash table\n"
        .. "  addr: 0x4016d3 main: jne 0x4016b0 (branch)\n"
        .. "    branches 5\n"
        .. "      to 0x4016b0 (5)\n"
        .. "  addr: 0x401700 main: retq  (branch)\n"
        .. "    branches 2\n"
        .. "      to 0x402000 (1)\n"
        .. "      to 0x403000 (1)\n"
        .. "  addr: 0x401900 (null): (null) (branch)\n"
        .. "    branches 2\n"
        .. "      to 0x401000 (1)\n"
        .. "      to 0x401004 (1)\n"
        .. "  addr: 0x40180c (null): movl (%rax), %eax (sync fault)\n"
        .. "    early exits 1\n"
        .. "    branches 1\n"
        .. "      to 0x401615 (1)\n",
        cflow.report(sample(), "hottest", 10, text_of))
    end)

    it("ranks by early exits for sort=early and by destinations for sort=exceptions", function()
      local early = cflow.report(sample(), "early", 10, text_of)
      assert.truthy(early:find("^collected 5[^\n]*\n  addr: 0x40180c "))
      -- the others tie at 0 early exits: by address
      local a, b, c = early:find("0x4016d3 main", 1, true), early:find("0x401700 main", 1, true),
        early:find("0x401900 ", 1, true)
      assert.truthy(a < b and b < c)
      local pop = cflow.report(sample(), "exceptions", 10, text_of)
      local x, y, z = pop:find("0x401700 main", 1, true), pop:find("0x401900 ", 1, true),
        pop:find("0x4016d3 main", 1, true)
      assert.truthy(x < y and y < z)
    end)

    it("prints at most `top` nodes", function()
      local text = cflow.report(sample(), "hottest", 1, text_of)
      local _, count = text:gsub("  addr: ", "")
      assert.equal(1, count)
    end)
  end)
end)
