-- bench: a line of output per executed block (vs cref mode=print): what buffering output costs
local function on_block(vcpu, pc) qemu.printf("block %d 0x%x\n", vcpu, pc) end
qemu.on_translate(function(tb) tb:on_exec(on_block, tb.vaddr) end)
