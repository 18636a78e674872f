/* uftrace_calls.c: a guest with a known call tree for uftrace.lua, built with frame pointers
 * (-O0 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer, static): main calls top() 10 times
 * and top() calls mid() twice, so uftrace reports main/top/mid as called 1/10/20 times.
 * Afterwards, by the first argument:
 *   crash    stores through a null pointer (the guest dies of SIGSEGV)
 *   exec     execve()s /bin/true (QEMU is replaced without its exit callbacks)
 *   threads  a second thread calls top() 10 times more (main: 1, top: 20, mid: 40), joined
 *            before main returns
 *   forever  calls top() until the process is killed */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noipa))

static volatile int sink;

NOINLINE void mid(int i) { sink += i; }

NOINLINE void top(int i)
{
    mid(i);
    mid(i + 1);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        top(i);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    for (int i = 0; i < 10; i++)
        top(i);
    if (strcmp(mode, "crash") == 0)
        *(volatile int *)0 = 1;
    if (strcmp(mode, "exec") == 0) {
        char *args[] = {"/bin/true", NULL};
        execv(args[0], args);
        return 2;
    }
    while (strcmp(mode, "forever") == 0)
        top(1);
    if (strcmp(mode, "threads") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
    }
    printf("sink %d\n", sink);
    return 0;
}
