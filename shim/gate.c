/* gate.c: the Lua state and its lock, the one gate through which C calls Lua (every lua_pcall of
 * the plugin is here, with its one traceback handler), the error policy, script output, and the
 * deferral of QEMU work to after the outermost unlock.
 * Owns: qlua (the plugin's state), the lock, output. Must not touch: any file above it; work for
 * them goes through qlua_hooks, which plugin.c fills. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h>

#include "gate.h"
#include "host.h"

struct qlua_state qlua;
struct qlua_hooks qlua_hooks;
bool qlua_some_fn_disabled;
QLUA_TLS int qlua_vcpu_context;
QLUA_TLS int qlua_queue_context;
QLUA_TLS bool qlua_own_thread;

/* The lock is recursive through a per-thread depth over a plain mutex: cheaper than a recursive
 * pthread mutex on the per-event path, and a forked child can release it. */
static QLUA_TLS unsigned int lock_depth;
static int lock_held;      /* 1 while some thread holds qlua.lock (read by the watchdog) */
static uint64_t lock_taken; /* how many times it was taken */
static int deferred; /* QLUA_DEFER_* bits asked for and not yet carried out */
static int disabled_fns_ref = LUA_NOREF; /* functions onerror=warn turned off, for good */

void qlua_defer(int bits)
{
    __atomic_fetch_or(&deferred, bits, __ATOMIC_ACQ_REL);
}

static void run_deferred(void)
{
    int bits = __atomic_exchange_n(&deferred, 0, __ATOMIC_ACQ_REL);
    if (bits && qlua_hooks.deferred) {
        qlua_hooks.deferred(bits);
    }
}

void qlua_gate_poll(void)
{
    if (G_UNLIKELY(__atomic_load_n(&deferred, __ATOMIC_ACQUIRE)) && lock_depth == 0) {
        run_deferred();
    }
}

lua_State *qlua_lock(void)
{
    if (lock_depth++ == 0) {
        g_mutex_lock(&qlua.lock);
        __atomic_store_n(&lock_held, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&lock_taken, lock_taken + 1, __ATOMIC_RELAXED);
    }
    return qlua.L;
}

bool qlua_gate_busy(uint64_t *taken)
{
    *taken = __atomic_load_n(&lock_taken, __ATOMIC_RELAXED);
    return __atomic_load_n(&lock_held, __ATOMIC_RELAXED);
}

void qlua_unlock(void)
{
    if (--lock_depth == 0) {
        __atomic_store_n(&lock_held, 0, __ATOMIC_RELAXED);
        g_mutex_unlock(&qlua.lock);
        if (G_UNLIKELY(__atomic_load_n(&deferred, __ATOMIC_ACQUIRE))) {
            run_deferred();
        }
        if (G_UNLIKELY(qlua_gate_exit_requested()) && !qlua.in_exit_handlers) {
            qlua_gate_exit_now();
        }
    }
}

typedef struct {
    GThreadFunc fn;
    gpointer data;
} thread_start;

static gpointer own_thread(gpointer p)
{
    thread_start start = *(thread_start *)p;
    g_free(p);
    qlua_own_thread = true;
    return start.fn(start.data);
}

void qlua_thread_start(const char *name, GThreadFunc fn, gpointer data)
{
    thread_start *start = g_new(thread_start, 1);
    *start = (thread_start){fn, data};
    qlua_blocked_thread(name, own_thread, start);
}

uint64_t qlua_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Fail-fast end of the run. _exit, not exit: other vCPU threads may still be running guest code,
 * and in user mode QEMU itself leaves with _exit after its atexit callbacks. */
G_NORETURN void qlua_fail_exit(void)
{
    qlua.finished = true;
    qlua_out_flush();
    fflush(NULL);
    _exit(1);
}

/* ---- ending the run from Lua ---- */

static int exit_sentinel; /* its address is the error object that unwinds Lua for an exit */
static int exit_asked;    /* set once: the first request decides code and signal */
static int exit_code;
static int exit_signal;

