/* oracle.c: the tests' native truth. A tiny C plugin, loaded in the same QEMU run as qlua, that
 * counts executed blocks, instructions, loads, stores, syscalls and syscall returns with per-event
 * callbacks and atomic adds (exact with any number of threads), and prints them at exit:
 *   oracle: tbs=N insns=N reads=N writes=N syscalls=N syscall_rets=N
 * Written against qlua's own ABI declarations; it links QEMU's functions directly, which every
 * host since API v1 has. */
#include <dlfcn.h>
#include <inttypes.h>
#include <stdio.h>

#include "qemu_plugin_abi.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int qemu_plugin_version = 1;

__attribute__((constructor)) static void probe(void)
{
    qemu_plugin_version = dlsym(RTLD_DEFAULT, "qemu_plugin_scoreboard_new") ? 2 : 1;
}

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, qemu_plugin_vcpu_udata_cb_t,
                                          enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *,
                                            qemu_plugin_vcpu_udata_cb_t,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *, qemu_plugin_vcpu_mem_cb_t,
                                      enum qemu_plugin_cb_flags, enum qemu_plugin_mem_rw, void *);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, qemu_plugin_vcpu_syscall_cb_t);
void qemu_plugin_register_vcpu_syscall_ret_cb(qemu_plugin_id_t,
                                              qemu_plugin_vcpu_syscall_ret_cb_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t);
void qemu_plugin_outs(const char *);

static uint64_t tbs, insns, reads, writes, syscalls, syscall_rets;

static void add(uint64_t *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }

static void on_tb(unsigned int vcpu, void *u) { (void)vcpu; (void)u; add(&tbs); }
static void on_insn(unsigned int vcpu, void *u) { (void)vcpu; (void)u; add(&insns); }

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *u)
{
    (void)vcpu; (void)vaddr; (void)u;
    add(qemu_plugin_mem_is_store(info) ? &writes : &reads);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)id; (void)vcpu; (void)num; (void)a1; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6;
    (void)a7; (void)a8;
    add(&syscalls);
}

static void on_syscall_ret(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, int64_t ret)
{
    (void)id; (void)vcpu; (void)num; (void)ret;
    add(&syscall_rets);
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb, QEMU_PLUGIN_CB_NO_REGS, NULL);
    for (size_t i = 0; i < qemu_plugin_tb_n_insns(tb); i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, QEMU_PLUGIN_CB_NO_REGS, NULL);
        qemu_plugin_register_vcpu_mem_cb(insn, on_mem, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW,
                                         NULL);
    }
}

static void on_exit_cb(qemu_plugin_id_t id, void *u)
{
    (void)id; (void)u;
    char line[256];
    snprintf(line, sizeof line,
             "oracle: tbs=%" PRIu64 " insns=%" PRIu64 " reads=%" PRIu64 " writes=%" PRIu64
             " syscalls=%" PRIu64 " syscall_rets=%" PRIu64 "\n",
             tbs, insns, reads, writes, syscalls, syscall_rets);
    qemu_plugin_outs(line);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                               char **argv)
{
    (void)argc; (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    if (!info->system_emulation) {
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
        qemu_plugin_register_vcpu_syscall_ret_cb(id, on_syscall_ret);
    }
    return 0;
}
