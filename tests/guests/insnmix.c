/* insnmix.c: a guest for howvec's x86 classes. A loop of hand-picked x86-64 instructions, run N
 * times (argv[1], default 1000), so each class's count grows by a known amount per iteration:
 *   Integer ALU 5, Integer Mul/Div 1, Move (reg/imm) 1, Load/Store 2, Push/Pop 2, String ops 1,
 *   Atomic/Fence 1, Cond Branch 1, Branch 1, Call/Return 2, System/Syscall 1, Nop/Hint 1,
 *   x87 FP 2, Scalar FP (SSE/AVX) 1, SIMD (SSE/AVX/MMX) 1   (23 instructions)
 * What it prints does not depend on N, so runs with N of the same number of digits differ only
 * by the loop. */
#include <stdio.h>
#include <stdlib.h>

static unsigned long cell;
static char src[8] = "abcdefg", dst[8];

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
    unsigned long acc = 1;
    if (n == 0) {
        return 1;
    }
    __asm__ volatile(
        "sub $128, %%rsp\n\t"         /* keep the call below out of the red zone */
        "1:\n\t"
        "add $3, %[acc]\n\t"          /* alu */
        "imul %[acc], %[acc]\n\t"     /* muldiv */
        "mov %[acc], %%rax\n\t"       /* mov */
        "mov %%rax, %[cell]\n\t"      /* ldst: store */
        "mov %[cell], %%rdx\n\t"      /* ldst: load */
        "push %%rax\n\t"              /* stack */
        "pop %%rax\n\t"               /* stack */
        "lea %[src], %%rsi\n\t"       /* alu */
        "lea %[dst], %%rdi\n\t"       /* alu */
        "movsb\n\t"                   /* string */
        "lock addq $1, %[cell]\n\t"   /* atomic */
        "addsd %%xmm0, %%xmm1\n\t"    /* fpscalar */
        "paddd %%xmm2, %%xmm3\n\t"    /* simd */
        "fld1\n\t"                    /* x87 */
        "fstp %%st(0)\n\t"            /* x87 */
        "nop\n\t"                     /* nop */
        "call 2f\n\t"                 /* callret */
        "jmp 3f\n\t"                  /* branch */
        "2: ret\n\t"                  /* callret */
        "3: xor %%eax, %%eax\n\t"     /* alu */
        "cpuid\n\t"                   /* sys */
        "dec %[n]\n\t"                /* alu */
        "jnz 1b\n\t"                  /* cndb */
        "add $128, %%rsp\n\t"
        : [acc] "+r"(acc), [n] "+r"(n), [cell] "+m"(cell), [dst] "=m"(dst)
        : [src] "m"(src)
        : "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "xmm1", "xmm3", "cc", "memory");
    puts("insnmix done");
    return 0;
}
