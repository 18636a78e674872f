-- bench: one native add per block of its instruction count (vs cref mode=bb_inline)
local total = qemu.counter()
qemu.on_translate(function(tb) tb:count(total, #tb) end)
qemu.on_exit(function() qemu.printf("total %d\n", total:sum()) end)
