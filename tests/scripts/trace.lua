-- trace.lua: the same execution seen three ways in one run: tracer batches (blocks, instructions,
-- memory accesses), per-event Lua callbacks and native counters. Per vCPU, the tracer must deliver
-- exactly the events, in the same order (an order-sensitive checksum of addresses).
local qemu = require "qemu"
local args = qemu.script { name = "trace", args = {
  { name = "batch", type = "int", default = 4096 }, { name = "lua", type = "bool", default = true } } }

local EV = qemu.EVENT
local M = 1000003
local traced = { tb = 0, insn = 0, load = 0, store = 0 }
local delivered, insns = {}, qemu.counter() -- per vCPU: instructions traced so far; executed
local syscalls, in_step = 0, 0
local trace_sum, call_sum = {}, {}
local function mix(sums, vcpu, addr)
  sums[vcpu] = ((sums[vcpu] or 0) * 31 + addr % M) % M
end
local names = { [EV.tb] = "tb", [EV.insn] = "insn", [EV.load] = "load", [EV.store] = "store" }

local t = qemu.tracer { batch = args.batch, fn = function(ev, n)
  for i = 1, n do
    local e = ev[i]
    local kind = names[tonumber(e.kind)]
    traced[kind] = traced[kind] + 1
    if e.kind == EV.insn then
      local vcpu = tonumber(e.vcpu)
      mix(trace_sum, vcpu, tonumber(e.addr))
      delivered[vcpu] = (delivered[vcpu] or 0) + 1
    end
  end
end }

local function on_insn(vcpu, pc) mix(call_sum, vcpu, pc) end

qemu.on_translate(function(tb)
  tb:trace(t)
  for insn in tb:insns() do
    insn:trace(t, { tag = 7 })
    insn:count(insns)
    insn:trace_mem(t)
    if args.lua then insn:on_exec(on_insn, insn.vaddr) end
  end
end)

-- A syscall callback runs after every event its thread traced before it was delivered.
qemu.on_syscall(function(vcpu)
  syscalls = syscalls + 1
  if delivered[vcpu] == insns:get(vcpu) then in_step = in_step + 1 end
end)

qemu.on_exit(function()
  local same = 0
  for vcpu, s in pairs(trace_sum) do if call_sum[vcpu] == s then same = same + 1 end end
  local vcpus = 0
  for _ in pairs(trace_sum) do vcpus = vcpus + 1 end
  qemu.printf("trace: tbs=%d insns=%d reads=%d writes=%d vcpus=%d same_order=%d syscalls=%d in_step=%d\n",
    traced.tb, traced.insn, traced.load, traced.store, vcpus, same, syscalls, in_step)
end)
