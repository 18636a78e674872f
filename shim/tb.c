/* tb.c: the `tb` handle given to on_translate callbacks. Valid only during that callback: each
 * handle carries the generation of the translation that made it, and every use checks it, so a
 * handle kept for later raises a Lua error instead of touching freed QEMU memory.
 * Owns: the handle and its fields. Must not touch: execution-time delivery (exec.c, buffer.c
 * register callbacks on a checked tb; lua/qemu/init.lua puts those methods in tb_methods). */
#include "tb.h"
#include "counter.h"
#include "handle.h"
#include "host.h"
#include "insn.h"
#include "value.h"

#define TB_META "qlua.tb"

typedef struct {
    struct qemu_plugin_tb *tb;
    uint64_t gen;
} tb_handle;

static int tb_meta;

struct qemu_plugin_tb *qlua_tb_check(lua_State *L, int idx)
{
    return ((tb_handle *)qlua_check_live(L, idx, tb_meta, "tb"))->tb;
}

void qlua_tb_push(lua_State *L, struct qemu_plugin_tb *tb)
{
    tb_handle *h = lua_newuserdata(L, sizeof *h);
    h->tb = tb;
    h->gen = qlua_translate_gen;
    qlua_meta_set(L, tb_meta);
}

static int tb_insns_next(lua_State *L)
{
    struct qemu_plugin_tb *tb = qlua_tb_check(L, lua_upvalueindex(1));
    size_t i = (size_t)lua_tointeger(L, lua_upvalueindex(2));
    if (i >= qlua_host.tb_n_insns(tb)) {
        return 0;
    }
    lua_pushinteger(L, (lua_Integer)(i + 1));
    lua_replace(L, lua_upvalueindex(2));
    qlua_insn_push(L, qlua_host.tb_get_insn(tb, i), i);
    return 1;
}

/* for insn in tb:insns() do ... end */
static int tb_insns(lua_State *L)
{
    qlua_tb_check(L, 1);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, tb_insns_next, 2);
    return 1;
}

/* tb:count(counter [, n = 1]): add n each time the block starts executing. */
static int tb_count(lua_State *L)
{
    struct qemu_plugin_tb *tb = qlua_tb_check(L, 1);
    qlua_counter *c = qlua_counter_check(L, 2);
    uint64_t n = lua_isnoneornil(L, 3) ? 1 : qlua_check_u64(L, 3);
    qlua_counter_tb(tb, c, n);
    return 0;
}

static uint64_t tb_size(struct qemu_plugin_tb *tb)
{
    size_t n = qlua_host.tb_n_insns(tb);
    uint64_t size = 0;
    for (size_t i = 0; i < n; i++) {
        size += qlua_host.insn_size(qlua_host.tb_get_insn(tb, i));
    }
    return size;
}

static int tb_index(lua_State *L)
{
    /* methods first: tb:count(...) needs no field lookup (the method checks the handle) */
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        if (!lua_isnil(L, -1)) {
            return 1;
        }
        lua_pop(L, 1);
    }
    struct qemu_plugin_tb *tb = qlua_tb_check(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer i = lua_tointeger(L, 2);
        if ((lua_Number)i != lua_tonumber(L, 2)) { /* tb[1.5] is a mistake, not tb[1] */
            return luaL_error(L, "tb[i]: expected a whole instruction index from 1 to #tb, got %s",
                              lua_tostring(L, 2));
        }
        if (i < 1 || (size_t)i > qlua_host.tb_n_insns(tb)) {
            return 0;
        }
        qlua_insn_push(L, qlua_host.tb_get_insn(tb, (size_t)(i - 1)), (size_t)(i - 1));
        return 1;
    }
    const char *key = luaL_checkstring(L, 2);
    if (g_str_equal(key, "vaddr")) {
        qlua_push_u64(L, qlua_host.tb_vaddr(tb));
    } else if (g_str_equal(key, "size")) {
        qlua_push_u64(L, tb_size(tb));
    } else if (g_str_equal(key, "n")) {
        lua_pushinteger(L, (lua_Integer)qlua_host.tb_n_insns(tb));
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int tb_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)qlua_host.tb_n_insns(qlua_tb_check(L, 1)));
    return 1;
}

static int tb_tostring(lua_State *L)
{
    tb_handle *h = qlua_meta_check(L, 1, tb_meta, "tb");
    if (h->gen != qlua_translate_gen) {
        lua_pushliteral(L, "tb (stale)");
    } else {
        char text[64];
        g_snprintf(text, sizeof text, "tb 0x%" G_GINT64_MODIFIER "x (%zu insns)",
                   qlua_host.tb_vaddr(h->tb), qlua_host.tb_n_insns(h->tb));
        lua_pushstring(L, text);
    }
    return 1;
}

void qlua_tb_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"insns", tb_insns}, {"count", tb_count}, {NULL, NULL}};
    tb_meta = qlua_meta_new(L, TB_META);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "tb_methods"); /* the core table, below the metatable */
    lua_pushcclosure(L, tb_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tb_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, tb_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
