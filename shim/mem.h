/* mem.h: memory access kinds and the `access` handle given to memory callbacks. */
#ifndef QLUA_MEM_H
#define QLUA_MEM_H

#include "base.h"

/* "r", "w" or "rw" (none or nil: "rw") at idx. */
enum qemu_plugin_mem_rw qlua_mem_check_rw(lua_State *L, int idx);
/* Does an access described by info belong to kind rw? */
bool qlua_mem_wanted(enum qemu_plugin_mem_rw rw, qemu_plugin_meminfo_t info);
/* Pushes an access handle, live until qlua_access_close(the value returned); under the Lua lock. */
uint64_t qlua_access_push(lua_State *L, qemu_plugin_meminfo_t info, uint64_t vaddr);
void qlua_access_close(uint64_t saved);
void qlua_mem_open(lua_State *L);

#endif
