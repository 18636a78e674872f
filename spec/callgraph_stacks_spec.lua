-- Specs for lua/qemu/callgraph_stacks.lua: call/return recognition and the shadow stacks that
-- turn a stream of executed blocks into folded stacks.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local cg = require "qemu.callgraph_stacks"

-- Feeds blocks to a profile as one vCPU executing them: each block is
-- { vaddr, symbol, n = instructions, kind = "call"/"ret", next = return address }.
local function run(profile, blocks, vcpu, start)
  local now = start or 0
  for _, b in ipairs(blocks) do
    profile:block(vcpu or 0, now, b[1], b[2], b.kind, b.next)
    now = now + (b.n or 1)
  end
  return now
end

local function folded_map(profile)
  local m = {}
  for _, rec in ipairs(profile:folded()) do m[rec[1]] = rec[2] end
  return m
end

describe("qemu.callgraph_stacks", function()
  describe("classify", function()
    it("recognises x86 calls and returns as capstone prints them", function()
      assert.equal("call", cg.classify("callq 0x401136", "x86_64"))
      assert.equal("call", cg.classify("callq *%rax", "x86_64"))
      assert.equal("call", cg.classify("callq *0x10(%rip)", "x86_64"))
      assert.equal("call", cg.classify("call 0x1234", "i386"))
      assert.equal("ret", cg.classify("retq ", "x86_64"))
      assert.equal("ret", cg.classify("ret ", "x86_64"))
      assert.equal("ret", cg.classify("retq $8", "x86_64"))
    end)

    it("skips prefixes such as bnd, notrack and rep", function()
      assert.equal("ret", cg.classify("bnd retq ", "x86_64"))
      assert.equal("ret", cg.classify("repz retq ", "x86_64"))
      assert.equal("call", cg.classify("notrack callq *%rax", "x86_64"))
      assert.equal("call", cg.classify("bnd callq 0x401000", "x86_64"))
    end)

    it("leaves jumps, syscalls and interrupt returns alone", function()
      assert.is_nil(cg.classify("jmp 0x401000", "x86_64"))
      assert.is_nil(cg.classify("jmpq *%rax", "x86_64"))
      assert.is_nil(cg.classify("syscall ", "x86_64"))
      assert.is_nil(cg.classify("iretq ", "x86_64"))
      assert.is_nil(cg.classify("movq %rsp, %rdi", "x86_64"))
      assert.is_nil(cg.classify("", "x86_64"))
    end)

    it("recognises aarch64 branch-and-link and returns", function()
      assert.equal("call", cg.classify("bl #0x400580", "aarch64"))
      assert.equal("call", cg.classify("blr x1", "aarch64"))
      assert.equal("call", cg.classify("blraa x1, x2", "aarch64"))
      assert.equal("ret", cg.classify("ret", "aarch64"))
      assert.equal("ret", cg.classify("retaa", "aarch64"))
      assert.is_nil(cg.classify("br x16", "aarch64"))
      assert.is_nil(cg.classify("b #0x400580", "aarch64"))
      assert.is_nil(cg.classify("bl.cond", "aarch64"))
    end)

    it("knows nothing of other targets", function()
      assert.is_nil(cg.classify("call 0x10", "riscv64"))
      assert.is_false(cg.supported("riscv64"))
      assert.is_true(cg.supported("x86_64"))
    end)
  end)

  describe("hex", function()
    it("formats addresses", function()
      assert.equal("0x401136", cg.hex(0x401136))
      assert.equal("0x0", cg.hex(0))
    end)

    it("formats addresses above 2^53", function()
      assert.equal("0xffff800000000000", cg.hex(0xffff8000 * 2 ^ 32))
    end)
  end)

  describe("a profile", function()
    -- main (0x100) calls f (0x200) twice; f calls g (0x300) once per call
    local function main_f_g()
      return {
        { 0x100, "main", n = 3, kind = "call", next = 0x105 },
        { 0x200, "f", n = 2, kind = "call", next = 0x208 },
        { 0x300, "g", n = 4, kind = "ret" },
        { 0x208, "f", n = 1, kind = "ret" },
        { 0x105, "main", n = 2, kind = "call", next = 0x10a },
        { 0x200, "f", n = 2, kind = "call", next = 0x208 },
        { 0x300, "g", n = 4, kind = "ret" },
        { 0x208, "f", n = 1, kind = "ret" },
        { 0x10a, "main", n = 5 },
      }
    end

    it("weighs each stack with the instructions executed while it was on top", function()
      local p = cg.new()
      local now = run(p, main_f_g())
      p:finish(0, now)
      assert.same({ main = 10, ["main;f"] = 6, ["main;f;g"] = 8 }, folded_map(p))
      assert.equal(now, p:total())
      assert.same({ calls = 4, returns = 4, unmatched = 0, resyncs = 0, insns = 24 }, p.stats)
    end)

    it("counts calls per stack with weight=calls", function()
      local p = cg.new { weight = "calls" }
      p:finish(0, run(p, main_f_g()))
      assert.same({ ["main;f"] = 2, ["main;f;g"] = 2 }, folded_map(p))
    end)

    it("lists stacks depth-first with siblings in bytewise order", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x400, "b", kind = "ret" },
        { 0x105, "main", kind = "call", next = 0x10a },
        { 0x500, "B", kind = "ret" },
        { 0x10a, "main", kind = "call", next = 0x10f },
        { 0x600, "a", kind = "ret" },
        { 0x10f, "main" },
      }))
      local paths = {}
      for _, rec in ipairs(p:folded()) do paths[#paths + 1] = rec[1] end
      assert.same({ "main", "main;B", "main;a", "main;b" }, paths)
    end)

    it("pops the frames a longjmp abandoned as soon as a deeper frame's function runs", function()
      -- main calls h; h calls t; t calls t; the inner t jumps back into h (no return); h returns
      local p = cg.new()
      local now = run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "h", kind = "call", next = 0x205 },
        { 0x300, "t", kind = "call", next = 0x305 },
        { 0x300, "t" },                 -- ends in a jump to 0x210, in h
        { 0x210, "h", n = 7, kind = "ret" },
        { 0x105, "main", n = 2 },
      })
      p:finish(0, now)
      assert.same({ main = 3, ["main;h"] = 8, ["main;h;t"] = 1, ["main;h;t;t"] = 1 }, folded_map(p))
      assert.same({ calls = 3, returns = 1, unmatched = 0, resyncs = 1, insns = 13 }, p.stats)
    end)

    it("pops the frames a longjmp abandoned at a call from a deeper frame's function", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "h", kind = "call", next = 0x205 },
        { 0x300, "t" },                           -- longjmps into h
        { 0x210, "h", kind = "call", next = 0x215 },
        { 0x400, "leaf", kind = "ret" },
        { 0x215, "h", kind = "ret" },
        { 0x105, "main" },
      }))
      local m = folded_map(p)
      assert.equal(1, m["main;h;leaf"])
      assert.is_nil(m["main;h;t;leaf"])
      assert.same({ calls = 3, returns = 2, unmatched = 0, resyncs = 1, insns = 7 }, p.stats)
    end)

    it("without symbols, pops abandoned frames at the return that lands below them", function()
      local p = cg.new()
      local now = run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, nil, kind = "call", next = 0x205 },
        { 0x300, nil, kind = "call", next = 0x305 },
        { 0x300, nil },                 -- jumps to 0x210 (in the frame entered at 0x200)
        { 0x210, nil, n = 7, kind = "ret" },
        { 0x105, "main", n = 2 },
      })
      p:finish(0, now)
      local m = folded_map(p)
      assert.same({ main = 3, ["main;0x200"] = 1, ["main;0x200;0x300"] = 1,
                    ["main;0x200;0x300;0x300"] = 8 }, m)
      assert.same({ calls = 3, returns = 1, unmatched = 0, resyncs = 1, insns = 13 }, p.stats)
    end)

    it("renames the top frame at a tail call, as a sampling profiler would show it", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "a", n = 2 },                    -- jumps to b
        { 0x300, "b", n = 3, kind = "call", next = 0x305 },
        { 0x400, "c", kind = "ret" },
        { 0x305, "b", n = 4, kind = "ret" },
        { 0x105, "main" },
      }))
      assert.same({ main = 2, ["main;a"] = 2, ["main;b"] = 7, ["main;b;c"] = 1 }, folded_map(p))
      assert.equal(0, p.stats.resyncs)
    end)

    it("counts a call under the first name of the frame it entered", function()
      local p = cg.new { weight = "calls" }
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "a", n = 2 },                    -- jumps to b
        { 0x300, "b", n = 3, kind = "ret" },
        { 0x105, "main" },
      }))
      assert.same({ ["main;a"] = 1 }, folded_map(p))
    end)

    it("counts symbol-less blocks for the function the frame runs", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", n = 2 },
        { 0x7000, nil, n = 5 },                   -- code without symbols (a JIT, a library)
        { 0x110, "main", n = 1 },
      }))
      assert.same({ main = 8 }, folded_map(p))
    end)

    it("keeps the stack when a return lands where no frame expects it", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "f", kind = "ret" },            -- returns to a pushed address instead
        { 0x250, "f", n = 3 },
      }))
      assert.same({ main = 1, ["main;f"] = 4 }, folded_map(p))
      assert.equal(1, p.stats.unmatched)
    end)

    it("names a frame after the first symbol it reaches, so stubs take their target's name", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x180, nil, n = 1 },                   -- a PLT stub without a symbol
        { 0x900, "memcpy", n = 5, kind = "ret" },
        { 0x105, "main" },
      }))
      assert.same({ main = 2, ["main;memcpy"] = 6 }, folded_map(p))
    end)

    it("names a frame by its entry address when it never reaches a symbol", function()
      local p = cg.new()
      p:finish(0, run(p, {
        { 0x100, nil, kind = "call", next = 0x105 },
        { 0x180, nil, n = 2, kind = "ret" },
        { 0x105, nil, kind = "call", next = 0x10a },
        { 0x1c0, nil, n = 4 },
      }))
      assert.same({ ["0x100"] = 2, ["0x100;0x180"] = 2, ["0x100;0x1c0"] = 4 }, folded_map(p))
    end)

    it("cuts stacks at max_depth and keeps their weight in the cut stack", function()
      local p = cg.new { max_depth = 2 }
      local now = run(p, main_f_g())
      p:finish(0, now)
      assert.same({ main = 10, ["main;f"] = 14 }, folded_map(p))
      assert.equal(now, p:total())
    end)

    it("follows recursion frame by frame", function()
      local p = cg.new { weight = "calls" }
      p:finish(0, run(p, {
        { 0x100, "main", kind = "call", next = 0x105 },
        { 0x200, "r", kind = "call", next = 0x205 },
        { 0x200, "r", kind = "call", next = 0x205 },
        { 0x200, "r", kind = "ret" },
        { 0x205, "r", kind = "ret" },
        { 0x205, "r", kind = "ret" },
        { 0x105, "main" },
      }))
      assert.same({ ["main;r"] = 1, ["main;r;r"] = 1, ["main;r;r;r"] = 1 }, folded_map(p))
      assert.equal(0, p.stats.resyncs)
    end)

    it("handles recursion deeper than Lua's own stack", function()
      local p = cg.new { weight = "calls" }
      local blocks = { { 0x100, "main", kind = "call", next = 0x105 } }
      for _ = 1, 8000 do blocks[#blocks + 1] = { 0x200, "r", kind = "call", next = 0x205 } end
      p:finish(0, run(p, blocks))
      local folded = p:folded()
      assert.equal(8000, #folded)
      assert.equal(8000, p:total())
    end)

    it("keeps one shadow stack per vCPU and merges their stacks", function()
      local p = cg.new()
      local a = run(p, { { 0x100, "main", n = 2, kind = "call", next = 0x105 } }, 0)
      local b = run(p, { { 0x700, "worker", n = 3, kind = "call", next = 0x705 } }, 1, 100)
      a = run(p, { { 0x200, "f", n = 4 } }, 0, a)
      b = run(p, { { 0x200, "f", n = 5 } }, 1, b)
      p:finish_all(function(v) return v == 0 and a or b end)
      assert.same({ main = 2, ["main;f"] = 4, worker = 3, ["worker;f"] = 5 }, folded_map(p))
      assert.equal(14, p.stats.insns)
    end)

    it("starts a reused vCPU index afresh after finish", function()
      local p = cg.new()
      local now = run(p, { { 0x100, "main", n = 2, kind = "call", next = 0x105 } })
      p:finish(0, now)
      p:finish(0, now + 50) -- finishing twice changes nothing
      now = run(p, { { 0x800, "thread", n = 3 } }, 0, now + 50)
      p:finish(0, now)
      assert.same({ main = 2, thread = 3 }, folded_map(p))
    end)
  end)
end)
