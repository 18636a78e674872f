/* host.c: the one table of QEMU functions (filled by dlsym), the API version we declare, the
 * feature flags scripts see through qemu.has(), and the ABI variants chosen by API version.
 * Owns: every fact about the running QEMU. Must not touch: the Lua state or any other shim file.
 * A new QEMU version is a change here; no other file looks at version numbers. */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

#include "host.h"

struct qlua_host qlua_host;
int qlua_declared_version;

/* Functions every supported QEMU (API v1 and later) has; a host without one cannot run qlua. */
static const char *const required[] = {
    "register_vcpu_init_cb", "register_vcpu_exit_cb", "register_vcpu_tb_trans_cb",
    "register_vcpu_tb_exec_cb", "register_vcpu_insn_exec_cb", "register_vcpu_mem_cb",
    "register_flush_cb", "register_atexit_cb", "tb_n_insns", "tb_vaddr", "tb_get_insn",
    "insn_data", "insn_size", "insn_vaddr", "insn_disas", "mem_size_shift", "mem_is_store",
    "outs", "uninstall", "reset",
};

/* The QEMU release running us, read from the executable's own text: every qemu-ARCH and
 * qemu-system-ARCH carries its --version line as a literal ("qemu-x86_64 version 7.2.22 (Debian
 * ...)", "QEMU emulator version 10.2.0"). No symbol tells 11.0 from 11.1 (plugin API 6 and 7:
 * same functions, other callback shapes), and the constructor must know before the loader reads
 * qemu_plugin_version; this is how. Scans the main program's read-only loaded segments. */
static int qemu_release; /* major * 10000 + minor * 100 + micro; 0: not found */
static char qemu_release_text[32];

static bool parse_release(const char *p, const char *end)
{
    unsigned major, minor, micro = 0;
    char text[32];
    size_t n = (size_t)(end - p) < sizeof text - 1 ? (size_t)(end - p) : sizeof text - 1;
    memcpy(text, p, n);
    text[n] = 0;
    if (sscanf(text, "%u.%u.%u", &major, &minor, &micro) < 2 || major > 99 || minor > 99 ||
        micro > 99) {
        return false;
    }
    qemu_release = (int)(major * 10000 + minor * 100 + micro);
    g_snprintf(qemu_release_text, sizeof qemu_release_text, "%u.%u.%u", major, minor, micro);
    return true;
}

/* One pass over [start, end) for " version ", which both forms hold: "QEMU emulator version "
 * (system mode) and "qemu-ARCH version " (user mode, whose target name is walked back over). */
static bool find_release(const char *start, const char *end)
{
    static const char marker[] = " version ";
    static const char system[] = "QEMU emulator";
    const size_t len = sizeof marker - 1;
    for (const char *p = start; p < end;) {
        p = memmem(p, (size_t)(end - p), marker, len);
        if (!p) {
            return false;
        }
        const char *name = p;
        while (name > start && (g_ascii_isalnum(name[-1]) || name[-1] == '_')) {
            name--;
        }
        bool named = (p - start >= (ptrdiff_t)(sizeof system - 1) &&
                      memcmp(p - (sizeof system - 1), system, sizeof system - 1) == 0) ||
                     (name - start >= 5 && memcmp(name - 5, "qemu-", 5) == 0);
        if (named && parse_release(p + len, end)) {
            return true;
        }
        p += len;
    }
    return false;
}

/* The literal lives in read-only data, which linkers put in a segment of its own (-z
 * separate-code, binutils' default since 2.31): those are scanned first, and the code only if
 * they do not hold it (an older link). Scanning the code too cost every run ~1 ms (1.3 MiB of
 * qemu-x86_64 7.2's text read, and faulted in, twice). */
static int scan_main_program(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    for (int code = 0; code < 2; code++) {
        for (int i = 0; i < info->dlpi_phnum; i++) {
            const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
            if (ph->p_type == PT_LOAD && !(ph->p_flags & PF_W) &&
                !(ph->p_flags & PF_X) == !code) {
                const char *start = (const char *)(info->dlpi_addr + ph->p_vaddr);
                if (find_release(start, start + ph->p_memsz)) {
                    return 1;
                }
            }
        }
    }
    return 1; /* the first object is the main program: stop there */
}

int qlua_host_release(const char **text)
{
    static bool scanned;
    if (!scanned) {
        scanned = true;
        dl_iterate_phdr(scan_main_program, NULL);
    }
    *text = qemu_release ? qemu_release_text : NULL;
    return qemu_release;
}

