/* quiesce.h: before QEMU frees its records of our callbacks (a reset or uninstall we asked for),
 * waits until the syscalls other threads have in flight are past QEMU's dispatch. */
#ifndef QLUA_QUIESCE_H
#define QLUA_QUIESCE_H

#include "base.h"

/* A syscall callback's first step (QEMU has read its record of it), and the end of the thread's
 * use of QEMU's records for that syscall: the syscall callback's end, or, when its return is
 * dispatched to us too, the return callback's first step. */
void qlua_quiesce_entered(void);
void qlua_quiesce_done(void);
/* The calling thread ends: its record goes. */
void qlua_quiesce_release_mine(void);
/* Right before asking QEMU for a reset or uninstall: the flush that starts it waits. */
void qlua_quiesce_arm(void);
/* From the flush callback, in QEMU's exclusive section: waits, if armed, for the other threads'
 * syscalls in flight (at most about 20 ms: a thread may be blocked in one). */
void qlua_quiesce_wait(void);

#endif
