/* internal.h: what the shim's files share: the QEMU function table, the plugin state, the gate and
 * the per-file entry points. Nothing here is visible outside libqlua.so (-fvisibility=hidden). */
#ifndef QLUA_INTERNAL_H
#define QLUA_INTERNAL_H

#include <glib.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>

#include "qemu_plugin_abi.h"

/* Thread-locals read on every event: initial-exec avoids a __tls_get_addr call per access (the
 * few bytes come from the static TLS reserve glibc keeps for libraries loaded with dlopen). */
#define QLUA_TLS __thread __attribute__((tls_model("initial-exec")))

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#endif

/* ---- host.c: every QEMU function qlua calls, reached through one table filled by dlsym ---- */

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
    X(update_ns, void, (const void *, int64_t))

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
const char *qlua_host_load(const qemu_info_t *info); /* NULL, or the name of a missing function */
bool qlua_host_has(const char *feature, const char **since);
void qlua_host_need(lua_State *L, const char *what, const char *feature);
void qlua_host_features(lua_State *L); /* pushes a table feature -> bool */
size_t qlua_host_insn_bytes(const struct qemu_plugin_insn *insn, void *dest, size_t len);
bool qlua_host_read_register(struct qemu_plugin_register *reg, GByteArray *buf);

/* ---- gate.c: the Lua state, its lock, the one gate into Lua, errors and output ---- */

/* A Lua function that C calls back, as a registry reference. */
typedef struct qlua_stats qlua_stats;

typedef struct qlua_fn {
    int ref;
    bool disabled;     /* onerror=warn turned it off after an error, or qemu.off removed it */
    bool removed;      /* qemu.off: dropped from its event at the next flush */
    const char *event; /* "on_exit", "tb:on_exec", ... for error messages */
    qlua_stats *stats; /* profile=on: where its calls are charged */
} qlua_fn;

/* ---- reload.c: watch=on ---- */
void qlua_reload_start(void);
void qlua_reload_poll(void);
enum { QLUA_WANT_RELOAD = 1, QLUA_WANT_RETRANSLATE = 2, QLUA_WANT_UNINSTALL = 4 };
void qlua_request(int bits);
extern QLUA_TLS bool qlua_own_thread;
void qlua_events_uninstalled(qemu_plugin_id_t id);
extern int qlua_deferred; /* set when Lua asked for QEMU work to do after the outermost unlock */
void qlua_deferred_run(void);
void qlua_reload_open(lua_State *L);
GPtrArray **qlua_events_take_handlers(void);
void qlua_events_put_handlers(GPtrArray **handlers);
void qlua_events_drop_handlers(GPtrArray **handlers);
void qlua_events_reregister(void);
void qlua_buffer_save(void);
void qlua_buffer_restore(void);

/* ---- repl.c: repl=PATH ---- */
bool qlua_repl_start(const char *path, char **error);
void qlua_repl_stop(void);

/* tostring() of any value, pushed on the stack (luaL_tolstring is Lua 5.2+) */
const char *luaL_tolstring_compat(lua_State *L, int idx);

/* ---- profile.c: profile=on ---- */
uint64_t qlua_now_ns(void);
void qlua_profile_start(void);
qlua_stats *qlua_profile_site(lua_State *L, int idx, const char *event);
void qlua_profile_charge(qlua_stats *s, uint64_t ns);
void qlua_profile_events(qlua_stats *s, uint64_t n);
void qlua_profile_report(void);
void qlua_profile_batch(void);

struct qlua_state {
    qemu_plugin_id_t id;
    lua_State *L;
    GMutex lock; /* with a per-thread depth: see qlua_lock */
    bool onerror_warn;
    bool profile;  /* profile=on: time every entry into Lua, report at exit */
    size_t records_limit; /* records=: arena size that makes qlua flush translations; 0: none */
    bool exec_sync; /* exec=sync: every on_exec callback runs as the code executes */
    bool watch;    /* watch=on: reload the script when its file changes */
    bool polls;    /* watch= or repl=: vCPU callbacks look for a pending reload/retranslation */
    bool loading;  /* the script's top level is running (inside qemu_plugin_install) */
    bool finished; /* exit handlers ran; no more Lua */
    GString *out;  /* script output not yet given to qemu_plugin_outs */
    GString *out_redirect; /* while a REPL request runs: where script output goes instead */
    char *script;  /* resolved path */
    char *root;    /* folder holding lua/ and scripts/ */
};
extern struct qlua_state qlua;

lua_State *qlua_gate_enter(qlua_fn *fn);
void qlua_gate_call(qlua_fn *fn, int nargs);
void qlua_gate_error(qlua_fn *fn);
extern bool qlua_some_fn_disabled; /* set once onerror=warn has turned any function off */
void qlua_gate_push_handler(lua_State *L);
lua_State *qlua_lock(void);
void qlua_unlock(void);
int qlua_gate_load(const char *path, char **error); /* runs the script's top level */
qlua_fn *qlua_fn_new(lua_State *L, int idx, const char *event);
void qlua_out_write(const char *s, size_t len);
void qlua_out_flush(void);
void qlua_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
G_NORETURN void qlua_fail_exit(void);
bool qlua_state_open(char **error);
void qlua_state_close(void);
void qlua_push_u64(lua_State *L, uint64_t v);
int qlua_meta_new(lua_State *L, const char *name);
void qlua_meta_set(lua_State *L, int ref);
void *qlua_meta_check(lua_State *L, int idx, int ref, const char *what);
uint64_t qlua_check_u64(lua_State *L, int idx);

