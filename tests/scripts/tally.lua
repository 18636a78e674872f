-- tally.lua: every memory access counted per page twice in one run, in native tallies and in
-- plain Lua tables, from the same tracer batches; and a queued per-block tally of block
-- addresses against a native counter per run. At exit: whether the two agree, key by key.
local qemu = require "qemu"
local reads, writes, blocks = qemu.tally(), qemu.tally(), qemu.tally()
local lreads, lwrites, lblocks = {}, {}, {}
local STORE = qemu.EVENT.store
local t = qemu.tracer { batch = 1000, fn = function(ev, n)
  for i = 1, n do
    local e = ev[i]
    local page = e.addr - e.addr % 4096
    if e.kind == STORE then
      writes:add(page)
      lwrites[page] = (lwrites[page] or 0) + 1
    else
      reads:add(page, 2)
      lreads[page] = (lreads[page] or 0) + 2
    end
  end
end }
local function on_block(vcpu, pc)
  blocks:add(pc)
  lblocks[pc] = (lblocks[pc] or 0) + 1
end
qemu.on_translate(function(tb)
  tb:on_exec(on_block, tb.vaddr)
  for insn in tb:insns() do insn:trace_mem(t) end
end)

local function same(tally, tbl)
  local items, n, total = tally:items(), 0, 0
  for k, v in pairs(tbl) do
    if items[k] ~= v or tally:get(k) ~= v then return false end
    n, total = n + 1, total + v
  end
  for k in pairs(items) do if tbl[k] == nil then return false end end
  return n == tally:size() and n > 0, total
end

qemu.on_exit(function()
  local r, rtotal = same(reads, lreads)
  local w, wtotal = same(writes, lwrites)
  local b, btotal = same(blocks, lblocks)
  local missing = reads:get(12345)
  reads:reset()
  qemu.printf("tally: same=%s reads=%d writes=%d tbs=%d missing=%d after_reset=%d\n",
    tostring(r and w and b), math.floor(rtotal / 2), wtotal, btotal, missing, reads:size())
end)
