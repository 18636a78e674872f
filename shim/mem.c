/* mem.c: the `access` handle that memory callbacks (insn:on_mem) receive, and what an access
 * kind ("r", "w", "rw") selects. An access is valid only during its callback (QEMU's meminfo and
 * hwaddr die with it): handles carry the number of the callback that made them, and every use
 * checks it.
 * Owns: the handle and its fields. Must not touch: the callbacks themselves (exec.c). */
#include "mem.h"
#include "handle.h"
#include "host.h"
#include "value.h"

#define ACCESS_META "qlua.access"

typedef struct {
    qemu_plugin_meminfo_t info;
    uint64_t gen;
    uint64_t vaddr;
} access_handle;

/* Number of the memory callback in progress (0 outside); serialized by the Lua lock. */
static uint64_t access_live;
static int access_meta;
static uint64_t access_next;

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

bool qlua_mem_wanted(enum qemu_plugin_mem_rw rw, qemu_plugin_meminfo_t info)
{
    return rw == QEMU_PLUGIN_MEM_RW ||
           (rw == QEMU_PLUGIN_MEM_W) == qlua_host.mem_is_store(info);
}

uint64_t qlua_access_push(lua_State *L, qemu_plugin_meminfo_t info, uint64_t vaddr)
{
    uint64_t saved = access_live;
    access_live = ++access_next;
    access_handle *h = lua_newuserdata(L, sizeof *h);
    h->info = info;
    h->gen = access_live;
    h->vaddr = vaddr;
    qlua_meta_set(L, access_meta);
    return saved;
}

void qlua_access_close(uint64_t saved)
{
    access_live = saved;
}

static access_handle *check_access(lua_State *L)
{
    access_handle *h = qlua_meta_check(L, 1, access_meta, "access");
    if (h->gen != access_live || access_live == 0) {
        luaL_error(L, "access used outside its on_mem callback: an access is valid only during "
                      "the callback that received it (copy what you need, e.g. "
                      "local size = access.size)");
    }
    return h;
}

static struct qemu_plugin_hwaddr *hwaddr(access_handle *h)
{
    return qlua_host.get_hwaddr ? qlua_host.get_hwaddr(h->info, h->vaddr) : NULL;
}

/* access.value: the value loaded or stored (QEMU >= 9.2); 16-byte values as a string. */
static void push_value(lua_State *L, qemu_plugin_meminfo_t info)
{
    qlua_host_need(L, "access.value", "mem_value");
    qemu_plugin_mem_value v = qlua_host.mem_get_value(info);
    switch (v.type) {
    case QEMU_PLUGIN_MEM_VALUE_U8: lua_pushinteger(L, v.data.u8); break;
    case QEMU_PLUGIN_MEM_VALUE_U16: lua_pushinteger(L, v.data.u16); break;
    case QEMU_PLUGIN_MEM_VALUE_U32: qlua_push_u64(L, v.data.u32); break;
    case QEMU_PLUGIN_MEM_VALUE_U64: qlua_push_u64(L, v.data.u64); break;
    case QEMU_PLUGIN_MEM_VALUE_U128: {
        unsigned char bytes[16];
        for (int i = 0; i < 8; i++) {
            bytes[i] = (unsigned char)(v.data.u128.low >> (8 * i));
            bytes[8 + i] = (unsigned char)(v.data.u128.high >> (8 * i));
        }
        lua_pushlstring(L, (const char *)bytes, sizeof bytes);
        break;
    }
    default: lua_pushnil(L);
    }
}

static int access_index(lua_State *L)
{
    access_handle *h = check_access(L);
    const char *key = luaL_checkstring(L, 2);
    qemu_plugin_meminfo_t info = h->info;
    if (g_str_equal(key, "size")) {
        lua_pushinteger(L, 1 << qlua_host.mem_size_shift(info));
    } else if (g_str_equal(key, "store")) {
        lua_pushboolean(L, qlua_host.mem_is_store(info));
    } else if (g_str_equal(key, "load")) {
        lua_pushboolean(L, !qlua_host.mem_is_store(info));
    } else if (g_str_equal(key, "rw")) {
        lua_pushstring(L, qlua_host.mem_is_store(info) ? "w" : "r");
    } else if (g_str_equal(key, "signed")) {
        lua_pushboolean(L, qlua_host.mem_is_sign_extended(info));
    } else if (g_str_equal(key, "big_endian")) {
        lua_pushboolean(L, qlua_host.mem_is_big_endian(info));
    } else if (g_str_equal(key, "vaddr")) {
        qlua_push_u64(L, h->vaddr);
    } else if (g_str_equal(key, "io")) {
        struct qemu_plugin_hwaddr *hw = hwaddr(h);
        lua_pushboolean(L, hw && qlua_host.hwaddr_is_io && qlua_host.hwaddr_is_io(hw));
    } else if (g_str_equal(key, "phys")) {
        struct qemu_plugin_hwaddr *hw = hwaddr(h);
        if (hw && qlua_host.system && qlua_host.hwaddr_phys_addr) {
            qlua_push_u64(L, qlua_host.hwaddr_phys_addr(hw));
        } else {
            lua_pushnil(L);
        }
    } else if (g_str_equal(key, "device")) {
        struct qemu_plugin_hwaddr *hw = hwaddr(h);
        const char *name = hw && qlua_host.system && qlua_host.hwaddr_device_name
                               ? qlua_host.hwaddr_device_name(hw)
                               : NULL;
        if (name) {
            lua_pushstring(L, name);
        } else {
            lua_pushnil(L);
        }
    } else if (g_str_equal(key, "value")) {
        push_value(L, info);
    } else {
        return luaL_error(L, "access has no field '%s' (fields: size, store, load, rw, signed, "
                             "big_endian, vaddr, io, phys, device, value)",
                          key);
    }
    return 1;
}

void qlua_mem_open(lua_State *L)
{
    access_meta = qlua_meta_new(L, ACCESS_META);
    lua_pushcfunction(L, access_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
