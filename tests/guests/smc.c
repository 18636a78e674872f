/* smc.c: self-modifying code, so QEMU must translate the same code again and again. x86_64 only.
 * A function in an anonymous read-write-execute page returns an immediate; each round rewrites
 * the immediate and calls the function (QEMU sees the write to a page holding translated code,
 * drops those translations and translates the function anew). Prints "smc ROUNDS SUM", where SUM
 * is the sum of 0 .. ROUNDS-1 as returned by the rewritten code. Usage: smc [ROUNDS=1000] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 1000;
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    static const unsigned char body[] = {0xb8, 0, 0, 0, 0, /* mov $imm32, %eax */
                                         0xc3};            /* ret */
    memcpy(page, body, sizeof body);
    long (*fn)(void) = (long (*)(void))page;
    long sum = 0;
    for (long i = 0; i < rounds; i++) {
        unsigned int imm = (unsigned int)i;
        memcpy(page + 1, &imm, sizeof imm);
        __asm__ volatile("" ::: "memory"); /* the store happens before the call */
        sum += fn();
    }
    printf("smc %ld %ld\n", rounds, sum);
    return 0;
}
