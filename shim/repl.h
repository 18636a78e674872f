/* repl.h: repl=PATH, a live Lua prompt inside the running plugin. */
#ifndef QLUA_REPL_H
#define QLUA_REPL_H

#include "base.h"

bool qlua_repl_start(const char *path, char **error);
/* At exit: removes the socket (not in a forked child: the path is the parent's). */
void qlua_repl_stop(void);
/* The guest's first translation: QEMU is set up, chunks may run. */
void qlua_repl_guest_started(void);

#endif
