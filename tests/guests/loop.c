/* loop.c: a deterministic single-threaded guest: arithmetic, loads and stores, a few syscalls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long table[4096];

int main(int argc, char **argv)
{
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 200;
    unsigned long sum = 0;
    for (unsigned long r = 0; r < rounds; r++) {
        for (unsigned long i = 0; i < 4096; i++) {
            table[i] = table[i] * 31 + i + r;
            sum += table[i] >> 3;
        }
        if (r % 50 == 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "round %lu\n", r);
            write(1, line, (size_t)n);
        }
    }
    printf("sum %lu\n", sum);
    return 0;
}
