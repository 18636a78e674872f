/* reload.h: resets and uninstall asked for from anywhere, carried out from a vCPU thread; and
 * watch=on, hot reload of the script. */
#ifndef QLUA_RELOAD_H
#define QLUA_RELOAD_H

#include "base.h"

/* watch=on: starts the thread that notices when the script file changes. */
void qlua_reload_start(void);
/* QLUA_DEFER_RETRANSLATE, _RELOAD or _UNINSTALL bits, after the outermost unlock. */
void qlua_reload_run(int bits);
/* core.retranslate */
void qlua_reload_open(lua_State *L);

#endif