void qlua_gate_request_exit(int code, int sig)
{
    int no = 0;
    if (__atomic_compare_exchange_n(&exit_asked, &no, 1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        exit_code = code;
        exit_signal = sig;
    }
}

bool qlua_gate_exit_requested(void)
{
    return __atomic_load_n(&exit_asked, __ATOMIC_ACQUIRE);
}

static bool is_exit(lua_State *L, int idx)
{
    return lua_touserdata(L, idx) == &exit_sentinel;
}

void qlua_gate_exit_now(void)
{
    /* Once, by the first thread to get here. The handlers' own unlocks come back here: the outer
     * call goes on. Another thread's outermost unlock (a vCPU that translated while a REPL chunk
     * asked for the exit) returns to QEMU too: two threads in exit() at once is undefined. */
    static int ending;
    if (!qlua_gate_exit_requested() || __atomic_exchange_n(&ending, 1, __ATOMIC_ACQ_REL)) {
        return;
    }
    if (!qlua.finished && !qlua.in_exit_handlers && qlua_hooks.quit) {
        qlua_hooks.quit(); /* the handlers, then back here with qlua.finished set */
    }
    qlua.finished = true;
    qlua_out_flush();
    fflush(NULL);
    if (exit_signal) { /* end as the signal would have ended QEMU, for the shell to see it */
        signal(exit_signal, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, exit_signal);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        kill(getpid(), exit_signal);
    }
    /* exit, not _exit, as C's os.exit and QEMU's own stoptrigger plugin do: the atexit callbacks
     * of the other plugins run too (qlua's finds itself finished) */
    exit(exit_code);
}

/* os.exit([code]): true or none is success, false failure, a number that status. The running
 * callback unwinds (a pcall in the script cannot keep the run going: the exit is still carried
 * out when the callback returns), then qlua_gate_exit_now at the outermost unlock. */
static int gate_os_exit(lua_State *L)
{
    int code = EXIT_SUCCESS;
    if (lua_type(L, 1) == LUA_TBOOLEAN) {
        code = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
    } else if (!lua_isnoneornil(L, 1)) {
        code = (int)luaL_checkinteger(L, 1);
    }
    qlua_gate_request_exit(code, 0);
    lua_pushlightuserdata(L, &exit_sentinel);
    return lua_error(L);
}

static int interrupt_signal;

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    char where[256] = "";
    lua_Debug here;
    /* in a hook, level 0 is the function that was running */
    if (lua_getstack(L, 0, &here) && lua_getinfo(L, "Sl", &here) && here.currentline > 0) {
        g_snprintf(where, sizeof where, "%s:%d", here.short_src, here.currentline);
    }
    int sig = interrupt_signal;
    qlua_report("interrupted by %s%s%s: the run ends (on_exit handlers run, then the signal's "
                "status)",
                sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal",
                *where ? " at " : "", where);
    qlua_gate_request_exit(128 + sig, sig);
    lua_pushlightuserdata(L, &exit_sentinel);
    lua_error(L);
}

void qlua_gate_interrupt(int sig)
{
    interrupt_signal = sig;
    if (qlua.L) {
        lua_sethook(qlua.L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    }
}

/* The error handler lives at this stack slot of the main Lua thread for the plugin's life. */
#define TRACEBACK_SLOT 1
/* ... and the trampoline of qlua_gate_call_with at this one. */
#define TRAMPOLINE_SLOT 2

/* Does msg start with a source position ("file.lua:12: ...")? Messages raised without one, with
 * error(msg, 0) (argument checks in qemu.script and the scripts), are meant for the user as
 * they are: a traceback would only bury them. */
static bool has_position(const char *msg)
{
    const char *colon = strchr(msg, ':');
    if (colon == NULL || !g_ascii_isdigit(colon[1])) {
        return false;
    }
    const char *p = colon + 1;
    while (g_ascii_isdigit(*p)) {
        p++;
    }
    return *p == ':';
}

static int tostring_protected(lua_State *L);

/* The one traceback handler. An error object with a __tostring is described through a protected
 * call: its __tostring may raise again, inside the handler. */
static int traceback(lua_State *L)
{
    if (is_exit(L, 1)) {
        return 1; /* not an error: os.exit unwinding */
    }
    const char *msg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    if (msg && !has_position(msg)) {
        return 1;
    }
    if (msg == NULL && luaL_getmetafield(L, 1, "__tostring")) {
        lua_pop(L, 1);
        lua_pushcfunction(L, tostring_protected);
        lua_pushvalue(L, 1);
        if (lua_pcall(L, 1, 1, 0) == 0) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value whose __tostring failed: %s)",
                                  luaL_typename(L, 1), lua_tostring(L, -1));
        }
    }
    if (msg == NULL) {
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int qlua_gate_push_handler(lua_State *L)
{
    lua_pushvalue(L, TRACEBACK_SLOT); /* made once: pushing a C function allocates in LuaJIT */
    return lua_gettop(L);
}

int qlua_gate_pcall_at(lua_State *L, int nargs, int nresults, int handler)
{
    return lua_pcall(L, nargs, nresults, handler);
}

void qlua_gate_call_inside(lua_State *L, int nargs)
{
    lua_call(L, nargs, 0);
}

/* tostring(v) in Lua 5.4 is luaL_tolstring; LuaJIT has only the global. Run protected. */
static int tostring_protected(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
    luaL_tolstring(L, 1, NULL);
#else
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1); /* inside tostring_protected's own pcall */
    if (lua_type(L, -1) != LUA_TSTRING) {
        return luaL_error(L, "'__tostring' must return a string");
    }
#endif
    return 1;
}

