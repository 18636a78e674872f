/* value.h: converting numbers between C and Lua (the one C home of 64-bit conversions). */
#ifndef QLUA_VALUE_H
#define QLUA_VALUE_H

#include "base.h"

/* Pushes a u64: a Lua 5.4 integer (values from 2^63 up wrap to negative, and come back unchanged
 * through qlua_check_u64), or a LuaJIT number (exact below 2^53). */
void qlua_push_u64(lua_State *L, uint64_t v);
/* The u64 at idx: an integer, or a whole non-negative number; raises otherwise. */
uint64_t qlua_check_u64(lua_State *L, int idx);

/* Is d a whole number from 0 to 2^64-1? (no libm call) */
static inline bool qlua_whole_u64(double d)
{
    return d >= 0 && d < 18446744073709551616.0 && (double)(uint64_t)d == d;
}

#endif
