-- regs.lua: register reads, guest memory reads and access values on the bare-metal guest
-- (tests/guests/bare/boot.S): at each `decl %ecx` the register counts down from LOOPS to 1, and
-- each load of 0x1000 returns what was stored there: the same ecx value.
local qemu = require "qemu"
qemu.need("registers")
qemu.need("read_memory")
qemu.need("mem_value")

local n, sum, loads, matches, names = 0, 0, 0, 0, nil
local queued_sum, sync_sum = 0, 0

local function at_dec()
  names = names or qemu.registers()
  local ecx = qemu.reg("rcx") % 2^32
  n, sum = n + 1, sum + ecx
end

local function at_load(vcpu, access, vaddr)
  local bytes = qemu.read_memory(vaddr, 4)
  local b1, b2, b3, b4 = bytes:byte(1, 4)
  local in_memory = b1 + b2 * 2^8 + b3 * 2^16 + b4 * 2^24
  loads = loads + 1
  if access.value == in_memory and access.size == 4 then matches = matches + 1 end
  sync_sum = sync_sum + access.value
end

-- queued, with the value recorded at the access: the same values, delivered later
local function at_load_queued(vcpu, access)
  queued_sum = queued_sum + access.value
end

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    if insn.disas == "decl %ecx" then insn:on_exec(at_dec, nil, { regs = "r" }) end
    if insn.disas == "movl 0x1000, %edx" then
      insn:on_mem(at_load, nil, { rw = "r", sync = true }) -- reads guest memory: at the moment
      insn:on_mem(at_load_queued, nil, { rw = "r", value = true })
    end
  end
end)

qemu.on_exit(function()
  local has_rip = false
  for _, name in ipairs(names or {}) do has_rip = has_rip or name == "rip" end
  qemu.printf("regs: n=%d sum=%d loads=%d matches=%d rip=%s\n", n, sum, loads, matches,
    tostring(has_rip))
  qemu.printf("regs: queued values %s\n", queued_sum == sync_sum and sync_sum > 0 and "agree"
    or string.format("differ: %s vs %s", tostring(queued_sum), tostring(sync_sum)))
end)
