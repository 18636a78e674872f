/* insn.c: the `insn` handle (one guest instruction of the block being translated). Same lifetime
 * rule as tb: valid only inside the on_translate callback. Properties are read from QEMU on
 * access, so a script pays only for what it reads (disas and symbol allocate; vaddr does not).
 * Owns: the handle, its fields and native counting on it. Must not touch: execution-time delivery
 * (exec.c, buffer.c register callbacks on a checked insn). */
#include "insn.h"
#include "counter.h"
#include "handle.h"
#include "host.h"
#include "mem.h"
#include "value.h"

#define INSN_META "qlua.insn"

typedef struct {
    struct qemu_plugin_insn *insn;
    uint64_t gen;
    size_t index;
} insn_handle;

static int insn_meta;

static insn_handle *check_insn(lua_State *L, int idx)
{
    return qlua_check_live(L, idx, insn_meta, "insn");
}

struct qemu_plugin_insn *qlua_insn_check(lua_State *L, int idx)
{
    return check_insn(L, idx)->insn;
}

void qlua_insn_push(lua_State *L, struct qemu_plugin_insn *insn, size_t index)
{
    insn_handle *h = lua_newuserdata(L, sizeof *h);
    h->insn = insn;
    h->gen = qlua_translate_gen;
    h->index = index;
    qlua_meta_set(L, insn_meta);
}

/* insn:count(counter [, n = 1]): add n each time the instruction starts executing. */
static int insn_count(lua_State *L)
{
    insn_handle *h = check_insn(L, 1);
    qlua_counter *c = qlua_counter_check(L, 2);
    uint64_t n = lua_isnoneornil(L, 3) ? 1 : qlua_check_u64(L, 3);
    qlua_counter_insn(h->insn, c, n);
    return 0;
}

/* core.insn_count_mem(insn, counter, n, rw): add n per memory access of kind rw. */
static int insn_count_mem(lua_State *L)
{
    insn_handle *h = check_insn(L, 1);
    qlua_counter *c = qlua_counter_check(L, 2);
    qlua_counter_mem(h->insn, c, qlua_check_u64(L, 3), qlua_mem_check_rw(L, 4));
    return 0;
}

static void push_bytes(lua_State *L, struct qemu_plugin_insn *insn)
{
    unsigned char buf[64];
    size_t n = qlua_host_insn_bytes(insn, buf, sizeof buf);
    lua_pushlstring(L, (const char *)buf, n);
}

static int insn_index(lua_State *L)
{
    /* methods first: insn:count(...) needs no field lookup (the method checks the handle) */
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) {
        return 1;
    }
    lua_pop(L, 1);
    insn_handle *h = check_insn(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (g_str_equal(key, "vaddr")) {
        qlua_push_u64(L, qlua_host.insn_vaddr(h->insn));
    } else if (g_str_equal(key, "size")) {
        lua_pushinteger(L, (lua_Integer)qlua_host.insn_size(h->insn));
    } else if (g_str_equal(key, "bytes")) {
        push_bytes(L, h->insn);
    } else if (g_str_equal(key, "disas")) {
        char *text = qlua_host.insn_disas(h->insn);
        lua_pushstring(L, text ? text : "");
        g_free(text);
    } else if (g_str_equal(key, "symbol")) {
        const char *sym = qlua_host.insn_symbol ? qlua_host.insn_symbol(h->insn) : NULL;
        if (sym) {
            lua_pushstring(L, sym);
        } else {
            lua_pushnil(L);
        }
    } else if (g_str_equal(key, "haddr")) {
        qlua_push_u64(L, qlua_host.insn_haddr ? (uintptr_t)qlua_host.insn_haddr(h->insn) : 0);
    } else if (g_str_equal(key, "index")) {
        lua_pushinteger(L, (lua_Integer)h->index + 1);
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int insn_tostring(lua_State *L)
{
    insn_handle *h = qlua_meta_check(L, 1, insn_meta, "insn");
    if (h->gen != qlua_translate_gen) {
        lua_pushliteral(L, "insn (stale)");
        return 1;
    }
    char *text = qlua_host.insn_disas(h->insn);
    char *s = g_strdup_printf("insn 0x%" G_GINT64_MODIFIER "x %s", qlua_host.insn_vaddr(h->insn),
                              text ? text : "");
    lua_pushstring(L, s);
    g_free(s);
    g_free(text);
    return 1;
}

void qlua_insn_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"count", insn_count}, {NULL, NULL}};
    insn_meta = qlua_meta_new(L, INSN_META);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "insn_methods"); /* the core table, below the metatable */
    lua_pushcclosure(L, insn_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, insn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, insn_count_mem);
    lua_setfield(L, -2, "insn_count_mem");
}
