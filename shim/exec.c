/* exec.c: everything that runs Lua at execution time. Synchronous callbacks enter Lua at the
 * event. Queued callbacks (on_exec and on_mem without sync, the default) write a 16-byte record
 * (an access: its flags and address too, and what it was asked to capture) into the executing
 * thread's queue; the queue goes to Lua in batches, in order: when full, before any
 * other Lua callback on the thread, together with the thread's tracer buffers, at vCPU exit,
 * before a fork, before a flush and at exit. Under LuaJIT a compiled loop (lua/qemu/init.lua)
 * calls each function straight from the registry: one lock and one protected call per batch.
 * Owns: execution callback records, the function cache, queues, the order of a thread's batches.
 * Must not touch: tracer records (buffer.c), QEMU's global events (events.c). */
#include <string.h>

#include "exec.h"
#include "arena.h"
#include "buffer.h"
#include "counter.h"
#include "host.h"
#include "insn.h"
#include "mem.h"
#include "tally.h"
#include "tb.h"
#include "value.h"

/* What QEMU hands back at each execution of a callback registered from Lua. */
typedef struct {
    qlua_fn *fn;
    int fn_ref;          /* fn->ref, here so a queued event reads one record */
    int data_ref;        /* registry reference of the data; 0: none */
    qlua_counter *count; /* { counter = c }: pass c's value at the event */
    enum qemu_plugin_mem_rw rw; /* on_mem: which accesses */
    enum qlua_io_filter io;     /* on_mem: to devices, to memory, or both */
    unsigned capture;    /* queued on_mem: QLUA_CAPTURED_* beyond flags and address */
    /* queued on_mem: the last meminfo seen here and its flags byte, one word so that vCPU
     * threads sharing the record never read a torn pair (an instruction's accesses mostly
     * repeat theirs: one load instead of four calls into QEMU) */
    uint64_t flags_cache;
} exec_rec;

/* ---- the function cache ---- */

/* One qlua_fn per distinct (Lua function, kind of callback) per flush generation, so a block that
 * registers the same function for each of its instructions costs one registry slot, errors name
 * the kind of callback that failed, and onerror=warn disables the function everywhere at once. */
static int fns_ref = LUA_NOREF;   /* event -> { function -> qlua_fn* } */
static GHashTable *fns_by_ref;    /* registry reference -> qlua_fn*, this flush generation */

static qlua_fn *exec_fn(lua_State *L, int idx, const char *event)
{
    luaL_checktype(L, idx, LUA_TFUNCTION);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fns_ref);
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
        fn->stats = qlua_gate_site(L, idx, event);
        fn->origin = qlua_gate_origin(L, idx);
        lua_pushvalue(L, idx);
        fn->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        qlua_arena_keep(fn->ref);
        g_hash_table_insert(fns_by_ref, GINT_TO_POINTER(fn->ref), fn);
        fn->disabled = qlua_gate_was_disabled(L, idx);
        lua_pushvalue(L, idx);
        lua_pushlightuserdata(L, fn);
        lua_rawset(L, -3);
    }
    lua_pop(L, 2);
    return fn;
}

/* The function behind a registry reference (queued records carry only it). */
static qlua_fn *fn_by_ref(int ref)
{
    return g_hash_table_lookup(fns_by_ref, GINT_TO_POINTER(ref));
}

static void repeat_forget_blocks(void);

void qlua_exec_reclaim(lua_State *L)
{
    repeat_forget_blocks();
    g_hash_table_remove_all(fns_by_ref);
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, fns_ref);
}

static exec_rec *rec_new(lua_State *L, int fn_idx, int data_idx, const char *event)
{
    exec_rec *r = qlua_arena_alloc(sizeof *r);
    r->fn = exec_fn(L, fn_idx, event);
    r->fn_ref = r->fn->ref;
    r->data_ref = qlua_arena_ref(L, data_idx);
    return r;
}

/* A callback's data: nil for none (reference 0). */
static void push_data(lua_State *L, int data_ref)
{
    if (data_ref == 0) {
        lua_pushnil(L);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, data_ref);
    }
}

