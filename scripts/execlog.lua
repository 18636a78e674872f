-- execlog.lua: logs every executed instruction, one line each, with the memory accesses it made,
-- in the format of QEMU 7.2's contrib/plugins/execlog.c (libexeclog):
--   VCPU, 0xPC, 0xOPCODE, "DISASSEMBLY"[, load|store, 0xADDRESS]...
--   0, 0x401655, 0x8b48087e, "movq 8(%rsi), %rdi", load, 0x4000800358
-- ADDRESS is the virtual address (printed with at least 8 hex digits); in system mode it is the
-- physical address followed by the device name: `store, 0x00001000, RAM`. A line is written when
-- the same vCPU starts its next logged instruction (so that it holds all the accesses), and the
-- last line of each vCPU at exit.
--
-- Arguments:
--   ifilter=PREFIX   log only instructions whose disassembly starts with PREFIX (repeatable)
--   afilter=ADDR     log only the instruction at ADDR (hex, 0x optional; repeatable)
--   With several filters, an instruction is logged when it matches any of them, as in 7.2. An
--   instruction that does not match is not logged at all, nor are its memory accesses.
--
-- Differences from QEMU 7.2's plugin, on purpose:
--   * OPCODE is the little-endian value of the instruction's first 4 bytes, or of all its bytes
--     when it is shorter: 7.2 always reads 4 bytes, so for a 1- to 3-byte instruction it prints
--     bytes that follow the instruction (a bug; QEMU 9.0 and later zero-extend like this script).
--     On a little-endian host (x86_64) that is the only difference: `0xc3` for `retq`.
--   * At exit, 7.2 prints an empty line for every vCPU index below the highest that never logged
--     an instruction; this script prints nothing for them.
-- Cost: one Lua callback per executed instruction and per memory access of a logged one.
local qemu = require "qemu"

local args = qemu.script {
  name = "execlog",
  description = "one line per executed instruction with its memory accesses (QEMU's libexeclog)",
  args = {
    { name = "ifilter", type = "string", multiple = true,
      help = "log only instructions whose disassembly starts with this" },
    { name = "afilter", type = "string", multiple = true,
      help = "log only the instruction at this address (hex)" },
  },
}

local ifilters = args.ifilter
local afilters = {} -- address -> true
for _, text in ipairs(args.afilter) do
  local digits = text:match("^0[xX](%x+)$") or text:match("^(%x+)$")
  local addr = digits and qemu.parse_int("0x" .. digits)
  if not addr then
    error(string.format("execlog.lua: afilter=%s: expected a hexadecimal address below 2^53 "
      .. "(0x optional)", text), 0)
  end
  afilters[addr] = true
end
local filtering = #ifilters > 0 or #args.afilter > 0

local system = qemu.info.system
local format = string.format
local write = qemu.write

-- The line under construction for each vCPU (index -> string), written when it starts another.
local pending = {}

local function on_exec(vcpu, text)
  local prev = pending[vcpu]
  if prev then write(prev .. "\n") end
  pending[vcpu] = vcpu .. ", " .. text
end

local on_mem
if system then
  on_mem = function(vcpu, access, vaddr)
    local kind = access.store and ", store" or ", load"
    local phys = access.phys
    local where
    if phys then
      where = format(", 0x%08x, %s", phys, access.device or "(null)")
    else
      where = format(", 0x%08x", vaddr)
    end
    pending[vcpu] = (pending[vcpu] or "") .. kind .. where
  end
else
  on_mem = function(vcpu, access, vaddr)
    pending[vcpu] = (pending[vcpu] or "") .. (access.store and ", store" or ", load")
      .. format(", 0x%08x", vaddr)
  end
end

-- Little-endian value of the first min(4, size) bytes: what 7.2 prints, minus bytes past the end.
local function opcode(bytes)
  local value = 0
  for i = math.min(4, #bytes), 1, -1 do
    value = value * 256 + bytes:byte(i)
  end
  return value
end

local function wanted(insn, vaddr)
  if not filtering then return true end
  if afilters[vaddr] then return true end
  if #ifilters > 0 then
    local disas = insn.disas
    for _, prefix in ipairs(ifilters) do
      if disas:sub(1, #prefix) == prefix then return true end
    end
  end
  return false
end

qemu.on_translate(function(tb)
  for insn in tb:insns() do
    local vaddr = insn.vaddr
    if wanted(insn, vaddr) then
      local text = format("0x%x, 0x%x, \"%s\"", vaddr, opcode(insn.bytes), insn.disas)
      insn:on_exec(on_exec, text)
      insn:on_mem(on_mem, "rw")
    end
  end
end)

qemu.on_exit(function()
  local vcpus = {}
  for vcpu in pairs(pending) do vcpus[#vcpus + 1] = vcpu end
  table.sort(vcpus)
  for _, vcpu in ipairs(vcpus) do
    write(pending[vcpu] .. "\n")
  end
end)
