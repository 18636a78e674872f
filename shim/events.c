/* events.c: QEMU's global events (translation, vCPU life cycle, syscalls, discontinuities, flush,
 * exit) dispatched
 * to the script's handlers, in the order they were added; which of them QEMU is asked to report.
 * Owns: the handler lists and the registration of global callbacks. Must not touch: execution
 * callbacks (exec.c) or what a reload does (reload.c swaps handler sets through this header). */
#include <string.h>

#include "events.h"
#include "arena.h"
#include "counter.h"
#include "exec.h"
#include "gate.h"
#include "handle.h"
#include "host.h"
#include "quiesce.h"
#include "tally.h"
#include "tb.h"
#include "value.h"
#include "vcpu.h"

enum event {
    EV_TRANSLATE,
    EV_EXIT,
    EV_VCPU_INIT,
    EV_VCPU_EXIT,
    EV_VCPU_IDLE,
    EV_VCPU_RESUME,
    EV_SYSCALL,
    EV_SYSCALL_RET,
    EV_FLUSH,
    EV_DISCON,
    EV_COUNT
};

static const char *const event_names[] = {"translate", "exit",    "vcpu_init",   "vcpu_exit",
                                          "vcpu_idle", "vcpu_resume", "syscall", "syscall_ret",
                                          "flush",     "discon",      NULL};
static const char *const event_labels[] = {"on_translate", "on_exit",        "on_vcpu_init",
                                           "on_vcpu_exit", "on_vcpu_idle",   "on_vcpu_resume",
                                           "on_syscall",   "on_syscall_ret", "on_flush",
                                           "on_discon"};

static GPtrArray *handlers[EV_COUNT];
static bool registered[EV_COUNT];
static bool want_register[EV_COUNT]; /* asked for from Lua; done after the outermost unlock */

/* Calls every handler of `ev`; `push` pushes the arguments (n of them). Lock held throughout so
 * handlers of one event never interleave with another thread's. */
#define DISPATCH(ev, nargs, push)                                                                  \
    do {                                                                                           \
        if (handlers[ev]->len == 0) { /* events qlua registers for itself: no lock, no Lua */    \
            break;                                                                                 \
        }                                                                                          \
        qlua_lock();                                                                               \
        for (guint i_ = 0; i_ < handlers[ev]->len; i_++) {                                         \
            qlua_fn *fn_ = g_ptr_array_index(handlers[ev], i_);                                    \
            lua_State *L = qlua_exec_enter(fn_);                                                   \
            if (L) {                                                                               \
                push;                                                                              \
                qlua_gate_call(fn_, nargs);                                                        \
            }                                                                                      \
        }                                                                                          \
        qlua_unlock();                                                                             \
    } while (0)

static int push_tb(lua_State *L, void *tb)
{
    qlua_tb_push(L, tb);
    return 1;
}

/* The first translation has been seen (QEMU is set up: the hook below has run). */
static bool translated_once;

/* Whether QEMU must keep reporting translations: for the script's handlers, count_every rules,
 * watch=/repl= polling, or the first translation's hook. Being registered is not free: QEMU then
 * prepares every block it translates for instrumentation even when qlua adds none (QEMU 7.2,
 * python3 -S -c pass, 33,000 blocks: about 70 ms of a 250 ms run, which QEMU's own libsyscall
 * does not pay). So a script that needs none (a syscall tracer, say) has it dropped after the
 * first translation, through a reset; core.want("translate") or on_translate bring it back. */
static bool translation_wanted(void)
{
    return !translated_once || handlers[EV_TRANSLATE]->len > 0 || qlua_counter_has_rules() ||
           qlua.polls;
}

static void tb_trans_cb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    if (G_UNLIKELY(!translated_once)) {
        translated_once = true;
        if (qlua_hooks.first_translation) {
            qlua_hooks.first_translation();
        }
    }
    if (qlua.polls) {
        qlua_gate_poll();
    }
    qlua_lock();
    qlua_counter_apply_rules(tb);
    qlua_vcpu_translated(tb);
    qlua_arena_translated();
    static uint64_t translation;
    qlua_translate_gen = ++translation;
    qlua_vcpu_context++;
    for (guint i = 0; i < handlers[EV_TRANSLATE]->len; i++) { /* under the lock taken above */
        qlua_fn *fn = g_ptr_array_index(handlers[EV_TRANSLATE], i);
        if (qlua_exec_enter(fn)) {
            qlua_gate_call_with(fn, push_tb, tb); /* the handle is made inside the pcall */
        }
    }
    qlua_vcpu_context--;
    qlua_counter_emit_pending();
    qlua_translate_gen = 0;
    if (G_UNLIKELY(!translation_wanted())) {
        qlua_defer(QLUA_DEFER_RETRANSLATE); /* its reset registers all but this callback again */
    }
    qlua_unlock();
}

