/* tally.c: qemu.tally(), a native map from 64-bit keys to 64-bit counts, for the per-event work
 * that a hash-table update dominates (hot pages, hot addresses, histograms) inside tracer loops
 * and queued callbacks. A LuaJIT table update with a number key costs 10-25 ns; an add here,
 * called through LuaJIT's FFI (lua/qemu/init.lua), about 5 ns. Lua 5.4 calls the same map
 * through a C function. A tally can also be fed with no Lua at all (insn:tally_mem, tb:tally,
 * insn:tally): each execution appends (tally, key, vCPU) to its thread's feed, merged with the
 * previous record when they are the same, and feeds are folded into the maps under qlua's lock
 * when full and whenever exec.c delivers the thread's batches. The maps are only touched under
 * qlua's lock: no locking of their own.
 * Owns: the map, the feeds. Must not touch: argument shapes and their messages
 * (lua/qemu/init.lua checks keys, amounts and options; the C entry points take whole numbers),
 * except Lua 5.4's t:add, a C method for speed that repeats init.lua's checks and messages
 * (tests/test_counts.py holds both Luas to them). */
#include <stdarg.h>

#include "tally.h"
#include "arena.h"
#include "counter.h" /* qlua_rule_ops */
#include "gate.h"
#include "handle.h"
#include "host.h"
#include "insn.h"
#include "mem.h"
#include "tb.h"
#include "value.h"

#define TALLY_META "qlua.tally"
#define EDGES_META "qlua.edges"
#define EMPTY UINT64_MAX /* marks a free slot; the key EMPTY itself lives in `max_count` */
#define FIRST_BITS 6     /* a new or reset tally starts with 64 slots */

/* vCPUs a natively fed add names, one bit each, up to 52: what a LuaJIT number holds exactly */
#define VCPU_BITS 53

typedef struct {
    uint64_t *keys;
    uint64_t *counts;
    uint64_t *vcpus; /* per slot: the vCPUs whose natively fed adds reached it */
    /* qemu.edges only (NULL in a tally): a key is the pair (keys[i], tos[i]) */
    uint64_t *tos;
    uint64_t *firsts;  /* when each key was first added: 1, 2, ...; 0 marks a free slot */
    uint64_t *earlies; /* of each count, the transfers out of a block left before its end */
    uint64_t added;    /* keys added since the last reset: the next firsts value */
    unsigned int bits; /* 2^bits slots */
    size_t used;
    bool has_max;      /* a tally's key EMPTY, which cannot mark its own slot */
    uint64_t max_count;
    uint64_t max_vcpus;
    bool pinned; /* fed natively: kept alive for good, as translated code may name it */
    bool edges;
    bool signed_keys; /* keys read and shown as signed 64-bit numbers (syscall numbers) */
    bool collected; /* its __gc ran (the map is freed); a finalizer may still reach it */
} qlua_tally;

#define COLLECTED_MESSAGE                                                                         \
    "%s used after the garbage collector took it (a finalizer brought it back); keep it in a "    \
    "variable that outlives its use"

static int tally_meta, edges_meta;

static inline size_t slot_of(const qlua_tally *t, uint64_t key, uint64_t to)
{
    return (size_t)(((key ^ (to * UINT64_C(0xC2B2AE3D27D4EB4F))) * UINT64_C(0x9E3779B97F4A7C15)) >>
                    (64 - t->bits));
}

static inline bool slot_free(const qlua_tally *t, size_t i)
{
    return t->edges ? t->firsts[i] == 0 : t->keys[i] == EMPTY;
}

static void tally_alloc(qlua_tally *t, unsigned int bits)
{
    size_t n = (size_t)1 << bits;
    t->bits = bits;
    t->keys = g_new(uint64_t, n);
    t->counts = g_new0(uint64_t, n);
    t->vcpus = g_new0(uint64_t, n);
    for (size_t i = 0; i < n; i++) {
        t->keys[i] = EMPTY;
    }
    if (t->edges) {
        t->tos = g_new0(uint64_t, n);
        t->firsts = g_new0(uint64_t, n);
        t->earlies = g_new0(uint64_t, n);
    }
    t->used = 0;
}

static void tally_free(qlua_tally *t)
{
    g_free(t->keys);
    g_free(t->counts);
    g_free(t->vcpus);
    g_free(t->tos);
    g_free(t->firsts);
    g_free(t->earlies);
    t->keys = t->counts = t->vcpus = t->tos = t->firsts = t->earlies = NULL;
}

/* The slot that holds the key (key, to) (a tally's: (key, 0)), or the free slot it would take. */
static size_t tally_find(const qlua_tally *t, uint64_t key, uint64_t to)
{
    size_t mask = ((size_t)1 << t->bits) - 1;
    size_t i = slot_of(t, key, to);
    while (!slot_free(t, i) && !(t->keys[i] == key && (!t->edges || t->tos[i] == to))) {
        i = (i + 1) & mask;
    }
    return i;
}

static void tally_grow(qlua_tally *t)
{
    qlua_tally old = *t;
    tally_alloc(t, old.bits + 1);
    for (size_t i = 0; i < ((size_t)1 << old.bits); i++) {
        if (slot_free(&old, i)) {
            continue;
        }
        size_t j = tally_find(t, old.keys[i], old.edges ? old.tos[i] : 0);
        t->keys[j] = old.keys[i];
        t->counts[j] = old.counts[i];
        t->vcpus[j] = old.vcpus[i];
        if (t->edges) {
            t->tos[j] = old.tos[i];
            t->firsts[j] = old.firsts[i];
            t->earlies[j] = old.earlies[i];
        }
        t->used++;
    }
    tally_free(&old);
}

/* Adds n to the count of (key, to) (a tally: to is 0), the vCPU bits `vcpus` to its set and, for
 * edges, n to its early count when `early`. */
