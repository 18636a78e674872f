/* handle.c: metatables reached by registry number, and the liveness rule of translation handles.
 * Owns: the translation generation. Must not touch: QEMU, or any particular handle's fields.
 * Metatables are reached by number, not by name: luaL_setmetatable/luaL_checkudata intern a C
 * string on every call, and handles are made and checked for every instruction a script sees.
 * Their __metatable field is set so that getmetatable() gives scripts a string, never the table:
 * nothing in Lua can then forge a handle or change its methods. */
#include "handle.h"

uint64_t qlua_translate_gen;

int qlua_meta_new(lua_State *L, const char *name)
{
    luaL_newmetatable(L, name);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

void qlua_meta_set(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_setmetatable(L, -2);
}

void *qlua_meta_check(lua_State *L, int idx, int ref, const char *what)
{
    void *ud = lua_touserdata(L, idx);
    if (ud && lua_getmetatable(L, idx)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        bool same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (same) {
            return ud;
        }
    }
    luaL_argerror(L, idx,
                  lua_pushfstring(L, "%s expected, got %s (methods are called with a colon: "
                                     "%s:name(...))",
                                  what, luaL_typename(L, idx), what));
    return NULL;
}

void *qlua_check_live(lua_State *L, int idx, int meta, const char *what)
{
    void *ud = qlua_meta_check(L, idx, meta, what);
    /* every translation handle starts with (pointer, generation) */
    uint64_t gen = *(uint64_t *)((char *)ud + sizeof(void *));
    if (gen == 0 || gen != qlua_translate_gen) {
        luaL_error(L,
                   "%s used outside its on_translate callback: translation handles are valid only "
                   "during the callback that received them (copy what you need, e.g. "
                   "local pc = %s.vaddr)",
                   what, what);
    }
    return ud;
}
