/* handle.h: Lua-facing C objects as userdata: metatables by registry number, and the generation
 * stamp that makes translation handles (tb, insn) valid only inside their on_translate callback. */
#ifndef QLUA_HANDLE_H
#define QLUA_HANDLE_H

#include "base.h"

/* Makes a metatable (left on the stack) and returns its registry reference. */
int qlua_meta_new(lua_State *L, const char *name);
/* Sets the metatable `ref` on the value on top of the stack. */
void qlua_meta_set(lua_State *L, int ref);
/* The userdata at idx if its metatable is `ref`; raises "<what> expected, got ..." otherwise. */
void *qlua_meta_check(lua_State *L, int idx, int ref, const char *what);

/* Non-zero only inside an on_translate callback: the translation's number. */
extern uint64_t qlua_translate_gen;
/* A translation handle (it starts with a pointer and a generation) that is still live. */
void *qlua_check_live(lua_State *L, int idx, int meta, const char *what);

#endif