static void tally_put(qlua_tally *t, uint64_t key, uint64_t to, uint64_t n, bool early,
                      uint64_t vcpus)
{
    if (G_UNLIKELY(key == EMPTY && !t->edges)) {
        t->has_max = true;
        t->max_count += n;
        t->max_vcpus |= vcpus;
        return;
    }
    size_t i = tally_find(t, key, to);
    bool fresh = slot_free(t, i);
    if (fresh) {
        t->keys[i] = key;
        if (t->edges) {
            t->tos[i] = to;
            t->firsts[i] = ++t->added;
        }
    }
    t->counts[i] += n;
    t->vcpus[i] |= vcpus;
    if (early) {
        t->earlies[i] += n;
    }
    if (fresh && ++t->used * 4 > (((size_t)1 << t->bits) - 1) * 3) {
        tally_grow(t); /* keep probes short: at most 3/4 full */
    }
}

/* The count of (key, to), 0 for a key never added; *early its early part (edges). */
static uint64_t tally_count(const qlua_tally *t, uint64_t key, uint64_t to, uint64_t *early)
{
    *early = 0;
    if (key == EMPTY && !t->edges) {
        return t->max_count;
    }
    size_t i = tally_find(t, key, to);
    if (slot_free(t, i)) {
        return 0;
    }
    if (t->edges) {
        *early = t->earlies[i];
    }
    return t->counts[i];
}

/* LuaJIT's FFI entry: numbers arrive as doubles. 0: done; 1: bad key; 2: bad amount; 3: the
 * map was collected. */
static int tally_add_double(qlua_tally *t, double key, double n)
{
    if (G_UNLIKELY(t->collected)) {
        return 3;
    }
    if (G_UNLIKELY(!qlua_whole_u64(key))) {
        return 1;
    }
    if (G_UNLIKELY(!qlua_whole_u64(n))) {
        return 2;
    }
    tally_put(t, (uint64_t)key, 0, (uint64_t)n, false, 0);
    return 0;
}

/* A map whose __gc has run can still be reached from a finalizer that ran in the same cycle
 * (Lua 5.4 keeps weak keys and finalized objects reachable until then): refused, not read. */
static qlua_tally *live_map(lua_State *L, qlua_tally *t, const char *what)
{
    if (G_UNLIKELY(t->collected)) {
        luaL_error(L, COLLECTED_MESSAGE, what);
    }
    return t;
}

static qlua_tally *check_tally(lua_State *L, int idx)
{
    return live_map(L, qlua_meta_check(L, idx, tally_meta, "tally"), "tally");
}

static qlua_tally *check_edges(lua_State *L, int idx)
{
    return live_map(L, qlua_meta_check(L, idx, edges_meta, "edges"), "edges");
}

static qlua_tally *new_map(lua_State *L, bool edges)
{
    qlua_tally *t = lua_newuserdata(L, sizeof *t);
    *t = (qlua_tally){.edges = edges};
    tally_alloc(t, FIRST_BITS);
    qlua_meta_set(L, edges ? edges_meta : tally_meta);
    return t;
}

/* core.tally_new() -> tally userdata, its address (for the FFI) */
static int tally_new(lua_State *L)
{
    lua_pushlightuserdata(L, new_map(L, false));
    return 2;
}

/* core.edges_new() -> edges userdata (qemu.edges(): its methods are the C functions below) */
static int edges_new(lua_State *L)
{
    new_map(L, true);
    return 1;
}

/* __gc of both kinds: a collected map was never fed (fed maps are pinned) */
static int map_gc(lua_State *L)
{
    qlua_tally *t = lua_touserdata(L, 1);
    tally_free(t);
    t->collected = true;
    return 0;
}

/* The native object's add(key, n) (qemu.tally()'s t:add is init.lua's, or tally_add_method) */
static int tally_add_l(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    tally_put(t, qlua_check_u64(L, 2), 0, qlua_check_u64(L, 3), false, 0);
    return 0;
}

#if LUA_VERSION_NUM >= 503
/* A key or amount for t:add as init.lua's LuaJIT path reads it: a whole number from 0 to 2^64-1,
 * or, for a key, any Lua 5.4 integer (its 64-bit pattern: addresses from 2^63 up arrive
 * negative); never a string. */
static bool add_operand(lua_State *L, int idx, bool amount, uint64_t *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER) {
        return false;
    }
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        *out = (uint64_t)i;
        return !amount || i >= 0;
    }
    double d = (double)lua_tonumber(L, idx);
    *out = (uint64_t)(qlua_whole_u64(d) ? d : 0);
    return qlua_whole_u64(d);
}

/* Raises "tally:add: ..." at the script's line: it called this C method itself (level 1). */
static int add_error(lua_State *L, const char *fmt, ...)
{
    luaL_where(L, 1);
    lua_pushliteral(L, "tally:add: ");
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    return lua_error(L);
}

static int add_refused(lua_State *L, const char *what, int idx)
{
    const char *got = luaL_tolstring(L, idx, NULL);
    return add_error(L, "the %s must be a whole number from 0 to 2^64-1, got %s", what, got);
}

/* t:add(key [, n]) under Lua 5.4: the method itself, a C closure over init.lua's map from each
 * tally it made to the native object (upvalue 1) and the tally metatable (2). A Lua method
 * checking self, key and amount before its C call took about 145 ns per add in a tracer loop
 * (hotpages; this one about 70); the checks and messages are the LuaJIT path's (init.lua). */
