/* buffer.c: execution events gathered natively and handed to Lua in batches: tracers (records
 * a Lua function receives as an array) and queued on_exec callbacks (records of function, data
 * and vCPU, each delivered as a call). A tiny C callback appends one fixed-size record to a
 * buffer owned by the calling thread (one vCPU per thread, or all vCPUs of a round-robin thread:
 * either way a thread's records are in execution order), without locks. A thread's buffers go to
 * Lua together, under the Lua lock: when one is full, before any other Lua callback on the same
 * thread (so Lua sees one thread's events in order), at vCPU exit (which then frees them), before
 * a fork, before a flush of translated code and at exit. */
#include <string.h>

#include "internal.h"

#define MAX_TRACERS 32

/* The record layout is shared with Lua: LuaJIT reads it through the FFI (see qlua_event_cdef). */
typedef struct {
    qlua_event_num addr; /* block or instruction address; data address for memory events */
    qlua_event_num pc;   /* the instruction's address (memory events) or addr */
    qlua_event_num tag;  /* the value the script gave at translation time */
    uint32_t vcpu;
    uint16_t size; /* memory: access size in bytes; exec: instruction count or size */
    uint8_t kind;  /* QLUA_EV_* */
    uint8_t flags; /* memory: 1 signed, 2 big-endian */
} qlua_event;

enum { QLUA_EV_TB = 0, QLUA_EV_INSN = 1, QLUA_EV_LOAD = 2, QLUA_EV_STORE = 3 };

typedef struct {
    qlua_fn *fn; /* Lua: fn(events, n) */
    size_t batch;
} tracer;

/* A queued execution callback (on_exec without "sync"): the function and its data as registry
 * references, so LuaJIT's drain loop calls them with no C in between. 16 bytes: writing and
 * reading the records is most of the cost of a queued event. The counter value of
 * on_exec(..., { counter = c }) goes to a parallel array. Layout shared with Lua
 * (qlua_buffer_open). */
typedef struct {
    int32_t fn;
    int32_t data; /* 0: no data */
    uint32_t vcpu;
    uint32_t has_count;
} qlua_queued;

#define QUEUE_BATCH 4096
#define QUEUE_FEW 8

typedef struct thread_buffers {
    qlua_event *events[MAX_TRACERS];
    size_t count[MAX_TRACERS];
    size_t traced; /* events in the tracer buffers, all tracers together */
    qlua_queued *queue;
    qlua_event_num *queue_counts;
    size_t queued;
    uint32_t queue_pos; /* LuaJIT's drain loop writes the record it is calling here */
    bool draining;
    struct thread_buffers *next;
} thread_buffers;

typedef struct {
    int tracer;
    qlua_event_num addr; /* converted once, at translation */
    qlua_event_num tag;
    uint16_t size;
    uint8_t kind;
    enum qemu_plugin_mem_rw rw;
    /* memory events: the last meminfo seen and what it decoded to, as one word so threads can
     * share it without a lock (an instruction nearly always makes the same kind of access):
     * bits 0-31 meminfo, 32-47 size, 48-55 kind (0xff: not wanted), 56-63 flags, 0: empty */
    uint64_t decoded;
} trace_rec;

static tracer tracers[MAX_TRACERS];
static int n_tracers;
static QLUA_TLS thread_buffers *mine;
static thread_buffers *all_buffers; /* every thread's, for exit and fork */
static GMutex all_lock;

static thread_buffers *my_buffers(void)
{
    if (G_UNLIKELY(mine == NULL)) {
        mine = g_new0(thread_buffers, 1);
        g_mutex_lock(&all_lock);
        mine->next = all_buffers;
        all_buffers = mine;
        g_mutex_unlock(&all_lock);
    }
    return mine;
}

/* Hands one tracer's buffer to Lua. Called by drain_thread, under the Lua lock. */
static void drain_one(thread_buffers *b, int t)
{
    size_t n = b->count[t];
    if (n == 0) {
        return;
    }
    lua_State *L = qlua_gate_enter(tracers[t].fn);
    if (L) {
        qlua_profile_events(tracers[t].fn->stats, n);
        lua_pushlightuserdata(L, b->events[t]);
        lua_pushinteger(L, (lua_Integer)n);
        qlua_gate_call(tracers[t].fn, 2);
    }
    b->count[t] = 0;
}

