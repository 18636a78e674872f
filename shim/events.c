/* events.c: QEMU's global events (translation, vCPU life cycle, syscalls, flush, exit) dispatched
 * to the script's handlers, Lua execution callbacks (tb:on_exec, insn:on_exec), and the memory
 * that per-translation records live in. Records and the Lua values they pin are reclaimed at each
 * TB flush, when QEMU guarantees no translated code refers to them any more. */
#include <string.h>

#include "internal.h"

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
    EV_COUNT
};

static const char *const event_names[] = {"translate",   "exit",    "vcpu_init",   "vcpu_exit",
                                          "vcpu_idle",   "vcpu_resume", "syscall", "syscall_ret",
                                          "flush",       NULL};
static const char *const event_labels[] = {"on_translate",   "on_exit",    "on_vcpu_init",
                                           "on_vcpu_exit",   "on_vcpu_idle", "on_vcpu_resume",
                                           "on_syscall",     "on_syscall_ret", "on_flush"};

static GPtrArray *handlers[EV_COUNT];

/* qemu.count_every(kind, counter [, rw]): counting ops qlua adds to every translated block itself,
 * with no Lua at translation time. Kept with the handlers: a reload replaces both. */
enum rule_kind { RULE_INSN, RULE_BLOCK, RULE_BLOCK_INSNS, RULE_MEM };
typedef struct {
    enum rule_kind kind;
    qlua_counter *counter;
    enum qemu_plugin_mem_rw rw;
} count_rule;
static GPtrArray *rules; /* of count_rule */

static void apply_rules(struct qemu_plugin_tb *tb)
{
    size_t n = qlua_host.tb_n_insns(tb);
    for (guint r = 0; r < rules->len; r++) {
        const count_rule *rule = g_ptr_array_index(rules, r);
        switch (rule->kind) {
        case RULE_BLOCK: qlua_counter_tb(tb, rule->counter, 1); break;
        case RULE_BLOCK_INSNS: qlua_counter_tb(tb, rule->counter, n); break;
        case RULE_INSN:
        case RULE_MEM:
            for (size_t i = 0; i < n; i++) {
                struct qemu_plugin_insn *insn = qlua_host.tb_get_insn(tb, i);
                if (rule->kind == RULE_INSN) {
                    qlua_counter_insn(insn, rule->counter, 1);
                } else {
                    qlua_counter_mem(insn, rule->counter, 1, rule->rw);
                }
            }
            break;
        }
    }
}
static bool registered[EV_COUNT];
static bool want_register[EV_COUNT]; /* asked for from Lua; done after the outermost unlock */
int qlua_deferred;
static uint64_t translate_next;

/* ---- arena: per-translation records, freed wholesale at flush ---- */

#define ARENA_CHUNK (64 * 1024)
/* What a registry reference held by a record costs at least (a registry slot, its bookkeeping). */
#define REF_BYTES 16
static GSList *arena_chunks;
static size_t arena_used = ARENA_CHUNK;
static size_t arena_bytes;      /* chunks held since the last flush */
static size_t arena_peak;       /* the most arena_bytes + refs ever held at once */
static uint64_t arena_reclaims; /* flushes that reclaimed records */
static uint64_t arena_limit_flushes; /* ... of which qlua asked for because of records= */
static bool limit_flush_asked;
static GArray *arena_refs; /* registry references owned by records */
static GHashTable *exec_fns_by_ref; /* registry reference -> qlua_fn*, this flush generation */
static int exec_fns_ref = LUA_NOREF; /* function -> qlua_fn* for the current flush generation */
static int disabled_fns_ref = LUA_NOREF; /* functions onerror=warn turned off, for good */

