/* v5.c: a guest whose printed values a script can change: `secret` (a variable qemu.write_memory
 * may rewrite before report() prints it) and double_it()'s argument (a register qemu.write_reg may
 * change at the function's entry). */
#include <stdio.h>

volatile long secret = 42;

__attribute__((noinline)) long double_it(long x)
{
    return x * 2;
}

__attribute__((noinline)) void report(void)
{
    printf("secret=%ld\n", secret);
}

int main(void)
{
    report();
    printf("double=%ld\n", double_it(5));
    return 0;
}
