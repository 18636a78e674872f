/* mem.h: memory access kinds and the `access` handle given to memory callbacks, live (a
 * synchronous on_mem) or captured (a queued one: what the access was, recorded at the moment). */
#ifndef QLUA_MEM_H
#define QLUA_MEM_H

#include "base.h"
#include "host.h"
#include "value.h" /* qlua_event_num */

/* An access described in one byte: the size's log2 in bits 0-2, then store, sign-extended and
 * big-endian. Shared with LuaJIT's view of a queued access (lua/qemu/init.lua, core.access_bits). */
#define QLUA_ACCESS_SIZE_MASK 7u
#define QLUA_ACCESS_STORE 8u
#define QLUA_ACCESS_SIGNED 16u
#define QLUA_ACCESS_BIG_ENDIAN 32u

/* What a queued access captured beyond its byte of flags and its address, when the callback asked
 * for it ({ phys = true }: phys, io, device; { value = true }: value). Layout shared with LuaJIT. */
typedef struct {
    qlua_event_num phys;   /* valid when has_phys */
    qlua_event_num value;  /* value_type 1-4 */
    uint64_t value128[2];  /* value_type 5: low, high */
    const char *device;    /* NULL: none */
    uint8_t has_phys;
    uint8_t io;
    uint8_t value_type;    /* 0: none, 1-4: 8 to 64 bits, 5: 128 bits */
    uint8_t pad[5];
} qlua_access_extra;
#define QLUA_ACCESS_EXTRA_CDEF                                                                  \
    "typedef struct { " QLUA_EVENT_NUM_NAME " phys; " QLUA_EVENT_NUM_NAME " value; "            \
    "uint64_t value128[2]; const char *device; uint8_t has_phys; uint8_t io; "                  \
    "uint8_t value_type; uint8_t pad[5]; } qlua_access_extra;"

/* The flags byte of an access. */
unsigned qlua_mem_flags(qemu_plugin_meminfo_t info);
/* Where the access of the moment went: whether to an I/O device, its physical address (system
 * mode; vaddr where there is none); returns QEMU's hwaddr, NULL in user mode. */
struct qemu_plugin_hwaddr *qlua_mem_place(qemu_plugin_meminfo_t info, uint64_t vaddr, bool *io,
                                          uint64_t *phys);
/* Which accesses an io= option keeps: every one, only those to an I/O device, or the others. */
enum qlua_io_filter { QLUA_IO_ANY, QLUA_IO_ONLY, QLUA_IO_SKIP };
/* "any", "only" or "skip" at idx (a string). */
enum qlua_io_filter qlua_mem_check_io(lua_State *L, int idx);
/* Does the access of the moment pass filter f? (QLUA_IO_ANY asks QEMU nothing.) */
static inline bool qlua_mem_io_wanted(enum qlua_io_filter f, qemu_plugin_meminfo_t info,
                                      uint64_t vaddr)
{
    if (f == QLUA_IO_ANY) {
        return true;
    }
    struct qemu_plugin_hwaddr *hw = qlua_host.get_hwaddr ? qlua_host.get_hwaddr(info, vaddr) : NULL;
    /* not qlua_mem_place: the physical address costs QEMU a RAM block search per access */
    bool io = hw && qlua_host.hwaddr_is_io && qlua_host.hwaddr_is_io(hw);
    return io == (f == QLUA_IO_ONLY);
}
/* Captures phys/io/device (phys) and the value (value) of the access of the moment into x. */
void qlua_mem_capture(qlua_access_extra *x, qemu_plugin_meminfo_t info, uint64_t vaddr, bool phys,
                      bool value);

/* "r", "w" or "rw" (none or nil: "rw") at idx. */
enum qemu_plugin_mem_rw qlua_mem_check_rw(lua_State *L, int idx);
/* Does an access described by info belong to kind rw? (inline: every memory callback asks) */
static inline bool qlua_mem_wanted(enum qemu_plugin_mem_rw rw, qemu_plugin_meminfo_t info)
{
    return rw == QEMU_PLUGIN_MEM_RW ||
           (rw == QEMU_PLUGIN_MEM_W) == qlua_host.mem_is_store(info);
}
/* Pushes an access handle, live until qlua_access_close(the value returned); under the Lua lock. */
uint64_t qlua_access_push(lua_State *L, qemu_plugin_meminfo_t info, uint64_t vaddr);
void qlua_access_close(uint64_t saved);
/* Lua 5.4's delivery of a queued access: pushes the one reusable handle, showing the captured
 * access (x: NULL, or what was captured, with which of phys/value in `captured`), live until
 * qlua_access_close(the value returned). */
uint64_t qlua_access_push_captured(lua_State *L, unsigned flags, uint64_t vaddr,
                                   const qlua_access_extra *x, unsigned captured);
#define QLUA_CAPTURED_PHYS 1u
#define QLUA_CAPTURED_VALUE 2u
void qlua_mem_open(lua_State *L);

#endif
