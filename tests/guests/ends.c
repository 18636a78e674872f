/* ends.c: a guest that ends in a chosen way after running for a while, for the tests of what
 * survives each end: ends MODE [MS] busy-waits MS milliseconds (default 300), then
 *   segv   stores through a null pointer (a fatal SIGSEGV)
 *   exec   replaces itself with /bin/true (execve)
 *   nofd2  closes its standard error, then exits 0 (as coreutils programs do at exit)
 *   spin   spins until killed
 *   exit   exits 0 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void busy(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exit";
    busy(argc > 2 ? atol(argv[2]) : 300);
    if (strcmp(mode, "segv") == 0) {
        *(volatile int *)0 = 1;
    } else if (strcmp(mode, "exec") == 0) {
        execl("/bin/true", "true", (char *)NULL);
        return 3;
    } else if (strcmp(mode, "nofd2") == 0) {
        close(2);
    } else if (strcmp(mode, "spin") == 0) {
        for (;;) {
            busy(1000);
        }
    }
    return 0;
}
