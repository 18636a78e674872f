/* stride.c: a guest whose data-cache misses can be worked out by hand. It reads one byte every
 * STEP bytes of a static, 4 KiB-aligned array, over its first BYTES bytes, PASSES times:
 *   stride PASSES BYTES STEP        (defaults 3 16384 64)
 * Every read is made by one load instruction in sweep() (inline assembly, no other memory
 * access in the loop), so a cache simulator's data misses for that one instruction follow from the
 * cache geometry alone: e.g. with 64-byte blocks, BYTES/64 compulsory misses in the first pass,
 * and in later passes none if the array fits, or all again if LRU/FIFO sets hold fewer ways than
 * the blocks that map to them. */
#include <stdio.h>
#include <stdlib.h>

/* Never written, so no other instruction brings its blocks into a cache before sweep() does. */
static unsigned char array[1 << 20] __attribute__((aligned(4096)));

__attribute__((noinline)) static unsigned long sweep(const unsigned char *p, unsigned long n,
                                                     unsigned long step)
{
    unsigned long sum = 0, byte;
    __asm__ volatile("1:\n\t"
                     "movzbq (%[p]), %[byte]\n\t"
                     "addq %[byte], %[sum]\n\t"
                     "addq %[step], %[p]\n\t"
                     "decq %[n]\n\t"
                     "jnz 1b"
                     : [p] "+r"(p), [n] "+r"(n), [sum] "+r"(sum), [byte] "=&r"(byte)
                     : [step] "r"(step)
                     : "cc", "memory");
    return sum;
}

int main(int argc, char **argv)
{
    unsigned long passes = argc > 1 ? strtoul(argv[1], NULL, 10) : 3;
    unsigned long bytes = argc > 2 ? strtoul(argv[2], NULL, 10) : 16384;
    unsigned long step = argc > 3 ? strtoul(argv[3], NULL, 10) : 64;
    if (step == 0 || bytes < step || bytes > sizeof array) {
        fprintf(stderr, "usage: stride PASSES BYTES STEP (STEP <= BYTES <= %zu)\n", sizeof array);
        return 2;
    }
    unsigned long sum = 0;
    for (unsigned long pass = 0; pass < passes; pass++) {
        sum += sweep(array, bytes / step, step);
    }
    printf("stride sum %lu\n", sum);
    return 0;
}
