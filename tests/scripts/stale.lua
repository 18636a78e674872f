-- stale.lua: keeps a handle past its callback and uses it later (must be a clean Lua error).
local qemu = require "qemu"
local args = qemu.script { name = "stale", args = {
  { name = "handle", type = "enum", values = { "tb", "insn", "access" }, default = "tb" } } }
local kept
qemu.on_translate(function(tb)
  if args.handle == "tb" then kept = kept or tb end
  if args.handle == "insn" then kept = kept or tb[1] end
  if args.handle == "access" then
    tb[1]:on_mem(function(vcpu, access) kept = kept or access end)
  end
end)
qemu.on_exit(function()
  qemu.print("about to touch a stale handle")
  return kept and kept.vaddr or kept.size
end)
