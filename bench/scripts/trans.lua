-- bench: translation-time work only: block address -> instruction count (vs cref mode=trans)
local blocks = {}
qemu.on_translate(function(tb) blocks[tb.vaddr] = #tb end)
qemu.on_exit(function()
  local n = 0
  for _ in pairs(blocks) do n = n + 1 end
  qemu.printf("entries %d\n", n)
end)
