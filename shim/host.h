/* host.h: the one table of QEMU functions (filled by dlsym at install), the host's API versions and
 * mode, the feature flags scripts see through qemu.has(), and the ABI variants chosen by version. */
#ifndef QLUA_HOST_H
#define QLUA_HOST_H

#include "base.h"


/* X(name, return type, parameter list): `name` is the QEMU symbol without `qemu_plugin_`. */
#define QLUA_HOST_FUNCS(X)                                                                          \
    X(uninstall, void, (qemu_plugin_id_t, qemu_plugin_simple_cb_t))                                 \
    X(reset, void, (qemu_plugin_id_t, qemu_plugin_simple_cb_t))                                     \
    X(register_vcpu_init_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_simple_cb_t))               \
    X(register_vcpu_exit_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_simple_cb_t))               \
    X(register_vcpu_idle_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_simple_cb_t))               \
    X(register_vcpu_resume_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_simple_cb_t))             \
    X(register_vcpu_tb_trans_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t))         \
    X(register_vcpu_tb_exec_cb, void,                                                               \
      (struct qemu_plugin_tb *, qemu_plugin_vcpu_udata_cb_t, enum qemu_plugin_cb_flags, void *))    \
    X(register_vcpu_insn_exec_cb, void,                                                             \
      (struct qemu_plugin_insn *, qemu_plugin_vcpu_udata_cb_t, enum qemu_plugin_cb_flags, void *))  \
    X(register_vcpu_mem_cb, void,                                                                   \
      (struct qemu_plugin_insn *, qemu_plugin_vcpu_mem_cb_t, enum qemu_plugin_cb_flags,             \
       enum qemu_plugin_mem_rw, void *))                                                            \
    X(register_vcpu_tb_exec_inline, void,                                                           \
      (struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t))                             \
    X(register_vcpu_insn_exec_inline, void,                                                         \
      (struct qemu_plugin_insn *, enum qemu_plugin_op, void *, uint64_t))                           \
    X(register_vcpu_mem_inline, void,                                                               \
      (struct qemu_plugin_insn *, enum qemu_plugin_mem_rw, enum qemu_plugin_op, void *, uint64_t))  \
    X(register_vcpu_syscall_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_syscall_cb_t))           \
    X(register_vcpu_syscall_ret_cb, void, (qemu_plugin_id_t, qemu_plugin_vcpu_syscall_ret_cb_t))   \
    X(register_flush_cb, void, (qemu_plugin_id_t, qemu_plugin_simple_cb_t))                         \
    X(register_atexit_cb, void, (qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *))                 \
    X(tb_n_insns, size_t, (const struct qemu_plugin_tb *))                                          \
    X(tb_vaddr, uint64_t, (const struct qemu_plugin_tb *))                                          \
    X(tb_get_insn, struct qemu_plugin_insn *, (const struct qemu_plugin_tb *, size_t))              \
    X(insn_data, void *, (void))                                                                    \
    X(insn_size, size_t, (const struct qemu_plugin_insn *))                                         \
    X(insn_vaddr, uint64_t, (const struct qemu_plugin_insn *))                                      \
    X(insn_haddr, void *, (const struct qemu_plugin_insn *))                                        \
    X(insn_disas, char *, (const struct qemu_plugin_insn *))                                        \
    X(insn_symbol, const char *, (const struct qemu_plugin_insn *))                                 \
    X(mem_size_shift, unsigned int, (qemu_plugin_meminfo_t))                                        \
    X(mem_is_sign_extended, bool, (qemu_plugin_meminfo_t))                                          \
    X(mem_is_big_endian, bool, (qemu_plugin_meminfo_t))                                             \
    X(mem_is_store, bool, (qemu_plugin_meminfo_t))                                                  \
    X(get_hwaddr, struct qemu_plugin_hwaddr *, (qemu_plugin_meminfo_t, uint64_t))                   \
    X(hwaddr_is_io, bool, (const struct qemu_plugin_hwaddr *))                                      \
    X(hwaddr_phys_addr, uint64_t, (const struct qemu_plugin_hwaddr *))                              \
    X(hwaddr_device_name, const char *, (const struct qemu_plugin_hwaddr *))                        \
    X(outs, void, (const char *))                                                                   \
    X(path_to_binary, const char *, (void))                                                         \
    X(start_code, uint64_t, (void))                                                                 \
    X(end_code, uint64_t, (void))                                                                   \
    X(entry_code, uint64_t, (void))                                                                 \
    X(scoreboard_new, struct qemu_plugin_scoreboard *, (size_t))                                    \
    X(u64_add, void, (qemu_plugin_u64, unsigned int, uint64_t))                                     \
    X(u64_get, uint64_t, (qemu_plugin_u64, unsigned int))                                           \
    X(u64_set, void, (qemu_plugin_u64, unsigned int, uint64_t))                                     \
    X(u64_sum, uint64_t, (qemu_plugin_u64))                                                         \
    X(register_vcpu_tb_exec_inline_per_vcpu, void,                                                  \
      (struct qemu_plugin_tb *, enum qemu_plugin_op, qemu_plugin_u64, uint64_t))                    \
    X(register_vcpu_insn_exec_inline_per_vcpu, void,                                                \
      (struct qemu_plugin_insn *, enum qemu_plugin_op, qemu_plugin_u64, uint64_t))                  \
    X(register_vcpu_mem_inline_per_vcpu, void,                                                      \
      (struct qemu_plugin_insn *, enum qemu_plugin_mem_rw, enum qemu_plugin_op, qemu_plugin_u64,    \
       uint64_t))                                                                                   \
    X(num_vcpus, int, (void))                                                                       \
    X(register_vcpu_tb_exec_cond_cb, void,                                                          \
      (struct qemu_plugin_tb *, qemu_plugin_vcpu_udata_cb_t, enum qemu_plugin_cb_flags,             \
       enum qemu_plugin_cond, qemu_plugin_u64, uint64_t, void *))                                   \
    X(register_vcpu_insn_exec_cond_cb, void,                                                        \
      (struct qemu_plugin_insn *, qemu_plugin_vcpu_udata_cb_t, enum qemu_plugin_cb_flags,           \
       enum qemu_plugin_cond, qemu_plugin_u64, uint64_t, void *))                                   \
    X(get_registers, GArray *, (void))                                                              \
    X(read_register, void *, (void))                                                                \
    X(read_memory_vaddr, bool, (uint64_t, GByteArray *, size_t))                                    \
    X(mem_get_value, qemu_plugin_mem_value, (qemu_plugin_meminfo_t))                                \
    X(request_time_control, const void *, (void))                                                   \
    X(update_ns, void, (const void *, int64_t))                                                     \
    X(write_register, void *, (void))                                                               \
    X(write_memory_vaddr, bool, (uint64_t, GByteArray *))                                           \
    X(read_memory_hwaddr, enum qemu_plugin_hwaddr_operation_result,                                 \
      (uint64_t, GByteArray *, size_t))                                                             \
    X(write_memory_hwaddr, enum qemu_plugin_hwaddr_operation_result, (uint64_t, GByteArray *))      \
    X(translate_vaddr, bool, (uint64_t, uint64_t *))                                                \
    X(register_vcpu_discon_cb, void,                                                                \
      (qemu_plugin_id_t, enum qemu_plugin_discon_type, qemu_plugin_vcpu_discon_cb_t))

