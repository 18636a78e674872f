/* tb.h: the `tb` translation handle (a block being translated). */
#ifndef QLUA_TB_H
#define QLUA_TB_H

#include "base.h"

void qlua_tb_push(lua_State *L, struct qemu_plugin_tb *tb);
/* The block behind a live tb handle at idx; raises for anything else or a stale handle. */
struct qemu_plugin_tb *qlua_tb_check(lua_State *L, int idx);
/* Adds the tb metatable; core.tb_methods is the table its methods are looked up in. */
void qlua_tb_open(lua_State *L);

#endif
