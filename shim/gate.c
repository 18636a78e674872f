/* gate.c: the Lua state and its lock, the one gate through which C calls Lua (pcall + traceback +
 * error policy), script output buffering, and the fork handlers that keep both consistent.
 * Lua is single-threaded: every entry takes qlua.lock, a recursive mutex because a Lua callback
 * may make QEMU call us back on the same thread. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "internal.h"

struct qlua_state qlua;
bool qlua_some_fn_disabled;

/* Output is handed to qemu_plugin_outs in chunks this large (and at exit, errors and forks). */
#define QLUA_OUT_CHUNK (64 * 1024)

/* The lock is recursive through a per-thread depth over a plain mutex: cheaper than a recursive
 * pthread mutex on the per-event path, and a forked child can release it (see fork_child). */
static QLUA_TLS unsigned int lock_depth;

lua_State *qlua_lock(void)
{
    if (lock_depth++ == 0) {
        g_mutex_lock(&qlua.lock);
    }
    return qlua.L;
}

void qlua_unlock(void)
{
    if (--lock_depth == 0) {
        g_mutex_unlock(&qlua.lock);
        if (G_UNLIKELY(__atomic_load_n(&qlua_deferred, __ATOMIC_ACQUIRE))) {
            qlua_deferred_run(); /* QEMU calls Lua asked for, now that no qlua lock is held */
        }
    }
}

void qlua_out_write(const char *s, size_t len)
{
    if (qlua.out_redirect) {
        g_string_append_len(qlua.out_redirect, s, len);
        return;
    }
    g_string_append_len(qlua.out, s, len);
    if (qlua.out->len >= QLUA_OUT_CHUNK) {
        qlua_out_flush();
    }
}

/* qemu_plugin_outs takes a C string: text is handed over in the pieces between zero bytes
 * (which cannot be passed on), so nothing after one is lost. */
void qlua_out_flush(void)
{
    if (qlua.out && qlua.out->len > 0) {
        for (size_t at = 0; at < qlua.out->len; at += strlen(qlua.out->str + at) + 1) {
            if (qlua.out->str[at] != '\0') {
                qlua_host.outs(qlua.out->str + at);
            }
        }
        g_string_truncate(qlua.out, 0);
    }
}

/* Errors and warnings go to stderr, not the plugin log: they must be seen even without -d plugin.
 * Pending script output is flushed first so the log reads in order. */
void qlua_report(const char *fmt, ...)
{
    va_list ap;
    qlua_out_flush();
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "qlua: %s\n", msg);
    fflush(stderr);
    g_free(msg);
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

/* The error handler lives at this stack slot of the main Lua thread for the plugin's life. */
#define TRACEBACK_SLOT 1

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

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg && !has_position(msg)) {
        return 1;
    }
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* The gate, first half: lock, refuse a disabled callback, push the handler and the function.
 * The caller pushes the arguments and calls qlua_gate_call. NULL means: do not call (unlocked). */
lua_State *qlua_gate_enter(qlua_fn *fn)
{
    qlua_buffer_drain_mine(); /* this thread's traced events come first, in order */
    lua_State *L = qlua_lock();
    if (fn->disabled || qlua.finished || L == NULL) {
        qlua_unlock();
        return NULL;
    }
    lua_pushvalue(L, TRACEBACK_SLOT); /* made once: pushing a C function allocates in LuaJIT */
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
    return L;
}

/* The gate, second half: run, apply the error policy, restore the stack, unlock. */
void qlua_gate_call(qlua_fn *fn, int nargs)
{
    lua_State *L = qlua.L;
    int handler = lua_gettop(L) - nargs - 1;
    uint64_t t0 = fn->stats ? qlua_now_ns() : 0;
    int rc = lua_pcall(L, nargs, 0, handler);
    if (fn->stats) {
        qlua_profile_charge(fn->stats, qlua_now_ns() - t0);
    }
    if (rc != 0) {
        qlua_gate_error(fn);
    }
    lua_pop(L, 1);
    qlua_unlock();
}

/* The error policy, for the message on top of the stack (popped): report and end the run, or
 * (onerror=warn) report and switch the failing function off for good. */
void qlua_gate_error(qlua_fn *fn)
{
    lua_State *L = qlua.L;
    const char *msg = lua_tostring(L, -1);
    if (qlua.onerror_warn) {
        fn->disabled = true;
        qlua_some_fn_disabled = true;
        qlua_report("error in %s callback (callback disabled, onerror=warn): %s", fn->event, msg);
        lua_pop(L, 1);
        if (fn->ref != LUA_NOREF) {
            qlua_events_disable(L, fn);
        }
    } else {
        qlua_report("error in %s callback: %s", fn->event, msg);
        qlua_fail_exit();
    }
}