static int tally_add_method(lua_State *L)
{
    lua_settop(L, 3); /* self, key, amount (nil when absent); more are ignored, as in Lua */
    lua_pushvalue(L, 1);
    lua_rawget(L, lua_upvalueindex(1));
    qlua_tally *t = lua_touserdata(L, -1);
    if (t == NULL || !lua_getmetatable(L, -1) || !lua_rawequal(L, -1, lua_upvalueindex(2))) {
        return add_error(L, "expected a tally from qemu.tally() as self, got %s (call it with a "
                            "colon: t:add(...))",
                         luaL_typename(L, 1));
    }
    if (G_UNLIKELY(t->collected)) {
        return add_error(L, COLLECTED_MESSAGE, "tally");
    }
    uint64_t key, n = 1;
    if (!add_operand(L, 2, false, &key)) {
        return add_refused(L, "key", 2);
    }
    if (!lua_isnoneornil(L, 3) && !add_operand(L, 3, true, &n)) {
        return add_refused(L, "amount", 3);
    }
    tally_put(t, key, 0, n, false, 0);
    return 0;
}

/* core.tally_adder(tallies) -> the method above, over `tallies` ({ [tally] = native object }) */
static int tally_adder(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, tally_meta);
    lua_pushcclosure(L, tally_add_method, 2);
    return 1;
}
#endif

static void fold_syscall_feeds(void); /* (below, with the feeds) */

/* A tally's key at idx for t:get: a whole number from 0 to 2^64-1 (under Lua 5.4 any integer, as
 * its 64-bit pattern), or, for a tally of syscall numbers, from -2^63. Anything else is
 * an error naming the method and what it accepts, at the script's line (through qemu's wrapper,
 * luaL_argerror could only say "bad argument #2 to '?'"). */
static uint64_t check_key(lua_State *L, const qlua_tally *t, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            return (uint64_t)lua_tointeger(L, idx);
        }
#endif
        lua_Number n = lua_tonumber(L, idx);
        if (qlua_whole_u64((double)n)) {
            return (uint64_t)n;
        }
        if (t->signed_keys && n < 0 && n >= -9223372036854775808.0 && n == (lua_Number)(int64_t)n) {
            return (uint64_t)(int64_t)n;
        }
    }
    const char *shown = luaL_typename(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING) {
        shown = lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        shown = lua_pushfstring(L, "%f", lua_tonumber(L, idx));
    }
    /* blamed on the script's line: level 1 is qemu's wrapper of t:get, level 2 its caller */
    luaL_where(L, 2);
    lua_pushfstring(L, "tally:get: the key must be a whole number from %s to 2^64-1, got %s",
                    t->signed_keys ? "-2^63" : "0", shown);
    lua_concat(L, 2);
    return (uint64_t)lua_error(L);
}

static void push_key(lua_State *L, const qlua_tally *t, uint64_t key)
{
    if (t->signed_keys) {
        lua_pushinteger(L, (lua_Integer)(int64_t)key);
    } else {
        qlua_push_u64(L, key);
    }
}

/* t:get(key) -> count (0 for a key never added) */
static int tally_get(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    fold_syscall_feeds();
    uint64_t early;
    qlua_push_u64(L, tally_count(t, check_key(L, t, 2), 0, &early));
    return 1;
}

/* A copy { [key] = column[slot], ... } (max: the value of the key EMPTY, which lives apart). */
static int push_map(lua_State *L, const qlua_tally *t, const uint64_t *column, uint64_t max)
{
    lua_createtable(L, 0, (int)MIN(t->used + 1, (size_t)INT_MAX));
    for (size_t i = 0; i < ((size_t)1 << t->bits); i++) {
        if (t->keys[i] != EMPTY) {
            push_key(L, t, t->keys[i]);
            qlua_push_u64(L, column[i]);
            lua_rawset(L, -3);
        }
    }
    if (t->has_max) {
        push_key(L, t, EMPTY);
        qlua_push_u64(L, max);
        lua_rawset(L, -3);
    }
    return 1;
}

/* t:items() -> { [key] = count, ... }: a copy, to sort or report */
static int tally_items(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    fold_syscall_feeds();
    return push_map(L, t, t->counts, t->max_count);
}

/* t:vcpus() -> { [key] = mask, ... }: bit i set when vCPU i's natively fed adds reached key */
static int tally_vcpus(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    fold_syscall_feeds();
    return push_map(L, t, t->vcpus, t->max_vcpus);
}

static size_t map_size(const qlua_tally *t)
{
    return t->used + (t->has_max ? 1 : 0);
}

static void map_reset(qlua_tally *t)
{
    qlua_tally_fold_mine(); /* adds made before the reset are forgotten with the rest */
    fold_syscall_feeds();
    tally_free(t);
    t->has_max = false;
    t->max_count = t->max_vcpus = t->added = 0;
    tally_alloc(t, FIRST_BITS);
}

/* t:size() -> number of distinct keys */
static int tally_size(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    fold_syscall_feeds();
    lua_pushinteger(L, (lua_Integer)map_size(t));
    return 1;
}

/* t:reset(): forget every key */
static int tally_reset(lua_State *L)
{
    map_reset(check_tally(L, 1));
    return 0;
}

static int tally_tostring(lua_State *L)
{
    lua_pushfstring(L, "tally (%d keys)", (int)map_size(check_tally(L, 1)));
    return 1;
}

/* e:get(from, to) -> count, early (0, 0 for an edge never taken) */
static int edges_get(lua_State *L)
{
    qlua_tally *t = check_edges(L, 1);
    uint64_t early;
    qlua_push_u64(L, tally_count(t, qlua_check_u64(L, 2), qlua_check_u64(L, 3), &early));
    qlua_push_u64(L, early);
    return 2;
}

/* An edge as e:items() lists it, copied out of the map before any Lua table is made: making
 * one can run a finalizer, which may reset the map (freeing its arrays) or add to it. */
typedef struct {
    uint64_t first, from, to, count, early, vcpus;
} edge_copy;

