/* tally.c: qemu.tally(), a native map from 64-bit keys to 64-bit counts, for the per-event work
 * that a hash-table update dominates (hot pages, hot addresses, histograms) inside tracer loops
 * and queued callbacks. A LuaJIT table update with a number key costs 10-25 ns; an add here,
 * called through LuaJIT's FFI (lua/qemu/init.lua), about 5 ns. Lua 5.4 calls the same map
 * through a C function. Only Lua touches a tally, always under qlua's lock: no locking here.
 * Owns: the map. Must not touch: argument shapes and their messages (lua/qemu/init.lua checks keys
 * and amounts; the C entry points take whole numbers). */
#include "tally.h"
#include "handle.h"
#include "value.h"

#define TALLY_META "qlua.tally"
#define EMPTY UINT64_MAX /* marks a free slot; the key EMPTY itself lives in `max_count` */
#define FIRST_BITS 6     /* a new or reset tally starts with 64 slots */

typedef struct {
    uint64_t *keys;
    uint64_t *counts;
    unsigned int bits; /* 2^bits slots */
    size_t used;
    bool has_max;
    uint64_t max_count;
} qlua_tally;

static int tally_meta;

static inline size_t slot_of(const qlua_tally *t, uint64_t key)
{
    return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - t->bits));
}

static void tally_alloc(qlua_tally *t, unsigned int bits)
{
    size_t n = (size_t)1 << bits;
    t->bits = bits;
    t->keys = g_new(uint64_t, n);
    t->counts = g_new0(uint64_t, n);
    for (size_t i = 0; i < n; i++) {
        t->keys[i] = EMPTY;
    }
    t->used = 0;
}

static void tally_put(qlua_tally *t, uint64_t key, uint64_t n);

static void tally_grow(qlua_tally *t)
{
    qlua_tally old = *t;
    tally_alloc(t, old.bits + 1);
    for (size_t i = 0; i < ((size_t)1 << old.bits); i++) {
        if (old.keys[i] != EMPTY) {
            tally_put(t, old.keys[i], old.counts[i]);
        }
    }
    g_free(old.keys);
    g_free(old.counts);
}

static void tally_put(qlua_tally *t, uint64_t key, uint64_t n)
{
    if (G_UNLIKELY(key == EMPTY)) {
        t->has_max = true;
        t->max_count += n;
        return;
    }
    size_t mask = ((size_t)1 << t->bits) - 1;
    for (size_t i = slot_of(t, key);; i = (i + 1) & mask) {
        if (t->keys[i] == key) {
            t->counts[i] += n;
            return;
        }
        if (t->keys[i] == EMPTY) {
            t->keys[i] = key;
            t->counts[i] = n;
            if (++t->used * 4 > mask * 3) { /* keep probes short: at most 3/4 full */
                tally_grow(t);
            }
            return;
        }
    }
}

static bool tally_find(const qlua_tally *t, uint64_t key, uint64_t *count)
{
    if (key == EMPTY) {
        *count = t->max_count;
        return t->has_max;
    }
    size_t mask = ((size_t)1 << t->bits) - 1;
    for (size_t i = slot_of(t, key); t->keys[i] != EMPTY; i = (i + 1) & mask) {
        if (t->keys[i] == key) {
            *count = t->counts[i];
            return true;
        }
    }
    return false;
}

/* LuaJIT's FFI entry: numbers arrive as doubles. 0: done; 1: bad key; 2: bad amount. */
static int tally_add_double(qlua_tally *t, double key, double n)
{
    if (G_UNLIKELY(!qlua_whole_u64(key))) {
        return 1;
    }
    if (G_UNLIKELY(!qlua_whole_u64(n))) {
        return 2;
    }
    tally_put(t, (uint64_t)key, (uint64_t)n);
    return 0;
}

static qlua_tally *check_tally(lua_State *L, int idx)
{
    return qlua_meta_check(L, idx, tally_meta, "tally");
}

/* core.tally_new() -> tally userdata, its address (for the FFI) */
static int tally_new(lua_State *L)
{
    qlua_tally *t = lua_newuserdata(L, sizeof *t);
    *t = (qlua_tally){0};
    tally_alloc(t, FIRST_BITS);
    qlua_meta_set(L, tally_meta);
    lua_pushlightuserdata(L, t);
    return 2;
}

static void tally_free(qlua_tally *t)
{
    g_free(t->keys);
    g_free(t->counts);
    *t = (qlua_tally){0};
}

static int tally_gc(lua_State *L)
{
    tally_free(check_tally(L, 1));
    return 0;
}

/* t:add(key, n) through the C API (Lua 5.4; init.lua has checked both are whole numbers) */
static int tally_add_l(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    tally_put(t, qlua_check_u64(L, 2), qlua_check_u64(L, 3));
    return 0;
}

/* t:get(key) -> count (0 for a key never added) */
static int tally_get(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    uint64_t count = 0;
    tally_find(t, qlua_check_u64(L, 2), &count);
    qlua_push_u64(L, count);
    return 1;
}

/* t:items() -> { [key] = count, ... }: a copy, to sort or report */
static int tally_items(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    lua_createtable(L, 0, (int)MIN(t->used + 1, (size_t)INT_MAX));
    for (size_t i = 0; i < ((size_t)1 << t->bits); i++) {
        if (t->keys[i] != EMPTY) {
            qlua_push_u64(L, t->keys[i]);
            qlua_push_u64(L, t->counts[i]);
            lua_rawset(L, -3);
        }
    }
    if (t->has_max) {
        qlua_push_u64(L, EMPTY);
        qlua_push_u64(L, t->max_count);
        lua_rawset(L, -3);
    }
    return 1;
}

/* t:size() -> number of distinct keys */
static int tally_size(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    lua_pushinteger(L, (lua_Integer)(t->used + (t->has_max ? 1 : 0)));
    return 1;
}

/* t:reset(): forget every key */
static int tally_reset(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    tally_free(t);
    tally_alloc(t, FIRST_BITS);
    return 0;
}

static int tally_tostring(lua_State *L)
{
    qlua_tally *t = check_tally(L, 1);
    lua_pushfstring(L, "tally (%d keys)", (int)(t->used + (t->has_max ? 1 : 0)));
    return 1;
}

void qlua_tally_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"add", tally_add_l},     {"get", tally_get},
                                       {"items", tally_items},   {"size", tally_size},
                                       {"reset", tally_reset},   {NULL, NULL}};
    static const luaL_Reg metamethods[] = {
        {"__gc", tally_gc}, {"__tostring", tally_tostring}, {NULL, NULL}};
    static const luaL_Reg core[] = {{"tally_new", tally_new}, {"tally_add", tally_add_l}, {NULL, NULL}};
    tally_meta = qlua_meta_new(L, TALLY_META);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_setfuncs(L, core, 0);
    /* the FFI fast path: int (*)(void *tally, double key, double n) */
    lua_pushlightuserdata(L, (void *)(uintptr_t)tally_add_double);
    lua_setfield(L, -2, "tally_add_ptr");
}
