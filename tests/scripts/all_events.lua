-- all_events.lua: counts every event kind twice, with native counters and with Lua callbacks,
-- for comparison with the oracle plugin loaded in the same run. lua=off skips the Lua callbacks.
local qemu = require "qemu"
local args = qemu.script {
  name = "all_events",
  description = "native and Lua counts of every event kind",
  args = { { name = "lua", type = "bool", default = true, help = "also count with Lua callbacks" } },
}

local tbs, insns, reads, writes = qemu.counter(), qemu.counter(), qemu.counter(), qemu.counter()
local lua_tbs, lua_insns, lua_reads, lua_writes = 0, 0, 0, 0
local syscalls, syscall_rets, vcpus = 0, 0, {}

local function on_block() lua_tbs = lua_tbs + 1 end
local function on_insn() lua_insns = lua_insns + 1 end
local function on_access(vcpu, access)
  if access.store then lua_writes = lua_writes + 1 else lua_reads = lua_reads + 1 end
end

qemu.on_translate(function(tb)
  tb:count(tbs)
  if args.lua then tb:on_exec(on_block) end
  for insn in tb:insns() do
    insn:count(insns)
    insn:count_mem(reads, 1, { rw = "r" })
    insn:count_mem(writes, nil, { rw = "w" })
    if args.lua then
      insn:on_exec(on_insn)
      insn:on_mem(on_access, nil, { rw = "rw" })
    end
  end
end)

qemu.on_vcpu_init(function(vcpu) vcpus[#vcpus + 1] = vcpu end)
if qemu.has("syscalls") then
  qemu.on_syscall(function() syscalls = syscalls + 1 end)
  qemu.on_syscall_ret(function() syscall_rets = syscall_rets + 1 end)
end

qemu.on_exit(function()
  qemu.printf("native: tbs=%d insns=%d reads=%d writes=%d mode=%s\n", tbs:sum(), insns:sum(),
    reads:sum(), writes:sum(), qemu.counter_mode())
  qemu.printf("lua: tbs=%d insns=%d reads=%d writes=%d syscalls=%d syscall_rets=%d vcpus=%d indices=%d\n",
    lua_tbs, lua_insns, lua_reads, lua_writes, syscalls, syscall_rets, #vcpus, qemu.vcpus())
end)
