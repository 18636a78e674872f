/* tally.h: qemu.tally(), a native map from 64-bit keys to 64-bit counts, added to from Lua or,
 * with no Lua, at execution time (insn:tally_mem, tb:tally, insn:tally) through per-thread feeds;
 * and qemu.edges(), the same map keyed by (from, to) pairs, fed with control-flow transfers. */
#ifndef QLUA_TALLY_H
#define QLUA_TALLY_H

#include "base.h"

/* Feeds, folded into their tallies under the Lua lock (exec.c calls these where it delivers a
 * thread's batches, before them): has this thread fed anything not yet folded? */
bool qlua_tally_pending_mine(void);
void qlua_tally_fold_mine(void);
void qlua_tally_fold_all(void);
/* At vCPU exit: folds and frees this thread's feed. */
void qlua_tally_release_mine(void);

/* At vCPU init: a reused user-mode vCPU index starts with no previous instruction (edges). */
void qlua_tally_vcpu_init(unsigned int vcpu);
/* After a reset has flushed all translated code (every vCPU stopped): branch rules added while
 * the guest ran start counting, from no previous instruction. */
void qlua_tally_code_flushed(void);

/* qemu.count_every("syscall" | "syscall_ret" | "syscall_error", t): the syscall callbacks feed
 * the tallies by syscall number (any thread, no Lua lock); syscall_ret is needed while
 * rets_wanted. The set travels with a reload's handlers (take, then put back or drop). */
void qlua_tally_syscall(unsigned int vcpu, int64_t num);
void qlua_tally_syscall_ret(unsigned int vcpu, int64_t num, int64_t ret);
bool qlua_tally_syscall_rets_wanted(void);
void *qlua_tally_take_syscalls(void);
void qlua_tally_put_syscalls(void *given);
void qlua_tally_drop_syscalls(void *dropped);

/* core.tally_new, core.tally_add_ptr (the FFI entry) and the tally metatable. */
void qlua_tally_open(lua_State *L);

#endif
