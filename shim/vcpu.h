/* vcpu.h: what a script reads from the vCPU running the current callback (registers, memory) and
 * the guest clock. */
#ifndef QLUA_VCPU_H
#define QLUA_VCPU_H

#include "base.h"

/* core.registers, core.reg, core.read_memory, core.time_control, core.set_time */
void qlua_vcpu_open(lua_State *L);
/* From the translation and vCPU-init callbacks: what user-mode memory access needs to know (where
 * QEMU maps the guest, whether a second guest thread exists). */
void qlua_vcpu_translated(struct qemu_plugin_tb *tb);
void qlua_vcpu_started(void);

#endif
