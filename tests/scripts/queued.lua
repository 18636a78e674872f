-- queued.lua: queued on_exec callbacks (the default) against synchronous ones in the same run.
-- Per vCPU, an order-sensitive checksum of (block address, instruction counter at the block's
-- start) must come out the same from a queued callback given the counter natively and from a
-- synchronous one reading it; a queued per-instruction callback must see every instruction;
-- with fail=N, a queued callback that raises on its Nth call (onerror=warn) must not cost the
-- other callbacks of its batch a single event.
local qemu = require "qemu"
local args = qemu.script { name = "queued", args = {
  { name = "fail", type = "int", default = 0 },
  -- sync=false: no synchronous callback, so batches reach Lua full (LuaJIT's compiled loop)
  -- rather than a few records at a time
  { name = "sync", type = "bool", default = true } } }

local M = 1000003
local insns = qemu.counter()
local queued_sum, sync_sum = {}, {}
local seen, failing_calls = 0, 0
local function mix(sums, vcpu, a, b)
  sums[vcpu] = (((sums[vcpu] or 0) * 31 + a % M) * 17 + b % M) % M
end

local function queued_block(vcpu, addr, count) mix(queued_sum, vcpu, addr, count) end
local function sync_block(vcpu, addr) mix(sync_sum, vcpu, addr, insns:get(vcpu)) end
local function every_insn() seen = seen + 1 end
local function failing()
  failing_calls = failing_calls + 1
  if failing_calls == args.fail then error("queued failure") end
end

qemu.on_translate(function(tb)
  tb:on_exec(queued_block, tb.vaddr, { counter = insns })
  if args.sync then tb:on_exec(sync_block, tb.vaddr, { sync = true }) end
  for insn in tb:insns() do
    insn:count(insns)
    insn:on_exec(every_insn)
    if args.fail > 0 then insn:on_exec(failing) end
  end
end)

qemu.on_exit(function()
  local vcpus, same = 0, 0
  for vcpu, s in pairs(queued_sum) do
    vcpus = vcpus + 1
    if queued_sum[vcpu] == s and (not args.sync or sync_sum[vcpu] == s) then same = same + 1 end
  end
  qemu.printf("queued: insns=%d native=%d vcpus=%d same=%d failing_calls=%d\n", seen, insns:sum(),
    vcpus, same, failing_calls)
end)