static int by_first(const void *a, const void *b)
{
    uint64_t fa = ((const edge_copy *)a)->first, fb = ((const edge_copy *)b)->first;
    return fa < fb ? -1 : fa > fb;
}

static void set_u64_field(lua_State *L, const char *name, uint64_t v)
{
    qlua_push_u64(L, v);
    lua_setfield(L, -2, name);
}

/* e:items() -> { { from =, to =, count =, early =, vcpus = }, ... } in the order the edges were
 * first taken (as folded: per thread, its execution order) */
static int edges_items(lua_State *L)
{
    qlua_tally *t = check_edges(L, 1);
    /* a Lua userdata, not g_new: an error while the table is built (memory) must not leak it */
    edge_copy *order = lua_newuserdata(L, sizeof *order * MAX(t->used, 1));
    size_t n = 0;
    for (size_t i = 0; i < ((size_t)1 << t->bits); i++) {
        if (!slot_free(t, i)) {
            order[n++] = (edge_copy){t->firsts[i], t->keys[i],   t->tos[i],
                                     t->counts[i], t->earlies[i], t->vcpus[i]};
        }
    }
    qsort(order, n, sizeof *order, by_first);
    lua_createtable(L, (int)MIN(n, (size_t)INT_MAX), 0);
    for (size_t k = 0; k < n; k++) {
        const edge_copy *e = &order[k];
        lua_createtable(L, 0, 5);
        set_u64_field(L, "from", e->from);
        set_u64_field(L, "to", e->to);
        set_u64_field(L, "count", e->count);
        set_u64_field(L, "early", e->early);
        set_u64_field(L, "vcpus", e->vcpus);
        lua_rawseti(L, -2, (int)(k + 1));
    }
    return 1;
}

static int edges_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)map_size(check_edges(L, 1)));
    return 1;
}

static int edges_reset(lua_State *L)
{
    map_reset(check_edges(L, 1));
    return 0;
}

static int edges_tostring(lua_State *L)
{
    lua_pushfstring(L, "edges (%d)", (int)map_size(check_edges(L, 1)));
    return 1;
}

/* ---- feeds: tallies added to at execution time, with no Lua ---- */

typedef struct {
    qlua_tally *t;
    uint64_t key;
    uint64_t to; /* edges: the key's second half; 0 for a tally */
    uint64_t n;
    uint32_t vcpu;
    bool early;  /* edges: out of a block left before its last instruction */
} feed_rec;

#define FEED_BATCH 4096

typedef struct thread_feed {
    feed_rec *recs;
    size_t n;
    struct thread_feed *next;
} thread_feed;

static QLUA_TLS thread_feed *my_feed;
static thread_feed *all_feeds; /* every thread's, for qlua_tally_fold_all */
static GMutex feeds_lock;

static thread_feed *new_feed(void)
{
    my_feed = g_new0(thread_feed, 1);
    my_feed->recs = g_new(feed_rec, FEED_BATCH);
    g_mutex_lock(&feeds_lock);
    my_feed->next = all_feeds;
    all_feeds = my_feed;
    g_mutex_unlock(&feeds_lock);
    return my_feed;
}

/* Under the Lua lock. */
static void fold_recs(const feed_rec *recs, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        const feed_rec *r = &recs[i];
        tally_put(r->t, r->key, r->to, r->n, r->early,
                  r->vcpu < VCPU_BITS ? UINT64_C(1) << r->vcpu : 0);
    }
    *n = 0;
}

static void fold(thread_feed *f)
{
    fold_recs(f->recs, &f->n);
}

/* Syscall tallies are fed from syscall callbacks, which run outside translated code: QEMU's
 * exclusive sections (a flush) do not stop them, and another thread (the REPL, a flush) may fold
 * while they add. So each thread's syscall adds go to a feed of their own, under that feed's
 * mutex (uncontended but for a fold), and readers of a tally fold them all first. Lock order:
 * the Lua lock, feeds_lock, a feed's mutex. */
#define SYSCALL_BATCH 256

typedef struct syscall_feed {
    GMutex lock;
    feed_rec recs[SYSCALL_BATCH];
    size_t n;
    struct syscall_feed *next;
} syscall_feed;

static QLUA_TLS syscall_feed *my_syscall_feed;
static syscall_feed *all_syscall_feeds; /* under feeds_lock */

static void syscall_add(qlua_tally *t, uint64_t key, unsigned int vcpu)
{
    syscall_feed *f = my_syscall_feed;
    if (G_UNLIKELY(f == NULL)) {
        f = my_syscall_feed = g_new0(syscall_feed, 1);
        g_mutex_init(&f->lock);
        g_mutex_lock(&feeds_lock);
        f->next = all_syscall_feeds;
        all_syscall_feeds = f;
        g_mutex_unlock(&feeds_lock);
    }
    g_mutex_lock(&f->lock);
    /* a syscall feeds up to one record per tally kind: a run is looked for a few back */
    for (size_t i = f->n; i > 0 && i + 4 > f->n; i--) {
        feed_rec *r = &f->recs[i - 1];
        if (r->t == t && r->key == key && r->vcpu == vcpu) {
            r->n++;
            g_mutex_unlock(&f->lock);
            return;
        }
    }
    f->recs[f->n++] = (feed_rec){t, key, 0, 1, vcpu, false};
    bool full = f->n == SYSCALL_BATCH;
    g_mutex_unlock(&f->lock);
    if (G_UNLIKELY(full)) {
        qlua_lock();
        g_mutex_lock(&f->lock);
        fold_recs(f->recs, &f->n);
        g_mutex_unlock(&f->lock);
        qlua_unlock();
    }
}

static void fold_syscall_feed(syscall_feed *f)
{
    g_mutex_lock(&f->lock);
    fold_recs(f->recs, &f->n);
    g_mutex_unlock(&f->lock);
}

