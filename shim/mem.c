/* mem.c: the `access` handle that memory callbacks (insn:on_mem) receive, and what an access
 * kind ("r", "w", "rw") selects. An access is valid only during its callback (QEMU's meminfo and
 * hwaddr die with it): handles carry the number of the callback that made them, and every use
 * checks it.
 * Owns: the handle and its fields. Must not touch: the callbacks themselves (exec.c). */
#include <string.h>

#include "mem.h"
#include "handle.h"
#include "host.h"
#include "value.h"

#define ACCESS_META "qlua.access"

/* A live handle (synchronous on_mem) asks QEMU about info at each use; a captured one (Lua 5.4's
 * delivery of a queued on_mem: one handle, reused) shows what was recorded at the moment. */
typedef struct {
    uint64_t gen;
    uint64_t vaddr;
    qemu_plugin_meminfo_t info;     /* live */
    bool captured;
    unsigned flags;                 /* captured: qlua_mem_flags */
    unsigned what;                  /* captured: QLUA_CAPTURED_* */
    const qlua_access_extra *extra; /* captured */
} access_handle;

/* Number of the memory callback in progress (0 outside); serialized by the Lua lock. */
static uint64_t access_live;
static int access_meta;
static uint64_t access_next;
static int captured_ref = LUA_NOREF; /* the reusable handle of captured accesses */

enum qemu_plugin_mem_rw qlua_mem_check_rw(lua_State *L, int idx)
{
    static const char *const names[] = {"r", "w", "rw", NULL};
    static const enum qemu_plugin_mem_rw values[] = {QEMU_PLUGIN_MEM_R, QEMU_PLUGIN_MEM_W,
                                                     QEMU_PLUGIN_MEM_RW};
    if (lua_isnoneornil(L, idx)) {
        return QEMU_PLUGIN_MEM_RW;
    }
    /* LuaJIT's luaL_checkoption takes any non-string as the default: be strict on every Lua */
    luaL_checktype(L, idx, LUA_TSTRING);
    return values[luaL_checkoption(L, idx, NULL, names)];
}

unsigned qlua_mem_flags(qemu_plugin_meminfo_t info)
{
    return (qlua_host.mem_size_shift(info) & QLUA_ACCESS_SIZE_MASK) |
           (qlua_host.mem_is_store(info) ? QLUA_ACCESS_STORE : 0) |
           (qlua_host.mem_is_sign_extended(info) ? QLUA_ACCESS_SIGNED : 0) |
           (qlua_host.mem_is_big_endian(info) ? QLUA_ACCESS_BIG_ENDIAN : 0);
}

struct qemu_plugin_hwaddr *qlua_mem_place(qemu_plugin_meminfo_t info, uint64_t vaddr, bool *io,
                                          uint64_t *phys)
{
    struct qemu_plugin_hwaddr *hw = qlua_host.get_hwaddr ? qlua_host.get_hwaddr(info, vaddr) : NULL;
    *io = hw && qlua_host.hwaddr_is_io && qlua_host.hwaddr_is_io(hw);
    *phys = hw && qlua_host.system && qlua_host.hwaddr_phys_addr ? qlua_host.hwaddr_phys_addr(hw)
                                                                : vaddr;
    return hw;
}

enum qlua_io_filter qlua_mem_check_io(lua_State *L, int idx)
{
    static const char *const names[] = {"any", "only", "skip", NULL};
    luaL_checktype(L, idx, LUA_TSTRING);
    return (enum qlua_io_filter)luaL_checkoption(L, idx, NULL, names);
}

