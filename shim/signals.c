/* signals.c: SIGINT and SIGTERM, so that a script stuck in Lua cannot make QEMU ignore them and
 * nothing it printed is lost to them. qlua's handler runs before QEMU's. When Lua is not running
 * (or returns within a moment), the signal goes on to QEMU as if qlua were not there: the guest
 * gets it (user mode; if it dies of it, the output has been flushed first) or QEMU shuts down
 * (system mode, running the on_exit handlers). When Lua keeps the lock, the running Lua code is
 * interrupted with an error at its current line, the on_exit handlers run, output is flushed and
 * the process ends with the signal; a Lua that does not stop within INTERRUPT_MS (a compiled
 * LuaJIT loop does not see the interrupt) is ended anyway, after a flush.
 * Owns: the handlers, the watchdog thread. Must not touch: the Lua state except through the
 * gate (qlua_gate_busy, qlua_gate_interrupt). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "signals.h"
#include "gate.h"

#define SETTLE_MS 100    /* Lua holding the lock this long after a signal is stuck, not busy */
#define INTERRUPT_MS 1000 /* how long an interrupted Lua (and then the exit handlers) may take */

static const int wrapped[] = {SIGINT, SIGTERM};
static struct sigaction qemu_action[NSIG];
static int pass_through[NSIG]; /* the next delivery of this signal is QEMU's */
static int wake[2] = {-1, -1};

typedef struct {
    int sig;
    pid_t tid; /* the thread the kernel chose: a vCPU thread, since qlua's block every signal */
} caught;

static void to_qemu(int sig, siginfo_t *info, void *uc)
{
    const struct sigaction *a = &qemu_action[sig];
    if (a->sa_flags & SA_SIGINFO) {
        a->sa_sigaction(sig, info, uc);
    } else if (a->sa_handler != SIG_IGN && a->sa_handler != SIG_DFL) {
        a->sa_handler(sig);
    } else if (a->sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

/* Async-signal context: only the pipe and atomics. */
static void on_signal(int sig, siginfo_t *info, void *uc)
{
    if (__atomic_exchange_n(&pass_through[sig], 0, __ATOMIC_ACQ_REL)) {
        to_qemu(sig, info, uc);
        return;
    }
    int saved = errno;
    caught c = {sig, (pid_t)syscall(SYS_gettid)};
    if (write(wake[1], &c, sizeof c) != sizeof c) {
        to_qemu(sig, info, uc); /* no watchdog to decide: behave as without qlua */
    }
    errno = saved;
}

static bool stuck(unsigned int ms)
{
    uint64_t before, after;
    if (!qlua_gate_busy(&before)) {
        return false;
    }
    g_usleep(ms * 1000);
    return qlua_gate_busy(&after) && after == before;
}

static gpointer watchdog(gpointer unused)
{
    (void)unused;
    caught c;
    for (;;) {
        ssize_t n = read(wake[0], &c, sizeof c);
        if (n != sizeof c) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return NULL;
        }
        qlua_out_flush(); /* whatever happens next, what was printed is out */
        if (!stuck(SETTLE_MS)) {
            __atomic_store_n(&pass_through[c.sig], 1, __ATOMIC_RELEASE);
            syscall(SYS_tgkill, getpid(), c.tid, c.sig); /* on the thread QEMU expects */
            continue;
        }
        qlua_gate_interrupt(c.sig);
        /* the interrupt ends the run through the on_exit handlers; if Lua is still stuck after
         * INTERRUPT_MS (or the handlers are), cut the handlers short once, then end it here */
        for (int round = 0; round < 2; round++) {
            g_usleep(INTERRUPT_MS * 1000);
            if (round == 0) {
                qlua_gate_interrupt(c.sig);
            }
        }
        qlua_report("Lua did not stop within %d ms of the signal (a compiled LuaJIT loop cannot "
                    "be interrupted); ending the run without the on_exit handlers",
                    2 * INTERRUPT_MS);
        qlua_out_flush();
        signal(c.sig, SIG_DFL);
        kill(getpid(), c.sig);
        return NULL;
    }
}

void qlua_signals_install(void)
{
    static bool done;
    if (done || pipe2(wake, O_CLOEXEC) != 0) {
        return;
    }
    done = true;
    for (size_t i = 0; i < G_N_ELEMENTS(wrapped); i++) {
        int sig = wrapped[i];
        struct sigaction mine = {0};
        mine.sa_sigaction = on_signal;
        mine.sa_flags = SA_SIGINFO | SA_RESTART;
        sigfillset(&mine.sa_mask);
        sigaction(sig, &mine, &qemu_action[sig]);
    }
    qlua_thread_start("qlua-signals", watchdog, NULL);
}
