-- bench: every memory access batched to Lua, counted per page (vs cref mode=hotpages) in native
-- tallies (qemu.tally: an FFI call per event under LuaJIT, cheaper than a Lua table update)
local reads, writes = qemu.tally(), qemu.tally()
local STORE = qemu.EVENT.store
local t = qemu.tracer { batch = 8192, fn = function(ev, n)
  for i = 1, n do
    local e = ev[i]
    local page = e.addr - e.addr % 4096
    if e.kind == STORE then writes:add(page) else reads:add(page) end
  end
end }
qemu.on_translate(function(tb) for insn in tb:insns() do insn:trace_mem(t) end end)
qemu.on_exit(function() qemu.printf("pages %d\n", reads:size()) end)