void qlua_mem_capture(qlua_access_extra *x, qemu_plugin_meminfo_t info, uint64_t vaddr, bool phys,
                      bool value)
{
    if (phys) {
        bool io;
        uint64_t paddr;
        struct qemu_plugin_hwaddr *hw = qlua_mem_place(info, vaddr, &io, &paddr);
        x->io = io;
        x->has_phys = hw && qlua_host.system && qlua_host.hwaddr_phys_addr;
        x->phys = x->has_phys ? qlua_u64_num(paddr) : 0;
        x->device = hw && qlua_host.system && qlua_host.hwaddr_device_name
                        ? qlua_host.hwaddr_device_name(hw)
                        : NULL;
    }
    if (value) {
        qemu_plugin_mem_value v = qlua_host.mem_get_value(info);
        x->value_type = 0;
        switch (v.type) {
        case QEMU_PLUGIN_MEM_VALUE_U8: x->value = v.data.u8; x->value_type = 1; break;
        case QEMU_PLUGIN_MEM_VALUE_U16: x->value = v.data.u16; x->value_type = 2; break;
        case QEMU_PLUGIN_MEM_VALUE_U32: x->value = v.data.u32; x->value_type = 3; break;
        case QEMU_PLUGIN_MEM_VALUE_U64: x->value = qlua_u64_num(v.data.u64); x->value_type = 4; break;
        case QEMU_PLUGIN_MEM_VALUE_U128:
            x->value128[0] = v.data.u128.low;
            x->value128[1] = v.data.u128.high;
            x->value_type = 5;
            break;
        default: break;
        }
    }
}

uint64_t qlua_access_push(lua_State *L, qemu_plugin_meminfo_t info, uint64_t vaddr)
{
    uint64_t saved = access_live;
    access_live = ++access_next;
    access_handle *h = lua_newuserdata(L, sizeof *h);
    *h = (access_handle){.gen = access_live, .vaddr = vaddr, .info = info};
    qlua_meta_set(L, access_meta);
    return saved;
}

uint64_t qlua_access_push_captured(lua_State *L, unsigned flags, uint64_t vaddr,
                                   const qlua_access_extra *x, unsigned captured)
{
    uint64_t saved = access_live;
    access_live = ++access_next;
    lua_rawgeti(L, LUA_REGISTRYINDEX, captured_ref);
    access_handle *h = lua_touserdata(L, -1);
    *h = (access_handle){.gen = access_live, .vaddr = vaddr, .captured = true, .flags = flags,
                         .what = captured, .extra = x};
    return saved;
}

void qlua_access_close(uint64_t saved)
{
    access_live = saved;
}

#define STALE_MESSAGE                                                                           \
    "access used outside its on_mem callback: an access is valid only during the callback "   \
    "that received it (copy what you need, e.g. local size = access.size)"
#define FIELDS_MESSAGE                                                                          \
    "access has no field '%s' (fields: size, store, load, rw, signed, big_endian, vaddr, io, " \
    "phys, device, value)"
/* a queued on_mem sees only what was captured at the access: %s is the field, then the option */
#define NOT_CAPTURED_MESSAGE                                                                    \
    "access.%s: this on_mem callback is queued (delivered after the access) and was registered " \
    "without { %s = true }, so it was not recorded; register with { %s = true }, or with "      \
    "{ sync = true } to be called at the access itself"

static access_handle *check_access(lua_State *L)
{
    access_handle *h = qlua_meta_check(L, 1, access_meta, "access");
    if (h->gen != access_live || access_live == 0) {
        luaL_error(L, STALE_MESSAGE);
    }
    return h;
}

/* captured handles: what was recorded, or an error naming the option that records it */
static const qlua_access_extra *captured(lua_State *L, access_handle *h, const char *key,
                                         unsigned what, const char *option)
{
    if (!(h->what & what)) {
        luaL_error(L, NOT_CAPTURED_MESSAGE, key, option, option);
    }
    return h->extra;
}

static int captured_field(lua_State *L, access_handle *h, const char *key)
{
    const qlua_access_extra *x;
    if (g_str_equal(key, "io")) {
        x = captured(L, h, key, QLUA_CAPTURED_PHYS, "phys");
        lua_pushboolean(L, x->io);
    } else if (g_str_equal(key, "phys")) {
        x = captured(L, h, key, QLUA_CAPTURED_PHYS, "phys");
        if (x->has_phys) {
            qlua_push_u64(L, (uint64_t)x->phys);
        } else {
            lua_pushnil(L);
        }
    } else if (g_str_equal(key, "device")) {
        x = captured(L, h, key, QLUA_CAPTURED_PHYS, "phys");
        if (x->device) {
            lua_pushstring(L, x->device);
        } else {
            lua_pushnil(L);
        }
    } else if (g_str_equal(key, "value")) {
        x = captured(L, h, key, QLUA_CAPTURED_VALUE, "value");
        if (x->value_type == 5) {
            unsigned char bytes[16];
            for (int i = 0; i < 16; i++) {
                bytes[i] = (unsigned char)(x->value128[i / 8] >> (8 * (i % 8)));
            }
            lua_pushlstring(L, (const char *)bytes, sizeof bytes);
        } else if (x->value_type != 0) {
            qlua_push_u64(L, (uint64_t)x->value);
        } else {
            lua_pushnil(L);
        }
    } else {
        return luaL_error(L, FIELDS_MESSAGE, key);
    }
    return 1;
}

