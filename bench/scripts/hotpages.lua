-- bench: every memory access batched to Lua, counted per page (vs cref mode=hotpages)
local reads, writes = {}, {}
local STORE = qemu.EVENT.store
local t = qemu.tracer { batch = 8192, fn = function(ev, n)
  for i = 0, n - 1 do
    local e = ev[i]
    local page = e.addr - e.addr % 4096
    if e.kind == STORE then writes[page] = (writes[page] or 0) + 1
    else reads[page] = (reads[page] or 0) + 1 end
  end
end }
qemu.on_translate(function(tb) for insn in tb:insns() do insn:trace_mem(t) end end)
qemu.on_exit(function()
  local pages = 0
  for _ in pairs(reads) do pages = pages + 1 end
  qemu.printf("pages %d\n", pages)
end)
