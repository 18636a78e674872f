/* output.c: the script's output on its way to QEMU's plugin log, and qlua's own messages.
 * Owns: the output buffer and its lock, the flusher thread, the private stderr. Must not touch:
 * the Lua state (any thread may write or flush, with or without the Lua lock).
 * A C plugin that calls qemu_plugin_outs for every line loses nothing when QEMU dies abruptly (a
 * guest's fatal signal or execve, SIGKILL) but pays a write per line; qlua buffers, and bounds
 * what such an end can take: a thread hands over what is buffered every QLUA_OUT_DELAY_MS, so
 * nothing older than that (and the scheduler's delay) waits. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "output.h"
#include "host.h"

/* Handed over in chunks this large at the latest. */
#define OUT_CHUNK (64 * 1024)

static GMutex out_lock;
static GCond out_waiting; /* signalled when output starts to wait in an empty buffer */
static GString *out;
static GString *redirect;
static int report_fd = 2;
static bool flusher_missing; /* a forked child: the flusher thread stayed in the parent */


/* Where QEMU's log goes, read from its own command line and environment at load: QEMU's log is
 * stderr unless -D (QEMU_LOG_FILENAME) names a file, and takes plugin output only with -d plugin
 * (QEMU_LOG). When it is stderr, qlua writes the script's output itself, through its copy of
 * fd 2: a guest that closes its standard error (coreutils programs do at exit) shares that fd
 * with QEMU in user mode and would otherwise swallow everything printed after. */
static bool log_to_stderr;

static bool has_item(const char *items, const char *item)
{
    char **list = g_strsplit(items ? items : "", ",", -1);
    bool found = g_strv_contains((const gchar *const *)list, item);
    g_strfreev(list);
    return found;
}

static void find_log(void)
{
    gchar *cmdline = NULL;
    gsize len = 0;
    if (!g_file_get_contents("/proc/self/cmdline", &cmdline, &len, NULL)) {
        return;
    }
    /* user mode: QEMU's options end at the guest program (the first word that is neither an
     * option nor an option's value); the guest's own arguments follow and are not QEMU's */
    static const char *const user_valued[] = {"g", "L", "s", "cpu", "E", "U", "0", "r", "B", "R",
                                              "d", "dfilter", "D", "p", "seed", "trace", "plugin",
                                              NULL};
    const char *items = g_getenv("QEMU_LOG");
    bool file = g_getenv("QEMU_LOG_FILENAME") != NULL;
    gsize at = strlen(cmdline) + 1; /* past QEMU's own path */
    while (at < len) {
        const char *arg = cmdline + at;
        at += strlen(arg) + 1;
        const char *next = at < len ? cmdline + at : NULL;
        if (arg[0] != '-') {
            if (!qlua_host.system) {
                break; /* the guest program */
            }
            continue;
        }
        const char *name = arg + (arg[1] == '-' ? 2 : 1);
        if (g_str_equal(name, "d") && next) {
            items = next; /* the last -d wins, as in QEMU */
        } else if (g_str_equal(name, "D") && next) {
            file = true;
        }
        if (!qlua_host.system && g_strv_contains(user_valued, name) && next) {
            at += strlen(next) + 1;
        }
    }
    log_to_stderr = !file && has_item(items, "plugin");
    g_free(cmdline);
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Under out_lock. qemu_plugin_outs takes a C string: text is handed over in the pieces between
 * zero bytes, which cannot be passed on (they are dropped; nothing after them is lost). */
static void flush_locked(void)
{
    if (out && out->len > 0) {
        for (size_t at = 0; at < out->len; at += strlen(out->str + at) + 1) {
            if (out->str[at] == '\0') {
                continue;
            }
            if (log_to_stderr) {
                write_all(report_fd, out->str + at, strlen(out->str + at));
            } else {
                qlua_host.outs(out->str + at);
            }
        }
        g_string_truncate(out, 0);
    }
}

/* Sleeps until output waits (a quiet script costs no wake-ups: at 50 a second they cost a
 * counting script 8% on this 2-core machine), then hands it over QLUA_OUT_DELAY_MS later. */
static gpointer flusher(gpointer unused)
{
    (void)unused;
    for (;;) {
        g_mutex_lock(&out_lock);
        while (!out || out->len == 0) {
            g_cond_wait(&out_waiting, &out_lock);
        }
        g_mutex_unlock(&out_lock);
        g_usleep(QLUA_OUT_DELAY_MS * 1000);
        g_mutex_lock(&out_lock);
        flush_locked(); /* whatever waits, however young: one write per wake-up */
        g_mutex_unlock(&out_lock);
        fflush(stdout); /* Lua's print and io.write: a pipe or file is block-buffered */
    }
    return NULL;
}

/* QEMU user mode handles signals only on vCPU threads (one delivered to another thread crashes
 * it), so every thread of qlua's is made here, with all signals blocked, and the kernel picks a
 * thread that can take them. */
void qlua_blocked_thread(const char *name, GThreadFunc fn, gpointer data)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    g_thread_unref(g_thread_new(name, fn, data));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void start_flusher(void)
{
    qlua_blocked_thread("qlua-output", flusher, NULL);
    flusher_missing = false;
}

void qlua_output_start(void)
{
    out = g_string_sized_new(OUT_CHUNK + 1024);
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 3); /* the guest may close its fd 2 (coreutils do) */
    if (fd >= 0) {
        report_fd = fd;
        find_log();
    }
    start_flusher();
}

void qlua_out_write(const char *s, size_t len)
{
    g_mutex_lock(&out_lock);
    if (redirect) {
        g_string_append_len(redirect, s, len);
    } else if (out) {
        /* no clock here: the flusher thread bounds the delay, a write only bounds the size */
        if (out->len == 0) {
            g_cond_signal(&out_waiting);
        }
        g_string_append_len(out, s, len);
        if (out->len >= OUT_CHUNK) {
            flush_locked();
        }
        if (G_UNLIKELY(flusher_missing)) { /* a forked child: its own flusher */
            start_flusher();
        }
    }
    g_mutex_unlock(&out_lock);
}

void qlua_out_flush(void)
{
    g_mutex_lock(&out_lock);
    flush_locked();
    g_mutex_unlock(&out_lock);
    fflush(stdout);
}

GString *qlua_out_redirect(GString *to)
{
    g_mutex_lock(&out_lock);
    GString *previous = redirect;
    redirect = to;
    g_mutex_unlock(&out_lock);
    return previous;
}

/* Errors and warnings go to stderr, not the plugin log: they must be seen even without -d plugin.
 * Pending script output is flushed first so the log reads in order. */
void qlua_report(const char *fmt, ...)
{
    qlua_out_flush();
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *line = g_strdup_printf("qlua: %s\n", msg);
    write_all(report_fd, line, strlen(line));
    g_free(line);
    g_free(msg);
}

void qlua_output_fork_prepare(void)
{
    g_mutex_lock(&out_lock);
    flush_locked();
}

void qlua_output_fork_parent(void)
{
    g_mutex_unlock(&out_lock);
}

void qlua_output_fork_child(void)
{
    flusher_missing = out != NULL;
    g_mutex_unlock(&out_lock); /* the forking thread took it; it is the only thread left */
}
