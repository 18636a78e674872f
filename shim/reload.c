/* reload.c: watch=on, hot reload of the script. A thread notices when the script file changes
 * (modification time, size or inode: editors often replace the file); the next vCPU callback
 * (a translation, syscall, idle/resume or execution callback) asks QEMU for a reset, which stops
 * every vCPU and flushes all translated code; then, before any vCPU runs again, the script's top
 * level runs anew in the same Lua state (globals and qemu.persist survive) and every block is
 * translated again under the new code. A script that fails to load is reported and the previous
 * version keeps running. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* What the next vCPU callback must ask QEMU for: bits, read and cleared atomically. */
enum { WANT_RELOAD = 1, WANT_RETRANSLATE = 2 };
static int pending;
static int requested; /* the bits of the reset in progress */
static struct stat seen;   /* the file as last loaded */

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
            __atomic_fetch_or(&pending, WANT_RELOAD, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

void qlua_reload_start(void)
{
    stat(qlua.script, &seen);
    g_thread_unref(g_thread_new("qlua-watch", watch_loop, NULL));
}

static void after_reset(qemu_plugin_id_t id)
{
    (void)id;
    lua_State *L = qlua_lock();
    if (L == NULL || qlua.finished || !(requested & WANT_RELOAD)) {
        qlua_unlock();
        qlua_events_reregister(); /* a plain retranslation: same handlers, fresh code */
        return;
    }
    qlua_buffer_save();
    GPtrArray **previous = qlua_events_take_handlers();
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
        qlua_report("reloaded %s", qlua.script);
    }
    qlua_unlock();
    qlua_events_reregister(); /* reset dropped every callback; vCPUs wait until we return */
}

/* Called at the start of vCPU callbacks, without the Lua lock (a reset takes QEMU's lock). */
void qlua_reload_poll(void)
{
    if (G_UNLIKELY(__atomic_load_n(&pending, __ATOMIC_ACQUIRE))) {
        int bits = __atomic_exchange_n(&pending, 0, __ATOMIC_ACQ_REL);
        if (bits) {
            requested = bits;
            qlua_host.reset(qlua.id, after_reset);
        }
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
    __atomic_fetch_or(&pending, WANT_RETRANSLATE, __ATOMIC_RELEASE);
    return 0;
}

void qlua_reload_open(lua_State *L)
{
    lua_pushcfunction(L, reload_retranslate);
    lua_setfield(L, -2, "retranslate");
}
