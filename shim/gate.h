/* gate.h: the ground floor. The Lua state and its lock, the one gate through which C calls Lua
 * (protected call, traceback, error policy), script output, and the hooks through which this
 * floor asks the layers above it for work. */
#ifndef QLUA_GATE_H
#define QLUA_GATE_H

#include "base.h"
#include "output.h"

/* profile=on: what one call site of Lua has cost. The gate counts; profile.c makes and reports. */
typedef struct qlua_stats {
    const char *event; /* "on_exit", "tb:on_exec", ... */
    char *where;       /* "script.lua:12": where the function was defined */
    uint64_t calls;
    uint64_t ns;
    uint64_t events; /* tracers: records delivered; queued callbacks: calls that came queued */
} qlua_stats;

/* A Lua function that C calls back, as a registry reference. */
typedef struct qlua_fn {
    int ref;
    bool disabled;     /* onerror=warn turned it off after an error, or qemu.off removed it */
    bool removed;      /* qemu.off: dropped from its event at the next flush */
    const char *event; /* "on_exit", "tb:on_exec", ... for error messages */
    qlua_stats *stats; /* profile=on: where its calls are charged */
    const char *origin; /* a C function (say, from coroutine.wrap): where it was registered */
    unsigned filter;    /* an event's own selection (on_discon: a mask of kinds); 0: all */
} qlua_fn;

struct qlua_state {
    qemu_plugin_id_t id;
    lua_State *L;
    GMutex lock; /* with a per-thread depth: see qlua_lock */
    bool onerror_warn;
    bool profile;         /* profile=on: time every entry into Lua, report at exit */
    size_t records_limit; /* records=: arena size that makes qlua flush translations; 0: none */
    bool exec_sync;       /* exec=sync: every on_exec callback runs as the code executes */
    bool watch;           /* watch=on: reload the script when its file changes */
    bool polls;    /* watch= or repl=: vCPU callbacks look for work deferred from other threads */
    bool loading;  /* the script's top level is running (inside qemu_plugin_install) */
    bool finished; /* exit handlers ran; no more Lua */
    bool in_exit_handlers; /* the on_exit handlers are running */
    char *script;          /* resolved path */
    char *root;            /* folder holding lua/ and scripts/ */
};
extern struct qlua_state qlua;

/* Work a lower layer needs done above it, registered once by plugin.c. */
struct qlua_hooks {
    /* QEMU calls Lua asked for (QLUA_DEFER_* bits), run after the outermost unlock: QEMU takes
     * its own plugin lock for them, which it may hold while waiting for ours (lock order: QEMU's,
     * then qlua's). */
    void (*deferred)(int bits);
    /* profile=on: the stats of the function at idx, called as `event` */
    qlua_stats *(*site)(lua_State *L, int idx, const char *event);
    /* after the exit handlers ran: the services' last words (profile report, REPL socket) */
    void (*finished)(void);
    /* os.exit or an interrupt: run the on_exit handlers now (they end with qlua_gate_exit_now) */
    void (*quit)(void);
    /* once, at the first translation (QEMU has installed its signal handlers by then) */
    void (*first_translation)(void);
};
extern struct qlua_hooks qlua_hooks;

enum {
    QLUA_DEFER_REGISTER = 1,    /* register QEMU callbacks for events the script asked for */
    QLUA_DEFER_RETRANSLATE = 2, /* flush all translated code (a reset) */
    QLUA_DEFER_RELOAD = 4,      /* watch=on: run the edited script (inside a reset) */
    QLUA_DEFER_UNINSTALL = 8,   /* qemu.uninstall() */
};
/* Asks for work after the outermost unlock (of this or any thread). */
void qlua_defer(int bits);
/* At the start of vCPU callbacks when qlua.polls: runs deferred work if no qlua lock is held. */
void qlua_gate_poll(void);

/* qlua_lock is recursive per thread: a Lua callback may make QEMU call qlua back. */
lua_State *qlua_lock(void);
void qlua_unlock(void);

/* The gate: enter (lock; NULL, unlocked, when the function must not run), push arguments, call
 * (protected, error policy, unlock). */
