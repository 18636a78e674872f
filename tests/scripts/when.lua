-- when.lua: conditional callbacks. Counts blocks natively and calls Lua only on the executions at
-- which the vCPU's count (before that execution adds to it) is >= k; and once per vCPU at the
-- instruction whose per-vCPU instruction count is exactly n.
local qemu = require "qemu"
local args = qemu.script { name = "when", args = {
  { name = "k", type = "int", default = 500 }, { name = "n", type = "int", default = 100 } } }

local blocks, insns = qemu.counter(), qemu.counter()
local hits, exact = {}, {}
local function hit(vcpu) hits[vcpu] = (hits[vcpu] or 0) + 1 end
local function at_n(vcpu) exact[vcpu] = (exact[vcpu] or 0) + 1 end

qemu.on_translate(function(tb)
  tb:when(blocks, ">=", args.k, hit)
  tb:count(blocks)
  for insn in tb:insns() do
    insn:when(insns, "==", args.n, at_n)
    insn:count(insns)
  end
end)

qemu.on_exit(function()
  -- expected hits per vCPU: max(0, blocks - k); exact hits: 1 where insns > n
  local bad = 0
  for vcpu, b in pairs(blocks:values()) do
    local want = b > args.k and b - args.k or 0
    local want_exact = insns:get(vcpu) > args.n and 1 or 0
    if (hits[vcpu] or 0) ~= want or (exact[vcpu] or 0) ~= want_exact then
      bad = bad + 1
      qemu.printf("vcpu %d: blocks=%d hits=%d want %d; insns=%d exact=%d want %d\n", vcpu, b,
        hits[vcpu] or 0, want, insns:get(vcpu), exact[vcpu] or 0, want_exact)
    end
  end
  local total = 0
  for _, h in pairs(hits) do total = total + h end
  qemu.printf("when: mode=%s blocks=%d hits=%d bad=%d\n", qemu.counter_mode(), blocks:sum(), total, bad)
end)