void *qlua_arena_alloc(size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (arena_used + size > ARENA_CHUNK) {
        size_t chunk = MAX(size, ARENA_CHUNK);
        arena_chunks = g_slist_prepend(arena_chunks, g_malloc(chunk));
        arena_used = 0;
        arena_bytes += chunk;
        size_t held = arena_bytes + REF_BYTES * arena_refs->len;
        arena_peak = MAX(arena_peak, held);
        /* Code QEMU retranslates (self-modifying or reloaded code, unmapped libraries) leaves
         * records nothing uses any more, and QEMU flushes only when its own code buffer fills:
         * past the limit, ask for a flush (a reset, done after the outermost unlock). */
        if (qlua.records_limit && held >= qlua.records_limit && !limit_flush_asked) {
            /* Reached again after only a few translations: the code in use needs more records
             * than the limit, and each flush would only have it translated again at once. */
            static uint64_t translations_at_last;
            if (arena_limit_flushes > 0 && translate_next - translations_at_last < 256) {
                qlua.records_limit *= 2;
                qlua_report("records=: the translated code in use needs more than %zu KiB of "
                            "records; raising the limit to %zu KiB",
                            qlua.records_limit / 2048, qlua.records_limit / 1024);
            }
            translations_at_last = translate_next;
            limit_flush_asked = true;
            arena_limit_flushes++;
            qlua_request(QLUA_WANT_RETRANSLATE);
            __atomic_store_n(&qlua_deferred, 1, __ATOMIC_RELEASE);
        }
    }
    void *p = (char *)arena_chunks->data + arena_used;
    arena_used += size;
    memset(p, 0, size);
    return p;
}

int qlua_ref_data(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) {
        return LUA_REFNIL;
    }
    lua_pushvalue(L, idx);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    g_array_append_val(arena_refs, ref);
    return ref;
}

/* One qlua_fn per distinct (Lua function, kind of callback) per flush generation, so a block that
 * registers the same function for each of its instructions costs one registry slot, errors name
 * the kind of callback that failed, and onerror=warn disables the function everywhere at once. */
qlua_fn *qlua_exec_fn(lua_State *L, int idx, const char *event)
{
    luaL_checktype(L, idx, LUA_TFUNCTION);
    lua_rawgeti(L, LUA_REGISTRYINDEX, exec_fns_ref);
    lua_getfield(L, -1, event);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, event);
    }
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    qlua_fn *fn = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (fn == NULL) {
        fn = qlua_arena_alloc(sizeof *fn);
        fn->event = event;
        fn->stats = qlua_profile_site(L, idx, event);
        lua_pushvalue(L, idx);
        fn->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        g_array_append_val(arena_refs, fn->ref);
        g_hash_table_insert(exec_fns_by_ref, GINT_TO_POINTER(fn->ref), fn);
        lua_rawgeti(L, LUA_REGISTRYINDEX, disabled_fns_ref);
        lua_pushvalue(L, idx);
        lua_rawget(L, -2);
        fn->disabled = lua_toboolean(L, -1);
        lua_pop(L, 2);
        lua_pushvalue(L, idx);
        lua_pushlightuserdata(L, fn);
        lua_rawset(L, -3);
    }
    lua_pop(L, 2);
    return fn;
}

/* The execution callback function behind a registry reference (queued records carry only it). */
qlua_fn *qlua_exec_fn_by_ref(int ref)
{
    return g_hash_table_lookup(exec_fns_by_ref, GINT_TO_POINTER(ref));
}

/* Remembers a function that onerror=warn disabled, so it stays off after the next flush. */
void qlua_events_disable(lua_State *L, qlua_fn *fn)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, disabled_fns_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn->ref);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static void arena_reclaim(lua_State *L)
{
    for (guint i = 0; i < arena_refs->len; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, g_array_index(arena_refs, int, i));
    }
    g_array_set_size(arena_refs, 0);
    g_hash_table_remove_all(exec_fns_by_ref);
    g_slist_free_full(arena_chunks, g_free);
    arena_chunks = NULL;
    arena_used = ARENA_CHUNK;
    arena_bytes = 0;
    arena_reclaims++;
    limit_flush_asked = false;
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, exec_fns_ref);
}

/* ---- execution callbacks ---- */

