/* symbols.h: names for guest addresses: the ELF files mapped into a user-mode guest, read with
 * libelf, and symbol tables a script loads (System.map, vmlinux). */
#ifndef QLUA_SYMBOLS_H
#define QLUA_SYMBOLS_H

#include "base.h"

/* core.symbolize(vaddr) -> module, symbol|nil, offset | nil;
 * core.symbolize_load(path, name) -> count | nil, message */
void qlua_symbols_open(lua_State *L);

#endif
