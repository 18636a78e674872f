-- count.lua: total guest instructions executed, counted natively (no Lua runs at execution time).
-- Prints exactly what QEMU's libinsn.so prints with inline=on: "insns: N".
--
-- Arguments:
--   pid=on|off   (default off) on: "insns: N (pid P)", so that the reports of a guest's forked
--                processes (each prints its own at exit) can be told apart.
local qemu = require "qemu"

local args = qemu.script {
  name = "count",
  description = "total executed guest instructions, counted by native inline ops",
  args = {
    { name = "pid", type = "bool", default = false,
      help = "add the process id to the line (a forking guest reports once per process)" },
  },
}

local insns = qemu.counter()

-- exact (each instruction that starts, unlike a per-block add), and added to every block by qlua
-- itself: no Lua runs at translation time
qemu.count_every("insn", insns)

qemu.on_exit(function()
  if args.pid then
    qemu.printf("insns: %d (pid %d)\n", insns:sum(), qemu.pid())
  else
    qemu.printf("insns: %d\n", insns:sum())
  end
end)
