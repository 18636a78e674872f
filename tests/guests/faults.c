/* faults.c: a guest whose blocks are left in the middle, again and again: faults [N] (default
 * 2000) runs N times a straight line of instructions whose third one loads through a null
 * pointer; the SIGSEGV handler jumps back (siglongjmp) to the loop, past it. The instructions
 * after the faulting load are translated into the same block but never run: a tool that counts
 * a block's instructions when it starts, not each instruction when it starts, counts them. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static sigjmp_buf back;

static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(back, 1);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000;
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    volatile long faults = 0;
    for (long i = 0; i < n; i++) {
        if (sigsetjmp(back, 1) != 0) {
            faults++;
            continue;
        }
        long x = i;
        __asm__ volatile("addq $1, %[x]\n\t"
                         "addq $2, %[x]\n\t"
                         "movq (%[null]), %[x]\n\t"
                         "addq $3, %[x]\n\t"
                         "addq $4, %[x]\n\t"
                         "addq $5, %[x]\n\t"
                         : [x] "+r"(x)
                         : [null] "r"(0L)
                         : "memory");
        printf("the load through a null pointer did not fault (%ld)\n", x);
        return 1;
    }
    printf("%ld faults\n", faults);
    return faults == n ? 0 : 1;
}
