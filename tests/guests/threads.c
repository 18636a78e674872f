/* threads.c: 8 guest threads (8 vCPUs in user mode) running the same code at once, each with its
 * own loads, stores and syscalls, so shared-counter races and Lua-state corruption would show.
 * They start together (a barrier), so none ends before the last one exists: user mode then
 * always has 9 vCPUs (a thread that ended early would hand its index to a later one). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 8

static unsigned long results[THREADS];
static unsigned long rounds = 400;
static pthread_barrier_t start;

static void *work(void *arg)
{
    unsigned long id = (unsigned long)arg, acc = id;
    static __thread unsigned long scratch[512];
    pthread_barrier_wait(&start);
    for (unsigned long r = 0; r < rounds; r++) {
        for (unsigned long i = 0; i < 512; i++) {
            scratch[i] = scratch[i] * 7 + i + r;
            acc += scratch[i] & 0xff;
        }
        if (r % 20 == 0) {
            syscall(SYS_getpid);
        }
    }
    results[id] = acc;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        rounds = strtoul(argv[1], NULL, 10);
    }
    pthread_t t[THREADS];
    pthread_barrier_init(&start, NULL, THREADS);
    for (unsigned long i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, work, (void *)i) != 0) {
            return 2;
        }
    }
    unsigned long total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        total += results[i];
    }
    printf("threads %d total %lu\n", THREADS, total);
    return 0;
}
