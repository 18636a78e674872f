-- tests/test_v5.py: changes tests/guests/v5.c's computation through QEMU 10.1's writes.
-- mode=memory: at report()'s entry, writes `value` into `secret` (8 bytes, little-endian), then
--   reads it back; mode=register: at double_it()'s entry writes `value` into the argument register
--   and reads it back; mode=queued, translate, unmapped, noaccess, readonly, width, name, wide: the
--   misuses, each printing the error it got.
local qemu = require "qemu"
local a = qemu.script {
  args = {
    { name = "mode", type = "enum", values = { "memory", "register", "queued", "translate",
      "unmapped", "noaccess", "readonly", "width", "name", "wide" }, required = true },
    { name = "secret", type = "int", required = true },
    { name = "report", type = "int", required = true },
    { name = "fn", type = "int", required = true },
    { name = "arg", default = "rdi" },
    { name = "value", type = "int", default = 1234 },
  },
}

local function le8(v) -- an 8-byte little-endian string of a whole number below 2^53
  local bytes = {}
  for i = 1, 8 do bytes[i] = string.char(v % 256); v = math.floor(v / 256) end
  return table.concat(bytes)
end

local function try(what, fn, ...)
  local ok, err = pcall(fn, ...)
  qemu.printf("%s: %s\n", what, ok and "ok" or tostring(err))
end

local function at(vaddr, fn, opts)
  qemu.on_translate(function(tb)
    for insn in tb:insns() do
      if insn.vaddr == vaddr then insn:on_exec(fn, nil, opts) end
    end
  end)
end

local m = a.mode
if m == "memory" then
  at(a.report, function()
    qemu.printf("write: %s\n", tostring(qemu.write_memory(a.secret, le8(a.value))))
    qemu.printf("read back: %s\n", tostring(qemu.read_memory(a.secret, 8) == le8(a.value)))
  end, { sync = true })
elseif m == "register" then
  at(a.fn, function()
    local before = qemu.reg(a.arg)
    qemu.write_reg(a.arg, a.value)
    qemu.printf("%s: %d -> %d\n", a.arg, before, qemu.reg(a.arg))
  end, { regs = "rw" })
elseif m == "queued" then
  at(a.report, function() try("queued write", qemu.write_memory, a.secret, le8(1)) end)
elseif m == "translate" then
  local said = false
  qemu.on_translate(function()
    if not said then said = true; try("write in on_translate", qemu.write_memory, a.secret, "x") end
  end)
elseif m == "unmapped" then
  at(a.report, function()
    local ok, why = qemu.write_memory(8, "x")
    qemu.printf("unmapped: %s %s\n", tostring(ok), tostring(why))
  end, { sync = true })
elseif m == "noaccess" then -- synchronous, but registered without register access
  at(a.fn, function() try("write_reg without regs", qemu.write_reg, a.arg, 1) end, { sync = true })
elseif m == "readonly" then -- registered to read registers only
  at(a.fn, function() try("write_reg with regs=r", qemu.write_reg, a.arg, 1) end, { regs = "r" })
elseif m == "width" then
  at(a.fn, function() try("write_reg 3 bytes", qemu.write_reg, a.arg, "abc") end, { regs = "rw" })
elseif m == "name" then
  at(a.fn, function() try("write_reg nope", qemu.write_reg, "nope", 1) end, { regs = "rw" })
elseif m == "wide" then
  at(a.fn, function() try("write_reg eflags", qemu.write_reg, "eflags", 2 ^ 40) end,
    { regs = "rw" })
end