static int queue_drainer_ref = LUA_NOREF; /* LuaJIT: fn(records, counts, first, n, pos) */
static int queue_noop_ref = LUA_NOREF;     /* stands in for a function onerror=warn disabled */

/* Delivers a thread's queued callbacks, in the order they were executed. Called by
 * drain_thread, under the Lua lock: taken once per batch, which (with LuaJIT running the loop as
 * compiled code) is what makes a queued callback several times cheaper than a synchronous one. */
static void drain_queue(thread_buffers *b)
{
    size_t n = b->queued;
    if (n == 0) {
        return;
    }
    qlua_queue_context++;
    lua_State *L = qlua.L;
    uint64_t t0 = qlua.profile ? qlua_now_ns() : 0;
    if (qlua_some_fn_disabled) { /* rare: onerror=warn turned a function off */
        for (size_t j = 0; j < n; j++) {
            qlua_fn *fn = qlua_exec_fn_by_ref(b->queue[j].fn);
            if (fn && fn->disabled) {
                b->queue[j].fn = queue_noop_ref;
            }
        }
    }
    size_t first = 0;
    while (L && !qlua.finished && first < n) {
        size_t failed;
        qlua_gate_push_handler(L);
        int handler = lua_gettop(L);
        /* A few records (a synchronous callback on this thread came soon after them): one call
         * each is cheaper than starting LuaJIT's loop, whose set-up costs several calls. */
        if (queue_drainer_ref != LUA_NOREF && n - first > QUEUE_FEW) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, queue_drainer_ref);
            lua_pushlightuserdata(L, b->queue);
            lua_pushlightuserdata(L, b->queue_counts);
            lua_pushinteger(L, (lua_Integer)first);
            lua_pushinteger(L, (lua_Integer)n);
            lua_pushlightuserdata(L, &b->queue_pos);
            b->queue_pos = (uint32_t)first;
            if (lua_pcall(L, 5, 0, handler) == 0) {
                lua_pop(L, 1);
                break;
            }
            failed = MIN(MAX((size_t)b->queue_pos, first), n - 1); /* the record being called */
        } else { /* Lua 5.4, or a few records: one protected call each, one lock per batch */
            for (failed = first; failed < n; failed++) {
                const qlua_queued *q = &b->queue[failed];
                if (q->fn == queue_noop_ref) {
                    continue;
                }
                lua_rawgeti(L, LUA_REGISTRYINDEX, q->fn);
                int nargs = qlua_push_exec_args(L, q->vcpu, q->data, q->has_count,
                                                q->has_count ? (uint64_t)b->queue_counts[failed] : 0);
                if (lua_pcall(L, nargs, 0, handler) != 0) {
                    break;
                }
            }
            if (failed == n) {
                lua_pop(L, 1);
                break;
            }
        }
        int failed_ref = b->queue[failed].fn;
        qlua_fn *owner = qlua_exec_fn_by_ref(failed_ref);
        if (owner) {
            qlua_gate_error(owner); /* returns only under onerror=warn */
        } else { /* the failure was not a record's (say, memory): the policy of "on_exec" */
            static qlua_fn unknown = {.ref = LUA_NOREF, .event = "queued on_exec"};
            unknown.disabled = false;
            qlua_gate_error(&unknown);
        }
        lua_pop(L, 1);
        for (size_t j = failed + 1; j < n; j++) {
            if (b->queue[j].fn == failed_ref) {
                b->queue[j].fn = queue_noop_ref;
            }
        }
        first = failed + 1;
    }
    if (qlua.profile && L) {
        /* one batch, many sites: its time is shared out by each site's number of records */
        uint64_t per = (qlua_now_ns() - t0) / n;
        qlua_profile_batch();
        for (size_t j = 0; j < n; j++) {
            qlua_fn *fn = qlua_exec_fn_by_ref(b->queue[j].fn);
            qlua_stats *s = fn ? fn->stats : NULL;
            if (s) {
                qlua_profile_charge(s, per);
                qlua_profile_events(s, 1);
            }
        }
    }
    qlua_queue_context--;
    b->queued = 0;
}

static void drain_thread(thread_buffers *b);

