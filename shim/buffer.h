/* buffer.h: tracers, execution events gathered natively in per-thread buffers and handed to a Lua
 * function as an array of records. */
#ifndef QLUA_BUFFER_H
#define QLUA_BUFFER_H

#include "base.h"
#include "value.h" /* qlua_event_num */

/* Called (on the filling thread) when one of its tracer buffers is full: the thread's other
 * buffers must go to Lua with it, in order. Without a hook, only the tracers are delivered. */
void qlua_buffer_on_full(void (*deliver_thread)(void));
/* Delivers this thread's (or every thread's) traced events, under the Lua lock. */
void qlua_buffer_drain_mine(void);
void qlua_buffer_drain_all(void);
/* Has this thread traced anything not yet delivered? */
bool qlua_buffer_pending_mine(void);
/* At vCPU exit: delivers this thread's buffers and sets them aside for later threads. */
void qlua_buffer_release_mine(void);
/* A reload starts with no tracers; restore brings back the old ones if the new script fails,
 * drop_saved releases them once it has loaded (both under the Lua lock). */
void qlua_buffer_save(void);
void qlua_buffer_restore(void);
void qlua_buffer_drop_saved(void);

/* core.tracer_new, core.event, core.tb_trace, core.insn_trace, core.insn_trace_mem, and the record
 * layout for LuaJIT (core.event_cdef, core.event_size). */
void qlua_buffer_open(lua_State *L);

#endif
