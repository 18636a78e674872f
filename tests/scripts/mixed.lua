-- mixed.lua: a tracer and a queued callback on the same blocks. A thread's buffers are delivered
-- together, so whenever the tracer function runs, the queued callbacks of every earlier batch have
-- run: per vCPU, the queued count equals the events traced before this batch (give or take the
-- block being executed).
local qemu = require "qemu"
local traced, queued, checks, behind = {}, {}, 0, 0
local t = qemu.tracer { batch = 100, fn = function(ev, n)
  local seen = {}
  for i = 1, n do
    local v = tonumber(ev[i].vcpu)
    if not seen[v] then
      seen[v] = true
      checks = checks + 1
      -- at most one behind: the drain may come between the block's tracer event and its queued
      -- record (QEMU calls a block's callbacks in the order they were registered)
      local lag = (traced[v] or 0) - (queued[v] or 0)
      if lag < 0 or lag > 1 then behind = behind + 1 end
    end
  end
  for i = 1, n do
    local v = tonumber(ev[i].vcpu)
    traced[v] = (traced[v] or 0) + 1
  end
end }
local function on_block(vcpu) queued[vcpu] = (queued[vcpu] or 0) + 1 end
qemu.on_translate(function(tb) tb:trace(t); tb:on_exec(on_block) end)
qemu.on_exit(function()
  local same = true
  for v, n in pairs(traced) do same = same and queued[v] == n end
  qemu.printf("mixed: checks=%d behind=%d same=%s\n", checks, behind, tostring(same))
end)