static int access_index(lua_State *L)
{
    access_handle *h = check_access(L);
    const char *key = luaL_checkstring(L, 2);
    qemu_plugin_meminfo_t info = h->info;
    unsigned flags = h->captured ? h->flags : qlua_mem_flags(info);
    if (g_str_equal(key, "size")) {
        lua_pushinteger(L, 1 << (flags & QLUA_ACCESS_SIZE_MASK));
    } else if (g_str_equal(key, "store")) {
        lua_pushboolean(L, flags & QLUA_ACCESS_STORE);
    } else if (g_str_equal(key, "load")) {
        lua_pushboolean(L, !(flags & QLUA_ACCESS_STORE));
    } else if (g_str_equal(key, "rw")) {
        lua_pushstring(L, flags & QLUA_ACCESS_STORE ? "w" : "r");
    } else if (g_str_equal(key, "signed")) {
        lua_pushboolean(L, flags & QLUA_ACCESS_SIGNED);
    } else if (g_str_equal(key, "big_endian")) {
        lua_pushboolean(L, flags & QLUA_ACCESS_BIG_ENDIAN);
    } else if (g_str_equal(key, "vaddr")) {
        qlua_push_u64(L, h->vaddr);
    } else if (h->captured) {
        return captured_field(L, h, key);
    } else {
        /* live: what a queued access would have captured, asked of QEMU now */
        bool value = g_str_equal(key, "value");
        if (value) {
            qlua_host_need(L, "access.value", "mem_value");
        }
        qlua_access_extra x = {0};
        qlua_mem_capture(&x, info, h->vaddr, !value, value);
        access_handle now = *h;
        now.what = QLUA_CAPTURED_PHYS | QLUA_CAPTURED_VALUE;
        now.extra = &x;
        return captured_field(L, &now, key);
    }
    return 1;
}

void qlua_mem_open(lua_State *L)
{
    access_meta = qlua_meta_new(L, ACCESS_META);
    lua_pushcfunction(L, access_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newuserdata(L, sizeof(access_handle)); /* a new state: a new reusable handle */
    memset(lua_touserdata(L, -1), 0, sizeof(access_handle));
    qlua_meta_set(L, access_meta);
    captured_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* LuaJIT's view of a queued access (lua/qemu/init.lua) reads the same bits, says the same */
    static const struct { const char *name; lua_Integer bit; const char *text; } shared[] = {
        {"store", QLUA_ACCESS_STORE, NULL},
        {"signed", QLUA_ACCESS_SIGNED, NULL},
        {"big_endian", QLUA_ACCESS_BIG_ENDIAN, NULL},
        {"extra_size", (lua_Integer)sizeof(qlua_access_extra), NULL},
        {"stale", 0, STALE_MESSAGE},
        {"fields", 0, FIELDS_MESSAGE},
        {"not_captured", 0, NOT_CAPTURED_MESSAGE},
        {"extra_cdef", 0, QLUA_ACCESS_EXTRA_CDEF}};
    lua_createtable(L, 0, G_N_ELEMENTS(shared));
    for (size_t i = 0; i < G_N_ELEMENTS(shared); i++) {
        if (shared[i].text) {
            lua_pushstring(L, shared[i].text);
        } else {
            lua_pushinteger(L, shared[i].bit);
        }
        lua_setfield(L, -2, shared[i].name);
    }
    lua_setfield(L, -2, "access_bits");
}
