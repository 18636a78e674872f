/* value.c: number conversions between C and Lua, for both Luas.
 * Owns: how a u64 is represented in Lua. Must not touch: the Lua state's globals or QEMU. */
#include "value.h"

void qlua_push_u64(lua_State *L, uint64_t v)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)v);
#else
    lua_pushnumber(L, qlua_u64_num(v));
#endif
}

uint64_t qlua_check_u64(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        /* Lua 5.4 integers are 64-bit two's complement: values from 2^63 up (high addresses)
         * reach Lua as negative integers through qlua_push_u64 and must come back unchanged */
        return (uint64_t)lua_tointeger(L, idx);
    }
#endif
    lua_Number n = luaL_checknumber(L, idx);
    luaL_argcheck(L, qlua_whole_u64((double)n), idx, "expected a non-negative integer");
    return (uint64_t)n;
}