const char *qlua_gate_tostring(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    int handler = qlua_gate_push_handler(L);
    lua_pushcfunction(L, tostring_protected);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, handler) != 0) {
        const char *why = lua_tostring(L, -1);
        lua_pushfstring(L, "(%s value whose __tostring failed: %s)", luaL_typename(L, idx),
                        why ? why : "?");
        lua_remove(L, -2);
    }
    lua_remove(L, handler);
    return lua_tostring(L, -1);
}

/* The gate, first half: lock, refuse a disabled callback, push the handler and the function.
 * The caller pushes the arguments and calls qlua_gate_call. NULL means: do not call (unlocked). */
lua_State *qlua_gate_enter(qlua_fn *fn)
{
    lua_State *L = qlua_lock();
    if (fn->disabled || qlua.finished || L == NULL) {
        qlua_unlock();
        return NULL;
    }
    qlua_gate_push_handler(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
    return L;
}

void qlua_gate_charge(qlua_stats *s, uint64_t ns)
{
    s->calls++;
    s->ns += ns;
}

/* Runs inside the protected call: (fn, pusher, ctx) -> fn(pusher's values). */
static int trampoline(lua_State *L)
{
    qlua_pusher push = (qlua_pusher)(uintptr_t)lua_touserdata(L, 2);
    void *ctx = lua_touserdata(L, 3);
    lua_settop(L, 1);
    lua_call(L, push(L, ctx), 0); /* protected: by the pcall that runs the trampoline */
    return 0;
}

static void call(qlua_fn *fn, int nargs, int handler);

/* The gate, second half: run, apply the error policy, restore the stack, unlock. */
void qlua_gate_call(qlua_fn *fn, int nargs)
{
    call(fn, nargs, lua_gettop(qlua.L) - nargs - 1);
}

void qlua_gate_call_with(qlua_fn *fn, qlua_pusher push, void *ctx)
{
    lua_State *L = qlua.L;
    int handler = lua_gettop(L) - 1;
    lua_pushvalue(L, TRAMPOLINE_SLOT); /* made once, like the handler: no allocation here */
    lua_insert(L, -2);
    lua_pushlightuserdata(L, (void *)(uintptr_t)push);
    lua_pushlightuserdata(L, ctx);
    call(fn, 3, handler);
}

static void call(qlua_fn *fn, int nargs, int handler)
{
    lua_State *L = qlua.L;
    uint64_t t0 = fn->stats ? qlua_now_ns() : 0;
    int rc = lua_pcall(L, nargs, 0, handler);
    if (fn->stats) {
        qlua_gate_charge(fn->stats, qlua_now_ns() - t0);
    }
    if (rc != 0) {
        qlua_gate_error(fn);
    }
    lua_pop(L, 1);
    qlua_unlock();
}

/* A message with no position (raised by a C function, or with error(msg, 0)) gets the place the
 * user can look at: where the failing function was registered or defined. (C strings: nothing
 * here may raise, outside any protected call.) */
static char *with_place(lua_State *L, qlua_fn *fn, const char *msg)
{
    if (msg == NULL || has_position(msg) || strstr(msg, "\nstack traceback:")) {
        return NULL;
    }
    if (fn->origin) {
        return g_strdup_printf("%s (the callback was registered at %s)", msg, fn->origin);
    }
    lua_Debug ar;
    if (fn->ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
        if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0) {
            return g_strdup_printf("%s (in the function defined at %s:%d)", msg, ar.short_src,
                                   ar.linedefined);
        }
    }
    return NULL;
}

void qlua_gate_error(qlua_fn *fn)
{
    lua_State *L = qlua.L;
    if (is_exit(L, -1)) { /* os.exit: carried out at the outermost unlock */
        lua_pop(L, 1);
        return;
    }
    const char *raw = lua_tostring(L, -1);
    char *placed = with_place(L, fn, raw);
    const char *msg = placed ? placed : raw;
    if (qlua.onerror_warn) {
        fn->disabled = true;
        qlua_some_fn_disabled = true;
        qlua_report("error in %s callback (callback disabled, onerror=warn): %s", fn->event, msg);
        g_free(placed);
        lua_pop(L, 1);
        if (fn->ref != LUA_NOREF) { /* remembered, so it stays off after the next flush */
            lua_rawgeti(L, LUA_REGISTRYINDEX, disabled_fns_ref);
            lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
            lua_pop(L, 1);
        }
    } else {
        qlua_report("error in %s callback: %s", fn->event, msg);
        qlua_fail_exit();
    }
}