/* Every thread's syscall adds into their tallies, for a reader (under the Lua lock). */
static void fold_syscall_feeds(void)
{
    if (__atomic_load_n(&all_syscall_feeds, __ATOMIC_RELAXED) == NULL) {
        return;
    }
    g_mutex_lock(&feeds_lock);
    for (syscall_feed *f = all_syscall_feeds; f; f = f->next) {
        fold_syscall_feed(f);
    }
    g_mutex_unlock(&feeds_lock);
}

static inline void feed(qlua_tally *t, uint64_t key, uint64_t to, bool early, unsigned int vcpu)
{
    thread_feed *f = G_LIKELY(my_feed != NULL) ? my_feed : new_feed();
    if (f->n > 0) { /* runs of one key (a page, a loop's block or back edge) cost one record */
        feed_rec *last = &f->recs[f->n - 1];
        if (last->key == key && last->to == to && last->t == t && last->vcpu == vcpu &&
            last->early == early) {
            last->n++;
            return;
        }
    }
    f->recs[f->n++] = (feed_rec){t, key, to, 1, vcpu, early};
    if (G_UNLIKELY(f->n == FEED_BATCH)) {
        qlua_lock();
        fold(f);
        qlua_unlock();
    }
}

bool qlua_tally_pending_mine(void)
{
    return (my_feed && my_feed->n) ||
           (my_syscall_feed && __atomic_load_n(&my_syscall_feed->n, __ATOMIC_RELAXED));
}

void qlua_tally_fold_mine(void)
{
    if (my_feed) {
        fold(my_feed);
    }
    if (my_syscall_feed) {
        fold_syscall_feed(my_syscall_feed);
    }
}

void qlua_tally_fold_all(void)
{
    g_mutex_lock(&feeds_lock);
    for (thread_feed *f = all_feeds; f; f = f->next) {
        fold(f);
    }
    g_mutex_unlock(&feeds_lock);
    fold_syscall_feeds();
}

void qlua_tally_release_mine(void)
{
    if (my_feed) {
        fold(my_feed);
        g_mutex_lock(&feeds_lock);
        QLUA_LIST_UNLINK(all_feeds, my_feed);
        g_mutex_unlock(&feeds_lock);
        g_free(my_feed->recs);
        g_free(my_feed);
        my_feed = NULL;
    }
    if (my_syscall_feed) {
        g_mutex_lock(&feeds_lock); /* out of the list first: no fold can be on it after */
        QLUA_LIST_UNLINK(all_syscall_feeds, my_syscall_feed);
        g_mutex_unlock(&feeds_lock);
        fold_syscall_feed(my_syscall_feed);
        g_mutex_clear(&my_syscall_feed->lock);
        g_free(my_syscall_feed);
        my_syscall_feed = NULL;
    }
}

/* What a fed site adds: a constant key (tb:tally, insn:tally), or the access's address rounded
 * down (insn:tally_mem). */
typedef struct feed_site {
    qlua_tally *t;
    uint64_t key;  /* tb:tally, insn:tally */
    uint64_t mask; /* tally_mem: ~(align - 1) */
    enum qemu_plugin_mem_rw rw;
    bool phys;     /* RAM accesses by physical address (system mode) */
    enum qlua_io_filter io;
    /* tally_mem sites only: the next site the same callback feeds (count_every("mem") rules an
     * earlier one absorbed: one callback per access for them all), appended while callbacks may
     * walk the list */
    const struct feed_site *next;
} feed_site;

static void feed_exec_cb(unsigned int vcpu, void *udata)
{
    const feed_site *s = udata;
    feed(s->t, s->key, 0, false, vcpu);
}

static void feed_mem_cb(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                        void *udata)
{
    int store = -1; /* asked of QEMU once, when a site needs it */
    bool placed = false, io = false;
    uint64_t phys = 0;
    for (const feed_site *s = udata; s; s = __atomic_load_n(&s->next, __ATOMIC_ACQUIRE)) {
        if (s->rw != QEMU_PLUGIN_MEM_RW) {
            if (store < 0) {
                store = qlua_host.mem_is_store(info);
            }
            if ((s->rw == QEMU_PLUGIN_MEM_W) != store) {
                continue;
            }
        }
        uint64_t addr = vaddr;
        if (s->phys) {
            if (!placed) {
                qlua_mem_place(info, vaddr, &io, &phys);
                placed = true;
            }
            if (s->io != QLUA_IO_ANY && io != (s->io == QLUA_IO_ONLY)) {
                continue;
            }
            if (!io) {
                addr = phys;
            }
        } else if (!qlua_mem_io_wanted(s->io, info, vaddr)) {
            continue;
        }
        feed(s->t, addr & s->mask, 0, false, vcpu);
    }
}

/* The tally at idx, pinned: translated code and feed records may name it at any time, so a fed
 * tally lives as long as the Lua state (like counters and tracers; there are few). */
static qlua_tally *pin(lua_State *L, int idx, qlua_tally *t)
{
    if (!t->pinned) {
        lua_pushvalue(L, idx);
        luaL_ref(L, LUA_REGISTRYINDEX);
        t->pinned = true;
    }
    return t;
}

static qlua_tally *fed_tally(lua_State *L, int idx)
{
    return pin(L, idx, check_tally(L, idx));
}

/* A site for the tally at idx, until the next flush. */
static feed_site *site_new(lua_State *L, int idx)
{
    feed_site *s = qlua_arena_alloc(sizeof *s);
    *s = (feed_site){.t = fed_tally(L, idx), .mask = UINT64_MAX, .rw = QEMU_PLUGIN_MEM_RW};
    return s;
}

