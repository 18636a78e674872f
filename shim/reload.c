/* reload.c: requests that need QEMU to stop every vCPU (reset: reload, retranslation; uninstall),
 * made from anywhere and carried out from a vCPU thread without the Lua lock held, since QEMU
 * performs them with its own plugin lock (lock order: QEMU's, then qlua's); and watch=on, hot
 * reload of the script. A thread notices when the script file changes
 * (modification time, size or inode: editors often replace the file); the next vCPU callback
 * (a translation, syscall, idle/resume or execution callback) asks QEMU for a reset, which stops
 * every vCPU and flushes all translated code; then, before any vCPU runs again, the script's top
 * level runs anew in the same Lua state (globals and qemu.persist survive) and every block is
 * translated again under the new code. A script that fails to load is reported and the previous
 * version keeps running.
 * Owns: the reset in flight, the watcher thread. Must not touch: how events or buffers are kept
 * (it swaps them through events.h and buffer.h). */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reload.h"
#include "buffer.h"
#include "events.h"
#include "gate.h"
#include "host.h"
#include "quiesce.h"
#include "tally.h"

/* Whether one of our resets is under way: QEMU ignores a reset asked for during another, so
 * requests made meanwhile wait (deferred again). */
static int in_flight;
static int requested; /* the bits of the reset in progress */
static struct stat seen; /* the file as last loaded */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static gpointer watch_loop(gpointer unused)
{
    (void)unused;
    for (;;) {
        g_usleep(200 * 1000);
        struct stat now;
        if (stat(qlua.script, &now) == 0 && !same_file(&now, &seen)) {
            seen = now;
            qlua_defer(QLUA_DEFER_RELOAD);
        }
    }
    return NULL;
}

void qlua_reload_start(void)
{
    stat(qlua.script, &seen);
    qlua_thread_start("qlua-watch", watch_loop, NULL);
}

static void after_reset(qemu_plugin_id_t id)
{
    (void)id;
    qlua_tally_code_flushed(); /* before any vCPU runs the fresh code */
    lua_State *L = qlua_lock();
    if (L == NULL || qlua.finished || !(requested & QLUA_DEFER_RELOAD)) {
        qlua_unlock();
        qlua_events_reregister(); /* a plain retranslation: same handlers, fresh code */
        __atomic_store_n(&in_flight, 0, __ATOMIC_RELEASE);
        return;
    }
    qlua_buffer_save();
    qlua_handler_set *previous = qlua_events_take_handlers();
    char *error = NULL;
    qlua.loading = true;
    int rc = qlua_gate_load(qlua.script, &error);
    qlua.loading = false;
    if (rc != 0) {
        qlua_report("reloading %s failed; the previous version keeps running:\n%s", qlua.script,
                    error);
        g_free(error);
        qlua_events_drop_handlers(qlua_events_take_handlers());
        qlua_events_put_handlers(previous);
        qlua_buffer_restore();
    } else {
        qlua_events_drop_handlers(previous);
        qlua_buffer_drop_saved();
        /* the old version is garbage now, all at once (a tracer's pool can be 280 MB): collect
         * it before the new one builds its own, rather than whenever the collector gets there */
        lua_gc(L, LUA_GCCOLLECT, 0);
        qlua_report("reloaded %s", qlua.script);
    }
    qlua_unlock();
    qlua_events_reregister(); /* reset dropped every callback; vCPUs wait until we return */
    __atomic_store_n(&in_flight, 0, __ATOMIC_RELEASE);
}

/* From the gate's deferred work, without the Lua lock: a reset or uninstall, carried out only
 * from a vCPU thread and one at a time (otherwise asked for again, for the next unlock). */
void qlua_reload_run(int bits)
{
    int idle = 0;
    if (qlua_own_thread || !__atomic_compare_exchange_n(&in_flight, &idle, 1, false,
                                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        qlua_defer(bits);
        return;
    }
    qlua_quiesce_arm();
    if (bits & QLUA_DEFER_UNINSTALL) {
        qlua_host.uninstall(qlua.id, qlua_events_uninstalled); /* in_flight stays set: the end */
    } else {
        requested = bits;
        qlua_host.reset(qlua.id, after_reset);
    }
}

/* core.retranslate(): the next vCPU callback flushes all translated code, so that probes added
 * since (from the REPL, say) apply to every block, not only to blocks translated from now on. */
static int reload_retranslate(lua_State *L)
{
    if (qlua.loading) {
        return luaL_error(L, "qemu.retranslate() is pointless while the script loads: nothing is "
                             "translated yet");
    }
    if (!qlua.polls) {
        return luaL_error(L, "qemu.retranslate() needs the plugin option repl= or watch= (with "
                             "them, vCPU callbacks look for pending work)");
    }
    qlua_defer(QLUA_DEFER_RETRANSLATE);
    return 0;
}

void qlua_reload_open(lua_State *L)
{
    lua_pushcfunction(L, reload_retranslate);
    lua_setfield(L, -2, "retranslate");
}