const char *qlua_gate_origin(lua_State *L, int idx)
{
    if (!lua_iscfunction(L, idx)) {
        return NULL;
    }
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 &&
            !strstr(ar.source, "/lua/qemu/")) {
            char *where = g_strdup_printf("%s:%d", ar.short_src, ar.currentline);
            const char *interned = g_intern_string(where); /* few: one per registering line */
            g_free(where);
            return interned;
        }
    }
    return NULL;
}

bool qlua_gate_was_disabled(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, disabled_fns_ref);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    bool off = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return off;
}

qlua_stats *qlua_gate_site(lua_State *L, int idx, const char *event)
{
    return qlua_hooks.site ? qlua_hooks.site(L, idx, event) : NULL;
}

qlua_fn *qlua_fn_new(lua_State *L, int idx, const char *event)
{
    luaL_checktype(L, idx, LUA_TFUNCTION);
    qlua_fn *fn = g_new0(qlua_fn, 1);
    lua_pushvalue(L, idx);
    fn->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fn->event = event;
    fn->stats = qlua_gate_site(L, idx, event);
    fn->origin = qlua_gate_origin(L, idx);
    return fn;
}

int qlua_gate_load(const char *path, char **error)
{
    lua_State *L = qlua.L;
    int handler = qlua_gate_push_handler(L);
    /* require "qemu" first so the global exists and the script's chunk sees it */
    lua_getglobal(L, "require");
    lua_pushstring(L, "qemu");
    int rc = lua_pcall(L, 1, 1, handler);
    if (rc == 0) {
        lua_setglobal(L, "qemu");
        rc = luaL_loadfile(L, path);
        if (rc == 0) {
            rc = lua_pcall(L, 0, 0, handler);
        }
    }
    if (rc != 0 && is_exit(L, -1)) { /* os.exit at the top level */
        lua_pop(L, 2);
        qlua.loading = false;
        qlua_gate_exit_now();
    }
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        *error = g_strdup(msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* QEMU opens plugins RTLD_LOCAL, which hides lua_* from Lua C modules that `require` loads
 * (lfs.so fails with "undefined symbol: lua_gettop"). Promote the Lua library to global scope. */
static void promote_lua_library(void)
{
    Dl_info info;
    if (dladdr((void *)lua_gettop, &info) && info.dli_fname) {
        dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    }
}

/* core.write(s): buffered script output; core.flush(): hand it to QEMU now. */
static int gate_write(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    qlua_out_write(s, len);
    return 0;
}

static int gate_flush(lua_State *L)
{
    (void)L;
    qlua_out_flush();
    return 0;
}

void qlua_gate_open(lua_State *L)
{
    lua_pushcfunction(L, gate_write);
    lua_setfield(L, -2, "write");
    lua_pushcfunction(L, gate_flush);
    lua_setfield(L, -2, "flush");
}

bool qlua_state_open(lua_CFunction open_core, char **error)
{
    promote_lua_library();
    g_mutex_init(&qlua.lock);
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        *error = g_strdup("cannot create a Lua state (out of memory)");
        return false;
    }
    lua_pushcfunction(L, traceback);  /* TRACEBACK_SLOT */
    lua_pushcfunction(L, trampoline); /* TRAMPOLINE_SLOT */
    luaL_openlibs(L);
    lua_getglobal(L, "os");
    lua_pushcfunction(L, gate_os_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_newtable(L); /* weak keys: a disabled function may still be collected */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    disabled_fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* package.path: our lua/ folder first, so `require "qemu"` finds the shipped module; then
     * the script's own folder (its helper modules, Lua or C), wherever QEMU was started from */
    char *script_dir = g_path_get_dirname(qlua.script ? qlua.script : ".");
    char *dir = g_canonicalize_filename(script_dir, NULL); /* the guest may chdir */
    g_free(script_dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua;%s/?/init.lua;%s", qlua.root,
                    qlua.root, dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/?.so;%s", dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 1);
    g_free(dir);
    /* the C core, for lua/qemu/init.lua only */
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "qlua.core");
    lua_pop(L, 2);
    qlua.L = L;
    return true;
}

void qlua_state_close(void)
{
    lua_State *L = qlua_lock();
    qlua_out_flush();
    qlua.finished = true;
    if (L) {
        lua_close(L);
        qlua.L = NULL;
    }
    qlua_unlock();
}