/* The arguments of an execution callback, synchronous or queued: vcpu, data (nil for none),
 * and with { counter = c } c's value at the event. Returns how many were pushed. */
static int push_args(lua_State *L, unsigned int vcpu, int data_ref, bool has_count,
                     uint64_t count)
{
    lua_pushinteger(L, vcpu);
    push_data(L, data_ref);
    if (has_count) {
        qlua_push_u64(L, count);
    }
    return has_count ? 3 : 2;
}

/* ---- queues: per-thread records of queued callbacks ---- */

/* 16 bytes: writing and reading the records is most of the cost of a queued event. The counter
 * value of { counter = c }, or a queued access's address, goes to a parallel array, and what a
 * queued access captured on request (phys, value) to a third. Layout shared with Lua
 * (qlua_exec_open). */
typedef struct {
    int32_t fn;
    int32_t data; /* 0: no data */
    uint32_t vcpu;
    uint32_t kind; /* QUEUED_*; an access: its qlua_mem_flags byte from bit 8 */
} qlua_queued;

enum {
    QUEUED_COUNT = 1,        /* counts[i]: the counter's value */
    QUEUED_MEM = 2,          /* counts[i]: the access's address */
    QUEUED_CAPTURE_SHIFT = 2, /* an access's QLUA_CAPTURED_* bits, shifted */
    QUEUED_PHYS = QLUA_CAPTURED_PHYS << QUEUED_CAPTURE_SHIFT,   /* extras[i]: phys, io, device */
    QUEUED_VALUE = QLUA_CAPTURED_VALUE << QUEUED_CAPTURE_SHIFT, /* extras[i]: the value */
    QUEUED_FLAGS_SHIFT = 8,
};

#define QUEUE_BATCH 4096
#define QUEUE_FEW 8

typedef struct thread_queue {
    qlua_queued *records;
    qlua_event_num *counts;
    qlua_access_extra *extras; /* made when a queued access first captures something */
    size_t n;
    uint32_t pos; /* LuaJIT's loop writes the record it is calling here */
    bool draining;
    struct thread_queue *next;
} thread_queue;

static QLUA_TLS thread_queue *mine;
static thread_queue *all_queues; /* every thread's, for exit, fork and flush */
static GMutex all_lock;
static int drainer_ref = LUA_NOREF; /* LuaJIT: fn(records, counts, extras, first, n, pos) */
static int noop_ref = LUA_NOREF;    /* stands in for a function onerror=warn disabled */
static int reset_ref = LUA_NOREF;   /* LuaJIT: ends the live access of a loop that failed */
static uint64_t batches;

uint64_t qlua_exec_batches(void)
{
    return batches;
}

static thread_queue *my_queue(void)
{
    if (G_UNLIKELY(mine == NULL)) {
        mine = g_new0(thread_queue, 1);
        mine->records = g_new(qlua_queued, QUEUE_BATCH);
        mine->counts = g_new(qlua_event_num, QUEUE_BATCH);
        g_mutex_lock(&all_lock);
        mine->next = all_queues;
        all_queues = mine;
        g_mutex_unlock(&all_lock);
    }
    return mine;
}

/* The error policy for a failed record: that record's function, or (the failure was not a
 * record's, say out of memory) the policy of queued callbacks in general. */
static void queue_error(int failed_ref)
{
    qlua_fn *owner = fn_by_ref(failed_ref);
    if (owner) {
        qlua_gate_error(owner); /* returns only under onerror=warn */
    } else {
        static qlua_fn unknown = {.ref = LUA_NOREF, .event = "queued on_exec"};
        unknown.disabled = false;
        qlua_gate_error(&unknown);
    }
}

/* Pushes record i's function and arguments; returns how many arguments. A queued access's is
 * the one reusable handle showing what was captured, live until qlua_access_close(*saved). */
