/* buffer.c: tracers. A tiny C callback appends one fixed-size record to a buffer owned by the
 * calling thread (one vCPU per thread, or all vCPUs of a round-robin thread: either way a
 * thread's records are in execution order), without locks. A tracer's buffer goes to its Lua
 * function, under the Lua lock, when it is full (with the thread's other buffers, through the
 * hook exec.c registers), before any other Lua callback on the same thread, at vCPU exit (which
 * then frees it), before a fork, before a flush of translated code and at exit.
 * Owns: tracers, their per-thread buffers, their records. Must not touch: queued callbacks
 * (exec.c) or how a thread's kinds of buffer are ordered (exec.c decides, through the hook). */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buffer.h"
#include "arena.h"
#include "gate.h"
#include "host.h"
#include "insn.h"
#include "mem.h"
#include "tb.h"
#include "value.h"

#define MAX_TRACERS 32
#define MAX_BATCH (1 << 20)

/* The record layout is shared with Lua: LuaJIT reads it through the FFI (see qlua_buffer_open). */
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

typedef struct thread_buffers {
    qlua_event *events[MAX_TRACERS];
    size_t count[MAX_TRACERS];
    size_t traced; /* events in the buffers, all tracers together */
    bool draining;
    struct thread_buffers *next;
} thread_buffers;

/* What QEMU hands back at each traced event: fixed at translation. */
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
static void (*deliver_thread)(void);

void qlua_buffer_on_full(void (*fn)(void))
{
    deliver_thread = fn;
}

/* Event arrays are never given back to the allocator: under LuaJIT a record a script kept past
 * its batch is an FFI reference into one, and must never point at unmapped memory (a kept record
 * read after its thread exited crashed QEMU). An array a thread leaves at its exit, or a reload
 * drops, waits here for the next thread that needs one of its length, its whole pages handed
 * back to the kernel meanwhile (they stay mapped and read as zeros), so memory stays bounded by
 * the most arrays in use at once, not by how many threads a guest makes or how many reloads
 * change a batch size (each reload with a new size kept 32 MiB per thread before). */
typedef struct spare_array {
    struct spare_array *next;
    qlua_event *events;
    size_t n;
} spare_array;
static spare_array *spare_arrays;
static GMutex spare_lock; /* taken last, alone */

static qlua_event *array_take(size_t n)
{
    g_mutex_lock(&spare_lock);
    for (spare_array **p = &spare_arrays; *p; p = &(*p)->next) {
        if ((*p)->n == n) {
            spare_array *found = *p;
            *p = found->next;
            g_mutex_unlock(&spare_lock);
            qlua_event *events = found->events;
            g_free(found);
            return events;
        }
    }
    g_mutex_unlock(&spare_lock);
    return g_new(qlua_event, n);
}

static void array_give(qlua_event *events, size_t n)
{
    if (events == NULL) {
        return;
    }
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)events + page - 1) & ~(page - 1);
    uintptr_t to = ((uintptr_t)(events + n)) & ~(page - 1);
    if (to > from) { /* pages wholly inside the array: no allocator data lives there */
        madvise((void *)from, to - from, MADV_DONTNEED);
    }
    spare_array *s = g_new(spare_array, 1);
    *s = (spare_array){NULL, events, n};
    g_mutex_lock(&spare_lock);
    s->next = spare_arrays;
    spare_arrays = s;
    g_mutex_unlock(&spare_lock);
}

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

/* The batch being delivered (under the Lua lock): the only records core.events_fill may read;
 * depth: how many deliveries are running, one inside the other. */
static const qlua_event *delivering;
static size_t delivering_n;
static int delivering_depth;

