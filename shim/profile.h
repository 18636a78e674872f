/* profile.h: profile=on, the cost report of where Lua ran. */
#ifndef QLUA_PROFILE_H
#define QLUA_PROFILE_H

#include "gate.h"

void qlua_profile_start(void);
/* The site of the function at idx, called as `event` (qlua_hooks.site while profile=on). */
qlua_stats *qlua_profile_site(lua_State *L, int idx, const char *event);
/* At exit: the report, through QEMU's plugin log. */
void qlua_profile_report(void);

#endif