/* A queued execution callback: QEMU calls this at each event; Lua sees it at the next drain. */
void qlua_buffer_queued_cb(unsigned int vcpu, void *udata)
{
    const qlua_exec_rec *r = udata;
    if (G_UNLIKELY(qlua.polls)) {
        qlua_reload_poll();
    }
    thread_buffers *b = mine;
    if (G_UNLIKELY(b == NULL || b->queue == NULL)) {
        b = my_buffers();
        b->queue = g_new(qlua_queued, QUEUE_BATCH);
        b->queue_counts = g_new(qlua_event_num, QUEUE_BATCH);
    }
    qlua_queued *q = &b->queue[b->queued];
    q->fn = r->fn_ref;
    q->data = r->data_ref;
    q->vcpu = vcpu;
    q->has_count = r->count != NULL;
    if (r->count) {
        b->queue_counts[b->queued] = (qlua_event_num)qlua_counter_value(r->count, vcpu);
    }
    if (G_UNLIKELY(++b->queued == QUEUE_BATCH)) {
        drain_thread(b);
    }
}

/* Delivers everything a thread has buffered: each tracer's events, then its queued callbacks
 * (each in execution order; a tracer's events are not interleaved with the queue). Under the Lua
 * lock from the first look at the buffers: a flush, an exit or another thread's drain_all may
 * be delivering the same buffers, and must find them either untouched or empty. */
static void drain_thread(thread_buffers *b)
{
    qlua_lock();
    if (!b->draining) { /* draining: a tracer function or queued callback of b is running */
        b->draining = true;
        /* delivered after the fact, whatever callback delivers them: the vCPU has moved on, so
         * this is not a vCPU callback context (no register or memory reads) */
        int context = qlua_vcpu_context;
        qlua_vcpu_context = 0;
        for (int t = 0; t < n_tracers; t++) {
            drain_one(b, t);
        }
        b->traced = 0;
        drain_queue(b);
        qlua_vcpu_context = context;
        b->draining = false;
    }
    qlua_unlock();
}

QLUA_TLS int qlua_queue_context;

/* Before another Lua callback runs on this thread: deliver what this thread traced first. */
void qlua_buffer_drain_mine(void)
{
    if (mine && (mine->queued || mine->traced) && !mine->draining) {
        drain_thread(mine);
    }
}

/* At exit, before fork and before a flush, when no vCPU appends any more. The Lua lock is held
 * throughout, so no thread frees its buffers meanwhile (qlua_buffer_release_mine). */
void qlua_buffer_drain_all(void)
{
    qlua_lock();
    g_mutex_lock(&all_lock);
    thread_buffers *list = all_buffers;
    g_mutex_unlock(&all_lock);
    for (thread_buffers *b = list; b; b = b->next) {
        drain_thread(b);
    }
    qlua_unlock();
}

/* At vCPU exit (after its last drain): a user-mode guest may create threads without end. */
void qlua_buffer_release_mine(void)
{
    if (mine == NULL) {
        return;
    }
    qlua_lock();
    drain_thread(mine);
    g_mutex_lock(&all_lock);
    for (thread_buffers **p = &all_buffers; *p; p = &(*p)->next) {
        if (*p == mine) {
            *p = mine->next;
            break;
        }
    }
    g_mutex_unlock(&all_lock);
    for (int t = 0; t < MAX_TRACERS; t++) {
        g_free(mine->events[t]);
    }
    g_free(mine->queue);
    g_free(mine->queue_counts);
    g_free(mine);
    mine = NULL;
    qlua_unlock();
}

/* A reload starts with no tracers; save_/restore_ keep the old ones for a reload that fails.
 * Called with every vCPU stopped (inside a reset). */
static tracer saved_tracers[MAX_TRACERS];
static int saved_n;

void qlua_buffer_save(void)
{
    qlua_buffer_drain_all();
    g_mutex_lock(&all_lock);
    for (thread_buffers *b = all_buffers; b; b = b->next) {
        for (int t = 0; t < MAX_TRACERS; t++) {
            g_free(b->events[t]); /* the next script's tracers may batch differently */
            b->events[t] = NULL;
        }
    }
    g_mutex_unlock(&all_lock);
    memcpy(saved_tracers, tracers, sizeof tracers);
    saved_n = n_tracers;
    n_tracers = 0;
}

void qlua_buffer_restore(void)
{
    memcpy(tracers, saved_tracers, sizeof tracers);
    n_tracers = saved_n;
}