/* Hands one tracer's buffer to Lua, under the Lua lock. */
static void drain_one(thread_buffers *b, int t)
{
    size_t n = b->count[t];
    if (n == 0) {
        return;
    }
    lua_State *L = qlua_gate_enter(tracers[t].fn);
    if (L) {
        if (tracers[t].fn->stats) {
            tracers[t].fn->stats->events += n;
        }
        const qlua_event *outer = delivering;
        size_t outer_n = delivering_n;
        delivering = b->events[t];
        delivering_n = n;
        delivering_depth++;
        lua_pushlightuserdata(L, b->events[t]);
        lua_pushinteger(L, (lua_Integer)n);
        qlua_gate_call(tracers[t].fn, 2);
        delivering_depth--;
        delivering = outer;
        delivering_n = outer_n;
    }
    b->count[t] = 0;
}

/* Under the Lua lock from the first look at the buffers: a flush, an exit or another thread's
 * drain_all may be delivering the same buffers, and must find them either untouched or empty. */
static void drain_thread(thread_buffers *b)
{
    qlua_lock();
    if (!b->draining) { /* draining: one of b's tracer functions is running */
        b->draining = true;
        /* delivered after the fact: not a vCPU callback context (no register or memory reads) */
        int context = qlua_vcpu_context;
        qlua_vcpu_context = 0;
        for (int t = 0; t < n_tracers; t++) {
            drain_one(b, t);
        }
        b->traced = 0;
        qlua_vcpu_context = context;
        b->draining = false;
    }
    qlua_unlock();
}

bool qlua_buffer_pending_mine(void)
{
    return mine && mine->traced && !mine->draining;
}

void qlua_buffer_drain_mine(void)
{
    if (qlua_buffer_pending_mine()) {
        drain_thread(mine);
    }
}

/* The Lua lock is held throughout, so no thread frees its buffers meanwhile. */
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

void qlua_buffer_release_mine(void)
{
    if (mine == NULL) {
        return;
    }
    qlua_lock();
    drain_thread(mine);
    g_mutex_lock(&all_lock);
    QLUA_LIST_UNLINK(all_buffers, mine);
    g_mutex_unlock(&all_lock);
    for (int t = 0; t < MAX_TRACERS; t++) {
        array_give(mine->events[t], tracers[t].batch);
    }
    g_free(mine);
    mine = NULL;
    qlua_unlock();
}

/* Called with every vCPU stopped (inside a reset). */
static tracer saved_tracers[MAX_TRACERS];
static int saved_n;

void qlua_buffer_save(void)
{
    qlua_buffer_drain_all();
    g_mutex_lock(&all_lock);
    for (thread_buffers *b = all_buffers; b; b = b->next) {
        for (int t = 0; t < MAX_TRACERS; t++) {
            /* the next script's tracers may batch differently */
            array_give(b->events[t], tracers[t].batch);
            b->events[t] = NULL;
        }
    }
    g_mutex_unlock(&all_lock);
    memcpy(saved_tracers, tracers, sizeof tracers);
    saved_n = n_tracers;
    n_tracers = 0;
}

/* A version's tracers once it is gone: their functions (under Lua 5.4 with each its pool of
 * record tables, 280 MB for batch = 1048576) are released, or every reload kept them. */
static void free_tracers(tracer *list, int n)
{
    for (int t = 0; t < n; t++) {
        luaL_unref(qlua.L, LUA_REGISTRYINDEX, list[t].fn->ref);
        g_free(list[t].fn);
        list[t].fn = NULL;
    }
}

void qlua_buffer_restore(void)
{
    free_tracers(tracers, n_tracers); /* the failed version's */
    memcpy(tracers, saved_tracers, sizeof tracers);
    n_tracers = saved_n;
}

void qlua_buffer_drop_saved(void)
{
    free_tracers(saved_tracers, saved_n);
    saved_n = 0;
}

