/* repeats.c: a deterministic guest whose instructions execute themselves again at known counts,
 * for the repeat detection of scripts/insn.lua. Each round runs a `rep stosb` of REP_BYTES bytes
 * (one execution per byte) and a `loop` that jumps to itself LOOP_TIMES times (one execution per
 * count), so each round executes `rep_site` REP_BYTES times in a row and `loop_site` LOOP_TIMES
 * times in a row. Usage: repeats [ROUNDS] (default 10). Both sites are global symbols. */
#include <stdio.h>
#include <stdlib.h>

#define REP_BYTES 100
#define LOOP_TIMES 50

static unsigned char buf[REP_BYTES];

int main(int argc, char **argv)
{
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 10;
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned long n = REP_BYTES;
        void *dst = buf;
        __asm__ volatile(".globl rep_site\nrep_site: rep stosb"
                         : "+c"(n), "+D"(dst) : "a"(r) : "memory");
        n = LOOP_TIMES;
        __asm__ volatile(".globl loop_site\nloop_site: loop loop_site" : "+c"(n));
    }
    printf("repeats %lu %u\n", rounds, buf[REP_BYTES - 1]);
    return 0;
}