static int push_record(lua_State *L, thread_queue *q, size_t i, uint64_t *saved)
{
    const qlua_queued *r = &q->records[i];
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn);
    if (!(r->kind & QUEUED_MEM)) {
        return push_args(L, r->vcpu, r->data, r->kind & QUEUED_COUNT,
                         r->kind & QUEUED_COUNT ? (uint64_t)q->counts[i] : 0);
    }
    uint64_t vaddr = (uint64_t)q->counts[i]; /* fn(vcpu, access, vaddr, data) */
    unsigned captured = (r->kind & (QUEUED_PHYS | QUEUED_VALUE)) >> QUEUED_CAPTURE_SHIFT;
    lua_pushinteger(L, r->vcpu);
    *saved = qlua_access_push_captured(L, r->kind >> QUEUED_FLAGS_SHIFT, vaddr,
                                       captured ? &q->extras[i] : NULL, captured);
    qlua_push_u64(L, vaddr);
    push_data(L, r->data);
    return 4;
}

/* Lua 5.4's loop (run by one protected call): records pos..n-1 of the queue, the record being
 * called in q->pos, so that an error names it. */
static int run_batch(lua_State *L)
{
    thread_queue *q = lua_touserdata(L, 1);
    size_t n = (size_t)lua_tointeger(L, 2);
    lua_settop(L, 0);
    for (size_t i = q->pos; i < n; i++) {
        if (q->records[i].fn == noop_ref) {
            continue;
        }
        q->pos = (uint32_t)i;
        uint64_t saved = 0;
        bool access = q->records[i].kind & QUEUED_MEM;
        qlua_gate_call_inside(L, push_record(L, q, i, &saved));
        if (access) {
            qlua_access_close(saved);
        }
    }
    return 0;
}

/* Runs records first..n-1 of q; returns the index of the record that failed, or n. */
static size_t run_records(lua_State *L, thread_queue *q, size_t first, size_t n, int handler)
{
    /* A few records (a synchronous callback on this thread came soon after them): one call each
     * is cheaper than starting a loop, whose set-up costs several calls. */
    if (n - first > QUEUE_FEW) {
        if (drainer_ref != LUA_NOREF) { /* LuaJIT: the compiled loop in lua/qemu/init.lua */
            lua_rawgeti(L, LUA_REGISTRYINDEX, drainer_ref);
            lua_pushlightuserdata(L, q->records);
            lua_pushlightuserdata(L, q->counts);
            lua_pushlightuserdata(L, q->extras);
            lua_pushinteger(L, (lua_Integer)first);
            lua_pushinteger(L, (lua_Integer)n);
            lua_pushlightuserdata(L, &q->pos);
        } else { /* Lua 5.4: one protected call for the batch, not one per record */
            lua_pushcfunction(L, run_batch);
            lua_pushlightuserdata(L, q);
            lua_pushinteger(L, (lua_Integer)n);
        }
        q->pos = (uint32_t)first;
        if (qlua_gate_pcall_at(L, drainer_ref != LUA_NOREF ? 6 : 2, 0, handler) == 0) {
            return n;
        }
        if (drainer_ref != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, reset_ref); /* above the error, which stays */
            if (qlua_gate_pcall_at(L, 0, 0, 0) != 0) {
                lua_pop(L, 1);
            }
        } else {
            qlua_access_close(0); /* the failed record's access, if it was one, is over */
        }
        return MIN(MAX((size_t)q->pos, first), n - 1); /* the record being called */
    }
    for (size_t i = first; i < n; i++) {
        if (q->records[i].fn == noop_ref) {
            continue;
        }
        uint64_t saved = 0;
        int status = qlua_gate_pcall_at(L, push_record(L, q, i, &saved), 0, handler);
        if (q->records[i].kind & QUEUED_MEM) {
            qlua_access_close(saved);
        }
        if (status != 0) {
            return i;
        }
    }
    return n;
}

/* profile=on: one batch, many sites; its time is shared out by each site's number of records. */
static void charge_batch(thread_queue *q, size_t n, uint64_t ns)
{
    uint64_t per = ns / n;
    batches++;
    for (size_t j = 0; j < n; j++) {
        qlua_fn *fn = fn_by_ref(q->records[j].fn);
        if (fn && fn->stats) {
            qlua_gate_charge(fn->stats, per);
            fn->stats->events++;
        }
    }
}