/* core.tb_tally(tb, tally, key) / core.insn_tally(insn, tally, key): key += 1 per execution */
static int tally_exec(lua_State *L, struct qemu_plugin_tb *tb, struct qemu_plugin_insn *insn)
{
    uint64_t key = qlua_check_u64(L, 3);
    feed_site *s = site_new(L, 2);
    s->key = key;
    if (tb) {
        qlua_host.register_vcpu_tb_exec_cb(tb, feed_exec_cb, QEMU_PLUGIN_CB_NO_REGS, s);
    } else {
        qlua_host.register_vcpu_insn_exec_cb(insn, feed_exec_cb, QEMU_PLUGIN_CB_NO_REGS, s);
    }
    return 0;
}

static int tally_tb(lua_State *L)
{
    return tally_exec(L, qlua_tb_check(L, 1), NULL);
}

static int tally_insn(lua_State *L)
{
    return tally_exec(L, NULL, qlua_insn_check(L, 1));
}

/* The memory options at idx.. (rw, align, phys, io) into s. */
static void mem_options(lua_State *L, int idx, feed_site *s)
{
    enum qemu_plugin_mem_rw rw = qlua_mem_check_rw(L, idx);
    uint64_t align = qlua_check_u64(L, idx + 1);
    luaL_argcheck(L, align != 0 && (align & (align - 1)) == 0, idx + 1, "expected a power of two");
    s->mask = ~(align - 1);
    s->rw = rw;
    s->phys = lua_toboolean(L, idx + 2);
    s->io = qlua_mem_check_io(L, idx + 3);
}

static void register_mem(struct qemu_plugin_insn *insn, feed_site *s)
{
    /* always RW, filtered in the callback: see qlua_counter_mem for why */
    qlua_host.register_vcpu_mem_cb(insn, feed_mem_cb, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                   s);
}

/* core.insn_tally_mem(insn, tally, rw, align, phys, io): the access's address rounded down to
 * align (a power of two) += 1 per access of kind rw; phys: RAM by physical address; io: "any",
 * "only" or "skip" I/O accesses. */
static int tally_mem(lua_State *L)
{
    struct qemu_plugin_insn *insn = qlua_insn_check(L, 1);
    feed_site options = {0};
    mem_options(L, 3, &options);
    feed_site *s = site_new(L, 2);
    options.t = s->t;
    *s = options;
    register_mem(insn, s);
    return 0;
}

/* ---- qemu.count_every with a tally: sites qlua adds to every block, with no Lua ---- */

static void rule_apply(const void *rule, struct qemu_plugin_tb *tb);
static void rule_free(void *rule);
static bool rule_absorb(void *rule, void *other);
static const qlua_rule_ops rule_ops = {rule_apply, rule_free, rule_absorb};

/* counter.c keeps it with the other count_every rules, and calls it through its ops */
/* qemu.count_every("branch", edges): per vCPU, `after` holds the address right after the last
 * instruction that started (each instruction adds its size, so it walks along a block entered at
 * its start) and `block_end` the end of the block that instruction is in (stored at each block
 * start). A block that starts anywhere but `after` was reached by a transfer: a conditional
 * callback, native where QEMU has them, feeds the edge (after, start), early when the previous
 * block was left before its end (after != block_end), and moves `after` to the start; the block's
 * own ops then run from there. On QEMU >= 9.1 (inline stores, native conditions) nothing but the
 * adds runs on straight-line flow; older QEMU runs two small C callbacks per block (the test of
 * the condition and the store). Blocks translated before the rule was added do not keep
 * `after`: a rule added while the guest runs asks for a retranslation and feeds nothing until
 * that reset has flushed them (qlua_tally_code_flushed), then starts every vCPU afresh. */
typedef struct {
    qlua_tally *t;
    qlua_counter *after;
    qlua_counter *block_end;
    uint64_t start;       /* a site's: its block's start */
    unsigned int arm_at;  /* feeds once code_flushes reaches it (0: made at load) */
} branch_site;

static unsigned int code_flushes; /* resets seen (qlua_tally_code_flushed) */

static void branch_cb(unsigned int vcpu, void *udata)
{
    const branch_site *b = udata;
    uint64_t from = qlua_counter_value_mine(b->after, vcpu);
    /* from 0: the vCPU's first block, with no instruction before it */
    if (from != 0 && __atomic_load_n(&code_flushes, __ATOMIC_RELAXED) >= b->arm_at) {
        feed(b->t, from, b->start, from != qlua_counter_value_mine(b->block_end, vcpu), vcpu);
    }
    qlua_counter_set_mine(b->after, vcpu, b->start);
}

/* Every branch rule's `after` counter and when it arms, for vcpu_init and code_flushed. */
typedef struct {
    qlua_counter *after;
    unsigned int arm_at;
} branch_state;

static GArray *branch_states;

void qlua_tally_vcpu_init(unsigned int vcpu)
{
    for (guint i = 0; branch_states && i < branch_states->len; i++) {
        qlua_counter_set(g_array_index(branch_states, branch_state, i).after, vcpu, 0);
    }
}

void qlua_tally_code_flushed(void)
{
    unsigned int now = __atomic_add_fetch(&code_flushes, 1, __ATOMIC_RELAXED);
    for (guint i = 0; branch_states && i < branch_states->len; i++) {
        const branch_state *st = &g_array_index(branch_states, branch_state, i);
        if (st->arm_at == now) { /* armed by this reset: what `after` held came from old code */
            qlua_counter_reset(st->after);
        }
    }
}

typedef struct tally_rule {
    const qlua_rule_ops *ops; /* first: see qlua_rule_ops */
    char kind;         /* 'b': block executions by the block's address, 'i': instructions by
                        * theirs, 'm': accesses by theirs rounded down, 'e': edges (branches) */
    feed_site site;    /* 'm': the one site of every access; else the template */
    branch_site branch; /* 'e': the template */
    struct tally_rule *absorbed; /* 'm': the rules this one took in, last first (freed with it) */
} tally_rule;