typedef qlua_exec_rec exec_rec;

/* The arguments of an execution callback, synchronous or queued: vcpu, data (nil for none),
 * and with { counter = c } c's value at the event. Returns how many were pushed. */
int qlua_push_exec_args(lua_State *L, unsigned int vcpu, int data_ref, bool has_count,
                        uint64_t count)
{
    lua_pushinteger(L, vcpu);
    if (data_ref == 0) {
        lua_pushnil(L);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, data_ref);
    }
    if (has_count) {
        qlua_push_u64(L, count);
    }
    return has_count ? 3 : 2;
}

static void exec_cb(unsigned int vcpu, void *udata)
{
    exec_rec *r = udata;
    if (G_UNLIKELY(qlua.polls)) {
        qlua_reload_poll();
    }
    lua_State *L = qlua_gate_enter(r->fn);
    if (L == NULL) {
        return;
    }
    int nargs = qlua_push_exec_args(L, vcpu, r->data_ref, r->count != NULL,
                                    r->count ? qlua_counter_value(r->count, vcpu) : 0);
    qlua_vcpu_context++;
    qlua_gate_call(r->fn, nargs);
    qlua_vcpu_context--;
}

/* The optional last argument of on_exec: nil, "none", "r", "rw", "sync", or a table
 * { regs = "r"|"rw"|"none", sync = bool }. Register access makes a callback synchronous (the
 * registers are those of the moment); QEMU must know at translation time, since making registers
 * readable costs at every execution. */
static enum qemu_plugin_cb_flags exec_options(lua_State *L, int idx, bool *sync,
                                               qlua_counter **count)
{
    static const char *const names[] = {"none", "r", "rw", "sync", NULL};
    static const enum qemu_plugin_cb_flags flags[] = {
        QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS,
        QEMU_PLUGIN_CB_NO_REGS};
    *sync = qlua.exec_sync;
    *count = NULL;
    if (lua_isnoneornil(L, idx)) {
        return QEMU_PLUGIN_CB_NO_REGS;
    }
    enum qemu_plugin_cb_flags f = QEMU_PLUGIN_CB_NO_REGS;
    if (lua_istable(L, idx)) {
        lua_getfield(L, idx, "sync");
        if (!lua_isnil(L, -1)) {
            luaL_argcheck(L, lua_isboolean(L, -1), idx, "sync must be true or false");
            *sync = *sync || lua_toboolean(L, -1);
        }
        lua_getfield(L, idx, "regs");
        if (!lua_isnil(L, -1)) {
            static const char *const regs[] = {"none", "r", "rw", NULL};
            f = flags[luaL_checkoption(L, -1, NULL, regs)];
        }
        lua_getfield(L, idx, "counter");
        if (!lua_isnil(L, -1)) {
            *count = qlua_counter_check(L, lua_gettop(L));
        }
        lua_pop(L, 3);
        lua_pushnil(L); /* unknown keys are mistakes: say which keys exist */
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
            if (strcmp(k, "sync") && strcmp(k, "regs") && strcmp(k, "counter")) {
                luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s' (accepted: sync, "
                                                         "regs, counter)", k));
            }
        }
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        int i = luaL_checkoption(L, idx, NULL, names);
        f = flags[i];
        *sync = *sync || i == 3;
    } else {
        luaL_argerror(L, idx, "expected \"r\", \"rw\", \"sync\" or { regs = ..., sync = ... }");
    }
    if (f != QEMU_PLUGIN_CB_NO_REGS) {
        *sync = true;
    }
    return f;
}

static exec_rec *exec_rec_new(lua_State *L, int fn_idx, int data_idx, const char *event)
{
    exec_rec *r = qlua_arena_alloc(sizeof *r);
    r->fn = qlua_exec_fn(L, fn_idx, event);
    r->fn_ref = r->fn->ref;
    r->data_ref = lua_isnoneornil(L, data_idx) ? 0 : qlua_ref_data(L, data_idx);
    return r;
}

