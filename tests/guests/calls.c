/* calls.c: a deterministic single-threaded guest with a known call graph, for callgraph.lua.
 * main calls a() N times and a() calls b() M times; rec() recurses to depth R + 1; catcher()
 * runs J times: it calls thrower(2), which recurses twice and calls jumper(), which longjmps
 * back into catcher, which then calls leaf(); finally main calls b() once through a function
 * pointer. Every function below is noinline (noipa: no clones, no inter-procedural shortcuts),
 * and b() is a leaf without branches, so each call of b executes the same instructions. With the
 * argument "exit", main leaves at once through the exit_group system call: a run that stops early,
 * for lockstep.lua's tests (which give the other run an argument of the same length, "stay", so
 * that both start up identically). */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N 10
#define M 7
#define R 5
#define J 3

#define NOINLINE __attribute__((noinline, noipa))

static volatile int sink;
static jmp_buf env;

NOINLINE int b(int x) { return x * 3 + 1; }

NOINLINE void a(void)
{
    for (int i = 0; i < M; i++)
        sink += b(i);
}

NOINLINE int rec(int n)
{
    if (n == 0)
        return 0;
    int r = rec(n - 1);
    sink += r; /* after the call: no tail recursion to turn into a loop */
    return r + 1;
}

NOINLINE void jumper(void) { longjmp(env, 1); }

NOINLINE void thrower(int n)
{
    if (n == 0)
        jumper();
    else
        thrower(n - 1);
    sink++; /* never reached: jumper longjmps out of all the calls */
}

NOINLINE void leaf(void) { sink++; }

NOINLINE void catcher(void)
{
    if (setjmp(env) == 0)
        thrower(2);
    leaf();
}

int (*volatile fp)(int) = b;

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "exit") == 0)
        syscall(SYS_exit_group, 0);
    for (int i = 0; i < N; i++)
        a();
    sink += rec(R);
    for (int j = 0; j < J; j++)
        catcher();
    sink += fp(1);
    printf("calls %d\n", sink);
    return 0;
}