static void vcpu_init_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    qlua_lock();
    qlua_vcpu_started();
    bool retranslate = qlua_counter_vcpu_init(vcpu);
    qlua_tally_vcpu_init(vcpu);
    qlua_unlock();
    if (retranslate) {
        /* Code translated with shared inline adds must go: a reset flushes every block and
         * drops our callbacks, which are registered again before any vCPU runs. */
        qlua_defer(QLUA_DEFER_RETRANSLATE);
        qlua_gate_poll();
    }
    DISPATCH(EV_VCPU_INIT, 1, lua_pushinteger(L, vcpu));
}

static void vcpu_exit_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    qlua_exec_drain_mine();
    DISPATCH(EV_VCPU_EXIT, 1, lua_pushinteger(L, vcpu));
    qlua_lock();
    qlua_out_flush();
    qlua_unlock();
    qlua_exec_release_mine(); /* the thread ends: its buffers go (guests may make threads without end) */
    qlua_quiesce_release_mine();
}

/* Per vCPU, whether the last transition reported was to idle. QEMU reports each vCPU's idle and
 * resume in pairs from the vCPU's own thread, but not while our callbacks are unregistered, and a
 * reset of ours (dropping translations, hot reload, qemu.retranslate()) unregisters them while
 * waking every halted vCPU: QEMU updates each vCPU's event mask by queueing work on it, which
 * kicks it out of its halt, so its resume (and the idle when it halts again) can come in the
 * window before we register again. A transition missed that way is delivered just before the
 * next one, so handlers see idle, resume, idle, ... for each vCPU, as QEMU promises. */
static bool *vcpu_idle;
static unsigned int vcpu_idle_len;

static void vcpu_idleness(unsigned int vcpu, bool idle)
{
    if (qlua.polls) {
        qlua_gate_poll();
    }
    qlua_lock(); /* also guards vcpu_idle: vCPU threads report concurrently */
    if (vcpu >= vcpu_idle_len) {
        unsigned int len = MAX(vcpu + 1, 2 * vcpu_idle_len);
        vcpu_idle = g_renew(bool, vcpu_idle, len);
        memset(vcpu_idle + vcpu_idle_len, 0, (len - vcpu_idle_len) * sizeof *vcpu_idle);
        vcpu_idle_len = len; /* a vCPU starts running: its first report is an idle */
    }
    if (vcpu_idle[vcpu] == idle) { /* the opposite transition came while we were unregistered */
        DISPATCH(idle ? EV_VCPU_RESUME : EV_VCPU_IDLE, 1, lua_pushinteger(L, vcpu));
    }
    vcpu_idle[vcpu] = idle;
    DISPATCH(idle ? EV_VCPU_IDLE : EV_VCPU_RESUME, 1, lua_pushinteger(L, vcpu));
    qlua_unlock();
}

static void vcpu_idle_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    vcpu_idleness(vcpu, true);
}

static void vcpu_resume_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    vcpu_idleness(vcpu, false);
}

static void syscall_cb(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id;
    qlua_quiesce_entered();
    if (qlua.polls) {
        qlua_gate_poll();
    }
    if (qlua_host_exec_syscall(num)) {
        /* the guest may be replacing QEMU with another program: nothing printed may stay behind */
        qlua_exec_drain_mine();
        static bool said;
        if (!said) {
            said = true;
            qlua_report("the guest calls execve: if it succeeds, the new program runs without "
                        "qlua (QEMU's process becomes it; on_exit handlers do not run); see "
                        "docs/promises.md");
        }
        qlua_out_flush();
    }
    qlua_tally_syscall(vcpu, num); /* before the handlers: they see their thread's adds */
    const uint64_t a[8] = {a1, a2, a3, a4, a5, a6, a7, a8};
    qlua_vcpu_context++;
    DISPATCH(EV_SYSCALL, 10, {
        lua_pushinteger(L, vcpu);
        lua_pushinteger(L, (lua_Integer)num);
        for (int k = 0; k < 8; k++) {
            lua_pushinteger(L, (lua_Integer)(int64_t)a[k]);
        }
    });
    qlua_vcpu_context--;
    if (!__atomic_load_n(&registered[EV_SYSCALL_RET], __ATOMIC_RELAXED)) {
        qlua_quiesce_done(); /* QEMU will not hand us the return: its records are behind us */
    }
}