static inline void append_num(unsigned int vcpu, const trace_rec *r, qlua_event_num addr,
                              uint8_t kind, uint16_t size, uint8_t flags)
{
    thread_buffers *b = G_LIKELY(mine != NULL) ? mine : my_buffers();
    int t = r->tracer;
    if (G_UNLIKELY(b->events[t] == NULL)) {
        b->events[t] = g_new(qlua_event, tracers[t].batch);
    }
    qlua_event *e = &b->events[t][b->count[t]];
    e->addr = addr;
    e->pc = r->addr;
    e->tag = r->tag;
    e->vcpu = vcpu;
    e->size = size;
    e->kind = kind;
    e->flags = flags;
    b->traced++;
    if (++b->count[t] == tracers[t].batch) {
        drain_thread(b); /* and the thread's other buffers: see drain_thread */
    }
}

static void trace_exec_cb(unsigned int vcpu, void *udata)
{
    trace_rec *r = udata;
    append_num(vcpu, r, r->addr, r->kind, r->size, 0);
}

/* What a memory access's meminfo means for a tracer record, packed as trace_rec.decoded says. */
static uint64_t decode(enum qemu_plugin_mem_rw rw, qemu_plugin_meminfo_t info)
{
    uint64_t kind = !qlua_mem_wanted(rw, info)          ? 0xff
                    : qlua_host.mem_is_store(info) ? QLUA_EV_STORE
                                                   : QLUA_EV_LOAD;
    uint64_t flags = (qlua_host.mem_is_sign_extended(info) ? 1 : 0) |
                     (qlua_host.mem_is_big_endian(info) ? 2 : 0);
    uint64_t size = (uint64_t)1 << qlua_host.mem_size_shift(info);
    /* size >= 1 keeps the word non-zero, so 0 can mean "empty" */
    return (uint64_t)(uint32_t)info | size << 32 | kind << 48 | flags << 56;
}

static void trace_mem_cb(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                         void *udata)
{
    trace_rec *r = udata;
    uint64_t d = __atomic_load_n(&r->decoded, __ATOMIC_RELAXED);
    if (G_UNLIKELY(d == 0 || (uint32_t)d != (uint32_t)info)) {
        d = decode(r->rw, info);
        __atomic_store_n(&r->decoded, d, __ATOMIC_RELAXED);
    }
    uint8_t kind = (uint8_t)(d >> 48);
    if (kind != 0xff) {
        append_num(vcpu, r, (qlua_event_num)vaddr, kind, (uint16_t)(d >> 32), (uint8_t)(d >> 56));
    }
}

static int check_tracer(lua_State *L, int idx)
{
    lua_Integer t = luaL_checkinteger(L, idx);
    luaL_argcheck(L, t >= 0 && t < n_tracers, idx, "expected a tracer from qemu.tracer{}");
    return (int)t;
}

static trace_rec *rec_new(lua_State *L, int tracer_idx, uint64_t addr, uint8_t kind, uint16_t size)
{
    trace_rec *r = qlua_arena_alloc(sizeof *r);
    r->tracer = check_tracer(L, tracer_idx);
    r->tag = (qlua_event_num)(lua_isnoneornil(L, tracer_idx + 1) ? 0
                                                                 : qlua_check_u64(L, tracer_idx + 1));
    r->addr = (qlua_event_num)addr;
    r->kind = kind;
    r->size = size;
    r->rw = QEMU_PLUGIN_MEM_RW;
    return r;
}

/* tb:trace(tracer [, tag]): one event per execution of the block (size = instruction count). */
void qlua_buffer_trace_tb(lua_State *L, struct qemu_plugin_tb *tb, int tracer_idx)
{
    size_t n = qlua_host.tb_n_insns(tb);
    trace_rec *r = rec_new(L, tracer_idx, qlua_host.tb_vaddr(tb), QLUA_EV_TB, (uint16_t)n);
    qlua_host.register_vcpu_tb_exec_cb(tb, trace_exec_cb, QEMU_PLUGIN_CB_NO_REGS, r);
}

/* insn:trace(tracer [, tag]): one event per execution of the instruction (size = its bytes). */
void qlua_buffer_trace_insn(lua_State *L, struct qemu_plugin_insn *insn, int tracer_idx)
{
    trace_rec *r = rec_new(L, tracer_idx, qlua_host.insn_vaddr(insn), QLUA_EV_INSN,
                           (uint16_t)qlua_host.insn_size(insn));
    qlua_host.register_vcpu_insn_exec_cb(insn, trace_exec_cb, QEMU_PLUGIN_CB_NO_REGS, r);
}

/* insn:trace_mem(tracer [, tag] [, "r"|"w"|"rw"]): one event per memory access; the tag may be
 * left out before rw, as in insn:count_mem. */