/* Delivers a thread's queued callbacks in the order they were executed, under the Lua lock. */
static void drain_queue(thread_queue *q)
{
    size_t n = q->n;
    lua_State *L = qlua.L;
    if (n == 0 || L == NULL) {
        q->n = 0;
        return;
    }
    qlua_queue_context++;
    uint64_t t0 = qlua.profile ? qlua_now_ns() : 0;
    if (qlua_some_fn_disabled) { /* rare: onerror=warn turned a function off */
        for (size_t j = 0; j < n; j++) {
            qlua_fn *fn = fn_by_ref(q->records[j].fn);
            if (fn && fn->disabled) {
                q->records[j].fn = noop_ref;
            }
        }
    }
    for (size_t first = 0; !qlua.finished && first < n;) {
        int handler = qlua_gate_push_handler(L);
        size_t failed = run_records(L, q, first, n, handler);
        if (failed == n) {
            lua_pop(L, 1);
            break;
        }
        int failed_ref = q->records[failed].fn;
        queue_error(failed_ref);
        lua_pop(L, 1);
        if (qlua_gate_exit_requested()) {
            break; /* os.exit: the run ends at the outermost unlock */
        }
        for (size_t j = failed + 1; j < n; j++) { /* the failed function is off for good */
            if (q->records[j].fn == failed_ref) {
                q->records[j].fn = noop_ref;
            }
        }
        first = failed + 1;
    }
    if (qlua.profile) {
        charge_batch(q, n, qlua_now_ns() - t0);
    }
    qlua_queue_context--;
    q->n = 0;
}

/* A thread's tracer buffers, then its queue (each in execution order; a tracer's events are not
 * interleaved with the queue). Under the Lua lock from the first look. */
/* Under the Lua lock: q's records, unless one of q's callbacks is running (q is draining). */
static void deliver_queue(thread_queue *q)
{
    if (q && !q->draining) {
        q->draining = true;
        /* delivered after the fact: not a vCPU callback context (no register or memory reads) */
        int context = qlua_vcpu_context;
        qlua_vcpu_context = 0;
        drain_queue(q);
        qlua_vcpu_context = context;
        q->draining = false;
    }
}

static void drain_thread(thread_queue *q)
{
    qlua_lock();
    qlua_tally_fold_mine(); /* natively fed tallies first: no Lua runs, and Lua may read them */
    qlua_buffer_drain_mine();
    deliver_queue(q);
    qlua_unlock();
}

void qlua_exec_drain_mine(void)
{
    if ((mine && mine->n && !mine->draining) || qlua_buffer_pending_mine() ||
        qlua_tally_pending_mine()) {
        drain_thread(mine);
    }
}

/* tracers call this when one of the thread's buffers fills */
static void deliver_mine(void)
{
    drain_thread(mine);
}

void qlua_exec_drain_all(void)
{
    qlua_lock();
    qlua_tally_fold_all();
    qlua_buffer_drain_all();
    g_mutex_lock(&all_lock);
    thread_queue *list = all_queues;
    g_mutex_unlock(&all_lock);
    for (thread_queue *q = list; q; q = q->next) {
        deliver_queue(q);
    }
    qlua_unlock();
}

void qlua_exec_release_mine(void)
{
    qlua_lock();
    qlua_exec_drain_mine();
    qlua_buffer_release_mine();
    qlua_tally_release_mine();
    if (mine) {
        g_mutex_lock(&all_lock);
        QLUA_LIST_UNLINK(all_queues, mine);
        g_mutex_unlock(&all_lock);
        g_free(mine->records);
        g_free(mine->counts);
        g_free(mine->extras);
        g_free(mine);
        mine = NULL;
    }
    qlua_unlock();
}

lua_State *qlua_exec_enter(qlua_fn *fn)
{
    qlua_exec_drain_mine(); /* this thread's batched events come first, in order */
    return qlua_gate_enter(fn);
}

/* ---- the callbacks QEMU calls ---- */