/* ---- per-file openers: each adds its functions to the core table on top of the stack ---- */
void qlua_tb_open(lua_State *L);
void qlua_insn_open(lua_State *L);
void qlua_mem_open(lua_State *L);
void qlua_counter_open(lua_State *L);
void qlua_events_open(lua_State *L);
void qlua_plugin_open(lua_State *L);
void qlua_vcpu_open(lua_State *L);
void qlua_tally_open(lua_State *L);

/* vcpu.c: > 0 while this thread runs a callback for a vCPU (QEMU's "current vCPU" is set) */
extern QLUA_TLS int qlua_vcpu_context;
void qlua_gate_open(lua_State *L);

/* ---- tb.c / insn.c: translation-time handles ---- */
extern uint64_t qlua_translate_gen; /* non-zero only inside an on_translate callback */
void qlua_tb_push(lua_State *L, struct qemu_plugin_tb *tb);
void qlua_insn_push(lua_State *L, struct qemu_plugin_insn *insn, size_t index);
void *qlua_check_live(lua_State *L, int idx, int meta, const char *what);

/* ---- mem.c ---- */
void qlua_mem_register(lua_State *L, struct qemu_plugin_insn *insn, int fn_idx,
                       enum qemu_plugin_mem_rw rw, int data_idx);
enum qemu_plugin_mem_rw qlua_mem_check_rw(lua_State *L, int idx);
bool qlua_mem_wanted(enum qemu_plugin_mem_rw rw, qemu_plugin_meminfo_t info);

/* ---- buffer.c: tracers (batched events) ---- */
/* Event numbers are doubles under LuaJIT (its FFI boxes 64-bit integers, which cannot be table
 * keys; doubles are exact below 2^53, like every LuaJIT number) and u64 under Lua 5.4. */
#ifdef QLUA_LUAJIT
typedef double qlua_event_num;
#define QLUA_EVENT_NUM_NAME "double"
#else
typedef uint64_t qlua_event_num;
#define QLUA_EVENT_NUM_NAME "uint64_t"
#endif
void qlua_buffer_open(lua_State *L);
void qlua_buffer_drain_mine(void);
void qlua_buffer_drain_all(void);
void qlua_buffer_release_mine(void);
/* An execution callback's record (tb/insn:on_exec, when): what QEMU hands back at each event. */
typedef struct qlua_counter qlua_counter;
typedef struct {
    qlua_fn *fn;
    int fn_ref;          /* fn->ref, here so a queued event reads one record */
    int data_ref;        /* registry reference of the data; 0: none */
    qlua_counter *count; /* on_exec(..., { counter = c }): pass c's value at the event */
} qlua_exec_rec;
void qlua_buffer_queued_cb(unsigned int vcpu, void *udata); /* udata: qlua_exec_rec */
extern QLUA_TLS int qlua_queue_context; /* > 0 while queued callbacks are being delivered */
void qlua_buffer_trace_tb(lua_State *L, struct qemu_plugin_tb *tb, int tracer_idx);
void qlua_buffer_trace_insn(lua_State *L, struct qemu_plugin_insn *insn, int tracer_idx);
void qlua_buffer_trace_mem(lua_State *L, struct qemu_plugin_insn *insn, int tracer_idx);

/* ---- counter.c ---- */
qlua_counter *qlua_counter_check(lua_State *L, int idx);
void qlua_counter_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t n);
void qlua_counter_insn(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n);
void qlua_counter_mem(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n,
                      enum qemu_plugin_mem_rw rw);
void qlua_counter_setup(const char *mode);
bool qlua_counter_vcpu_init(unsigned int vcpu); /* true: translated code must be redone */
void qlua_counter_free_all(void);
const char *qlua_counter_mode(void);
void qlua_counter_emit_pending(void);
uint64_t qlua_counter_value(qlua_counter *c, unsigned int vcpu);
void qlua_counter_when_tb(struct qemu_plugin_tb *tb, qlua_counter *c, enum qemu_plugin_cond cond,
                          uint64_t imm, qemu_plugin_vcpu_udata_cb_t cb, void *udata);
void qlua_counter_when_insn(struct qemu_plugin_insn *insn, qlua_counter *c,
                            enum qemu_plugin_cond cond, uint64_t imm,
                            qemu_plugin_vcpu_udata_cb_t cb, void *udata);

/* ---- events.c: QEMU-level callbacks, per-translation records ---- */
void *qlua_arena_alloc(size_t size);
qlua_fn *qlua_exec_fn(lua_State *L, int idx, const char *event);
qlua_fn *qlua_exec_fn_by_ref(int ref);
int qlua_push_exec_args(lua_State *L, unsigned int vcpu, int data_ref, bool has_count,
                        uint64_t count);
int qlua_ref_data(lua_State *L, int idx);
void qlua_events_install(void);
void qlua_events_memory(uint64_t *held, uint64_t *peak, uint64_t *reclaims,
                        uint64_t *limit_flushes);
void qlua_events_disable(lua_State *L, qlua_fn *fn);
void qlua_exec_register_tb(lua_State *L, struct qemu_plugin_tb *tb, int fn_idx, int data_idx);
void qlua_exec_register_insn(lua_State *L, struct qemu_plugin_insn *insn, int fn_idx,
                             int data_idx);
void qlua_exec_register_when(lua_State *L, struct qemu_plugin_tb *tb,
                             struct qemu_plugin_insn *insn, int first);

#endif