/* core.tally_rule(kind, tally, rw, align, phys, io) -> the rule (a light userdata), for
 * core.count_every_rule (counter.c keeps the rules). kind: "block", "insn" or "mem"; or
 * core.tally_rule("branch", edges). */
static int tally_rule_new(lua_State *L)
{
    static const char *const kinds[] = {"block", "insn", "mem", "branch", NULL};
    luaL_checktype(L, 1, LUA_TSTRING);
    int kind = luaL_checkoption(L, 1, NULL, kinds);
    tally_rule *r = g_new0(tally_rule, 1);
    r->ops = &rule_ops;
    r->kind = "bime"[kind];
    r->site = (feed_site){.mask = UINT64_MAX, .rw = QEMU_PLUGIN_MEM_RW};
    if (r->kind == 'e') {
        qlua_tally *t = pin(L, 2, check_edges(L, 2));
        /* made while the guest runs: code translated before it must go first */
        unsigned int arm_at = 0;
        if (!qlua.loading) {
            arm_at = __atomic_load_n(&code_flushes, __ATOMIC_RELAXED) + 1;
            qlua_defer(QLUA_DEFER_RETRANSLATE);
        }
        r->branch = (branch_site){t, qlua_counter_new(), qlua_counter_new(), 0, arm_at};
        if (branch_states == NULL) {
            branch_states = g_array_new(FALSE, FALSE, sizeof(branch_state));
        }
        g_array_append_val(branch_states, ((branch_state){r->branch.after, arm_at}));
        lua_pushlightuserdata(L, r);
        return 1;
    }
    if (r->kind == 'm') {
        mem_options(L, 3, &r->site);
    }
    r->site.t = fed_tally(L, 2);
    lua_pushlightuserdata(L, r);
    return 1;
}

static void branch_apply(const tally_rule *r, struct qemu_plugin_tb *tb, size_t n)
{
    if (n == 0) {
        return;
    }
    struct qemu_plugin_insn *last = qlua_host.tb_get_insn(tb, n - 1);
    branch_site *b = qlua_arena_alloc(sizeof *b);
    *b = r->branch;
    b->start = qlua_host.tb_vaddr(tb);
    qlua_counter_when_tb(tb, b->after, QEMU_PLUGIN_COND_NE, b->start, branch_cb, b);
    /* emitted after the callback (counter.c): it sees the previous block's values */
    qlua_counter_store_tb(tb, b->block_end,
                          qlua_host.insn_vaddr(last) + qlua_host.insn_size(last));
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qlua_host.tb_get_insn(tb, i);
        qlua_counter_insn(insn, b->after, qlua_host.insn_size(insn));
    }
}

static void rule_apply(const void *rule, struct qemu_plugin_tb *tb)
{
    const tally_rule *r = rule;
    size_t n = qlua_host.tb_n_insns(tb);
    if (r->kind == 'e') {
        branch_apply(r, tb, n);
        return;
    }
    if (r->kind == 'b') {
        feed_site *s = qlua_arena_alloc(sizeof *s);
        *s = r->site;
        s->key = qlua_host.tb_vaddr(tb);
        qlua_host.register_vcpu_tb_exec_cb(tb, feed_exec_cb, QEMU_PLUGIN_CB_NO_REGS, s);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qlua_host.tb_get_insn(tb, i);
        if (r->kind == 'm') {
            register_mem(insn, (feed_site *)&r->site); /* one site for all: nothing changes it */
        } else {
            feed_site *s = qlua_arena_alloc(sizeof *s);
            *s = r->site;
            s->key = qlua_host.insn_vaddr(insn);
            qlua_host.register_vcpu_insn_exec_cb(insn, feed_exec_cb, QEMU_PLUGIN_CB_NO_REGS, s);
        }
    }
}

/* Every count_every("mem", tally) rule after the first joins the first one's site list: one
 * callback per access feeds them all (hotpages counts reads and writes: one callback, not two).
 * Blocks translated before a rule joins feed it too, from then on. */
static bool rule_absorb(void *rule, void *other)
{
    tally_rule *r = rule, *o = other;
    if (r->kind != 'm' || o->kind != 'm') {
        return false;
    }
    const feed_site **end = &r->site.next;
    while (*end) {
        end = (const feed_site **)&(*end)->next;
    }
    o->absorbed = r->absorbed;
    r->absorbed = o;
    __atomic_store_n(end, &o->site, __ATOMIC_RELEASE); /* o complete before a callback sees it */
    return true;
}

static void rule_free(void *rule)
{
    tally_rule *r = rule;
    while (r) {
        tally_rule *more = r->absorbed;
        g_free(r);
        r = more;
    }
}

/* ---- syscall tallies: qemu.count_every("syscall" | "syscall_ret" | "syscall_error", t) ---- */

/* The tallies the syscall callbacks feed, as a list read by vCPU threads without the Lua lock.
 * Each entry is one word: the tally's address, its low two bits the event (a tally is aligned to
 * 8). Lua appends to the list in use (the entry, then the count that makes it visible). A reload
 * builds the new version's list aside (qlua_tally_take_syscalls) while the old one keeps
 * counting, and swaps lists at the end, so no syscall goes uncounted in between. A list that was
 * in use is freed only at the next swap: a reader holds it for a few instructions. */
#define MAX_SYSCALL_TALLIES 16

enum { ON_CALL, ON_RETURN, ON_ERROR, EVENT_BITS = 3 };

typedef struct {
    uintptr_t words[MAX_SYSCALL_TALLIES];
    unsigned int count;
    bool rets; /* some tally counts returns: syscall_ret is needed */
} syscall_list;

