/* tally.h: qemu.tally(), a native map from 64-bit keys to 64-bit counts. */
#ifndef QLUA_TALLY_H
#define QLUA_TALLY_H

#include "base.h"

/* core.tally_new, core.tally_add_ptr (the FFI entry) and the tally metatable. */
void qlua_tally_open(lua_State *L);

#endif
