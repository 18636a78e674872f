/* exec.h: Lua at execution time: synchronous and queued execution callbacks (tb:on_exec,
 * insn:on_exec, tb:when, insn:when), memory callbacks (insn:on_mem), the function cache they share,
 * and the delivery of a thread's batched records (queued callbacks and tracers) in order. */
#ifndef QLUA_EXEC_H
#define QLUA_EXEC_H

#include "base.h"
#include "gate.h"

/* The gate for callbacks that run on a vCPU thread: the thread's batched records first, in
 * order, then qlua_gate_enter. */
lua_State *qlua_exec_enter(qlua_fn *fn);
/* Delivers this thread's (or every thread's) queued callbacks and traced events. */
void qlua_exec_drain_mine(void);
void qlua_exec_drain_all(void);
/* At vCPU exit: delivers and frees this thread's buffers. */
void qlua_exec_release_mine(void);
/* At a flush (after qlua_exec_drain_all, with the arena's reclaim): a new function cache. */
void qlua_exec_reclaim(lua_State *L);
/* profile=on: how many batches of queued callbacks were delivered. */
uint64_t qlua_exec_batches(void);

/* core.tb_on_exec, core.insn_on_exec, core.insn_on_mem, core.tb_when, core.insn_when,
 * core.queue_drainer and the queued record's layout for LuaJIT. */
void qlua_exec_open(lua_State *L);

#endif
