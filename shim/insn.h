/* insn.h: the `insn` translation handle (one instruction of the block being translated). */
#ifndef QLUA_INSN_H
#define QLUA_INSN_H

#include "base.h"

void qlua_insn_push(lua_State *L, struct qemu_plugin_insn *insn, size_t index);
/* The instruction behind a live insn handle at idx; raises for anything else or a stale one. */
struct qemu_plugin_insn *qlua_insn_check(lua_State *L, int idx);
/* Adds the insn metatable (core.insn_methods: its methods) and core.insn_count_mem. */
void qlua_insn_open(lua_State *L);

#endif
