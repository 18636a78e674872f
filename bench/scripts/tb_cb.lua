-- bench: a plain Lua callback per executed block (vs cref mode=tb_cb)
local blocks = 0
local function on_block() blocks = blocks + 1 end
qemu.on_translate(function(tb) tb:on_exec(on_block) end)
qemu.on_exit(function() qemu.printf("blocks %d\n", blocks) end)
