/* churn.c: creates THREADS short-lived threads one after another (each sums a little), the way a
 * thread-pool-less server does. Prints "churn THREADS SUM". Usage: churn [THREADS=100] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *work(void *arg)
{
    long n = (long)arg, sum = 0;
    for (long i = 0; i < 1000; i++) {
        sum += i ^ n;
    }
    return (void *)sum;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 100, total = 0;
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        void *ret;
        if (pthread_create(&t, NULL, work, (void *)i) != 0) {
            perror("pthread_create");
            return 1;
        }
        pthread_join(t, &ret);
        total += (long)ret;
    }
    printf("churn %ld %ld\n", threads, total);
    return 0;
}
