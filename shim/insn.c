/* insn.c: the `insn` handle (one guest instruction of the block being translated). Same lifetime
 * rule as tb: valid only inside the on_translate callback. Properties are read from QEMU on
 * access, so a script pays only for what it reads (disas and symbol allocate; vaddr does not). */
#include "internal.h"

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

/* insn:count_mem(counter [, n = 1] [, "r"|"w"|"rw" = "rw"]): add n per memory access. */
static int insn_count_mem(lua_State *L)
{
    insn_handle *h = check_insn(L, 1);
    qlua_counter *c = qlua_counter_check(L, 2);
    int rw_idx = 4;
    uint64_t n = 1;
    if (lua_type(L, 3) == LUA_TSTRING) {
        rw_idx = 3;
    } else if (!lua_isnoneornil(L, 3)) {
        n = qlua_check_u64(L, 3);
    }
    qlua_counter_mem(h->insn, c, n, qlua_mem_check_rw(L, rw_idx));
    return 0;
}

/* insn:on_exec(fn [, data]): fn(vcpu, data) before each execution of the instruction. */
static int insn_on_exec(lua_State *L)
{
    qlua_exec_register_insn(L, check_insn(L, 1)->insn, 2, 3);
    return 0;
}

/* insn:trace(tracer [, tag]) and insn:trace_mem(tracer [, tag] [, rw]): see buffer.c. */
static int insn_trace(lua_State *L)
{
    qlua_buffer_trace_insn(L, check_insn(L, 1)->insn, 2);
    return 0;
}

static int insn_trace_mem(lua_State *L)
{
    qlua_buffer_trace_mem(L, check_insn(L, 1)->insn, 2);
    return 0;
}

/* insn:when(counter, op, value, fn [, data]): see qlua_exec_register_when. */
static int insn_when(lua_State *L)
{
    qlua_exec_register_when(L, NULL, check_insn(L, 1)->insn, 2);
    return 0;
}

/* insn:on_mem(fn [, "r"|"w"|"rw" = "rw"] [, data]): fn(vcpu, access, vaddr, data) per access. */
static int insn_on_mem(lua_State *L)
{
    insn_handle *h = check_insn(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    qlua_mem_register(L, h->insn, 2, qlua_mem_check_rw(L, 3), 4);
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
    static const luaL_Reg methods[] = {{"count", insn_count},
                                       {"count_mem", insn_count_mem},
                                       {"on_exec", insn_on_exec},
                                       {"on_mem", insn_on_mem},
                                       {"when", insn_when},
                                       {"trace", insn_trace},
                                       {"trace_mem", insn_trace_mem},
                                       {NULL, NULL}};
    insn_meta = qlua_meta_new(L, INSN_META);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, insn_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, insn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