/* tb:on_exec / insn:on_exec (fn [, data] [, options]) */
void qlua_exec_register_tb(lua_State *L, struct qemu_plugin_tb *tb, int fn_idx, int data_idx)
{
    bool sync;
    qlua_counter *count;
    enum qemu_plugin_cb_flags flags = exec_options(L, data_idx + 1, &sync, &count);
    exec_rec *r = exec_rec_new(L, fn_idx, data_idx, "tb:on_exec");
    r->count = count;
    qlua_host.register_vcpu_tb_exec_cb(tb, sync ? exec_cb : qlua_buffer_queued_cb, flags, r);
}

void qlua_exec_register_insn(lua_State *L, struct qemu_plugin_insn *insn, int fn_idx,
                             int data_idx)
{
    bool sync;
    qlua_counter *count;
    enum qemu_plugin_cb_flags flags = exec_options(L, data_idx + 1, &sync, &count);
    exec_rec *r = exec_rec_new(L, fn_idx, data_idx, "insn:on_exec");
    r->count = count;
    qlua_host.register_vcpu_insn_exec_cb(insn, sync ? exec_cb : qlua_buffer_queued_cb, flags, r);
}

/* tb:when / insn:when (counter, op, value, fn [, data]): fn(vcpu, data) on each execution at which
 * the executing vCPU's counter value compares true with `value`. */
static enum qemu_plugin_cond check_cond(lua_State *L, int idx)
{
    static const char *const ops[] = {"==", "~=", "!=", "<", "<=", ">", ">=", "always", "never",
                                      NULL};
    static const enum qemu_plugin_cond conds[] = {
        QEMU_PLUGIN_COND_EQ, QEMU_PLUGIN_COND_NE, QEMU_PLUGIN_COND_NE,
        QEMU_PLUGIN_COND_LT, QEMU_PLUGIN_COND_LE, QEMU_PLUGIN_COND_GT,
        QEMU_PLUGIN_COND_GE, QEMU_PLUGIN_COND_ALWAYS, QEMU_PLUGIN_COND_NEVER};
    return conds[luaL_checkoption(L, idx, NULL, ops)];
}

void qlua_exec_register_when(lua_State *L, struct qemu_plugin_tb *tb,
                             struct qemu_plugin_insn *insn, int first)
{
    qlua_counter *c = qlua_counter_check(L, first);
    enum qemu_plugin_cond cond = check_cond(L, first + 1);
    uint64_t imm = qlua_check_u64(L, first + 2);
    exec_rec *r = exec_rec_new(L, first + 3, first + 4, tb ? "tb:when" : "insn:when");
    if (tb) {
        qlua_counter_when_tb(tb, c, cond, imm, exec_cb, r);
    } else {
        qlua_counter_when_insn(insn, c, cond, imm, exec_cb, r);
    }
}

/* ---- global events ---- */

/* Calls every handler of `ev`; `push` pushes the arguments (n of them). Lock held throughout so
 * handlers of one event never interleave with another thread's. */
#define DISPATCH(ev, nargs, push)                                                                  \
    do {                                                                                           \
        qlua_lock();                                                                               \
        for (guint i_ = 0; i_ < handlers[ev]->len; i_++) {                                         \
            qlua_fn *fn_ = g_ptr_array_index(handlers[ev], i_);                                    \
            lua_State *L = qlua_gate_enter(fn_);                                                   \
            if (L) {                                                                               \
                push;                                                                              \
                qlua_gate_call(fn_, nargs);                                                        \
            }                                                                                      \
        }                                                                                          \
        qlua_unlock();                                                                             \
    } while (0)

static void tb_trans_cb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    if (qlua.polls) {
        qlua_reload_poll();
    }
    qlua_lock();
    apply_rules(tb);
    qlua_translate_gen = ++translate_next;
    qlua_vcpu_context++;
    DISPATCH(EV_TRANSLATE, 1, qlua_tb_push(L, tb));
    qlua_vcpu_context--;
    qlua_counter_emit_pending();
    qlua_translate_gen = 0;
    qlua_unlock();
}

