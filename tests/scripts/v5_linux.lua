-- tests/test_v5.py on the Linux boot (QEMU 10.2): physical addresses agree with virtual ones
-- (physical writes are tested by scripts/patch.lua's tests), and on_discon counts each vCPU's
-- interrupts, exceptions and host calls (compared with libtraps loaded in the same run).
local qemu = require "qemu"
qemu.need("translate")
qemu.need("phys_memory")
qemu.need("discon")
qemu.script { args = {} }

local KERNEL = 0xffffffff80000000 -- x86_64 Linux maps its text from here (nokaslr)
local checks, agree, differ, untranslated, exact = 0, 0, 0, 0, 0
local counts = {} -- vcpu -> kind -> n

qemu.on_discon(function(vcpu, kind, from_pc, to_pc)
  local c = counts[vcpu]
  if not c then c = { interrupt = 0, exception = 0, hostcall = 0 }; counts[vcpu] = c end
  c[kind] = c[kind] + 1
end)

-- A kernel block's first instruction, read by virtual and by physical address at execution.
qemu.on_translate(function(tb)
  if checks >= 500 or tb.vaddr < KERNEL then return end
  checks = checks + 1
  local va, n, bytes = tb.vaddr, tb[1].size, tb[1].bytes
  local pa_at_translation = qemu.translate(va)
  tb:on_exec(function()
    local pa = qemu.translate(va)
    if not pa or pa ~= pa_at_translation then untranslated = untranslated + 1 return end
    local by_va = qemu.read_memory(va, n)
    local by_pa = qemu.read_memory(pa, n, { phys = true })
    if by_va == by_pa then agree = agree + 1 else differ = differ + 1 end
    -- the bytes of translation time: under LuaJIT a kernel address (above 2^53) is rounded to
    -- 2 KiB, so both reads may be of a neighbouring place (docs/api.md, Numbers)
    if by_va == bytes then exact = exact + 1 end
  end, nil, { sync = true })
end)

qemu.on_exit(function()
  qemu.printf("phys: checks %d agree %d differ %d untranslated %d exact %d lua %s\n", checks,
    agree, differ, untranslated, exact, qemu.info.lua)
  for v = 0, qemu.vcpus() - 1 do
    local c = counts[v] or { interrupt = 0, exception = 0, hostcall = 0 }
    qemu.printf("discon: vcpu %d interrupts %d exceptions %d hostcalls %d\n", v, c.interrupt,
      c.exception, c.hostcall)
  end
end)