/* Entries typed `(void)` above are probed for presence only: their ABI is chosen where they are
 * used, from host.api (see host.c). */
struct qlua_host {
#define QLUA_HOST_FIELD(name, ret, params) ret(*name) params;
    QLUA_HOST_FUNCS(QLUA_HOST_FIELD)
#undef QLUA_HOST_FIELD
    int api_min, api_cur; /* what the running QEMU says in qemu_info_t */
    bool system;
    int smp_vcpus, max_vcpus;
    const char *target;
};

extern struct qlua_host qlua_host;
extern int qlua_declared_version; /* the value of qemu_plugin_version */

int qlua_host_probe_version(void);
/* The running QEMU's release (major * 10000 + minor * 100 + micro) read from its --version text,
 * and that text ("10.2.0") in *text; 0 and NULL when not found. */
int qlua_host_release(const char **text);
const char *qlua_host_load(const qemu_info_t *info); /* NULL, or the name of a missing function */
bool qlua_host_has(const char *feature, const char **since);
void qlua_host_need(lua_State *L, const char *what, const char *feature);
void qlua_host_features(lua_State *L); /* pushes a table feature -> bool */
size_t qlua_host_insn_bytes(const struct qemu_plugin_insn *insn, void *dest, size_t len);
bool qlua_host_read_register(struct qemu_plugin_register *reg, GByteArray *buf);
bool qlua_host_write_register(struct qemu_plugin_register *reg, GByteArray *buf);
/* Is syscall num of the guest's target one that replaces the process (execve, execveat)? */
bool qlua_host_exec_syscall(int64_t num);

#endif
