-- bench: a plain Lua callback per executed instruction (vs cref mode=insn_cb)
local total = 0
local function on_insn() total = total + 1 end
qemu.on_translate(function(tb) for insn in tb:insns() do insn:on_exec(on_insn) end end)
qemu.on_exit(function() qemu.printf("total %d\n", total) end)