/* For callers that run their own pcall under the lock (queued callbacks): the error handler. */
void qlua_gate_push_handler(lua_State *L)
{
    lua_pushvalue(L, TRACEBACK_SLOT);
}

qlua_fn *qlua_fn_new(lua_State *L, int idx, const char *event)
{
    luaL_checktype(L, idx, LUA_TFUNCTION);
    qlua_fn *fn = g_new0(qlua_fn, 1);
    lua_pushvalue(L, idx);
    fn->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fn->event = event;
    fn->stats = qlua_profile_site(L, idx, event);
    return fn;
}

int qlua_gate_load(const char *path, char **error)
{
    lua_State *L = qlua.L;
    lua_pushcfunction(L, traceback);
    int handler = lua_gettop(L);
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
    if (rc != 0) {
        *error = g_strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* Metatables of the Lua-facing objects, reached by registry number rather than by name: the
 * name-based luaL_setmetatable/luaL_checkudata intern a C string on every call, and handles are
 * made and checked for every instruction a script looks at. */
int qlua_meta_new(lua_State *L, const char *name)
{
    luaL_newmetatable(L, name);
    lua_pushvalue(L, -1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void qlua_meta_set(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_setmetatable(L, -2);
}

void *qlua_meta_check(lua_State *L, int idx, int ref, const char *what)
{
    void *ud = lua_touserdata(L, idx);
    if (ud && lua_getmetatable(L, idx)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        bool same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same) {
            return ud;
        }
    }
    luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s", what, luaL_typename(L, idx)));
    return NULL;
}

const char *luaL_tolstring_compat(lua_State *L, int idx)
{
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    return lua_tostring(L, -1);
}

void qlua_push_u64(lua_State *L, uint64_t v)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, (lua_Number)v); /* exact below 2^53 */
#endif
}

uint64_t qlua_check_u64(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        /* Lua 5.4 integers are 64-bit two's complement: values from 2^63 up (high addresses)
         * reach Lua as negative integers through qlua_push_u64 and must come back unchanged */
        return (uint64_t)lua_tointeger(L, idx);
    }
#endif
    lua_Number n = luaL_checknumber(L, idx);
    luaL_argcheck(L, n >= 0 && n == (lua_Number)(uint64_t)n, idx,
                  "expected a non-negative integer");
    return (uint64_t)n;
}

/* fork: a child must not inherit half-written output (it would be printed twice) nor a lock held
 * by a thread that does not exist in the child. */
static void fork_prepare(void)
{
    if (qlua.L) {
        /* QEMU forks with every other vCPU stopped: deliver all traced events in the parent */
        qlua_buffer_drain_all();
        qlua_lock();
        qlua_out_flush();
    }
}

static void fork_parent(void)
{
    if (qlua.L) {
        qlua_unlock();
    }
}

/* The forking thread is the only thread in the child and holds the lock (as deep as before
 * fork_prepare, plus one): release the level fork_prepare took. */
static void fork_child(void)
{
    if (qlua.L) {
        qlua_unlock();
    }
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

static int open_core(lua_State *L)
{
    lua_newtable(L);
    qlua_gate_open(L);
    qlua_plugin_open(L);
    qlua_vcpu_open(L);
    qlua_buffer_open(L);
    qlua_reload_open(L);
    qlua_events_open(L);
    qlua_tb_open(L);
    qlua_insn_open(L);
    qlua_mem_open(L);
    qlua_counter_open(L);
    qlua_tally_open(L);
    return 1;
}

bool qlua_state_open(char **error)
{
    static bool atfork_done;
    promote_lua_library();
    g_mutex_init(&qlua.lock);
    qlua.out = g_string_sized_new(QLUA_OUT_CHUNK + 1024);
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        *error = g_strdup("cannot create a Lua state (out of memory)");
        return false;
    }
    lua_pushcfunction(L, traceback); /* TRACEBACK_SLOT */
    luaL_openlibs(L);
    /* package.path: our lua/ folder first, so `require "qemu"` finds the shipped module */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", qlua.root, qlua.root,
                    lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    /* the C core, for lua/qemu/init.lua only */
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_core);
    lua_setfield(L, -2, "qlua.core");
    lua_pop(L, 2);
    qlua.L = L;
    if (!atfork_done) {
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        atfork_done = true;
    }
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
