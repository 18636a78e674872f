/* arena.h: memory for per-translation records (callback data QEMU hands back at execution) and the
 * Lua values they pin, reclaimed wholesale at each flush of translated code. */
#ifndef QLUA_ARENA_H
#define QLUA_ARENA_H

#include "base.h"

/* Zeroed, 16-byte aligned, valid until the next reclaim. */
void *qlua_arena_alloc(size_t size);
/* A registry reference to the value at idx, released at the next reclaim; 0 for nil or none. */
int qlua_arena_ref(lua_State *L, int idx);
/* Keeps an existing registry reference until the next reclaim (then unref'd). */
void qlua_arena_keep(int ref);
/* Called at every translation: the records= rule looks at how fast records come back. */
void qlua_arena_translated(void);
/* At a flush, when no translated code refers to the records any more. */
void qlua_arena_reclaim(lua_State *L);

typedef struct {
    uint64_t held, peak, reclaims, limit_flushes;
    uint64_t translations; /* blocks QEMU reported translating to qlua */
} qlua_arena_stats;
qlua_arena_stats qlua_arena_memory(void);

#endif
