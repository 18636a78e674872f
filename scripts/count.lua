-- count.lua: total guest instructions executed, counted natively (no Lua runs at execution time).
-- Prints exactly what QEMU's libinsn.so prints with inline=on: "insns: N".
local qemu = require "qemu"

qemu.script {
  name = "count",
  description = "total executed guest instructions, counted by native inline ops",
  args = {},
}

local insns = qemu.counter()

-- exact (each instruction that starts, unlike a per-block add), and added to every block by qlua
-- itself: no Lua runs at translation time
qemu.count_every("insn", insns)

qemu.on_exit(function()
  qemu.printf("insns: %d\n", insns:sum())
end)