void qlua_buffer_trace_mem(lua_State *L, struct qemu_plugin_insn *insn, int tracer_idx)
{
    int rw_idx = tracer_idx + 2;
    if (lua_type(L, tracer_idx + 1) == LUA_TSTRING) {
        lua_pushvalue(L, tracer_idx + 1);
        lua_replace(L, rw_idx);
        lua_pushnil(L);
        lua_replace(L, tracer_idx + 1);
    }
    trace_rec *r = rec_new(L, tracer_idx, qlua_host.insn_vaddr(insn), QLUA_EV_LOAD, 0);
    r->rw = qlua_mem_check_rw(L, rw_idx);
    /* RW and filtered natively: see qlua_counter_mem about QEMU 7.2's filter */
    qlua_host.register_vcpu_mem_cb(insn, trace_mem_cb, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                   r);
}

/* core.tracer_new(fn, batch [, script_fn]) -> tracer id. fn(ptr, n) is lua/qemu's wrapper around the script's. */
static int buffer_tracer_new(lua_State *L)
{
    if (n_tracers == MAX_TRACERS) {
        return luaL_error(L, "qemu.tracer: at most %d tracers", MAX_TRACERS);
    }
    lua_Integer batch = luaL_checkinteger(L, 2);
    luaL_argcheck(L, batch >= 1 && batch <= (1 << 20), 2, "expected a batch from 1 to 1048576");
    tracers[n_tracers].fn = qlua_fn_new(L, 1, "tracer");
    if (lua_isfunction(L, 3)) { /* profile=on charges the script's function, not the wrapper */
        tracers[n_tracers].fn->stats = qlua_profile_site(L, 3, "tracer");
    }
    tracers[n_tracers].batch = (size_t)batch;
    lua_pushinteger(L, n_tracers++);
    return 1;
}

/* core.event(ptr, i) -> addr, pc, tag, vcpu, size, kind, flags (Lua 5.4's view of a record) */
static int buffer_event(lua_State *L)
{
    const qlua_event *e = (const qlua_event *)lua_touserdata(L, 1) + luaL_checkinteger(L, 2);
    qlua_push_u64(L, (uint64_t)e->addr);
    qlua_push_u64(L, (uint64_t)e->pc);
    qlua_push_u64(L, (uint64_t)e->tag);
    lua_pushinteger(L, e->vcpu);
    lua_pushinteger(L, e->size);
    lua_pushinteger(L, e->kind);
    lua_pushinteger(L, e->flags);
    return 7;
}

/* core.queue_drainer(fn, noop): LuaJIT's loop over queued records (see lua/qemu/init.lua) */
static int buffer_queue_drainer(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, queue_drainer_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, queue_noop_ref);
    lua_pushvalue(L, 1);
    queue_drainer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    queue_noop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

void qlua_buffer_open(lua_State *L)
{
    queue_drainer_ref = queue_noop_ref = LUA_NOREF; /* a new state (reload keeps the state) */
    lua_pushcfunction(L, buffer_queue_drainer);
    lua_setfield(L, -2, "queue_drainer");
    lua_pushliteral(L, "typedef struct { int32_t fn; int32_t data; uint32_t vcpu; "
                       "uint32_t has_count; } qlua_queued;");
    lua_setfield(L, -2, "queued_cdef");
    lua_pushliteral(L, QLUA_EVENT_NUM_NAME);
    lua_setfield(L, -2, "queued_count_type");
    lua_pushinteger(L, (lua_Integer)sizeof(qlua_queued));
    lua_setfield(L, -2, "queued_size");
    lua_pushcfunction(L, buffer_tracer_new);
    lua_setfield(L, -2, "tracer_new");
    lua_pushcfunction(L, buffer_event);
    lua_setfield(L, -2, "event");
    /* the record for LuaJIT's FFI, generated from the C type so both always agree */
    lua_pushfstring(L,
                    "typedef struct { %s addr; %s pc; %s tag; uint32_t vcpu; uint16_t size; "
                    "uint8_t kind; uint8_t flags; } qlua_event;",
                    QLUA_EVENT_NUM_NAME, QLUA_EVENT_NUM_NAME, QLUA_EVENT_NUM_NAME);
    lua_setfield(L, -2, "event_cdef");
    lua_pushinteger(L, (lua_Integer)sizeof(qlua_event));
    lua_setfield(L, -2, "event_size");
}