static void sync_cb(unsigned int vcpu, void *udata)
{
    exec_rec *r = udata;
    if (G_UNLIKELY(qlua.polls)) {
        qlua_gate_poll();
    }
    lua_State *L = qlua_exec_enter(r->fn);
    if (L == NULL) {
        return;
    }
    int nargs = push_args(L, vcpu, r->data_ref, r->count != NULL,
                          r->count ? qlua_counter_value_mine(r->count, vcpu) : 0);
    qlua_vcpu_context++;
    qlua_gate_call(r->fn, nargs);
    qlua_vcpu_context--;
}

static void queued_cb(unsigned int vcpu, void *udata)
{
    const exec_rec *r = udata;
    if (G_UNLIKELY(qlua.polls)) {
        qlua_gate_poll();
    }
    thread_queue *q = G_LIKELY(mine != NULL) ? mine : my_queue();
    qlua_queued *rec = &q->records[q->n];
    rec->fn = r->fn_ref;
    rec->data = r->data_ref;
    rec->vcpu = vcpu;
    rec->kind = r->count != NULL ? QUEUED_COUNT : 0;
    if (r->count) {
        q->counts[q->n] = (qlua_event_num)qlua_counter_value_mine(r->count, vcpu);
    }
    if (G_UNLIKELY(++q->n == QUEUE_BATCH)) {
        drain_thread(q);
    }
}

typedef struct {
    const exec_rec *r;
    unsigned int vcpu;
    qemu_plugin_meminfo_t info;
    uint64_t vaddr;
    uint64_t saved; /* the access handle live before this one */
} mem_event;

static int push_mem(lua_State *L, void *ctx)
{
    mem_event *e = ctx;
    lua_pushinteger(L, e->vcpu);
    e->saved = qlua_access_push(L, e->info, e->vaddr);
    qlua_push_u64(L, e->vaddr);
    push_data(L, e->r->data_ref);
    return 4;
}

static void mem_cb(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    exec_rec *r = udata;
    if (!qlua_mem_wanted(r->rw, info) || !qlua_mem_io_wanted(r->io, info, vaddr)) {
        return;
    }
    if (G_UNLIKELY(qlua.polls)) {
        qlua_gate_poll();
    }
    qlua_lock(); /* held across the gate so the access stops being live before others run */
    lua_State *L = qlua_exec_enter(r->fn);
    if (L == NULL) {
        qlua_unlock();
        return;
    }
    mem_event e = {r, vcpu, info, vaddr, 0};
    qlua_vcpu_context++;
    qlua_gate_call_with(r->fn, push_mem, &e); /* the access handle is made inside the pcall */
    qlua_vcpu_context--;
    qlua_access_close(e.saved);
    qlua_unlock();
}

/* the flags byte of info, through r's one-word cache */
static unsigned cached_flags(exec_rec *r, qemu_plugin_meminfo_t info)
{
    uint64_t seen = __atomic_load_n(&r->flags_cache, __ATOMIC_RELAXED);
    if (G_LIKELY(seen >> 32 == info && (seen & 0x100))) {
        return (unsigned)seen & 0xff;
    }
    unsigned flags = qlua_mem_flags(info);
    __atomic_store_n(&r->flags_cache, (uint64_t)info << 32 | 0x100 | flags, __ATOMIC_RELAXED);
    return flags;
}

/* A queued access: recorded with what the callback asked to capture, delivered with the queue. */
static void queued_mem_cb(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                          void *udata)
{
    exec_rec *r = udata;
    if (!qlua_mem_wanted(r->rw, info) || !qlua_mem_io_wanted(r->io, info, vaddr)) {
        return;
    }
    if (G_UNLIKELY(qlua.polls)) {
        qlua_gate_poll();
    }
    thread_queue *q = G_LIKELY(mine != NULL) ? mine : my_queue();
    size_t n = q->n;
    qlua_queued *rec = &q->records[n];
    rec->fn = r->fn_ref;
    rec->data = r->data_ref;
    rec->vcpu = vcpu;
    unsigned kind = QUEUED_MEM | cached_flags(r, info) << QUEUED_FLAGS_SHIFT;
    q->counts[n] = qlua_u64_num(vaddr); /* as qlua_push_u64 gives it */
    if (G_UNLIKELY(r->capture)) {
        if (q->extras == NULL) {
            q->extras = g_new0(qlua_access_extra, QUEUE_BATCH);
        }
        qlua_mem_capture(&q->extras[n], info, vaddr, r->capture & QLUA_CAPTURED_PHYS,
                         r->capture & QLUA_CAPTURED_VALUE);
        kind |= r->capture << QUEUED_CAPTURE_SHIFT;
    }
    rec->kind = kind;
    if (G_UNLIKELY(++q->n == QUEUE_BATCH)) {
        drain_thread(q);
    }
}

