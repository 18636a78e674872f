-- fail_in.lua: raises an error in the callback named by where=, for the error-policy tests.
local qemu = require "qemu"
local args = qemu.script {
  name = "fail_in",
  args = {
    { name = "where", type = "enum", required = true,
      values = { "top", "translate", "tb_exec", "insn_exec", "mem", "syscall", "syscall_ret",
                 "vcpu_init", "vcpu_exit", "exit", "flush" } },
  },
}
local where = args.where
local errors = 0

local function boom()
  errors = errors + 1
  error("boom in " .. where)
end

if where == "top" then boom() end

qemu.on_translate(function(tb)
  if where == "translate" then boom() end
  if where == "tb_exec" then tb:on_exec(boom) end
  for insn in tb:insns() do
    if where == "insn_exec" then insn:on_exec(boom) end
    if where == "mem" then insn:on_mem(boom) end
  end
end)
if where == "syscall" then qemu.on_syscall(boom) end
if where == "syscall_ret" then qemu.on_syscall_ret(boom) end
if where == "vcpu_init" then qemu.on_vcpu_init(boom) end
if where == "vcpu_exit" then qemu.on_vcpu_exit(boom) end
if where == "flush" then qemu.on_flush(boom) end
qemu.on_exit(function()
  if where == "exit" then boom() end
  qemu.printf("fail_in: errors=%d\n", errors)
end)