static void register_all(void);

static void vcpu_init_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    qlua_lock();
    bool retranslate = qlua_counter_vcpu_init(vcpu);
    qlua_unlock();
    if (retranslate) {
        /* Code translated with shared inline adds must go: a reset flushes every block and
         * drops our callbacks, which are registered again before any vCPU runs. */
        qlua_request(QLUA_WANT_RETRANSLATE);
        qlua_reload_poll();
    }
    DISPATCH(EV_VCPU_INIT, 1, lua_pushinteger(L, vcpu));
}

static void vcpu_exit_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    qlua_buffer_drain_mine();
    DISPATCH(EV_VCPU_EXIT, 1, lua_pushinteger(L, vcpu));
    qlua_lock();
    qlua_out_flush();
    qlua_unlock();
    qlua_buffer_release_mine(); /* the thread ends: its buffers go (guests may make threads without end) */
}

static void vcpu_idle_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    if (qlua.polls) {
        qlua_reload_poll();
    }
    DISPATCH(EV_VCPU_IDLE, 1, lua_pushinteger(L, vcpu));
}

static void vcpu_resume_cb(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    if (qlua.polls) {
        qlua_reload_poll();
    }
    DISPATCH(EV_VCPU_RESUME, 1, lua_pushinteger(L, vcpu));
}

static void syscall_cb(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id;
    if (qlua.polls) {
        qlua_reload_poll();
    }
    qlua_vcpu_context++;
    DISPATCH(EV_SYSCALL, 10, {
        lua_pushinteger(L, vcpu);
        lua_pushinteger(L, (lua_Integer)num);
        lua_pushinteger(L, (lua_Integer)(int64_t)a1);
        lua_pushinteger(L, (lua_Integer)(int64_t)a2);
        lua_pushinteger(L, (lua_Integer)(int64_t)a3);
        lua_pushinteger(L, (lua_Integer)(int64_t)a4);
        lua_pushinteger(L, (lua_Integer)(int64_t)a5);
        lua_pushinteger(L, (lua_Integer)(int64_t)a6);
        lua_pushinteger(L, (lua_Integer)(int64_t)a7);
        lua_pushinteger(L, (lua_Integer)(int64_t)a8);
    });
    qlua_vcpu_context--;
}

static void syscall_ret_cb(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, int64_t ret)
{
    (void)id;
    qlua_vcpu_context++;
    DISPATCH(EV_SYSCALL_RET, 3, {
        lua_pushinteger(L, vcpu);
        lua_pushinteger(L, (lua_Integer)num);
        lua_pushinteger(L, (lua_Integer)ret);
    });
    qlua_vcpu_context--;
}

/* Drops handlers qemu.off removed; runs inside a flush, when no handler is running. */
static void compact_handlers(lua_State *L)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        for (guint i = handlers[ev]->len; i-- > 0;) {
            qlua_fn *fn = g_ptr_array_index(handlers[ev], i);
            if (fn->removed) {
                g_ptr_array_remove_index(handlers[ev], i);
                luaL_unref(L, LUA_REGISTRYINDEX, fn->ref);
                g_free(fn);
            }
        }
    }
}

static void flush_cb(qemu_plugin_id_t id)
{
    (void)id;
    /* queued callbacks name their functions and data by references the reclaim frees: deliver
     * them first, in one hold of the lock, so a thread outside translated code (exiting, in a
     * syscall callback) cannot run old records after the reclaim */
    lua_State *L = qlua_lock();
    qlua_buffer_drain_all();
    if (L) {
        arena_reclaim(L);
        compact_handlers(L);
    }
    qlua_unlock();
    DISPATCH(EV_FLUSH, 0, (void)L);
}

