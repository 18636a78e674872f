-- count.lua: total guest instructions executed, counted natively (no Lua runs at execution time).
-- Prints exactly what QEMU's libinsn.so prints with inline=on: "insns: N".
local qemu = require "qemu"

qemu.script {
  name = "count",
  description = "total executed guest instructions, counted by native inline ops",
  args = {},
}

local insns = qemu.counter()

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:count(insns) -- exact: counts each instruction that starts, unlike a per-block add
  end
end)

qemu.on_exit(function()
  qemu.printf("insns: %d\n", insns:sum())
end)
