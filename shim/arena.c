/* arena.c: per-translation records, freed wholesale at flush.
 * Owns: the chunks, the registry references records hold, the records= limit rule. Must not
 * touch: what records mean (their owners' business) or any file above the ground floor.
 * Code QEMU retranslates (self-modifying or reloaded code, unmapped libraries) leaves records
 * nothing uses any more, and QEMU flushes only when its own code buffer fills: past records=, the
 * arena asks for a flush itself (a reset, deferred to after the outermost unlock). */
#include <string.h>

#include "arena.h"
#include "gate.h"

#define ARENA_CHUNK (64 * 1024)
/* What a registry reference held by a record costs at least (a registry slot, its bookkeeping). */
#define REF_BYTES 16

static GSList *chunks;
static size_t used = ARENA_CHUNK;
static size_t bytes;              /* chunks held since the last flush */
static size_t peak;               /* the most bytes + refs ever held at once */
static uint64_t reclaims;         /* flushes that reclaimed records */
static uint64_t limit_flushes;    /* ... of which the arena asked for because of records= */
static bool limit_flush_asked;
static uint64_t translations;     /* since the plugin started */
static uint64_t translations_at_limit;
static GArray *refs; /* registry references owned by records */

static GArray *ref_list(void)
{
    if (refs == NULL) {
        refs = g_array_new(FALSE, FALSE, sizeof(int));
    }
    return refs;
}

static void check_limit(size_t held)
{
    if (!qlua.records_limit || held < qlua.records_limit || limit_flush_asked) {
        return;
    }
    /* Reached again after only a few translations: the code in use needs more records than the
     * limit, and each flush would only have it translated again at once. */
    if (limit_flushes > 0 && translations - translations_at_limit < 256) {
        qlua.records_limit *= 2;
        qlua_report("records=: the translated code in use needs more than %zu KiB of records; "
                    "raising the limit to %zu KiB",
                    qlua.records_limit / 2048, qlua.records_limit / 1024);
    }
    translations_at_limit = translations;
    limit_flush_asked = true;
    limit_flushes++;
    qlua_defer(QLUA_DEFER_RETRANSLATE);
}

void *qlua_arena_alloc(size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (used + size > ARENA_CHUNK) {
        size_t chunk = MAX(size, ARENA_CHUNK);
        chunks = g_slist_prepend(chunks, g_malloc(chunk));
        used = 0;
        bytes += chunk;
        size_t held = bytes + REF_BYTES * ref_list()->len;
        peak = MAX(peak, held);
        check_limit(held);
    }
    void *p = (char *)chunks->data + used;
    used += size;
    memset(p, 0, size);
    return p;
}

void qlua_arena_keep(int ref)
{
    g_array_append_val(ref_list(), ref);
}

int qlua_arena_ref(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) {
        return 0;
    }
    lua_pushvalue(L, idx);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    qlua_arena_keep(ref);
    return ref;
}

void qlua_arena_translated(void)
{
    translations++;
}

void qlua_arena_reclaim(lua_State *L)
{
    GArray *r = ref_list();
    for (guint i = 0; i < r->len; i++) {
        luaL_unref(L, LUA_REGISTRYINDEX, g_array_index(r, int, i));
    }
    g_array_set_size(r, 0);
    g_slist_free_full(chunks, g_free);
    chunks = NULL;
    used = ARENA_CHUNK;
    bytes = 0;
    reclaims++;
    limit_flush_asked = false;
}

qlua_arena_stats qlua_arena_memory(void)
{
    uint64_t held = bytes + REF_BYTES * ref_list()->len;
    return (qlua_arena_stats){held, MAX(peak, held), reclaims, limit_flushes, translations};
}