/* ---- tb:on_repeat: the same instruction started twice in a row, found natively ---- */

/* A block's addresses, for the vCPU that runs it next to learn which of them ran last. */
typedef struct {
    const exec_rec *rec;  /* fn(vcpu, data), queued */
    qlua_counter *count;  /* the vCPU's instructions started (insn:count on every one) */
    size_t n;
    uint64_t pcs[];
} repeat_site;

/* Per vCPU: the block it entered last and its count then; the last instruction known to have
 * started. Each vCPU's state is touched only by the thread running it. */
typedef struct {
    const repeat_site *prev;
    uint64_t prev_count;
    uint64_t last_pc;
    bool has_last;
} repeat_state;

#define REPEAT_CHUNK 64
#define REPEAT_CHUNKS 4096 /* vCPU indices up to 262143 */
static repeat_state *repeat_chunks[REPEAT_CHUNKS];

static repeat_state *repeat_state_of(unsigned int vcpu)
{
    size_t c = vcpu / REPEAT_CHUNK;
    if (G_UNLIKELY(c >= REPEAT_CHUNKS)) {
        return NULL;
    }
    repeat_state *chunk = __atomic_load_n(&repeat_chunks[c], __ATOMIC_ACQUIRE);
    if (G_UNLIKELY(chunk == NULL)) {
        repeat_state *fresh = g_new0(repeat_state, REPEAT_CHUNK);
        if (!__atomic_compare_exchange_n(&repeat_chunks[c], &chunk, fresh, false,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            g_free(fresh); /* another thread made it first: chunk holds theirs */
        } else {
            chunk = fresh;
        }
    }
    return &chunk[vcpu % REPEAT_CHUNK];
}

/* At each start of the block: the count since the vCPU's previous block says how many of that
 * block's instructions started, hence which one started last (blocks left early included);
 * when that is this block's first instruction, the instruction runs twice in a row. */
static void repeat_cb(unsigned int vcpu, void *udata)
{
    const repeat_site *s = udata;
    repeat_state *st = repeat_state_of(vcpu);
    if (st == NULL) {
        return;
    }
    uint64_t now = qlua_counter_value_mine(s->count, vcpu);
    if (st->prev) {
        uint64_t ran = now - st->prev_count;
        if (ran >= 1 && ran <= st->prev->n) {
            st->last_pc = st->prev->pcs[ran - 1];
            st->has_last = true;
        }
    }
    st->prev = s;
    st->prev_count = now;
    if (G_UNLIKELY(st->has_last && st->last_pc == s->pcs[0])) {
        queued_cb(vcpu, (void *)s->rec);
    }
}

/* A flush frees the sites: no vCPU may look at its previous block's any more (the instruction
 * that started last is kept). Translation is stopped then, so no vCPU runs. */
static void repeat_forget_blocks(void)
{
    for (size_t c = 0; c < REPEAT_CHUNKS; c++) {
        repeat_state *chunk = repeat_chunks[c];
        for (size_t i = 0; chunk && i < REPEAT_CHUNK; i++) {
            chunk[i].prev = NULL;
        }
    }
}

/* core.tb_on_repeat(tb, fn, data, counter): fn(vcpu, data), queued, each time the block starts
 * right after its first instruction started (rep loops, jumps to themselves). */
static int exec_tb_on_repeat(lua_State *L)
{
    struct qemu_plugin_tb *tb = qlua_tb_check(L, 1);
    qlua_counter *count = qlua_counter_check(L, 4);
    size_t n = qlua_host.tb_n_insns(tb);
    if (n == 0) {
        return 0;
    }
    repeat_site *s = qlua_arena_alloc(sizeof *s + n * sizeof s->pcs[0]);
    s->rec = rec_new(L, 2, 3, "tb:on_repeat");
    s->count = count;
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        s->pcs[i] = qlua_host.insn_vaddr(qlua_host.tb_get_insn(tb, i));
    }
    qlua_host.register_vcpu_tb_exec_cb(tb, repeat_cb, QEMU_PLUGIN_CB_NO_REGS, s);
    return 0;
}

