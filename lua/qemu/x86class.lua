-- qemu.x86class: sorts x86 instructions (their encoded bytes) into classes, for howvec.lua.
-- Pure Lua, no QEMU. It decodes just enough of an instruction to name its class: legacy prefixes
-- (lock, rep/repne, operand size, segment, address size), REX, the opcode maps (one byte, 0F,
-- 0F 38, 0F 3A), VEX (C4/C5), EVEX (62) and XOP (8F) prefixes, and the ModRM byte where the class
-- depends on it (opcode groups, register or memory operand). It does not validate instructions:
-- QEMU only hands over instructions it decoded.
--
-- Classes (opt names are what howvec's count=CLASS takes):
--   alu      Integer ALU          add/sub/logic/compare/test, inc/dec/neg/not, shifts and rotates,
--                                 bit operations (bt*, bsf/bsr, popcnt, lzcnt/tzcnt, bswap, BMI),
--                                 setcc, lea, sign extensions of rAX (cbw, cqo, ...), flag ops,
--                                 crc32
--   muldiv   Integer Mul/Div      mul, imul, div, idiv, mulx
--   mov      Move (reg/imm)       mov/movzx/movsx/movsxd/cmov/xchg between registers or from an
--                                 immediate
--   ldst     Load/Store           the same moves with a memory operand, moffs moves, xlat, movbe,
--                                 movnti, lss/lfs/lgs (and les/lds in 32-bit code)
--   stack    Push/Pop             push, pop, pushf, popf, enter, leave (pusha/popa in 32-bit code)
--   string   String ops           movs, cmps, stos, lods, scas, with or without rep
--   atomic   Atomic/Fence         every lock-prefixed instruction, xchg with memory, cmpxchg,
--                                 cmpxchg8b/16b, xadd, lfence/mfence/sfence, xbegin/xabort
--   cndb     Cond Branch          jcc, jrcxz, loop/loope/loopne
--   branch   Branch               jmp (direct and indirect)
--   callret  Call/Return          call, ret, retf
--   sys      System/Syscall       syscall/sysret/sysenter/sysexit, int/int3/int1/iret, hlt, cpuid,
--                                 rdtsc(p)/rdmsr/wrmsr/rdpmc, in/out/ins/outs, cli/sti, descriptor
--                                 and control/debug register access, the 0F 01 group, rdrand,
--                                 rdseed, xsave/fxsave family, clflush, ud0/ud1/ud2, vmread/vmwrite
--   nop      Nop/Hint             nop (90, 0F 1F, 66 90), pause, endbr64/32 and the other 0F 18-1F
--                                 hint space, prefetch
--   x87      x87 FP               D8-DF escapes, fwait
--   fpscalar Scalar FP (SSE/AVX)  scalar single/double operations (the F3/F2 forms: addss, mulsd,
--                                 sqrtsd, movss/movsd, cvtsi2sd, cvtss2sd, cmpss, ...), comiss,
--                                 ucomisd, roundss/sd, scalar FMA (vfmadd231sd, ...); legacy, VEX
--                                 or EVEX encoded
--   simd     SIMD (SSE/AVX/MMX)   every other MMX, SSE*, AVX*, AVX-512, 3DNow!, XOP, AES, SHA
--                                 instruction: packed arithmetic, vector moves and shuffles,
--                                 conversions, mask-register ops, ldmxcsr/stmxcsr
--   unclas   Unclassified         anything else (opcodes invalid in the mode, reserved encodings)

local M = {}

--- The classes in report order: { opt = short name, name = label }.
M.CLASSES = {
  { opt = "alu", name = "Integer ALU" },
  { opt = "muldiv", name = "Integer Mul/Div" },
  { opt = "mov", name = "Move (reg/imm)" },
  { opt = "ldst", name = "Load/Store" },
  { opt = "stack", name = "Push/Pop" },
  { opt = "string", name = "String ops" },
  { opt = "atomic", name = "Atomic/Fence" },
  { opt = "cndb", name = "Cond Branch" },
  { opt = "branch", name = "Branch" },
  { opt = "callret", name = "Call/Return" },
  { opt = "sys", name = "System/Syscall" },
  { opt = "nop", name = "Nop/Hint" },
  { opt = "x87", name = "x87 FP" },
  { opt = "fpscalar", name = "Scalar FP (SSE/AVX)" },
  { opt = "simd", name = "SIMD (SSE/AVX/MMX)" },
  { opt = "unclas", name = "Unclassified" },
}

local floor = math.floor

-- ModRM fields, by arithmetic (no bit operators: LuaJIT and Lua 5.4 spell them differently).
local function mod_of(m) return floor(m / 64) end
local function reg_of(m) return floor(m / 8) % 8 end

local function range(t, from, to, class)
  for op = from, to do t[op] = class end
end

-- One-byte opcodes whose class needs nothing more than the opcode, in 64-bit mode.
local ONE = {}
for _, base in ipairs({ 0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38 }) do
  range(ONE, base, base + 5, "alu")
end
range(ONE, 0x50, 0x5f, "stack")
ONE[0x68], ONE[0x6a] = "stack", "stack"
ONE[0x69], ONE[0x6b] = "muldiv", "muldiv"
range(ONE, 0x6c, 0x6f, "sys")
range(ONE, 0x70, 0x7f, "cndb")
ONE[0x80], ONE[0x81], ONE[0x83], ONE[0x84], ONE[0x85] = "alu", "alu", "alu", "alu", "alu"
ONE[0x8d] = "alu"
range(ONE, 0x91, 0x97, "mov")
ONE[0x98], ONE[0x99], ONE[0x9e], ONE[0x9f] = "alu", "alu", "alu", "alu"
ONE[0x9b] = "x87"
ONE[0x9c], ONE[0x9d] = "stack", "stack"
range(ONE, 0xa0, 0xa3, "ldst")
range(ONE, 0xa4, 0xa7, "string")
ONE[0xa8], ONE[0xa9] = "alu", "alu"
range(ONE, 0xaa, 0xaf, "string")
range(ONE, 0xb0, 0xbf, "mov")
ONE[0xc0], ONE[0xc1] = "alu", "alu"
ONE[0xc2], ONE[0xc3], ONE[0xca], ONE[0xcb] = "callret", "callret", "callret", "callret"
ONE[0xc8], ONE[0xc9] = "stack", "stack"
ONE[0xcc], ONE[0xcd], ONE[0xcf] = "sys", "sys", "sys"
range(ONE, 0xd0, 0xd3, "alu")
ONE[0xd7] = "ldst"
range(ONE, 0xd8, 0xdf, "x87")
range(ONE, 0xe0, 0xe3, "cndb")
range(ONE, 0xe4, 0xe7, "sys")
ONE[0xe8] = "callret"
ONE[0xe9], ONE[0xeb] = "branch", "branch"
range(ONE, 0xec, 0xef, "sys")
ONE[0xf1], ONE[0xf4] = "sys", "sys"
ONE[0xf5], ONE[0xf8], ONE[0xf9], ONE[0xfc], ONE[0xfd] = "alu", "alu", "alu", "alu", "alu"
ONE[0xfa], ONE[0xfb] = "sys", "sys"

-- Opcodes that are valid only outside 64-bit mode (or mean something else in it).
local LEGACY32 = {
  [0x06] = "stack", [0x07] = "stack", [0x0e] = "stack", [0x16] = "stack", [0x17] = "stack",
  [0x1e] = "stack", [0x1f] = "stack", [0x27] = "alu", [0x2f] = "alu", [0x37] = "alu",
  [0x3f] = "alu", [0x60] = "stack", [0x61] = "stack", [0x63] = "sys", [0x82] = "alu",
  [0x9a] = "callret", [0xce] = "sys", [0xd4] = "alu", [0xd5] = "alu", [0xea] = "branch",
}
range(LEGACY32, 0x40, 0x4f, "alu") -- inc/dec r32 (REX prefixes in 64-bit mode)

-- Two-byte (0F xx) opcodes whose class needs nothing more. Scalar-FP candidates and groups are
-- handled in code.
local TWO = {}
range(TWO, 0x00, 0x03, "sys")
range(TWO, 0x05, 0x09, "sys")
TWO[0x0b] = "sys"
TWO[0x0d] = "nop"
TWO[0x0e], TWO[0x0f] = "simd", "simd"
range(TWO, 0x10, 0x17, "simd")
range(TWO, 0x18, 0x1f, "nop")
range(TWO, 0x20, 0x23, "sys")
range(TWO, 0x28, 0x2d, "simd")
range(TWO, 0x30, 0x35, "sys")
TWO[0x37] = "sys"
range(TWO, 0x50, 0x7f, "simd")
range(TWO, 0x80, 0x8f, "cndb")
range(TWO, 0x90, 0x9f, "alu")
TWO[0xa0], TWO[0xa1], TWO[0xa8], TWO[0xa9] = "stack", "stack", "stack", "stack"
TWO[0xa2], TWO[0xaa] = "sys", "sys"
for _, op in ipairs({ 0xa3, 0xa4, 0xa5, 0xab, 0xac, 0xad }) do TWO[op] = "alu" end
TWO[0xaf] = "muldiv"
TWO[0xb0], TWO[0xb1], TWO[0xc0], TWO[0xc1] = "atomic", "atomic", "atomic", "atomic"
TWO[0xb2], TWO[0xb4], TWO[0xb5] = "ldst", "ldst", "ldst" -- lss, lfs, lgs
TWO[0xb3], TWO[0xba], TWO[0xbb], TWO[0xbc], TWO[0xbd] = "alu", "alu", "alu", "alu", "alu"
TWO[0xb9], TWO[0xff] = "sys", "sys"
range(TWO, 0xc2, 0xc6, "simd")
TWO[0xc3] = "ldst" -- movnti
range(TWO, 0xc8, 0xcf, "alu")
range(TWO, 0xd0, 0xfe, "simd")

-- 0F-map opcodes that are scalar FP when the mandatory prefix is F3 or F2 (ss / sd forms);
-- 0F 5B is not (cvttps2dq keeps F3 and is packed).
local SCALAR_WITH_REP = { [0x10] = true, [0x11] = true, [0x2a] = true, [0x2c] = true,
  [0x2d] = true, [0xc2] = true }
range(SCALAR_WITH_REP, 0x51, 0x5f, true)
SCALAR_WITH_REP[0x5b] = nil

-- Classes in the 0F map that depend on the operand (mod = 3: register, else memory).
local BY_MOD = { [0xb6] = true, [0xb7] = true, [0xbe] = true, [0xbf] = true }
range(BY_MOD, 0x40, 0x4f, true) -- cmovcc

local function move_by_mod(modrm)
  if not modrm then return "unclas" end
  return mod_of(modrm) == 3 and "mov" or "ldst"
end

-- Scalar FP or SIMD, for an opcode of the 0F map (legacy, VEX or EVEX encoded). pfx is the
-- mandatory prefix: nil, 0x66, 0xF3 or 0xF2.
local function simd_0f(op, pfx)
  if op == 0x2e or op == 0x2f then return "fpscalar" end -- (u)comiss / (u)comisd
  if (pfx == 0xf3 or pfx == 0xf2) and SCALAR_WITH_REP[op] then return "fpscalar" end
  return "simd"
end

local function group15(modrm, rep, opsize)
  if mod_of(modrm) == 3 then
    -- lfence / mfence / sfence; with a prefix: rd/wrfsbase, ptwrite, tpause, umwait, ...
    if not rep and not opsize and reg_of(modrm) >= 5 then return "atomic" end
    return "sys"
  end
  local reg = reg_of(modrm)
  if reg == 2 or reg == 3 then return "simd" end -- ldmxcsr / stmxcsr
  return "sys" -- fxsave, fxrstor, xsave, xrstor, xsaveopt, clflush, clwb, clflushopt
end

local function map_0f38(op, pfx)
  if op >= 0x80 and op <= 0x82 and pfx == 0x66 then return "sys" end -- invept, invvpid, invpcid
  if op < 0xf0 then return "simd" end
  if op == 0xf0 or op == 0xf1 then return pfx == 0xf2 and "alu" or "ldst" end -- crc32 / movbe
  if op == 0xf6 then return (pfx == 0x66 or pfx == 0xf3) and "alu" or "sys" end -- adcx/adox; wrss
  if op == 0xf5 then return "sys" end -- wruss
  if op == 0xf8 or op == 0xf9 then return "ldst" end -- movdir64b, movdiri
  return "unclas"
end

local function map_0f3a(op, pfx)
  if (op == 0x0a or op == 0x0b) and pfx == 0x66 then return "fpscalar" end -- roundss / roundsd
  if op >= 0xf0 then return "unclas" end
  return "simd"
end

-- VEX/EVEX/XOP encoded: map 1 = 0F, 2 = 0F 38, 3 = 0F 3A; others (EVEX FP16 maps 5 and 6, XOP
-- maps 8-10) are vector instructions.
local VEX_PP = { [0] = nil, 0x66, 0xf3, 0xf2 }

local function vex_class(map, op, pp)
  local pfx = VEX_PP[pp]
  if map == 1 then return simd_0f(op, pfx) end
  if map == 2 then
    if op >= 0xf0 and op <= 0xf7 then -- BMI1/BMI2: andn, blsr, bzhi, pdep, pext, mulx, shlx, ...
      return (op == 0xf6 and pfx == 0xf2) and "muldiv" or "alu"
    end
    local lo = op % 16
    if op >= 0x99 and op <= 0xbf and (lo == 0x9 or lo == 0xb or lo == 0xd or lo == 0xf) then
      return "fpscalar" -- vfmadd132ss/sd ... vfnmsub231ss/sd
    end
    return "simd"
  end
  if map == 3 then
    if op == 0xf0 then return "alu" end -- rorx
    if op == 0x0a or op == 0x0b then return "fpscalar" end -- vroundss/sd, vrndscaless/sd
    return "simd"
  end
  return "simd"
end

local LEGACY_PREFIX = { [0x26] = true, [0x2e] = true, [0x36] = true, [0x3e] = true,
  [0x64] = true, [0x65] = true, [0x67] = true }

--- The class (opt name, see M.CLASSES) of the instruction encoded by the string `bytes`, in
-- 64-bit code (bits = 64, the default) or 32-bit code (bits = 32).
function M.classify(bytes, bits)
  bits = bits or 64
  local long = bits == 64
  local n = #bytes
  local i = 1
  local lock, rep, opsize, rex = false, nil, false, nil
  while i <= n do
    local b = bytes:byte(i)
    if long and b >= 0x40 and b <= 0x4f then
      rex = b -- counts only if the opcode follows at once: a later legacy prefix cancels it
    else
      if b == 0xf0 then
        lock = true
      elseif b == 0xf2 or b == 0xf3 then
        rep = b
      elseif b == 0x66 then
        opsize = true
      elseif not LEGACY_PREFIX[b] then
        break
      end
      rex = nil
    end
    i = i + 1
  end
  local op = bytes:byte(i)
  if not op then return "unclas" end
  if lock then return "atomic" end
  local modrm = bytes:byte(i + 1)
  local pfx = rep or (opsize and 0x66) or nil

  -- VEX, EVEX, XOP (outside 64-bit mode C4/C5/62 are LES/LDS/BOUND unless ModRM.mod = 3)
  if (op == 0xc4 or op == 0xc5 or op == 0x62) and modrm and (long or mod_of(modrm) == 3) then
    if op == 0xc5 then
      local p1 = modrm
      local opcode = bytes:byte(i + 2)
      if not opcode then return "unclas" end
      return vex_class(1, opcode, p1 % 4)
    elseif op == 0xc4 then
      local p2, opcode = bytes:byte(i + 2), bytes:byte(i + 3)
      if not opcode then return "unclas" end
      return vex_class(modrm % 32, opcode, p2 % 4)
    else
      local p1, opcode = bytes:byte(i + 2), bytes:byte(i + 4)
      if not opcode then return "unclas" end
      return vex_class(modrm % 8, opcode, p1 % 4)
    end
  end
  if op == 0x8f then
    if not modrm then return "unclas" end
    if modrm % 32 >= 8 then -- XOP (AMD): a map number of 8 or more where pop has reg = 0
      return "simd"
    end
    return reg_of(modrm) == 0 and "stack" or "unclas"
  end

  if op == 0x0f then
    local op2 = modrm
    if not op2 then return "unclas" end
    local modrm2 = bytes:byte(i + 2)
    if op2 == 0x38 or op2 == 0x3a then
      local op3 = modrm2
      if not op3 then return "unclas" end
      if op2 == 0x38 then return map_0f38(op3, pfx) end
      return map_0f3a(op3, pfx)
    end
    if BY_MOD[op2] then return move_by_mod(modrm2) end
    if op2 == 0xae then return modrm2 and group15(modrm2, rep, opsize) or "unclas" end
    if op2 == 0xc7 then -- group 9
      if not modrm2 then return "unclas" end
      return reg_of(modrm2) == 1 and "atomic" or "sys" -- cmpxchg8b/16b; rdrand, rdseed, xsaves...
    end
    if op2 == 0xb8 then return rep == 0xf3 and "alu" or "unclas" end -- popcnt
    if op2 == 0x78 or op2 == 0x79 then return pfx and "simd" or "sys" end -- extrq; vmread/vmwrite
    if (op2 >= 0x10 and op2 <= 0x17) or (op2 >= 0x28 and op2 <= 0x2f) or
        (op2 >= 0x50 and op2 <= 0x5f) or op2 == 0xc2 then
      return simd_0f(op2, pfx)
    end
    return TWO[op2] or "unclas"
  end

  if not long then
    if LEGACY32[op] then return LEGACY32[op] end
    if op == 0xc4 or op == 0xc5 then return "ldst" end -- les, lds
    if op == 0x62 then return "alu" end -- bound
  end
  if op == 0x63 then return move_by_mod(modrm) end -- movsxd (arpl in 32-bit code: LEGACY32)

  if op == 0x90 then
    if rep == 0xf3 then return "nop" end -- pause
    if rex and rex % 2 == 1 then return "mov" end -- xchg %r8, %rax
    return "nop"
  end
  if op >= 0x88 and op <= 0x8c or op == 0x8e then return move_by_mod(modrm) end
  if op == 0x86 or op == 0x87 then
    if not modrm then return "unclas" end
    return mod_of(modrm) == 3 and "mov" or "atomic" -- xchg with memory is locked
  end
  if op == 0xc6 or op == 0xc7 then
    if not modrm then return "unclas" end
    local reg = reg_of(modrm)
    if reg == 0 then return move_by_mod(modrm) end
    if reg == 7 and mod_of(modrm) == 3 then return "atomic" end -- xabort / xbegin
    return "unclas"
  end
  if op == 0xf6 or op == 0xf7 then
    if not modrm then return "unclas" end
    return reg_of(modrm) < 4 and "alu" or "muldiv" -- test/not/neg; mul/imul/div/idiv
  end
  if op == 0xfe then
    if not modrm then return "unclas" end
    return reg_of(modrm) < 2 and "alu" or "unclas"
  end
  if op == 0xff then
    if not modrm then return "unclas" end
    local reg = reg_of(modrm)
    if reg < 2 then return "alu" end -- inc, dec
    if reg < 4 then return "callret" end -- call, call far
    if reg < 6 then return "branch" end -- jmp, jmp far
    if reg == 6 then return "stack" end -- push
    return "unclas"
  end
  return ONE[op] or "unclas"
end

return M
