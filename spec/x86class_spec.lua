-- Specs for lua/qemu/x86class.lua: x86 instruction bytes -> howvec class. Every byte sequence
-- below was encoded by hand from the Intel SDM opcode tables; the text beside each is what
-- binutils' objdump disassembles it to (a check of the hand encoding, not of the classifier).

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local x86class = require "qemu.x86class"

describe("qemu.x86class", function()
  describe("classify in 64-bit code", function()
    local CASES = {
      alu = {
        { "\x48\x01\xd8", "add %rbx,%rax" },
        { "\x48\x83\xc1\x08", "add $0x8,%rcx" },
        { "\x48\x8d\x04\x24", "lea (%rsp),%rax" },
        { "\x0f\x94\xc0", "sete %al" },
        { "\xf3\x48\x0f\xb8\xc1", "popcnt %rcx,%rax" },
        { "\xf3\x0f\xbc\xc1", "tzcnt %ecx,%eax" },
        { "\x48\x0f\xc9", "bswap %rcx" },
        { "\x48\xf7\xd8", "neg %rax" },
        { "\x66\xf2\x0f\x38\xf1\xc1", "crc32 %cx,%eax" },
        { "\xc4\xe2\xf0\xf2\xc2", "andn %rdx,%rcx,%rax" },
        { "\xc4\xe3\xfb\xf0\xc1\x05", "rorx $0x5,%rcx,%rax" },
      },
      muldiv = {
        { "\x48\xf7\xe1", "mul %rcx" },
        { "\x48\x0f\xaf\xc1", "imul %rcx,%rax" },
        { "\x6b\xc0\x03", "imul $0x3,%eax,%eax" },
        { "\x48\xf7\xf9", "idiv %rcx" },
        { "\xc4\xe2\xf3\xf6\xc2", "mulx %rdx,%rcx,%rax" },
      },
      mov = {
        { "\x48\x89\xd8", "mov %rbx,%rax" },
        { "\xb8\x01\x00\x00\x00", "mov $0x1,%eax" },
        { "\x48\xc7\xc0\x01\x00\x00\x00", "mov $0x1,%rax" },
        { "\x0f\xb6\xc1", "movzbl %cl,%eax" },
        { "\x48\x63\xc1", "movslq %ecx,%rax" },
        { "\x48\x0f\x44\xc1", "cmove %rcx,%rax" },
        { "\x41\x90", "xchg %eax,%r8d" },
        { "\x48\x87\xc8", "xchg %rcx,%rax" },
      },
      ldst = {
        { "\x48\x8b\x07", "mov (%rdi),%rax" },
        { "\x48\x89\x07", "mov %rax,(%rdi)" },
        { "\xc7\x07\x01\x00\x00\x00", "movl $0x1,(%rdi)" },
        { "\x0f\xb6\x07", "movzbl (%rdi),%eax" },
        { "\x48\x0f\x44\x07", "cmove (%rdi),%rax" },
        { "\x48\xa1\x00\x10\x00\x00\x00\x00\x00\x00", "movabs 0x1000,%rax" },
        { "\x0f\x38\xf0\x07", "movbe (%rdi),%eax" },
      },
      stack = {
        { "\x50", "push %rax" },
        { "\x41\x5c", "pop %r12" },
        { "\xc9", "leave" },
        { "\xff\x37", "push (%rdi)" },
        { "\x8f\x07", "pop (%rdi)" },
        { "\x6a\x01", "push $0x1" },
        { "\x9c", "pushf" },
      },
      string = {
        { "\xf3\xa4", "rep movsb %ds:(%rsi),%es:(%rdi)" },
        { "\x48\xab", "stos %rax,%es:(%rdi)" },
        { "\xf3\x48\xab", "rep stos %rax,%es:(%rdi)" },
        { "\xae", "scas %es:(%rdi),%al" },
      },
      atomic = {
        { "\xf0\x48\x0f\xb1\x0f", "lock cmpxchg %rcx,(%rdi)" },
        { "\xf0\xff\x07", "lock incl (%rdi)" },
        { "\x48\x87\x07", "xchg %rax,(%rdi)" },
        { "\x48\x0f\xc1\x07", "xadd %rax,(%rdi)" },
        { "\x0f\xae\xf0", "mfence" },
        { "\x0f\xae\xe8", "lfence" },
        { "\x0f\xae\xf8", "sfence" },
      },
      cndb = {
        { "\x74\x05", "je 0x7" },
        { "\x0f\x85\x00\x01\x00\x00", "jne 0x106" },
        { "\xe3\x00", "jrcxz 0x2" },
        { "\xe2\xfe", "loop 0x0" },
      },
      branch = {
        { "\xeb\xfe", "jmp 0x0" },
        { "\xe9\x00\x00\x00\x00", "jmp 0x5" },
        { "\xff\xe0", "jmp *%rax" },
        { "\x3e\xff\xe0", "notrack jmp *%rax" },
      },
      callret = {
        { "\xe8\x00\x00\x00\x00", "call 0x5" },
        { "\xff\xd0", "call *%rax" },
        { "\xc3", "ret" },
        { "\xf3\xc3", "repz ret" },
        { "\xc2\x08\x00", "ret $0x8" },
      },
      sys = {
        { "\x0f\x05", "syscall" },
        { "\xcd\x80", "int $0x80" },
        { "\xcc", "int3" },
        { "\xf4", "hlt" },
        { "\x0f\xa2", "cpuid" },
        { "\x0f\x31", "rdtsc" },
        { "\x0f\x01\xf9", "rdtscp" },
        { "\x0f\x0b", "ud2" },
        { "\xe6\x80", "out %al,$0x80" },
        { "\x0f\xae\x07", "fxsave (%rdi)" },
        { "\x48\x0f\xc7\xf0", "rdrand %rax" },
      },
      nop = {
        { "\x90", "nop" },
        { "\xf3\x90", "pause" },
        { "\x66\x90", "xchg %ax,%ax" },
        { "\x0f\x1f\x44\x00\x00", "nopl 0x0(%rax,%rax,1)" },
        { "\x66\x2e\x0f\x1f\x84\x00\x00\x00\x00\x00", "cs nopw 0x0(%rax,%rax,1)" },
        { "\xf3\x0f\x1e\xfa", "endbr64" },
        { "\x0f\x18\x0f", "prefetcht0 (%rdi)" },
      },
      x87 = {
        { "\xd9\xe8", "fld1" },
        { "\xdd\xd8", "fstp %st(0)" },
        { "\xde\xc1", "faddp %st,%st(1)" },
        { "\x9b", "fwait" },
      },
      fpscalar = {
        { "\xf2\x0f\x58\xc1", "addsd %xmm1,%xmm0" },
        { "\xf3\x0f\x59\xc1", "mulss %xmm1,%xmm0" },
        { "\xf2\x0f\x10\x07", "movsd (%rdi),%xmm0" },
        { "\x66\x0f\x2e\xc1", "ucomisd %xmm1,%xmm0" },
        { "\x0f\x2f\xc1", "comiss %xmm1,%xmm0" },
        { "\xf2\x48\x0f\x2a\xc0", "cvtsi2sd %rax,%xmm0" },
        { "\x66\x0f\x3a\x0b\xc1\x04", "roundsd $0x4,%xmm1,%xmm0" },
        { "\xc5\xfb\x58\xc1", "vaddsd %xmm1,%xmm0,%xmm0" },
        { "\xc4\xe2\xf1\xb9\xc2", "vfmadd231sd %xmm2,%xmm1,%xmm0" },
        { "\x62\xf1\xff\x08\x58\xc1", "{evex} vaddsd %xmm1,%xmm0,%xmm0" },
      },
      simd = {
        { "\x66\x0f\x58\xc1", "addpd %xmm1,%xmm0" },
        { "\x0f\x58\xc1", "addps %xmm1,%xmm0" },
        { "\xf3\x0f\x5b\xc1", "cvttps2dq %xmm1,%xmm0" },
        { "\x66\x0f\xfe\xc1", "paddd %xmm1,%xmm0" },
        { "\x66\x0f\xef\xc0", "pxor %xmm0,%xmm0" },
        { "\x0f\x28\xc1", "movaps %xmm1,%xmm0" },
        { "\xf3\x0f\x6f\x07", "movdqu (%rdi),%xmm0" },
        { "\x66\x0f\x38\x00\xc1", "pshufb %xmm1,%xmm0" },
        { "\x66\x0f\x3a\x0f\xc1\x08", "palignr $0x8,%xmm1,%xmm0" },
        { "\x0f\x77", "emms" },
        { "\x0f\xae\x17", "ldmxcsr (%rdi)" },
        { "\xc5\xfd\xfe\xc1", "vpaddd %ymm1,%ymm0,%ymm0" },
        { "\xc5\xf8\x77", "vzeroupper" },
        { "\x62\xf1\x7d\x48\xfe\xc1", "vpaddd %zmm1,%zmm0,%zmm0" },
        { "\x8f\xe9\x78\xc2\xc1", "vphaddbd %xmm1,%xmm0" },
      },
      unclas = {
        { "\x0f\x04", "(bad)" },
        { "\xd6", "(bad)" },
        { "\xff\xff", "(bad)" },
        { "\x06", "(bad)" },
      },
    }

    for _, c in ipairs(x86class.CLASSES) do
      local class = c.opt
      for _, case in ipairs(CASES[class] or {}) do
        local bytes, disas = case[1], case[2]
        it(("puts %s in %s"):format(disas, class), function()
          assert.are.equal(class, x86class.classify(bytes))
          assert.are.equal(class, x86class.classify(bytes, 64))
        end)
      end
    end

    it("ignores a REX prefix that a legacy prefix follows (41 66 90 is a nop)", function()
      assert.are.equal("nop", x86class.classify("\x41\x66\x90"))
      assert.are.equal("mov", x86class.classify("\x66\x41\x90"))
    end)

    it("classifies any lock-prefixed instruction as atomic (lock addl $1, (%rdi))", function()
      assert.are.equal("atomic", x86class.classify("\xf0\x83\x07\x01"))
      assert.are.equal("alu", x86class.classify("\x83\x07\x01"))
    end)

    it("tells scalar from packed by the mandatory prefix, F2/F3 winning over 66", function()
      assert.are.equal("fpscalar", x86class.classify("\x66\xf2\x0f\x51\xc1")) -- sqrtsd
      assert.are.equal("simd", x86class.classify("\x66\x0f\x51\xc1")) -- sqrtpd
    end)

    it("answers Unclassified for truncated or empty input instead of failing", function()
      for _, bytes in ipairs({ "", "\x66", "\x48", "\x0f", "\x0f\x38", "\xc4\xe2",
                               "\x62\xf1\x7d", "\xc5\xfd", "\xff", "\xf7", "\x8f" }) do
        assert.are.equal("unclas", x86class.classify(bytes), ("%q"):format(bytes))
      end
    end)
  end)

  describe("classify in 32-bit code", function()
    it("reads 40-4F as inc/dec, not REX", function()
      assert.are.equal("alu", x86class.classify("\x40", 32)) -- inc %eax
      assert.are.equal("alu", x86class.classify("\x48", 32)) -- dec %eax
      assert.are.equal("unclas", x86class.classify("\x40", 64)) -- a lone REX prefix
    end)

    it("knows the opcodes that 64-bit mode removed", function()
      assert.are.equal("stack", x86class.classify("\x60", 32)) -- pusha
      assert.are.equal("stack", x86class.classify("\x06", 32)) -- push %es
      assert.are.equal("callret", x86class.classify("\x9a\x00\x00\x00\x00\x08\x00", 32)) -- lcall
      assert.are.equal("sys", x86class.classify("\x63\xc1", 32)) -- arpl %ax,%cx
      assert.are.equal("unclas", x86class.classify("\x60", 64))
      assert.are.equal("unclas", x86class.classify("\x9a\x00\x00\x00\x00\x08\x00", 64))
    end)

    it("reads C4/C5/62 as VEX/EVEX only when ModRM.mod is 3", function()
      assert.are.equal("ldst", x86class.classify("\xc4\x07", 32)) -- les (%edi),%eax
      assert.are.equal("alu", x86class.classify("\x62\x07", 32)) -- bound %eax,(%edi)
      -- vpaddd %ymm1,%ymm0,%ymm0
      assert.are.equal("simd", x86class.classify("\xc5\xfd\xfe\xc1", 32))
    end)
  end)

  describe("CLASSES", function()
    it("names every class classify can answer, once, with Unclassified last", function()
      local seen = {}
      for _, c in ipairs(x86class.CLASSES) do
        assert.is_nil(seen[c.opt], c.opt)
        assert.is_string(c.name)
        seen[c.opt] = true
      end
      assert.are.equal("unclas", x86class.CLASSES[#x86class.CLASSES].opt)
      -- every opcode byte, alone and behind 0F, gives a known class
      for op = 0, 255 do
        for _, bytes in ipairs({ string.char(op, 0xc1, 0, 0, 0, 0, 0, 0),
                                 string.char(0x0f, op, 0xc1, 0, 0, 0, 0, 0) }) do
          assert.is_true(seen[x86class.classify(bytes)], ("%q"):format(bytes))
          assert.is_true(seen[x86class.classify(bytes, 32)], ("%q"):format(bytes))
        end
      end
    end)
  end)
end)
