/* counter.h: native 64-bit counters with one slot per vCPU, the counting ops translated code runs
 * on them, conditional callbacks on their values, and qemu.count_every's rules. */
#ifndef QLUA_COUNTER_H
#define QLUA_COUNTER_H

#include "base.h"

typedef struct qlua_counter qlua_counter;

qlua_counter *qlua_counter_check(lua_State *L, int idx);
/* A counter for qlua's own use (never freed before the plugin, like every counter). */
qlua_counter *qlua_counter_new(void);
uint64_t qlua_counter_value(qlua_counter *c, unsigned int vcpu);
/* Sets vCPU vcpu's value: from that vCPU's own callback, or while it does not run. */
void qlua_counter_set(qlua_counter *c, unsigned int vcpu, uint64_t v);
/* Every vCPU's value to 0 (c:reset()). */
void qlua_counter_reset(qlua_counter *c);
/* The same from the executing vCPU's own execution callback (QEMU has created its entry): no
 * check of which vCPUs exist, for callbacks on hot paths. */
uint64_t qlua_counter_value_mine(qlua_counter *c, unsigned int vcpu);
void qlua_counter_set_mine(qlua_counter *c, unsigned int vcpu, uint64_t v);

/* Counting ops asked for during a translation; emitted by qlua_counter_emit_pending once the
 * on_translate handlers have returned (see counter.c for why last). */
void qlua_counter_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t n);
/* The executing vCPU's value := v at each execution of the block (after its callbacks). */
void qlua_counter_store_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t v);
void qlua_counter_insn(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n);
void qlua_counter_mem(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n,
                      enum qemu_plugin_mem_rw rw);
void qlua_counter_emit_pending(void);

/* cb(vcpu, udata) at each execution at which the executing vCPU's value of c compares true. */
void qlua_counter_when_tb(struct qemu_plugin_tb *tb, qlua_counter *c, enum qemu_plugin_cond cond,
                          uint64_t imm, qemu_plugin_vcpu_udata_cb_t cb, void *udata);
void qlua_counter_when_insn(struct qemu_plugin_insn *insn, qlua_counter *c,
                            enum qemu_plugin_cond cond, uint64_t imm,
                            qemu_plugin_vcpu_udata_cb_t cb, void *udata);

/* counters=auto|callback, chosen at install; the strategy's name for qemu.counter_mode(). */
void qlua_counter_setup(const char *mode);
const char *qlua_counter_mode(void);
/* For every new vCPU: true when code translated so far must be redone (shared inline adds). */
bool qlua_counter_vcpu_init(unsigned int vcpu);
void qlua_counter_free_all(void);

/* A rule another file makes (qemu.count_every with a tally: tally.c), handed over from Lua as a
 * light userdata to a struct whose first member points to its operations. */
typedef struct qlua_rule_ops {
    void (*apply)(const void *rule, struct qemu_plugin_tb *tb);
    void (*free)(void *rule);
    /* NULL, or: takes `other` into `rule` (rule's apply then does other's work too, and its free
     * frees other) and returns true; false leaves other a rule of its own. */
    bool (*absorb)(void *rule, void *other);
} qlua_rule_ops;

/* qemu.count_every's rules, applied to every translated block; swapped as a whole by a reload. */
bool qlua_counter_has_rules(void);
void qlua_counter_apply_rules(struct qemu_plugin_tb *tb);
void *qlua_counter_take_rules(void);
void qlua_counter_put_rules(void *given);
void qlua_counter_drop_rules(void *dropped);

/* core.counter_new, core.vcpus, core.count_every_rule and the counter metatable. */
void qlua_counter_open(lua_State *L);

#endif
