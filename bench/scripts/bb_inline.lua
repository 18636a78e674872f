-- bench: one native add per block of its instruction count (vs cref mode=bb_inline)
local total = qemu.counter()
qemu.count_every("block_insns", total) -- tb:count(total, #tb) on every block, no Lua at translation
qemu.on_exit(function() qemu.printf("total %d\n", total:sum()) end)