static syscall_list first_list;
static syscall_list *live_list = &first_list; /* what the callbacks read */
static syscall_list *building = &first_list;  /* what the script's count_every appends to */
static syscall_list *retired;                 /* the list in use before the last swap */

static void feed_syscall_event(unsigned int vcpu, int64_t num, bool ret, bool error)
{
    const syscall_list *l = __atomic_load_n(&live_list, __ATOMIC_ACQUIRE);
    unsigned int n = __atomic_load_n(&l->count, __ATOMIC_ACQUIRE);
    for (unsigned int i = 0; i < n; i++) {
        uintptr_t w = __atomic_load_n(&l->words[i], __ATOMIC_RELAXED);
        unsigned int on = (unsigned int)(w & EVENT_BITS);
        if (ret ? (on == ON_RETURN || (on == ON_ERROR && error)) : on == ON_CALL) {
            syscall_add((qlua_tally *)(w & ~(uintptr_t)EVENT_BITS), (uint64_t)num, vcpu);
        }
    }
}

void qlua_tally_syscall(unsigned int vcpu, int64_t num)
{
    feed_syscall_event(vcpu, num, false, false);
}

void qlua_tally_syscall_ret(unsigned int vcpu, int64_t num, int64_t ret)
{
    feed_syscall_event(vcpu, num, true, ret < 0);
}

bool qlua_tally_syscall_rets_wanted(void)
{
    return __atomic_load_n(&live_list, __ATOMIC_ACQUIRE)->rets || building->rets;
}

/* core.tally_syscalls(tally, on): on "call", "return" or "error"; under the Lua lock (the one
 * writer). A tally given to a syscall kind reads its keys as signed numbers. */
static int tally_syscalls(lua_State *L)
{
    static const char *const ons[] = {"call", "return", "error", NULL};
    static const char *const kinds[] = {"syscall", "syscall_ret", "syscall_error"};
    qlua_tally *t = fed_tally(L, 1);
    uintptr_t on = (uintptr_t)luaL_checkoption(L, 2, NULL, ons);
    syscall_list *l = building;
    g_assert(((uintptr_t)t & EVENT_BITS) == 0);
    uintptr_t word = (uintptr_t)t | on;
    for (unsigned int i = 0; i < l->count; i++) {
        if (l->words[i] == word) {
            return luaL_error(L, "this tally already counts kind \"%s\" (each event would be "
                                 "counted twice)", kinds[on]);
        }
    }
    if (l->count == MAX_SYSCALL_TALLIES) {
        return luaL_error(L, "a script counts syscalls into at most %d (tally, kind) pairs",
                          MAX_SYSCALL_TALLIES);
    }
    t->signed_keys = true;
    __atomic_store_n(&l->words[l->count], word, __ATOMIC_RELAXED);
    __atomic_store_n(&l->count, l->count + 1, __ATOMIC_RELEASE);
    l->rets |= on != ON_CALL;
    return 0;
}

/* The handler set of a reload (events.c): take starts the new version's list aside; put gives
 * the taken list back to the script (a failed reload: the swap, if any, is undone); drop
 * retires a taken list, and when that is the one in use, the script's own list replaces it. */
static void swap_in(syscall_list *l)
{
    syscall_list *old = live_list;
    if (old == l) {
        return;
    }
    __atomic_store_n(&live_list, l, __ATOMIC_RELEASE);
    if (retired && retired != &first_list && retired != l) {
        g_free(retired);
    }
    retired = old;
}

void *qlua_tally_take_syscalls(void)
{
    syscall_list *taken = building;
    building = g_new0(syscall_list, 1);
    return taken;
}

void qlua_tally_put_syscalls(void *given)
{
    syscall_list *l = given, *unused = building;
    building = l;
    swap_in(l);
    if (unused != live_list && unused != retired && unused != &first_list) {
        g_free(unused); /* never read by a callback */
    }
}

void qlua_tally_drop_syscalls(void *dropped)
{
    syscall_list *l = dropped;
    if (l == live_list) {
        swap_in(building);
    } else if (l != retired && l != &first_list) {
        g_free(l); /* never in use */
    }
}

void qlua_tally_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"add", tally_add_l},     {"get", tally_get},
                                       {"items", tally_items},   {"size", tally_size},
                                       {"vcpus", tally_vcpus},
                                       {"reset", tally_reset},   {NULL, NULL}};
    static const luaL_Reg metamethods[] = {
        {"__gc", map_gc}, {"__tostring", tally_tostring}, {NULL, NULL}};
    static const luaL_Reg edge_methods[] = {{"get", edges_get},   {"items", edges_items},
                                            {"size", edges_size}, {"reset", edges_reset},
                                            {NULL, NULL}};
    static const luaL_Reg edge_metamethods[] = {
        {"__gc", map_gc}, {"__tostring", edges_tostring}, {NULL, NULL}};
    static const luaL_Reg core[] = {{"tally_new", tally_new},
                                    {"tb_tally", tally_tb},       {"insn_tally", tally_insn},
                                    {"insn_tally_mem", tally_mem}, {"tally_rule", tally_rule_new},
                                    {"edges_new", edges_new},
                                    {"tally_syscalls", tally_syscalls}, {NULL, NULL}};
    tally_meta = qlua_meta_new(L, TALLY_META);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    edges_meta = qlua_meta_new(L, EDGES_META);
    luaL_setfuncs(L, edge_metamethods, 0);
    luaL_newlib(L, edge_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_setfuncs(L, core, 0);
#if LUA_VERSION_NUM >= 503
    lua_pushcfunction(L, tally_adder);
    lua_setfield(L, -2, "tally_adder");
#endif
    /* the FFI fast path: int (*)(void *tally, double key, double n) */
    lua_pushlightuserdata(L, (void *)(uintptr_t)tally_add_double);
    lua_setfield(L, -2, "tally_add_ptr");
}
