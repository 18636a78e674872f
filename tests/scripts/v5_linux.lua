-- tests/test_v5.py on the Linux boot (QEMU 10.2): physical addresses agree with virtual ones, a
-- physical write is seen through the virtual address, and on_discon counts each vCPU's
-- interrupts, exceptions and host calls (compared with libtraps loaded in the same run).
local qemu = require "qemu"
qemu.need("translate")
qemu.need("phys_memory")
qemu.need("discon")
qemu.script { args = {} }

local KERNEL = 0xffffffff80000000 -- x86_64 Linux maps its text from here (nokaslr)
local checks, agree, differ, untranslated, rewrites = 0, 0, 0, 0, 0
local counts = {} -- vcpu -> kind -> n

qemu.on_discon(function(vcpu, kind, from_pc, to_pc)
  local c = counts[vcpu]
  if not c then c = { interrupt = 0, exception = 0, hostcall = 0 }; counts[vcpu] = c end
  c[kind] = c[kind] + 1
end)

-- A kernel block's first instruction, read by virtual and by physical address at execution; for
-- some, written back through the physical address (the same bytes) and read through the virtual.
qemu.on_translate(function(tb)
  if checks >= 500 or tb.vaddr < KERNEL then return end
  checks = checks + 1
  local va, n, bytes, rewrite = tb.vaddr, tb[1].size, tb[1].bytes, checks % 10 == 0
  local pa_at_translation = qemu.translate(va)
  tb:on_exec(function()
    local pa = qemu.translate(va)
    if not pa or pa ~= pa_at_translation then untranslated = untranslated + 1 return end
    local by_va = qemu.read_memory(va, n)
    local by_pa = qemu.read_memory(pa, n, { phys = true })
    if by_va == by_pa and by_va == bytes then agree = agree + 1 else differ = differ + 1 end
    if rewrite then
      rewrite = false
      local ok, why = qemu.write_memory(pa, bytes, { phys = true })
      if ok and qemu.read_memory(va, n) == bytes then rewrites = rewrites + 1
      else qemu.printf("rewrite 0x%x (phys 0x%x): %s\n", va, pa, tostring(why)) end
    end
  end, nil, { sync = true })
end)

qemu.on_exit(function()
  qemu.printf("phys: checks %d agree %d differ %d untranslated %d rewrites %d\n", checks, agree,
    differ, untranslated, rewrites)
  for v = 0, qemu.vcpus() - 1 do
    local c = counts[v] or { interrupt = 0, exception = 0, hostcall = 0 }
    qemu.printf("discon: vcpu %d interrupts %d exceptions %d hostcalls %d\n", v, c.interrupt,
      c.exception, c.hostcall)
  end
end)