static void run_exit_handlers(void)
{
    if (!qlua.finished) {
        qlua_buffer_drain_all();
    }
    qlua_lock();
    if (!qlua.finished) {
        DISPATCH(EV_EXIT, 0, (void)L);
        qlua_out_flush();
        qlua_profile_report();
        qlua_repl_stop();
        qlua.finished = true;
    }
    qlua_unlock();
}

static void atexit_cb(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    run_exit_handlers();
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
    case EV_COUNT: break;
    }
}

/* exit, vCPU init/exit and flush are always needed by qlua itself (report, counter strategy,
 * output flushing, arena); the others only once the script asks. */
static void register_all(void)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        registered[ev] = false; /* a reset dropped them all */
    }
    for (int ev = 0; ev < EV_COUNT; ev++) {
        /* watch= and repl= poll for pending work from idle and syscall callbacks too */
        bool polls = qlua.polls && (ev == EV_VCPU_IDLE || ev == EV_VCPU_RESUME ||
                                    (ev == EV_SYSCALL && !qlua_host.system));
        if (ev == EV_EXIT || ev == EV_VCPU_INIT || ev == EV_VCPU_EXIT || ev == EV_FLUSH ||
            handlers[ev]->len > 0 || polls || (ev == EV_TRANSLATE && rules->len > 0)) {
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

/* Reload support: the script's handlers are swapped as a whole. */
GPtrArray **qlua_events_take_handlers(void)
{
    GPtrArray **taken = g_new(GPtrArray *, EV_COUNT + 1);
    for (int ev = 0; ev < EV_COUNT; ev++) {
        taken[ev] = handlers[ev];
        handlers[ev] = g_ptr_array_new();
    }
    taken[EV_COUNT] = rules; /* the count_every rules travel with the handlers */
    rules = g_ptr_array_new_with_free_func(g_free);
    return taken;
}

void qlua_events_put_handlers(GPtrArray **given)
{
    for (int ev = 0; ev < EV_COUNT; ev++) {
        g_ptr_array_free(handlers[ev], TRUE);
        handlers[ev] = given[ev];
    }
    g_ptr_array_free(rules, TRUE);
    rules = given[EV_COUNT];
    g_free(given);
}

void qlua_events_drop_handlers(GPtrArray **dropped)
{
    g_ptr_array_free(dropped[EV_COUNT], TRUE);
    for (int ev = 0; ev < EV_COUNT; ev++) {
        for (guint i = 0; i < dropped[ev]->len; i++) {
            qlua_fn *fn = g_ptr_array_index(dropped[ev], i);
            luaL_unref(qlua.L, LUA_REGISTRYINDEX, fn->ref);
            g_free(fn);
        }
        g_ptr_array_free(dropped[ev], TRUE);
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
        __atomic_store_n(&qlua_deferred, 1, __ATOMIC_RELEASE);
    }
}

/* core.on(event, fn): add a handler; handlers of one event run in the order they were added. */
static int events_on(lua_State *L)
{
    int ev = luaL_checkoption(L, 1, NULL, event_names);
    if (ev == EV_SYSCALL || ev == EV_SYSCALL_RET) {
        if (qlua_host.system) {
            return luaL_error(L, "%s: syscall events exist only in user mode (qemu-ARCH), not in "
                                 "system emulation",
                              event_labels[ev]);
        }
    }
    g_ptr_array_add(handlers[ev], qlua_fn_new(L, 2, event_labels[ev]));
    need_event((enum event)ev);
    return 0;
}

/* core.count_every(kind, counter [, rw]) */
static int events_count_every(lua_State *L)
{
    static const char *const kinds[] = {"insn", "block", "block_insns", "mem", NULL};
    enum rule_kind kind = (enum rule_kind)luaL_checkoption(L, 1, NULL, kinds);
    qlua_counter *counter = qlua_counter_check(L, 2);
    enum qemu_plugin_mem_rw rw = QEMU_PLUGIN_MEM_RW;
    if (kind == RULE_MEM) {
        rw = qlua_mem_check_rw(L, 3);
    } else if (!lua_isnoneornil(L, 3)) {
        return luaL_argerror(L, 3, "only \"mem\" takes r, w or rw");
    }
    count_rule *rule = g_new(count_rule, 1);
    *rule = (count_rule){kind, counter, rw};
    g_ptr_array_add(rules, rule);
    need_event(EV_TRANSLATE);
    return 0;
}

/* core.off(event, fn): remove a handler added with core.on; false if it was not there. */
static int events_off(lua_State *L)
{
    int ev = luaL_checkoption(L, 1, NULL, event_names);
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

/* After the outermost unlock: QEMU calls that Lua asked for. */
void qlua_deferred_run(void)
{
    if (!__atomic_exchange_n(&qlua_deferred, 0, __ATOMIC_ACQ_REL)) {
        return;
    }
    for (int ev = 0; ev < EV_COUNT; ev++) {
        if (want_register[ev]) {
            want_register[ev] = false;
            if (!registered[ev]) {
                register_event((enum event)ev);
            }
        }
    }
    qlua_reload_poll(); /* an uninstall or retranslation asked for from a vCPU callback */
}

void qlua_events_uninstalled(qemu_plugin_id_t id)
{
    (void)id;
    run_exit_handlers();
    qlua_state_close();
    qlua_counter_free_all();
}

/* core.uninstall(): stop instrumenting; on_exit handlers run, then QEMU unloads the plugin. */
static int events_uninstall(lua_State *L)
{
    if (qlua.loading) {
        return luaL_error(L, "qemu.uninstall() cannot run while the script loads (QEMU aborts); "
                             "call it from a callback");
    }
    /* carried out from a vCPU thread once no qlua lock is held (see qlua_reload_poll) */
    qlua_request(QLUA_WANT_UNINSTALL);
    __atomic_store_n(&qlua_deferred, 1, __ATOMIC_RELEASE);
    return 0;
}

void qlua_events_memory(uint64_t *held, uint64_t *peak, uint64_t *reclaims,
                        uint64_t *limit_flushes)
{
    *held = arena_bytes + REF_BYTES * arena_refs->len;
    *peak = MAX(arena_peak, *held);
    *reclaims = arena_reclaims;
    *limit_flushes = arena_limit_flushes;
}

/* core.memory() -> { records, records_peak, reclaims, limit_flushes, limit, lua } */
static int events_memory(lua_State *L)
{
    uint64_t held, peak, reclaims, limit_flushes;
    qlua_events_memory(&held, &peak, &reclaims, &limit_flushes);
    uint64_t lua_bytes = (uint64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (uint64_t)lua_gc(L, LUA_GCCOUNTB, 0);
    const struct {
        const char *name;
        uint64_t value;
    } fields[] = {{"records", held},           {"records_peak", peak},
                  {"reclaims", reclaims},      {"limit_flushes", limit_flushes},
                  {"records_limit", qlua.records_limit}, {"lua", lua_bytes}};
    lua_createtable(L, 0, G_N_ELEMENTS(fields));
    for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
        qlua_push_u64(L, fields[i].value);
        lua_setfield(L, -2, fields[i].name);
    }
    return 1;
}

void qlua_events_open(lua_State *L)
{
    static bool ready;
    if (!ready) {
        for (int ev = 0; ev < EV_COUNT; ev++) {
            handlers[ev] = g_ptr_array_new();
        }
        arena_refs = g_array_new(FALSE, FALSE, sizeof(int));
        rules = g_ptr_array_new_with_free_func(g_free);
        exec_fns_by_ref = g_hash_table_new(g_direct_hash, g_direct_equal);
        ready = true;
    }
    lua_newtable(L);
    exec_fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_newtable(L); /* weak keys: a disabled function may still be collected */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    disabled_fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg functions[] = {{"on", events_on},
                                         {"uninstall", events_uninstall},
                                         {"off", events_off},
                                         {"memory", events_memory},
                                         {"count_every", events_count_every},
                                         {NULL, NULL}};
    for (const luaL_Reg *f = functions; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
}
