/* quiesce.c: QEMU (7.2 to 10.2) carries out a reset or uninstall in an exclusive section, where
 * it unregisters and frees its records of the plugin's callbacks at once, on the premise that
 * every vCPU is asleep. In user mode that is not so: a thread making a syscall is outside
 * translated code, not stopped, and dispatches the syscall to the callbacks it finds in QEMU's
 * list. When the free comes while it holds a record, it reads freed memory (a crash in QEMU's
 * syscall dispatch, which its signal handler turns into a jump to a stale frame and
 * rcu_read_unlock's assertion); when the records are gone and not yet registered again, the
 * syscall is not seen (a count lost). Both were seen with 8 threads of getppid and hundreds of
 * resets. In the exclusive section a thread makes at most the one syscall it had in flight (it
 * cannot enter translated code again), so the flush that opens the reset, which comes before the
 * frees, waits until it has been dispatched: until, over a step of 100 us, no thread's counters
 * of syscalls moved and no thread that makes syscalls is runnable (one on its way to the dispatch
 * shows only that, preempted or not). A thread asleep waits at the section's door or is blocked
 * in its syscall: it is not waited for, since only the instant of its return could meet the free.
 * At most 200 ms, however loaded the machine.
 * Each thread writes only its own record; the waiter reads them all.
 * Owns: the per-thread syscall records, the armed flag. Must not touch: callbacks, Lua. */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "quiesce.h"

typedef struct presence {
    pid_t tid;
    unsigned long entered; /* syscalls dispatched to us */
    unsigned long done;    /* == entered: none in flight */
    struct presence *next;
} presence;

static QLUA_TLS presence *mine;
static presence *all; /* under all_lock */
static GMutex all_lock;
static int armed;

static presence *my_presence(void)
{
    if (G_UNLIKELY(mine == NULL)) {
        mine = g_new0(presence, 1);
        mine->tid = (pid_t)syscall(SYS_gettid);
        g_mutex_lock(&all_lock);
        mine->next = all;
        all = mine;
        g_mutex_unlock(&all_lock);
    }
    return mine;
}

void qlua_quiesce_entered(void)
{
    presence *p = my_presence();
    __atomic_store_n(&p->entered, p->entered + 1, __ATOMIC_RELEASE);
}

void qlua_quiesce_done(void)
{
    presence *p = mine;
    if (p && p->done != p->entered) {
        __atomic_store_n(&p->done, p->entered, __ATOMIC_RELEASE);
    }
}

void qlua_quiesce_release_mine(void)
{
    if (mine) {
        g_mutex_lock(&all_lock);
        QLUA_LIST_UNLINK(all, mine);
        g_mutex_unlock(&all_lock);
        g_free(mine);
        mine = NULL;
    }
}

void qlua_quiesce_arm(void)
{
    __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
}

/* Whether the kernel has thread `tid` running or ready to run (state R): one preempted on its way
 * from translated code to the dispatch shows no change of its counters, only this. */
static bool runnable(pid_t tid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false; /* gone */
    }
    bool r = false;
    if (fgets(line, sizeof line, f)) {
        const char *end = strrchr(line, ')'); /* the name may hold spaces and parentheses */
        r = end && end[1] == ' ' && end[2] == 'R';
    }
    fclose(f);
    return r;
}

/* The sum of every other thread's counters (a change: some thread moved), and whether one of
 * them is runnable: on its way to a dispatch, or in a syscall that will end soon. One asleep is
 * either waiting for the exclusive section to end or blocked in its syscall. */
static unsigned long snapshot(bool *busy, int *others)
{
    unsigned long sum = 0;
    *busy = false;
    *others = 0;
    g_mutex_lock(&all_lock);
    for (presence *p = all; p; p = p->next) {
        if (p == mine) {
            continue;
        }
        unsigned long e = __atomic_load_n(&p->entered, __ATOMIC_ACQUIRE);
        unsigned long d = __atomic_load_n(&p->done, __ATOMIC_ACQUIRE);
        sum += e + d;
        ++*others;
        *busy |= runnable(p->tid);
    }
    g_mutex_unlock(&all_lock);
    return sum;
}

#define STEP_US 100       /* a quiet step: no thread moved */
#define LONGEST_US 200000 /* whatever happens (a machine this loaded runs its threads late) */

void qlua_quiesce_wait(void)
{
    if (!__atomic_exchange_n(&armed, 0, __ATOMIC_ACQ_REL)) {
        return;
    }
    bool busy;
    int others;
    unsigned long last = snapshot(&busy, &others);
    if (others == 0) {
        return; /* no other thread has made a syscall: system mode, or one thread */
    }
    gint64 start = g_get_monotonic_time();
    /* a thread on its way from translated code to the dispatch shows no change yet: at least
     * one quiet step, always */
    for (;;) {
        g_usleep(STEP_US);
        unsigned long now = snapshot(&busy, &others);
        gint64 t = g_get_monotonic_time();
        if (now != last) {
            last = now;
        } else if (!busy) {
            return;
        }
        if (t - start >= LONGEST_US) {
            return;
        }
    }
}
