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
--   symbols=on|off  (qlua only) on: the PC is followed by its name in parentheses,
--                   `0x401655 (loop!main+0x5)` (MODULE!SYMBOL+0xOFF, or MODULE+0xOFF without a
--                   symbol; qemu.symbolize at translation; nothing where no module is known);
--                   default off, the original's format
--   symfile=PATH    (qlua only) load a System.map or an ELF file with absolute addresses
--                   (vmlinux) for the names; repeatable; implies symbols=on
--   reg=GLOB        (QEMU 9.0 or later) also track the registers whose name matches GLOB (`*` any
--                   text, `?` one character; matched as QEMU names them and in lower case;
--                   repeatable), e.g. reg=rcx, reg=r*x, reg=*. A logged line then ends with
--                   `, NAME -> 0xHEX` for each tracked register that changed since the previous
--                   check, in QEMU's register order, HEX being all the register's bytes from the
--                   last to the first (zero-padded: 16 digits for a 64-bit register):
--                     0, 0xf0014, 0x4966, "decl %ecx", rcx -> 0x00000000000003e7
--                   Registers are checked when the next instruction starts, so the changes of an
--                   instruction end its own line. With filters, an instruction that is not logged
--                   still checks registers (for the logged line before it); changes made by
--                   unlogged instructions show up on the next logged line that gets checked, as
--                   in QEMU 10. On QEMU 7.2 (no register access) reg= is refused at load.
--   rdisas=on|off   with reg=: check registers only after an instruction whose disassembly (after
--                   its mnemonic) names a tracked register, and at each block's start, as QEMU
--                   10's rdisas does; such an instruction is logged even when the filters skip
--                   it. Changes of unchecked instructions are reported at the next check. Faster,
--                   but it relies on the disassembly naming the register as tracked (`%ecx` does
--                   not name rcx).
--
-- Differences from QEMU's plugin (7.2's; 10.0's for reg= and rdisas=), on purpose:
--   * OPCODE is the little-endian value of the instruction's first 4 bytes, or of all its bytes
--     when it is shorter: 7.2 always reads 4 bytes, so for a 1- to 3-byte instruction it prints
--     bytes that follow the instruction (a bug; QEMU 9.0 and later zero-extend like this script).
--     On a little-endian host (x86_64) that is the only difference: `0xc3` for `retq`.
--   * At exit, 7.2 prints an empty line for every vCPU index below the highest that never logged
--     an instruction (10.0 also for a vCPU whose last instruction was not logged, with reg= and
--     filters); this script prints nothing for them.
--   * reg=: a register matched by two patterns (reg=rcx,reg=r*x) is tracked and printed once;
--     QEMU 10.0 prints its change once per matching pattern (a bug).
--   * reg=: the values the first check compares with are read at the vCPU's first instruction.
--     QEMU 10.0 reads them when the vCPU is created, before the machine reset, so in system mode
--     its first checked line also shows the reset's changes (`rdx -> 0x0000000000060fb1,
--     eflags -> ..., cs -> ...` on x86) and misses a register that the reset set and the line
--     changed back (`rip -> 0x0000000000000000` after the reset vector's ljmp): qlua cannot read
--     registers outside a vCPU callback. Later lines are identical.
--   * reg= with filters: when the last line of a vCPU was ended by an unlogged instruction, QEMU
--     10.0 prints that line a second time at exit (it empties its buffer by length only); this
--     script prints it once.
--   Not a difference: QEMU 10.0 answers the program counter register (rip) of a block's first
--   instruction in every instruction callback of the block, so a tracked rip changes only at block
--   starts, in QEMU's plugin and here alike.
-- Cost: one Lua callback per executed instruction and per memory access of a logged one; with
-- reg=, each check reads every tracked register.
local qemu = require "qemu"
local symbolize = require "qemu.symbolize"

local args = qemu.script {
  name = "execlog",
  description = "one line per executed instruction with its memory accesses (QEMU's libexeclog)",
  args = {
    { name = "ifilter", type = "string", multiple = true,
      help = "log only instructions whose disassembly starts with this" },
    { name = "afilter", type = "string", multiple = true,
      help = "log only the instruction at this address (hex)" },
    { name = "reg", type = "string", multiple = true,
      help = "also log changes of the registers matching this glob (QEMU 9.0 or later)" },
    { name = "rdisas", type = "bool", default = false,
      help = "with reg: check registers only after instructions that name one" },
    symbolize.script_args(false)[1], symbolize.script_args(false)[2],
  },
}
local named = symbolize.setup(args, false, qemu.symbolize_load)

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

-- reg=GLOB: GLib pattern syntax (`*` any text, `?` one character, nothing else special), turned
-- into an anchored Lua pattern.
local reg_patterns = {}
for _, glob in ipairs(args.reg) do
  local pattern = glob:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
  reg_patterns[#reg_patterns + 1] = "^" .. pattern .. "$"
end
local tracking = #reg_patterns > 0
if tracking then qemu.need("registers") end
local rdisas = tracking and args.rdisas

local system = qemu.info.system
local format = string.format
local write = qemu.write

-- The line under construction for each vCPU (index -> its parts), written when it starts
-- another. Parts, not one string grown by each access: from QEMU 10.0 one execution of an x86 rep
-- instruction makes all its iterations' accesses, and growing a string per access was quadratic.
local pending = {}
local concat = table.concat

local function on_exec(vcpu, text)
  local prev = pending[vcpu]
  if prev then write(concat(prev) .. "\n") end
  pending[vcpu] = { vcpu .. ", " .. text }
end

local function add_part(vcpu, part)
  local p = pending[vcpu]
  if not p then
    p = {}
    pending[vcpu] = p
  end
  p[#p + 1] = part
end

local on_mem
-- queued: in system mode the access's physical address and device are recorded at the access
local mem_opts = system and { phys = true } or nil
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
    add_part(vcpu, kind .. where)
  end
else
  on_mem = function(vcpu, access, vaddr)
    add_part(vcpu, (access.store and ", store" or ", load") .. format(", 0x%08x", vaddr))
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

-- The PC as logged: 0xHEX, with symbols=on followed by its name in parentheses where known.
local function pc_text(vaddr)
  local name = named and symbolize.format(qemu.symbolize(vaddr))
  if name then return format("0x%x (%s)", vaddr, name) end
  return format("0x%x", vaddr)
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

-- ---- reg=: register changes ----

-- The tracked registers, in QEMU's order: { name = QEMU's name, label = lower case }. Resolved at
-- the first translation, the earliest moment qemu.registers() answers.
local tracked
local function resolve_registers()
  tracked = {}
  for _, name in ipairs(qemu.registers()) do
    local lower = name:lower()
    for _, pattern in ipairs(reg_patterns) do
      if name:find(pattern) or lower:find(pattern) then
        tracked[#tracked + 1] = { name = name, label = lower }
        break
      end
    end
  end
end

local reg = qemu.reg
local last = {} -- vCPU -> { raw bytes of each tracked register, by position in tracked }

-- Reads the values the vCPU's first check compares with, at its first instruction.
local function baseline(vcpu)
  local values = {}
  for i, r in ipairs(tracked) do
    local _, raw = reg(r.name)
    values[i] = raw
  end
  last[vcpu] = values
end

-- ", NAME -> 0xHEX" for each tracked register changed since the vCPU's previous check.
local function changes(vcpu)
  local values = last[vcpu]
  local out
  for i, r in ipairs(tracked) do
    local _, raw = reg(r.name)
    if raw ~= values[i] then
      values[i] = raw
      local hex = raw:reverse():gsub(".", function(c) return format("%02x", c:byte()) end)
      out = (out or "") .. ", " .. r.label .. " -> 0x" .. hex
    end
  end
  return out or ""
end

-- A logged instruction that first checks the registers for the pending line.
-- Registers are checked only when there is a pending line, as in QEMU 10.
local function on_exec_regs(vcpu, text)
  local prev = pending[vcpu]
  if prev then
    write(concat(prev) .. changes(vcpu) .. "\n")
  elseif not last[vcpu] then
    baseline(vcpu)
  end
  pending[vcpu] = { vcpu .. ", " .. text }
end

-- An instruction that is not logged but checks the registers for the pending line, which it ends.
local function on_exec_only_regs(vcpu)
  local prev = pending[vcpu]
  if prev then
    write(concat(prev) .. changes(vcpu) .. "\n")
    pending[vcpu] = nil
  elseif not last[vcpu] then
    baseline(vcpu)
  end
end

-- With rdisas: does the disassembly after the mnemonic name a tracked register?
local function names_register(disas)
  local operands = disas:match(" .*$")
  if not operands then return false end
  for _, r in ipairs(tracked) do
    if operands:find(r.label, 1, true) then return true end
  end
  return false
end

qemu.on_translate(function(tb)
  if not tracking then
    for insn in tb:insns() do
      local vaddr = insn.vaddr
      if wanted(insn, vaddr) then
        local text = format("%s, 0x%x, \"%s\"", pc_text(vaddr), opcode(insn.bytes), insn.disas)
        insn:on_exec(on_exec, text)
        insn:on_mem(on_mem, nil, mem_opts)
      end
    end
    return
  end
  if not tracked then resolve_registers() end
  -- Whether this instruction's start checks the registers (the previous one may have changed
  -- them): always without rdisas; with it, at the block's start and after an instruction that
  -- names a tracked register.
  local check = true
  for insn in tb:insns() do
    local vaddr = insn.vaddr
    local log = wanted(insn, vaddr)
    local check_next = check
    if rdisas then
      check_next = names_register(insn.disas)
      if check_next then log = true end
    end
    if log then
      local text = format("%s, 0x%x, \"%s\"", pc_text(vaddr), opcode(insn.bytes), insn.disas)
      insn:on_mem(on_mem, nil, mem_opts)
      if check then
        insn:on_exec(on_exec_regs, text, { regs = "r" })
      else
        insn:on_exec(on_exec, text)
      end
    elseif check then
      insn:on_exec(on_exec_only_regs, nil, { regs = "r" })
    end
    check = check_next
  end
end)

qemu.on_exit(function()
  local vcpus = {}
  for vcpu in pairs(pending) do vcpus[#vcpus + 1] = vcpu end
  table.sort(vcpus)
  for _, vcpu in ipairs(vcpus) do
    write(concat(pending[vcpu]) .. "\n")
  end
end)