static void syscall_ret_cb(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, int64_t ret)
{
    (void)id;
    qlua_quiesce_done();
    qlua_tally_syscall_ret(vcpu, num, ret);
    qlua_vcpu_context++;
    DISPATCH(EV_SYSCALL_RET, 3, {
        lua_pushinteger(L, vcpu);
        lua_pushinteger(L, (lua_Integer)num);
        lua_pushinteger(L, (lua_Integer)ret);
    });
    qlua_vcpu_context--;
}

static const char *discon_kind(enum qemu_plugin_discon_type type)
{
    switch (type) {
    case QEMU_PLUGIN_DISCON_INTERRUPT: return "interrupt";
    case QEMU_PLUGIN_DISCON_EXCEPTION: return "exception";
    case QEMU_PLUGIN_DISCON_HOSTCALL: return "hostcall";
    default: return "unknown";
    }
}

/* Registered once for every kind; each handler's filter picks its own. Synchronous: the vCPU is
 * current, so handlers may read and write its registers and memory. */
static void discon_cb(qemu_plugin_id_t id, unsigned int vcpu, enum qemu_plugin_discon_type type,
                      uint64_t from_pc, uint64_t to_pc)
{
    (void)id;
    if (handlers[EV_DISCON]->len == 0) {
        return;
    }
    qlua_lock();
    qlua_vcpu_context++;
    for (guint i = 0; i < handlers[EV_DISCON]->len; i++) {
        qlua_fn *fn = g_ptr_array_index(handlers[EV_DISCON], i);
        if (fn->filter && !(fn->filter & (unsigned)type)) {
            continue;
        }
        lua_State *L = qlua_exec_enter(fn);
        if (L) {
            lua_pushinteger(L, vcpu);
            lua_pushstring(L, discon_kind(type));
            qlua_push_u64(L, from_pc);
            qlua_push_u64(L, to_pc);
            qlua_gate_call(fn, 4);
        }
    }
    qlua_vcpu_context--;
    qlua_unlock();
}

static void free_fn(lua_State *L, qlua_fn *fn)
{
    luaL_unref(L, LUA_REGISTRYINDEX, fn->ref);
    g_free(fn);
}

/* Drops handlers qemu.off removed; runs inside a flush, when no handler is running. */
static void compact_handlers(lua_State *L)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        for (guint i = handlers[ev]->len; i-- > 0;) {
            qlua_fn *fn = g_ptr_array_index(handlers[ev], i);
            if (fn->removed) {
                g_ptr_array_remove_index(handlers[ev], i);
                free_fn(L, fn);
            }
        }
    }
}

static void flush_cb(qemu_plugin_id_t id)
{
    (void)id;
    qlua_quiesce_wait(); /* a reset we asked for: before QEMU frees its records (quiesce.c) */
    /* queued callbacks name their functions and data by references the reclaim frees: deliver
     * them first, in one hold of the lock, so a thread outside translated code (exiting, in a
     * syscall callback) cannot run old records after the reclaim */
    lua_State *L = qlua_lock();
    qlua_exec_drain_all();
    if (L) {
        qlua_arena_reclaim(L);
        qlua_exec_reclaim(L);
        compact_handlers(L);
    }
    qlua_unlock();
    DISPATCH(EV_FLUSH, 0, (void)L);
}

void qlua_events_exit(void)
{
    if (!qlua.finished) {
        qlua_exec_drain_all();
    }
    qlua_lock();
    if (!qlua.finished && !qlua.in_exit_handlers) {
        qlua.in_exit_handlers = true; /* an os.exit in a handler lets the others run first */
        DISPATCH(EV_EXIT, 0, (void)L);
        qlua_out_flush();
        if (qlua_hooks.finished) {
            qlua_hooks.finished();
        }
        qlua.finished = true;
        qlua.in_exit_handlers = false;
    }
    qlua_unlock();
    qlua_gate_exit_now(); /* an os.exit asked for in them: its status, not QEMU's */
}

static void atexit_cb(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    qlua_events_exit();
}

void qlua_events_uninstalled(qemu_plugin_id_t id)
{
    (void)id;
    qlua_events_exit();
    qlua_state_close();
    qlua_counter_free_all();
}

