-- records.lua: per-translation records under a guest that retranslates without end
-- (tests/guests/smc.c). Every instruction gets a queued callback with a fresh data table, the
-- costliest common pattern; at exit: the calls (to compare with the oracle), and what qlua held.
local qemu = require "qemu"
local calls, translations, flushes = 0, 0, 0
local function on_insn(vcpu, d) calls = calls + 1 end
qemu.on_translate(function(tb)
  translations = translations + 1
  for insn in tb:insns() do insn:on_exec(on_insn, { insn.vaddr, insn.size }) end
end)
qemu.on_flush(function() flushes = flushes + 1 end)
qemu.on_exit(function()
  collectgarbage()
  collectgarbage()
  local m = qemu.memory()
  qemu.printf("records: insns=%d translations=%d flushes=%d held=%d peak=%d limit=%d "
    .. "limit_flushes=%d lua=%d\n", calls, translations, flushes, m.records, m.records_peak,
    m.records_limit, m.limit_flushes, m.lua)
end)