/* ---- registration, with positional arguments lua/qemu/init.lua has checked ---- */

static enum qemu_plugin_cb_flags check_regs(lua_State *L, int idx)
{
    static const char *const names[] = {"none", "r", "rw", NULL};
    static const enum qemu_plugin_cb_flags flags[] = {
        QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS};
    luaL_checktype(L, idx, LUA_TSTRING);
    return flags[luaL_checkoption(L, idx, NULL, names)];
}

/* core.tb_on_exec / core.insn_on_exec (handle, fn, data, regs, sync, counter): register access
 * makes a callback synchronous (the registers are those of the moment); QEMU must know at
 * translation time, since making registers readable costs at every execution. */
static int exec_on_exec(lua_State *L, struct qemu_plugin_tb *tb, struct qemu_plugin_insn *insn)
{
    enum qemu_plugin_cb_flags flags = check_regs(L, 4);
    bool sync = lua_toboolean(L, 5) || qlua.exec_sync || flags != QEMU_PLUGIN_CB_NO_REGS;
    qlua_counter *count = lua_isnoneornil(L, 6) ? NULL : qlua_counter_check(L, 6);
    exec_rec *r = rec_new(L, 2, 3, tb ? "tb:on_exec" : "insn:on_exec");
    r->count = count;
    qemu_plugin_vcpu_udata_cb_t cb = sync ? sync_cb : queued_cb;
    if (tb) {
        qlua_host.register_vcpu_tb_exec_cb(tb, cb, flags, r);
    } else {
        qlua_host.register_vcpu_insn_exec_cb(insn, cb, flags, r);
    }
    return 0;
}

static int exec_tb_on_exec(lua_State *L)
{
    return exec_on_exec(L, qlua_tb_check(L, 1), NULL);
}

static int exec_insn_on_exec(lua_State *L)
{
    return exec_on_exec(L, NULL, qlua_insn_check(L, 1));
}

/* core.insn_on_mem(insn, fn, data, rw, sync, phys, value, io): fn(vcpu, access, vaddr, data) per
 * access of kind rw that passes io ("any", "only" devices, "skip" them: filtered in C, so the
 * accesses left out cost no record and no Lua); queued unless sync, capturing phys/io/device
 * and the value on request. */
static int exec_insn_on_mem(lua_State *L)
{
    struct qemu_plugin_insn *insn = qlua_insn_check(L, 1);
    enum qemu_plugin_mem_rw rw = qlua_mem_check_rw(L, 4);
    bool sync = lua_toboolean(L, 5) || qlua.exec_sync;
    unsigned capture = (lua_toboolean(L, 6) ? QLUA_CAPTURED_PHYS : 0) |
                       (lua_toboolean(L, 7) ? QLUA_CAPTURED_VALUE : 0);
    if (capture & QLUA_CAPTURED_VALUE) {
        qlua_host_need(L, "insn:on_mem's { value = true }", "mem_value");
    }
    enum qlua_io_filter io = lua_isnoneornil(L, 8) ? QLUA_IO_ANY : qlua_mem_check_io(L, 8);
    exec_rec *r = rec_new(L, 2, 3, "insn:on_mem");
    r->rw = rw;
    r->io = io;
    r->capture = sync ? 0 : capture;
    /* always RW, filtered in the callback: see qlua_counter_mem for why */
    qlua_host.register_vcpu_mem_cb(insn, sync ? mem_cb : queued_mem_cb, QEMU_PLUGIN_CB_NO_REGS,
                                   QEMU_PLUGIN_MEM_RW, r);
    return 0;
}

