/* forks.c: forks a child that exits on its own, and waits for it. Checks that output buffered
 * before the fork is not printed twice and that both processes report at exit. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    volatile unsigned long sum = 0;
    for (unsigned long i = 0; i < 10000; i++) {
        sum += i;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        for (unsigned long i = 0; i < 1000; i++) {
            sum += i;
        }
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("child exited %d\n", WEXITSTATUS(status));
    return 0;
}