lua_State *qlua_gate_enter(qlua_fn *fn);
void qlua_gate_call(qlua_fn *fn, int nargs);
/* The gate's second half for arguments that allocate (handles): `push` pushes them inside the
 * protected call, where an error (LuaJIT runs finalizers at allocations, and a finalizer may
 * raise) is the callback's error, not a panic. Call after qlua_gate_enter, pushing nothing. */
typedef int (*qlua_pusher)(lua_State *L, void *ctx); /* returns how many it pushed */
void qlua_gate_call_with(qlua_fn *fn, qlua_pusher push, void *ctx);
/* The error policy for the message on top of the stack (popped): report and end the run, or
 * under onerror=warn report and switch fn off for good. */
void qlua_gate_error(qlua_fn *fn);
extern bool qlua_some_fn_disabled; /* set once onerror=warn has turned any function off */
/* Was the function at idx switched off by onerror=warn? (it stays off after a flush) */
bool qlua_gate_was_disabled(lua_State *L, int idx);

/* Protected calls for C that runs many calls in one hold of the lock (queued callbacks, the REPL):
 * push the traceback handler once, then call at it; the error message is left on the stack. */
int qlua_gate_push_handler(lua_State *L); /* returns its stack index */
int qlua_gate_pcall_at(lua_State *L, int nargs, int nresults, int handler);
/* From a C function that a qlua_gate_pcall_at runs: calls the function below nargs arguments;
 * an error unwinds to that pcall (one protected call for many calls: Lua 5.4's batches). */
void qlua_gate_call_inside(lua_State *L, int nargs);
/* tostring() of the value at idx, protected (a __tostring may raise): pushed, and returned. */
const char *qlua_gate_tostring(lua_State *L, int idx);

/* Runs the script's top level (require "qemu" first). 0, or non-zero with *error set. */
int qlua_gate_load(const char *path, char **error);
qlua_fn *qlua_fn_new(lua_State *L, int idx, const char *event);
/* For a C function at idx: "file:line" of the script code registering it (errors it raises
 * carry no position); NULL for Lua functions, whose definition says where they are. */
const char *qlua_gate_origin(lua_State *L, int idx);
qlua_stats *qlua_gate_site(lua_State *L, int idx, const char *event);
void qlua_gate_charge(qlua_stats *s, uint64_t ns);
uint64_t qlua_now_ns(void);

/* > 0 while this thread runs a callback on behalf of a vCPU (QEMU's "current vCPU" is set). */
extern QLUA_TLS int qlua_vcpu_context;
/* > 0 while queued callbacks are being delivered (after the fact). */
extern QLUA_TLS int qlua_queue_context;
/* The watcher and REPL threads: no vCPU; QEMU must not be asked for a reset from them. */
extern QLUA_TLS bool qlua_own_thread;
/* Starts one of qlua's own threads (qlua_own_thread set in it), with every signal blocked. */
void qlua_thread_start(const char *name, GThreadFunc fn, gpointer data);

G_NORETURN void qlua_fail_exit(void);

/* Ending the run from Lua (os.exit) or from a signal: the running Lua unwinds, the on_exit
 * handlers run (each once), output is flushed, and the process ends with `code`, or killed by
 * `sig` when non-zero. Carried out at the outermost unlock, or by qlua_gate_exit_now. */
void qlua_gate_request_exit(int code, int sig);
bool qlua_gate_exit_requested(void);
/* If an exit was asked for: the on_exit handlers (unless running or done), flush, end. */
void qlua_gate_exit_now(void);
/* Is the Lua lock held, and how many times was it taken? (for a watchdog, from any thread) */
bool qlua_gate_busy(uint64_t *taken);
/* From another thread: make the Lua code running now raise "interrupted by SIG" and end the run
 * (Lua 5.4 and interpreted LuaJIT code see it at once; compiled LuaJIT loops do not). */
void qlua_gate_interrupt(int sig);

/* Makes the Lua state; `open_core` builds the table scripts reach as require "qlua.core". */
bool qlua_state_open(lua_CFunction open_core, char **error);
void qlua_state_close(void);
/* core.write(s), core.flush() */
void qlua_gate_open(lua_State *L);

#endif