static void register_event(enum event ev)
{
    qemu_plugin_id_t id = qlua.id;
    registered[ev] = true;
    switch (ev) {
    case EV_TRANSLATE: qlua_host.register_vcpu_tb_trans_cb(id, tb_trans_cb); break;
    case EV_EXIT: qlua_host.register_atexit_cb(id, atexit_cb, NULL); break;
    case EV_VCPU_INIT: qlua_host.register_vcpu_init_cb(id, vcpu_init_cb); break;
    case EV_VCPU_EXIT: qlua_host.register_vcpu_exit_cb(id, vcpu_exit_cb); break;
    case EV_VCPU_IDLE: qlua_host.register_vcpu_idle_cb(id, vcpu_idle_cb); break;
    case EV_VCPU_RESUME: qlua_host.register_vcpu_resume_cb(id, vcpu_resume_cb); break;
    case EV_SYSCALL: qlua_host.register_vcpu_syscall_cb(id, syscall_cb); break;
    case EV_SYSCALL_RET: qlua_host.register_vcpu_syscall_ret_cb(id, syscall_ret_cb); break;
    case EV_FLUSH: qlua_host.register_flush_cb(id, flush_cb); break;
    case EV_DISCON:
        qlua_host.register_vcpu_discon_cb(id, QEMU_PLUGIN_DISCON_ALL, discon_cb);
        break;
    case EV_COUNT: break;
    }
}

/* exit, vCPU init/exit and flush are always needed by qlua itself (report, counter strategy,
 * output flushing, arena), translation while translation_wanted(); the others only once the
 * script asks. */
static void register_all(void)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        registered[ev] = false; /* a reset dropped them all */
    }
    for (int ev = 0; ev < EV_COUNT; ev++) {
        /* watch= and repl= poll for pending work from idle and syscall callbacks too */
        bool polls = qlua.polls && (ev == EV_VCPU_IDLE || ev == EV_VCPU_RESUME);
        /* user mode: syscalls, to flush output before an execve replaces the process (and for
         * watch= and repl= to poll) */
        bool syscalls = ev == EV_SYSCALL && !qlua_host.system;
        bool syscall_rets = ev == EV_SYSCALL_RET && qlua_tally_syscall_rets_wanted();
        bool translation = ev == EV_TRANSLATE && translation_wanted();
        /* idle and resume together: each keeps the other's pairing (vcpu_idleness) */
        bool idleness = (ev == EV_VCPU_IDLE || ev == EV_VCPU_RESUME) &&
                        handlers[EV_VCPU_IDLE]->len + handlers[EV_VCPU_RESUME]->len > 0;
        if (ev == EV_EXIT || ev == EV_VCPU_INIT || ev == EV_VCPU_EXIT || ev == EV_FLUSH ||
            translation || handlers[ev]->len > 0 || polls || syscalls || syscall_rets || idleness ||
            want_register[ev]) {
            want_register[ev] = false;
            register_event((enum event)ev);
        }
    }
}

void qlua_events_install(void)
{
    register_all();
}

void qlua_events_reregister(void)
{
    register_all();
}

void qlua_events_register_wanted(void)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        if (want_register[ev]) {
            want_register[ev] = false;
            if (!registered[ev]) {
                register_event((enum event)ev);
            }
        }
    }
}

struct qlua_handler_set {
    GPtrArray *handlers[EV_COUNT];
    void *rules;    /* the count_every rules travel with the handlers */
    void *syscalls; /* and the syscall tallies */
};

qlua_handler_set *qlua_events_take_handlers(void)
{
    qlua_handler_set *taken = g_new(qlua_handler_set, 1);
    for (int ev = 0; ev < EV_COUNT; ev++) {
        taken->handlers[ev] = handlers[ev];
        handlers[ev] = g_ptr_array_new();
    }
    taken->rules = qlua_counter_take_rules();
    taken->syscalls = qlua_tally_take_syscalls();
    return taken;
}

void qlua_events_put_handlers(qlua_handler_set *given)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        g_ptr_array_free(handlers[ev], TRUE);
        handlers[ev] = given->handlers[ev];
    }
    qlua_counter_put_rules(given->rules);
    qlua_tally_put_syscalls(given->syscalls);
    g_free(given);
}