static enum qemu_plugin_cond check_cond(lua_State *L, int idx)
{
    static const char *const ops[] = {"==", "~=", "!=", "<", "<=", ">", ">=", "always", "never",
                                      NULL};
    static const enum qemu_plugin_cond conds[] = {
        QEMU_PLUGIN_COND_EQ, QEMU_PLUGIN_COND_NE, QEMU_PLUGIN_COND_NE,
        QEMU_PLUGIN_COND_LT, QEMU_PLUGIN_COND_LE, QEMU_PLUGIN_COND_GT,
        QEMU_PLUGIN_COND_GE, QEMU_PLUGIN_COND_ALWAYS, QEMU_PLUGIN_COND_NEVER};
    luaL_checktype(L, idx, LUA_TSTRING);
    return conds[luaL_checkoption(L, idx, NULL, ops)];
}

/* core.tb_when / core.insn_when (handle, counter, op, value, fn, data): fn(vcpu, data) on each
 * execution at which the executing vCPU's counter compares true with value; synchronous. */
static int exec_when(lua_State *L, struct qemu_plugin_tb *tb, struct qemu_plugin_insn *insn)
{
    qlua_counter *c = qlua_counter_check(L, 2);
    enum qemu_plugin_cond cond = check_cond(L, 3);
    uint64_t imm = qlua_check_u64(L, 4);
    exec_rec *r = rec_new(L, 5, 6, tb ? "tb:when" : "insn:when");
    if (tb) {
        qlua_counter_when_tb(tb, c, cond, imm, sync_cb, r);
    } else {
        qlua_counter_when_insn(insn, c, cond, imm, sync_cb, r);
    }
    return 0;
}

static int exec_tb_when(lua_State *L)
{
    return exec_when(L, qlua_tb_check(L, 1), NULL);
}

static int exec_insn_when(lua_State *L)
{
    return exec_when(L, NULL, qlua_insn_check(L, 1));
}

/* core.queue_drainer(fn, noop, reset): LuaJIT's loop over queued records, the function that
 * stands in for a disabled one, and what ends a failed loop's live access (lua/qemu/init.lua) */
static int exec_queue_drainer(lua_State *L)
{
    int *refs[] = {&drainer_ref, &noop_ref, &reset_ref};
    for (int i = 0; i < 3; i++) {
        luaL_checktype(L, i + 1, LUA_TFUNCTION);
    }
    for (int i = 0; i < 3; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, *refs[i]);
        lua_pushvalue(L, i + 1);
        *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

void qlua_exec_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"tb_on_exec", exec_tb_on_exec},
                                   {"insn_on_exec", exec_insn_on_exec},
                                   {"insn_on_mem", exec_insn_on_mem},
                                   {"tb_when", exec_tb_when},
                                   {"insn_when", exec_insn_when},
                                   {"tb_on_repeat", exec_tb_on_repeat},
                                   {"queue_drainer", exec_queue_drainer},
                                   {NULL, NULL}};
    if (fns_by_ref == NULL) {
        fns_by_ref = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    drainer_ref = noop_ref = reset_ref = LUA_NOREF; /* a new state (a reload keeps the state) */
    lua_newtable(L);
    fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    qlua_buffer_on_full(deliver_mine);
    luaL_setfuncs(L, fns, 0);
    lua_pushliteral(L, "typedef struct { int32_t fn; int32_t data; uint32_t vcpu; "
                       "uint32_t kind; } qlua_queued;");
    lua_setfield(L, -2, "queued_cdef");
    lua_pushliteral(L, QLUA_EVENT_NUM_NAME);
    lua_setfield(L, -2, "queued_count_type");
    lua_pushinteger(L, (lua_Integer)sizeof(qlua_queued));
    lua_setfield(L, -2, "queued_size");
    lua_createtable(L, 0, 5);
    static const struct { const char *name; int bit; } kinds[] = {
        {"count", QUEUED_COUNT}, {"mem", QUEUED_MEM}, {"phys", QUEUED_PHYS},
        {"value", QUEUED_VALUE}, {"flags_shift", QUEUED_FLAGS_SHIFT}};
    for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
        lua_pushinteger(L, kinds[i].bit);
        lua_setfield(L, -2, kinds[i].name);
    }
    lua_setfield(L, -2, "queued_kinds");
}