/* The loader reads qemu_plugin_version after running constructors, so the value can follow the
 * host: API v2 (QEMU 9.0) removed the raw inline ops and added scoreboards, and raised MIN to 2.
 * QEMU 11.1 (API v7, MIN 7) passes userdata instead of the plugin id to every callback: qlua's
 * callbacks have the older shapes, so there it declares 7 only once the v7 trampolines exist; until
 * then it says why and declares 6, which that loader refuses with its own message. */
int qlua_host_probe_version(void)
{
    const char *release;
    if (qlua_host_release(&release) >= 110100) {
        fprintf(stderr, "qlua: QEMU %s passes different arguments to plugin callbacks (plugin API "
                        "7); this libqlua.so speaks plugin API 1 to 6 (QEMU 7.2 to 11.0)\n",
                release);
        return 6;
    }
    return dlsym(RTLD_DEFAULT, "qemu_plugin_scoreboard_new") ? 2 : 1;
}

const char *qlua_host_load(const qemu_info_t *info)
{
#define QLUA_HOST_LOOKUP(name, ret, params)                                                         \
    *(void **)&qlua_host.name = dlsym(RTLD_DEFAULT, "qemu_plugin_" #name);
    QLUA_HOST_FUNCS(QLUA_HOST_LOOKUP)
#undef QLUA_HOST_LOOKUP
    qlua_host.api_min = info->version.min;
    qlua_host.api_cur = info->version.cur;
    qlua_host.system = info->system_emulation;
    qlua_host.target = g_strdup(info->target_name); /* info lives only during install */
    if (info->system_emulation) {
        qlua_host.smp_vcpus = info->system.smp_vcpus;
        qlua_host.max_vcpus = info->system.max_vcpus;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(required); i++) {
        char symbol[96];
        g_snprintf(symbol, sizeof symbol, "qemu_plugin_%s", required[i]);
        if (!dlsym(RTLD_DEFAULT, symbol)) {
            return required[i];
        }
    }
    return NULL;
}

/* Features a script may ask about. `present` is evaluated against the filled table. */
struct feature {
    const char *name;
    const char *since; /* where a host lacks it: which QEMU brings it */
    bool (*present)(void);
};

static bool has_inline(void) { return qlua_host.register_vcpu_tb_exec_inline != NULL; }
static bool has_scoreboard(void) { return qlua_host.scoreboard_new != NULL; }
static bool has_symbol(void) { return qlua_host.insn_symbol != NULL; }
static bool has_hwaddr(void) { return qlua_host.system && qlua_host.hwaddr_phys_addr != NULL; }
static bool has_syscalls(void) { return !qlua_host.system; }
static bool has_binary(void) { return !qlua_host.system && qlua_host.path_to_binary != NULL; }
static bool has_idle(void) { return qlua_host.system; }
static bool has_cond(void) { return qlua_host.register_vcpu_tb_exec_cond_cb != NULL; }
static bool has_registers(void)
{
    return qlua_host.get_registers != NULL && qlua_host.read_register != NULL;
}
static bool has_read_memory(void) { return qlua_host.read_memory_vaddr != NULL; }
static bool has_mem_value(void) { return qlua_host.mem_get_value != NULL; }
static bool has_time_control(void)
{
    return qlua_host.system && qlua_host.request_time_control && qlua_host.update_ns;
}

static bool has_write_memory(void) { return qlua_host.write_memory_vaddr != NULL; }
static bool has_phys_memory(void)
{
    return qlua_host.system && qlua_host.read_memory_hwaddr && qlua_host.write_memory_hwaddr;
}
static bool has_translate(void) { return qlua_host.system && qlua_host.translate_vaddr; }
static bool has_write_registers(void) { return has_registers() && qlua_host.write_register; }
/* QEMU 10.2 reports no discontinuity in user mode (a guest's signals are not traps there) */
static bool has_discon(void) { return qlua_host.system && qlua_host.register_vcpu_discon_cb; }

static const struct feature features[] = {
    {"inline", "QEMU 4.2 to 8.2 (raw inline adds; qlua counters work everywhere)", has_inline},
    {"scoreboard", "QEMU 9.0", has_scoreboard},
    {"symbol", "QEMU 6.1", has_symbol},
    {"hwaddr", "QEMU 6.0 in system mode", has_hwaddr},
    {"syscalls", "user mode (qemu-ARCH)", has_syscalls},
    {"binary", "QEMU 7.0 in user mode", has_binary},
    {"idle", "system mode (qemu-system-ARCH)", has_idle},
    {"cond_cb", "QEMU 9.1 (qlua emulates tb:when/insn:when natively before)", has_cond},
    {"registers", "QEMU 9.0", has_registers},
    {"read_memory", "QEMU 9.2", has_read_memory},
    {"mem_value", "QEMU 9.2", has_mem_value},
    {"time_control", "QEMU 9.1 in system mode", has_time_control},
    {"write_memory", "QEMU 10.1", has_write_memory},
    {"phys_memory", "QEMU 10.1 in system mode", has_phys_memory},
    {"translate", "QEMU 10.1 in system mode", has_translate},
    {"write_registers", "QEMU 10.1", has_write_registers},
    {"discon", "QEMU 10.2 in system mode", has_discon},
};

bool qlua_host_has(const char *feature, const char **since)
{
    for (size_t i = 0; i < G_N_ELEMENTS(features); i++) {
        if (strcmp(features[i].name, feature) == 0) {
            *since = features[i].since;
            return features[i].present();
        }
    }
    *since = NULL;
    return false;
}

/* Raises the one error every feature-gated function gives on a host without the feature. */
void qlua_host_need(lua_State *L, const char *what, const char *feature)
{
    const char *since;
    if (!qlua_host_has(feature, &since)) {
        luaL_error(L, "%s needs the '%s' feature, which this QEMU (plugin API %d) lacks: it comes "
                      "with %s",
                   what, feature, qlua_host.api_cur, since);
    }
}

void qlua_host_features(lua_State *L)
{
    lua_createtable(L, 0, G_N_ELEMENTS(features));
    for (size_t i = 0; i < G_N_ELEMENTS(features); i++) {
        lua_pushboolean(L, features[i].present());
        lua_setfield(L, -2, features[i].name);
    }
}

/* insn_data: up to API v2 it returns a pointer to the bytes; from v3 (QEMU 9.1) it copies them
 * into a caller buffer and returns the count. */
size_t qlua_host_insn_bytes(const struct qemu_plugin_insn *insn, void *dest, size_t len)
{
    void *fn = (void *)qlua_host.insn_data;
    if (qlua_host.api_cur >= 3) {
        size_t (*copy)(const struct qemu_plugin_insn *, void *, size_t);
        *(void **)&copy = fn;
        return copy(insn, dest, len);
    }
    const void *(*ptr)(const struct qemu_plugin_insn *);
    *(void **)&ptr = fn;
    size_t n = qlua_host.insn_size(insn);
    if (n > len) {
        n = len;
    }
    memcpy(dest, ptr(insn), n);
    return n;
}

/* read_register: int (bytes read, or -1) up to API v5; bool from v6 (QEMU 11). */
bool qlua_host_read_register(struct qemu_plugin_register *reg, GByteArray *buf)
{
    void *fn = (void *)qlua_host.read_register;
    if (qlua_host.api_cur >= 6) {
        bool (*read_bool)(struct qemu_plugin_register *, GByteArray *);
        *(void **)&read_bool = fn;
        return read_bool(reg, buf);
    }
    int (*read_int)(struct qemu_plugin_register *, GByteArray *);
    *(void **)&read_int = fn;
    return read_int(reg, buf) > 0;
}

/* write_register: int (bytes written, 0 on failure) in API v5; bool from v6 (QEMU 11). */
bool qlua_host_write_register(struct qemu_plugin_register *reg, GByteArray *buf)
{
    void *fn = (void *)qlua_host.write_register;
    if (qlua_host.api_cur >= 6) {
        bool (*write_bool)(struct qemu_plugin_register *, GByteArray *);
        *(void **)&write_bool = fn;
        return write_bool(reg, buf);
    }
    int (*write_int)(struct qemu_plugin_register *, GByteArray *);
    *(void **)&write_int = fn;
    return write_int(reg, buf) > 0;
}

/* execve and execveat by target: at either, QEMU's process is replaced by the new program unless
 * the call fails, and nothing of the plugin runs again. Unknown targets: every syscall counts. */
bool qlua_host_exec_syscall(int64_t num)
{
    static const struct {
        const char *target;
        int64_t execve, execveat;
    } calls[] = {
        {"x86_64", 59, 322}, {"aarch64", 221, 281}, {"riscv64", 221, 281}, {"loongarch64", 221, 281},
        {"i386", 11, 358},   {"arm", 11, 387},      {"ppc64", 11, 362},    {"ppc64le", 11, 362},
        {"s390x", 11, 354},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(calls); i++) {
        if (qlua_host.target && strcmp(qlua_host.target, calls[i].target) == 0) {
            return num == calls[i].execve || num == calls[i].execveat;
        }
    }
    return true;
}
