/* sysnums.c: known numbers of syscalls, for the syscall tallies. sysnums THREADS ROUNDS HOLD
 * NUM...: THREADS threads each make syscall NUM (no arguments) ROUNDS times for each NUM given,
 * in order; a NUM may be invalid or negative (the kernel answers -ENOSYS). Then the workers wait,
 * alive and blocked, while the main thread sleeps HOLD milliseconds and makes one getpid (a
 * marker), and they all end. Prints "sysnums THREADS x ROUNDS". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long rounds;
static int nnums;
static long *nums;
static pthread_barrier_t done, marked;

static void *work(void *arg)
{
    (void)arg;
    for (int k = 0; k < nnums; k++) {
        for (long r = 0; r < rounds; r++) {
            syscall(nums[k]);
        }
    }
    pthread_barrier_wait(&done);
    pthread_barrier_wait(&marked);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: sysnums THREADS ROUNDS HOLD NUM...\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    rounds = atol(argv[2]);
    long hold = atol(argv[3]);
    nnums = argc - 4;
    nums = calloc((size_t)nnums, sizeof *nums);
    for (int k = 0; k < nnums; k++) {
        nums[k] = atol(argv[k + 4]);
    }
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    pthread_barrier_init(&done, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&marked, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        pthread_create(&tid[i], NULL, work, NULL);
    }
    pthread_barrier_wait(&done);
    struct timespec t = {hold / 1000, (hold % 1000) * 1000000};
    nanosleep(&t, NULL);
    syscall(SYS_getpid);
    pthread_barrier_wait(&marked);
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
    }
    printf("sysnums %d x %ld\n", threads, rounds);
    return 0;
}