static inline void append_num(unsigned int vcpu, const trace_rec *r, qlua_event_num addr,
                              uint8_t kind, uint16_t size, uint8_t flags)
{
    thread_buffers *b = G_LIKELY(mine != NULL) ? mine : my_buffers();
    int t = r->tracer;
    if (G_UNLIKELY(b->events[t] == NULL)) {
        b->events[t] = array_take(tracers[t].batch);
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
    if (G_UNLIKELY(++b->count[t] == tracers[t].batch)) {
        if (deliver_thread) {
            deliver_thread(); /* this thread's other buffers go first */
        }
        if (b->count[t] == tracers[t].batch) {
            drain_thread(b);
        }
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
    uint64_t kind = !qlua_mem_wanted(rw, info)     ? 0xff
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

/* Positional: (handle, tracer, tag) with tag a u64 (0 for none), checked in lua/qemu. */
static trace_rec *rec_new(lua_State *L, uint64_t addr, uint8_t kind, uint16_t size)
{
    trace_rec *r = qlua_arena_alloc(sizeof *r);
    r->tracer = check_tracer(L, 2);
    r->tag = (qlua_event_num)qlua_check_u64(L, 3);
    r->addr = (qlua_event_num)addr;
    r->kind = kind;
    r->size = size;
    r->rw = QEMU_PLUGIN_MEM_RW;
    return r;
}

/* core.tb_trace(tb, tracer, tag): one event per execution of the block (size = its insns). */
static int buffer_tb_trace(lua_State *L)
{
    struct qemu_plugin_tb *tb = qlua_tb_check(L, 1);
    size_t n = qlua_host.tb_n_insns(tb);
    trace_rec *r = rec_new(L, qlua_host.tb_vaddr(tb), QLUA_EV_TB, (uint16_t)n);
    qlua_host.register_vcpu_tb_exec_cb(tb, trace_exec_cb, QEMU_PLUGIN_CB_NO_REGS, r);
    return 0;
}

/* core.insn_trace(insn, tracer, tag): one event per execution (size = its bytes). */
static int buffer_insn_trace(lua_State *L)
{
    struct qemu_plugin_insn *insn = qlua_insn_check(L, 1);
    trace_rec *r = rec_new(L, qlua_host.insn_vaddr(insn), QLUA_EV_INSN,
                           (uint16_t)qlua_host.insn_size(insn));
    qlua_host.register_vcpu_insn_exec_cb(insn, trace_exec_cb, QEMU_PLUGIN_CB_NO_REGS, r);
    return 0;
}

/* core.insn_trace_mem(insn, tracer, tag, rw): one event per memory access of kind rw. */
static int buffer_insn_trace_mem(lua_State *L)
{
    struct qemu_plugin_insn *insn = qlua_insn_check(L, 1);
    trace_rec *r = rec_new(L, qlua_host.insn_vaddr(insn), QLUA_EV_LOAD, 0);
    r->rw = qlua_mem_check_rw(L, 4);
    /* RW and filtered natively: see qlua_counter_mem about QEMU 7.2's filter */
    qlua_host.register_vcpu_mem_cb(insn, trace_mem_cb, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                   r);
    return 0;
}

/* core.tracer_new(fn, batch, script_fn) -> tracer id. fn(ptr, n) is lua/qemu's wrapper around
 * the script's function, which profile=on charges instead. */
static int buffer_tracer_new(lua_State *L)
{
    if (n_tracers == MAX_TRACERS) {
        return luaL_error(L, "qemu.tracer: at most %d tracers", MAX_TRACERS);
    }
    lua_Integer batch = luaL_checkinteger(L, 2);
    luaL_argcheck(L, batch >= 1 && batch <= MAX_BATCH, 2, "batch out of range");
    luaL_checktype(L, 3, LUA_TFUNCTION);
    tracers[n_tracers].fn = qlua_fn_new(L, 1, "tracer");
    tracers[n_tracers].fn->stats = qlua_gate_site(L, 3, "tracer");
    tracers[n_tracers].batch = (size_t)batch;
    lua_pushinteger(L, n_tracers++);
    return 1;
}

/* The event fields, in the order of core.events_fill's upvalues (the interned key strings). */
static const char *const event_keys[] = {"addr", "pc", "tag", "vcpu", "size", "kind", "flags"};
#define N_EVENT_KEYS (int)(sizeof event_keys / sizeof event_keys[0])

/* Sets field `key` of the table on top of the stack to the value PUSH pushes. The keys are copied
 * from the upvalues to stack slots KEY_SLOT + k first: pushing a slot is cheaper than pushing an
 * upvalue, and pushing the key before the value saves moving it under the value. */
#define KEY_SLOT 5
#define SET_EVENT_FIELD(L, key, PUSH)                                                            \
    do {                                                                                          \
        lua_pushvalue(L, KEY_SLOT + (key));                                                       \
        PUSH;                                                                                     \
        lua_rawset(L, -3);                                                                        \
    } while (0)

/* Lua 5.4's `events` is a plain table, reused from batch to batch, that refuses writes as
 * LuaJIT's FFI view does: its metatable's __newindex runs for every key it does not hold (0,
 * negatives, past n, names), and __metatable keeps the metatable in place. So #events, ipairs and
 * pairs stay plain table operations and reads are raw hits: an empty table per delivery reading
 * through __index cost 7 ns more per read and made a tracer loop on gzip 11% slower. Replacing an
 * entry 1 .. n is not refused; the next batch overwrites it. */
static int events_newindex(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
    const char *key = luaL_tolstring(L, 2, NULL);
#else /* (LuaJIT's own events are FFI views: core.events_fill is there only for the fuzzer) */
    const char *key = lua_isstring(L, 2) ? lua_tostring(L, 2) : luaL_typename(L, 2);
#endif
    luaL_where(L, 1);
    lua_pushfstring(L, "events[%s] = ...: a tracer's events are read-only (the batch's records are "
                       "reused); copy what you keep into a table of your own",
                    key);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Pushes the metatable of Lua 5.4's views. */
static void events_meta_new(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, events_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "qlua.events");
    lua_setfield(L, -2, "__metatable");
}

/* core.events_fill(pool, ptr, n) -> events: Lua 5.4's events for a tracer's function. Each
 * record i (from 0) is decoded into the table pool[i + 1], reused from batch to batch, and
 * events[i + 1] is that table, so that events[i].addr in the script is two plain table reads.
 * One C call per batch, where a metatable, a C call and a new table per event read cost 300 ns
 * per event: now about 100 with the script's loop. `events` (pool[0]) and its metatable
 * (pool[-1]) are made on the first call (pool is init.lua's, out of the script's reach); the
 * entries past n, left by a larger earlier batch, are cleared, until #events == n (a rawset
 * past n is the script's own doing: past any batch's length it gets the script a new table
 * rather than so long a clearing). A pooled record given a metatable loses it; a field added to
 * one stays. A delivery inside another one (a tracer's function that makes a flush or exit drain
 * other threads) gets new tables, so that the outer function's events do not change under it. */
static int buffer_events_fill(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const qlua_event *batch = lua_touserdata(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, batch != NULL && batch == delivering, 2, "not the batch being delivered");
    luaL_argcheck(L, n >= 0 && (size_t)n == delivering_n, 3, "not the batch's length");
    bool fresh = delivering_depth > 1;
    const int pool = 1;
    lua_settop(L, KEY_SLOT - 1);
    luaL_checkstack(L, N_EVENT_KEYS + 8, "core.events_fill");
    for (int k = 0; k < N_EVENT_KEYS; k++) {
        lua_pushvalue(L, lua_upvalueindex(k + 1));
    }
    const int view = KEY_SLOT + N_EVENT_KEYS, meta = view + 1;
    lua_rawgeti(L, pool, 0);
    lua_rawgeti(L, pool, -1);
    if (!lua_istable(L, view) || !lua_istable(L, meta)) { /* the first call */
        lua_settop(L, view - 1);
        lua_createtable(L, (int)n, 0);
        events_meta_new(L);
        lua_pushvalue(L, view);
        lua_rawseti(L, pool, 0);
        lua_pushvalue(L, meta);
        lua_rawseti(L, pool, -1);
        lua_pushvalue(L, meta);
        lua_setmetatable(L, view);
    }
    if (fresh) {
        lua_createtable(L, (int)n, 0);
        lua_pushvalue(L, meta);
        lua_setmetatable(L, -2);
        lua_replace(L, view);
    }
    for (lua_Integer i = 1; i <= n; i++) {
        if (!fresh) {
            lua_rawgeti(L, pool, (int)i);
        }
        if (fresh || !lua_istable(L, -1)) {
            if (!fresh) {
                lua_pop(L, 1);
            }
            lua_createtable(L, 0, N_EVENT_KEYS);
            if (!fresh) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, pool, (int)i);
            }
        } else if (lua_getmetatable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_setmetatable(L, -2);
        }
        const qlua_event *e = batch + (i - 1);
        SET_EVENT_FIELD(L, 0, qlua_push_u64(L, (uint64_t)e->addr));
        SET_EVENT_FIELD(L, 1, qlua_push_u64(L, (uint64_t)e->pc));
        SET_EVENT_FIELD(L, 2, qlua_push_u64(L, (uint64_t)e->tag));
        SET_EVENT_FIELD(L, 3, lua_pushinteger(L, e->vcpu));
        SET_EVENT_FIELD(L, 4, lua_pushinteger(L, e->size));
        SET_EVENT_FIELD(L, 5, lua_pushinteger(L, e->kind));
        SET_EVENT_FIELD(L, 6, lua_pushinteger(L, e->flags));
        lua_rawseti(L, view, (int)i);
    }
    /* Each pass clears at least the entry at the border found, so this ends; usually one pass
     * (none when batches do not shrink). */
    for (size_t len; !fresh && (len = lua_rawlen(L, view)) > (size_t)n;) {
        if (len > MAX_BATCH) {
            lua_createtable(L, (int)n, 0);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, view, (int)i);
                lua_rawseti(L, -2, (int)i);
            }
            lua_pushvalue(L, meta);
            lua_setmetatable(L, -2);
            lua_replace(L, view);
            lua_pushvalue(L, view);
            lua_rawseti(L, pool, 0);
            break;
        }
        for (size_t i = (size_t)n + 1; i <= len; i++) {
            lua_pushnil(L);
            lua_rawseti(L, view, (int)i);
        }
    }
    lua_pushvalue(L, view);
    return 1;
}

void qlua_buffer_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"tracer_new", buffer_tracer_new},
                                   {"tb_trace", buffer_tb_trace},
                                   {"insn_trace", buffer_insn_trace},
                                   {"insn_trace_mem", buffer_insn_trace_mem},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    for (int k = 0; k < N_EVENT_KEYS; k++) {
        lua_pushstring(L, event_keys[k]);
    }
    lua_pushcclosure(L, buffer_events_fill, N_EVENT_KEYS);
    lua_setfield(L, -2, "events_fill");
    /* the record for LuaJIT's FFI, generated from the C type so both always agree */
    lua_pushfstring(L,
                    "typedef struct { %s addr; %s pc; %s tag; uint32_t vcpu; uint16_t size; "
                    "uint8_t kind; uint8_t flags; } qlua_event;",
                    QLUA_EVENT_NUM_NAME, QLUA_EVENT_NUM_NAME, QLUA_EVENT_NUM_NAME);
    lua_setfield(L, -2, "event_cdef");
    lua_pushinteger(L, (lua_Integer)sizeof(qlua_event));
    lua_setfield(L, -2, "event_size");
    lua_pushinteger(L, MAX_BATCH);
    lua_setfield(L, -2, "tracer_max_batch");
}