void qlua_events_drop_handlers(qlua_handler_set *dropped)
{
    qlua_counter_drop_rules(dropped->rules);
    qlua_tally_drop_syscalls(dropped->syscalls);
    for (int ev = 0; ev < EV_COUNT; ev++) {
        for (guint i = 0; i < dropped->handlers[ev]->len; i++) {
            free_fn(qlua.L, g_ptr_array_index(dropped->handlers[ev], i));
        }
        g_ptr_array_free(dropped->handlers[ev], TRUE);
    }
    g_free(dropped);
}

/* Lua now needs QEMU to call qlua for `ev`: register it, at once while the script loads, or
 * after the outermost unlock. */
static void need_event(enum event ev)
{
    if (registered[ev]) {
        return;
    }
    if (qlua.loading) {
        register_event(ev); /* inside install: no lock held, no vCPU yet */
    } else {
        /* QEMU registers under its plugin lock, which it may hold while waiting for ours */
        want_register[ev] = true;
        qlua_defer(QLUA_DEFER_REGISTER);
    }
}

static enum event check_event(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TSTRING);
    return (enum event)luaL_checkoption(L, idx, NULL, event_names);
}

/* core.on(event, fn [, filter]): add a handler (lua/qemu has checked the mode and the host for
 * syscall and discontinuity events, and made the filter: on_discon's mask of kinds). */
static int events_on(lua_State *L)
{
    enum event ev = check_event(L, 1);
    unsigned filter = (unsigned)luaL_optinteger(L, 3, 0);
    qlua_fn *fn = qlua_fn_new(L, 2, event_labels[ev]);
    fn->filter = filter;
    g_ptr_array_add(handlers[ev], fn);
    need_event(ev);
    if (ev == EV_VCPU_IDLE || ev == EV_VCPU_RESUME) {
        need_event(ev == EV_VCPU_IDLE ? EV_VCPU_RESUME : EV_VCPU_IDLE); /* see vcpu_idleness */
    }
    return 0;
}

/* core.want(event): have QEMU report `event` though no handler is added (count_every rules). */
static int events_want(lua_State *L)
{
    need_event(check_event(L, 1));
    return 0;
}

/* core.off(event, fn): remove a handler added with core.on; false if it was not there. */
static int events_off(lua_State *L)
{
    enum event ev = check_event(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    for (guint i = 0; i < handlers[ev]->len; i++) {
        qlua_fn *fn = g_ptr_array_index(handlers[ev], i);
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
        bool same = lua_rawequal(L, -1, 2);
        lua_pop(L, 1);
        if (same && !fn->removed) {
            /* the handler may be running (it may remove itself) and its event's dispatch loop
             * may be walking the array: switch it off now, drop it at the next flush */
            fn->disabled = fn->removed = true;
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* core.uninstall(): stop instrumenting; on_exit handlers run, then QEMU unloads the plugin. */
static int events_uninstall(lua_State *L)
{
    if (qlua.loading) {
        return luaL_error(L, "qemu.uninstall() cannot run while the script loads (QEMU aborts); "
                             "call it from a callback");
    }
    /* carried out from a vCPU thread once no qlua lock is held (see reload.c) */
    qlua_defer(QLUA_DEFER_UNINSTALL);
    return 0;
}

/* core.memory() -> { records, records_peak, reclaims, limit_flushes, records_limit, lua,
 * translations } */
static int events_memory(lua_State *L)
{
    qlua_arena_stats m = qlua_arena_memory();
    uint64_t lua_bytes =
        (uint64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (uint64_t)lua_gc(L, LUA_GCCOUNTB, 0);
    const struct {
        const char *name;
        uint64_t value;
    } fields[] = {{"records", m.held},
                  {"records_peak", m.peak},
                  {"reclaims", m.reclaims},
                  {"limit_flushes", m.limit_flushes},
                  {"records_limit", qlua.records_limit},
                  {"lua", lua_bytes},
                  {"translations", m.translations}};
    lua_createtable(L, 0, G_N_ELEMENTS(fields));
    for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
        qlua_push_u64(L, fields[i].value);
        lua_setfield(L, -2, fields[i].name);
    }
    return 1;
}

void qlua_events_open(lua_State *L)
{
    if (handlers[0] == NULL) {
        for (int ev = 0; ev < EV_COUNT; ev++) {
            handlers[ev] = g_ptr_array_new();
        }
    }
    static const luaL_Reg functions[] = {{"on", events_on},         {"off", events_off},
                                         {"want", events_want},     {"uninstall", events_uninstall},
                                         {"memory", events_memory}, {NULL, NULL}};
    luaL_setfuncs(L, functions, 0);
}
