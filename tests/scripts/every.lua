-- every.lua: qemu.count_every for each kind, with no on_translate handler, for comparison with
-- the oracle plugin in the same run.
local qemu = require "qemu"
local i, b, bi, m, r, w = qemu.counter(), qemu.counter(), qemu.counter(), qemu.counter(), qemu.counter(), qemu.counter()
qemu.count_every("insn", i); qemu.count_every("block", b); qemu.count_every("block_insns", bi)
qemu.count_every("mem", m); qemu.count_every("mem", r, { rw = "r" }); qemu.count_every("mem", w, { rw = "w" })
qemu.on_exit(function() qemu.printf("every: insns=%d tbs=%d block_insns=%d mem=%d reads=%d writes=%d\n", i:sum(), b:sum(), bi:sum(), m:sum(), r:sum(), w:sum()) end)
