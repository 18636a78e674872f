/* events.h: QEMU's global events (translation, vCPU life cycle, syscalls, flush, exit) dispatched
 * to the script's handlers. */
#ifndef QLUA_EVENTS_H
#define QLUA_EVENTS_H

#include "base.h"

/* Registers with QEMU what qlua itself needs and what the script asked for while loading. */
void qlua_events_install(void);
/* After a reset (which drops every QEMU callback): register again. */
void qlua_events_reregister(void);
/* QLUA_DEFER_REGISTER: register the events Lua asked for since (after the outermost unlock). */
void qlua_events_register_wanted(void);
/* Runs the on_exit handlers once (after delivering every batched event), then the finish hook. */
void qlua_events_exit(void);
/* QEMU's uninstall callback: exit handlers, then the state goes. */
void qlua_events_uninstalled(qemu_plugin_id_t id);

/* Reload support: the script's handlers (and count_every rules) are swapped as a whole. */
typedef struct qlua_handler_set qlua_handler_set;
qlua_handler_set *qlua_events_take_handlers(void);
void qlua_events_put_handlers(qlua_handler_set *given);
void qlua_events_drop_handlers(qlua_handler_set *dropped);

/* core.on, core.off, core.want, core.uninstall, core.memory */
void qlua_events_open(lua_State *L);

#endif
