/* signals.h: SIGINT and SIGTERM while the script's Lua is running. */
#ifndef QLUA_SIGNALS_H
#define QLUA_SIGNALS_H

#include "base.h"

/* Wraps QEMU's handlers of SIGINT and SIGTERM. QEMU installs them after the first vCPU exists and
 * before the first translation: call at the first translation. */
void qlua_signals_install(void);

#endif
