-- patch.lua: replace guest instructions as they run; a port of QEMU 10.2's
-- tests/tcg/plugins/patch.c (libpatch.so) with its arguments and messages.
--
-- Arguments:
--   target=HEX        (required) the bytes to look for, two hex digits a byte (66b801005a5a)
--   patch=HEX         (required) the bytes written in their place, as many as target=
--   use_hwaddr=on|off (default on) write through the guest physical address (qemu.translate,
--                     then qemu.write_memory(..., { phys = true })); off: through the virtual
--                     address (qemu.write_memory(vaddr, ...))
--
-- How (as QEMU's plugin): every translated block is searched for instructions whose bytes start
-- with target=; for each one found, a callback at the start of the block writes patch= over
-- the instruction, reads it back and says how it went. QEMU drops the translations of code a
-- physical write changes, so the patched bytes run from the next translation on (the block
-- that triggered the write finishes as it was translated). A physical write to ROM fails
-- ("Failed to write memory: 4"), so the block tries again at each execution; under
-- use_hwaddr=off QEMU writes ROM (a debug write) but keeps its translations: the old code runs on.
--
-- Output (plugin log), each time such a block starts:
--   use_hwaddr=on:   patching: @0xPADDR / Reading memory... / Success!
--                    or Failed to write memory: N / Failed to read memory: N (N: QEMU's
--                    qemu_plugin_hwaddr_operation_result, e.g. 4 = invalid address)
--   use_hwaddr=off:  patching: @0xVADDR hw: @0xPADDR / Writing memory (vaddr)... /
--                    Reading memory (vaddr)... / Success!  or Failed to translate vaddr /
--                    Failed to write memory / Failed to read memory
--   "Failed to read back written data" comes before "Success!" when the bytes read back differ
--   (QEMU's plugin prints both). At translation, use_hwaddr=on prints "Failed to translate
--   vaddr" for an instruction whose address has no physical page.
--
-- Needs QEMU 10.1 or later in system mode (features 'translate', 'phys_memory' and, for
-- use_hwaddr=off, 'write_memory'); elsewhere it stops at load naming the missing feature.
--
-- Differences from QEMU's plugin, on purpose:
--   * target= and patch= must be hex digits: QEMU reads a pair such as "zz" as 0 and "9z" as 9
--     without a word; here the value is refused, naming the character and its position;
--   * an unknown argument is refused with the accepted list, and an argument given twice is
--     refused (QEMU takes the last);
--   * errors name the argument and what is accepted (QEMU prints "Failed to parse target
--     bytes." and its usage line).
-- Under LuaJIT, addresses of 2^53 or more lose their low bits (kernel addresses in the upper
-- half); under Lua 5.4 they are exact.
local qemu = require "qemu"
local hexbytes = require "qemu.hexbytes"

local args = qemu.script {
  name = "patch",
  description = "write patch= over instructions that start with target= (QEMU's libpatch.so)",
  args = {
    { name = "target", required = true, help = "hex bytes to find at the start of an instruction" },
    { name = "patch", required = true, help = "hex bytes to write there, as many as target" },
    { name = "use_hwaddr", type = "bool", default = true,
      help = "write through the physical address (off: the virtual address)" },
  },
}

qemu.need("translate")
qemu.need("phys_memory")
if not args.use_hwaddr then qemu.need("write_memory") end

local function fail(why) error("patch.lua: " .. why, 0) end

local function bytes_of(name)
  local bytes, why = hexbytes.parse(args[name])
  if not bytes then
    fail(string.format("%s=%s: %s; expected two hex digits per byte, e.g. %s=66b801005a5a", name,
      args[name], why, name))
  end
  return bytes
end

local target, patch = bytes_of("target"), bytes_of("patch")
if #target ~= #patch then
  fail(string.format("target= is %d bytes (%s) and patch= is %d (%s): they must be the same "
    .. "length", #target, args.target, #patch, args.patch))
end

-- QEMU's enum qemu_plugin_hwaddr_operation_result, which its plugin prints as a number
local RESULT = { ["error"] = 1, ["device error"] = 2, ["access denied"] = 3,
  ["invalid address"] = 4, ["invalid address space"] = 5 }

local function patch_hwaddr(vcpu, paddr)
  qemu.printf("patching: @0x%x\n", paddr)
  local ok, why = qemu.write_memory(paddr, patch, { phys = true })
  if not ok then
    qemu.printf("Failed to write memory: %d\n", RESULT[why] or 1)
    return
  end
  local back
  back, why = qemu.read_memory(paddr, #patch, { phys = true })
  qemu.write("Reading memory...\n")
  if not back then
    qemu.printf("Failed to read memory: %d\n", RESULT[why] or 1)
    return
  end
  if back ~= patch then qemu.write("Failed to read back written data\n") end
  qemu.write("Success!\n")
end

local function patch_vaddr(vcpu, vaddr)
  local paddr = qemu.translate(vaddr)
  if not paddr then
    qemu.write("Failed to translate vaddr\n")
    return
  end
  qemu.printf("patching: @0x%x hw: @0x%x\n", vaddr, paddr)
  qemu.write("Writing memory (vaddr)...\n")
  if not qemu.write_memory(vaddr, patch) then
    qemu.write("Failed to write memory\n")
    return
  end
  qemu.write("Reading memory (vaddr)...\n")
  local back = qemu.read_memory(vaddr, #patch)
  if not back then
    qemu.write("Failed to read memory\n")
    return
  end
  if back ~= patch then qemu.write("Failed to read back written data\n") end
  qemu.write("Success!\n")
end

local SYNC = { sync = true } -- the write must happen at that point of the guest's run
local n = #target

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    local addr = insn.vaddr
    local ok = true
    if args.use_hwaddr then
      addr = qemu.translate(addr)
      if not addr then
        qemu.write("Failed to translate vaddr\n")
        ok = false
      end
    end
    if ok and insn.size >= n and insn.bytes:sub(1, n) == target then
      tb:on_exec(args.use_hwaddr and patch_hwaddr or patch_vaddr, addr, SYNC)
    end
  end
end)
