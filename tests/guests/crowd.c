/* crowd.c: THREADS guest threads alive at once (they start together at a barrier and end
 * together at a second one), each summing a little and making a syscall: user mode then has
 * THREADS + 1 vCPUs at the same time, more than the 64 whose counter slots live in the counter
 * itself (shim/counter.c's near chunks). Prints "crowd THREADS SUM". Usage: crowd [THREADS=100] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t start, end;

static void *work(void *arg)
{
    long n = (long)arg, sum = 0;
    pthread_barrier_wait(&start);
    for (long i = 0; i < 2000; i++) {
        sum += i ^ n;
    }
    sum += syscall(SYS_getpid) > 0;
    pthread_barrier_wait(&end);
    return (void *)sum;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 100, total = 0;
    if (threads < 1 || threads > 1000) {
        fprintf(stderr, "crowd: THREADS from 1 to 1000\n");
        return 2;
    }
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    pthread_barrier_init(&end, NULL, (unsigned)threads);
    for (long i = 0; i < threads; i++) {
        if (pthread_create(&t[i], NULL, work, (void *)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (long i = 0; i < threads; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        total += (long)ret;
    }
    printf("crowd %ld %ld\n", threads, total);
    free(t);
    return 0;
}
