/* value.h: converting numbers between C and Lua (the one C home of 64-bit conversions). */
#ifndef QLUA_VALUE_H
#define QLUA_VALUE_H

#include "base.h"

/* Event numbers (counter values, addresses in native records) are doubles under LuaJIT (its FFI
 * boxes 64-bit integers, which cannot be table keys; doubles are exact below 2^53, like every
 * LuaJIT number) and u64 under Lua 5.4. */
#ifdef QLUA_LUAJIT
typedef double qlua_event_num;
#define QLUA_EVENT_NUM_NAME "double"
#else
typedef uint64_t qlua_event_num;
#define QLUA_EVENT_NUM_NAME "uint64_t"
#endif

/* A u64 as an event number: exact below 2^53 under LuaJIT, then the nearest double, except that
 * from 2^64 - 1024 up (whose nearest is 2^64 itself, which no u64 is) the largest below it. */
static inline qlua_event_num qlua_u64_num(uint64_t v)
{
#ifdef QLUA_LUAJIT
    double n = (double)v;
    return n < 18446744073709551616.0 ? n : 18446744073709549568.0;
#else
    return v;
#endif
}

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
