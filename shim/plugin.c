/* plugin.c: what QEMU's loader sees (qemu_plugin_version, qemu_plugin_install), the plugin's own
 * options, where lua/ and scripts/ are, and the facts about the run that the script can read
 * (qemu.info, qemu.args, qemu.has, qemu.binary). It assembles the rest: the core table from each
 * file's opener, the hooks through which lower layers ask for work, the fork handlers.
 * Owns: the options table, install order. Must not touch: anything's internals (it calls headers). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "arena.h"
#include "buffer.h"
#include "counter.h"
#include "events.h"
#include "exec.h"
#include "gate.h"
#include "host.h"
#include "insn.h"
#include "mem.h"
#include "profile.h"
#include "qlua.h"
#include "reload.h"
#include "repl.h"
#include "signals.h"
#include "symbols.h"
#include "tally.h"
#include "tb.h"
#include "value.h"
#include "vcpu.h"
#ifdef QLUA_LUAJIT
#include <luajit.h>
#endif

/* Not const: the constructor below sets it from the host before the loader reads it. */
__attribute__((visibility("default"))) int qemu_plugin_version = 1;

__attribute__((constructor)) static void probe_host(void)
{
    qemu_plugin_version = qlua_host_probe_version();
    qlua_declared_version = qemu_plugin_version;
}

/* The plugin's own options, in the order usage() shows them; everything else is the script's.
 * This table drives parsing, checking, the usage text and core.own_options. */
enum option_kind { OPT_TEXT, OPT_CHOICE, OPT_SIZE };
typedef struct {
    const char *key;
    const char *fallback; /* the default; NULL: none */
    enum option_kind kind;
    const char *choices; /* OPT_CHOICE: "a|b" */
    const char *help;
} option;

enum { OPT_SCRIPT, OPT_ONERROR, OPT_COUNTERS, OPT_PROFILE, OPT_REPL, OPT_WATCH, OPT_EXEC,
       OPT_RECORDS, N_OPTIONS };

static const option options[N_OPTIONS] = {
    [OPT_SCRIPT] = {"script", NULL, OPT_TEXT, NULL,
                    "a Lua file, or the name of a script shipped in <root>/scripts "
                    "(e.g. script=count)"},
    [OPT_ONERROR] = {"onerror", "fail", OPT_CHOICE, "fail|warn",
                     "fail: a Lua error ends the run with status 1; warn: report it, disable that "
                     "callback and let the guest run on"},
    [OPT_COUNTERS] = {"counters", "auto", OPT_CHOICE, "auto|callback",
                      "auto: QEMU >= 9.0 scoreboards; before, inline adds while one vCPU runs, "
                      "per-vCPU callbacks after; callback: always per-vCPU callbacks"},
    [OPT_PROFILE] = {"profile", "off", OPT_CHOICE, "on|off",
                     "on: report at exit where and how long Lua ran"},
    [OPT_REPL] = {"repl", NULL, OPT_TEXT, NULL,
                  "a unix socket path (mode 0600) for `qlua attach PATH`: a live Lua prompt"},
    [OPT_WATCH] = {"watch", "off", OPT_CHOICE, "on|off",
                   "on: reload the script when its file changes (qemu.persist survives)"},
    [OPT_EXEC] = {"exec", "queued", OPT_CHOICE, "queued|sync",
                  "queued: on_exec and on_mem callbacks are delivered in batches, in order, "
                  "before the thread's next other callback; sync: each one as it executes"},
    [OPT_RECORDS] = {"records", "64M", OPT_SIZE, NULL,
                     "memory for per-translation records before qlua flushes translated code to "
                     "reclaim it (at least 1M; K, M, G suffixes; off: never)"},
};

static GPtrArray *script_args; /* "key=value" strings, in order */

static void usage(void)
{
    GString *text = g_string_new(NULL);
    g_string_append_printf(text, "qlua %s: no script given. Usage:\n  -plugin libqlua.so", QLUA_VERSION);
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        const char *form = o->kind == OPT_CHOICE ? o->choices : o->kind == OPT_SIZE ? "SIZE" : "PATH";
        g_string_append_printf(text, i == OPT_SCRIPT ? ",%s=%s" : "[,%s=%s]", o->key, form);
    }
    g_string_append(text, "[,KEY=VALUE...]\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        g_string_append_printf(text, "    %-9s %s", o->key, o->help);
        if (o->fallback) {
            g_string_append_printf(text, " (default %s)", o->fallback);
        }
        g_string_append_c(text, '\n');
    }
    g_string_append(text, "    KEY=VALUE any other argument is given to the script as qemu.args.KEY\n");
    char *root = g_strdup_printf("%s", qlua.root ? qlua.root : "<qlua>");
    char **parts = g_strsplit(text->str, "<root>", -1);
    char *joined = g_strjoinv(root, parts);
    fputs(joined, stderr);
    g_free(joined);
    g_strfreev(parts);
    g_free(root);
    g_string_free(text, TRUE);
}
static bool has_file(const char *dir, const char *rel)
{
    char *path = g_build_filename(dir, rel, NULL);
    bool ok = g_file_test(path, G_FILE_TEST_IS_REGULAR);
    g_free(path);
    return ok;
}

/* lua/ and scripts/ live beside each other: in the source tree when the plugin runs from its build
 * folder, under the install prefix's data folder after `meson install`. QLUA_ROOT overrides. */
static char *find_root(void)
{
    Dl_info info;
    char *so_dir = NULL;
    if (dladdr((void *)probe_host, &info) && info.dli_fname) {
        char *real = realpath(info.dli_fname, NULL);
        so_dir = g_path_get_dirname(real ? real : info.dli_fname);
        free(real);
    }
    const char *candidates[4];
    int n = 0;
    if (g_getenv("QLUA_ROOT")) {
        candidates[n++] = g_getenv("QLUA_ROOT");
    }
    if (so_dir && g_str_equal(so_dir, QLUA_BUILD_DIR)) {
        candidates[n++] = QLUA_SOURCE_DIR;
    }
    candidates[n++] = QLUA_DATA_DIR;
    candidates[n++] = QLUA_SOURCE_DIR;
    g_free(so_dir);
    for (int i = 0; i < n; i++) {
        if (has_file(candidates[i], "lua/qemu/init.lua")) {
            /* absolute: package.path is made of it, and a module loaded on first use (in a
             * callback, after the guest's chdir) must still be found from a relative QLUA_ROOT */
            return g_canonicalize_filename(candidates[i], NULL);
        }
    }
    return NULL;
}

/* script=PATH is used as given; a bare NAME is also looked up as scripts/NAME.lua. */
static char *resolve_script(const char *arg, char **error)
{
    if (g_file_test(arg, G_FILE_TEST_IS_REGULAR)) {
        return g_strdup(arg);
    }
    GString *tried = g_string_new(arg);
    if (!strchr(arg, '/')) {
        const char *forms[] = {"%s/scripts/%s.lua", "%s/scripts/%s"};
        for (size_t i = 0; i < G_N_ELEMENTS(forms); i++) {
            char *path = g_strdup_printf(forms[i], qlua.root, arg);
            if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
                g_string_free(tried, TRUE);
                return path;
            }
            g_string_append_printf(tried, ", %s", path);
            g_free(path);
        }
    }
    struct stat st;
    if (stat(arg, &st) == 0) { /* it exists, but is no file a script can be read from */
        *error = g_strdup_printf("script=%s: is %s, not a Lua file", arg,
                                 S_ISDIR(st.st_mode)    ? "a directory"
                                 : S_ISFIFO(st.st_mode) ? "a FIFO"
                                 : S_ISCHR(st.st_mode)  ? "a character device"
                                                        : "not a regular file");
    } else {
        *error = g_strdup_printf("script=%s: no such file (tried %s)", arg, tried->str);
    }
    g_string_free(tried, TRUE);
    return NULL;
}

/* SIZE: a whole number of bytes with an optional K, M or G (powers of 1024), or "off" (0). */
static bool parse_size(const char *key, const char *value, size_t *out, char **error)
{
    if (g_str_equal(value, "off")) {
        *out = 0;
        return true;
    }
    char *end;
    guint64 n = g_ascii_strtoull(value, &end, 10);
    int shift = 0;
    switch (g_ascii_toupper(*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    default: break;
    }
    if (end == value || !g_ascii_isdigit(value[0]) || *end != '\0' || n == 0 ||
        n > (G_MAXSIZE >> shift) >> 1) {
        *error = g_strdup_printf("%s=%s: expected a size such as 64M (bytes, or with a K, M or G "
                                 "suffix), or off",
                                 key, value);
        return false;
    }
    *out = (size_t)n << shift;
    return true;
}

/* Splits argv into the plugin's options (values[], checked against the table) and the script's. */
static bool parse_options(int argc, char **argv, const char *values[N_OPTIONS], char **error)
{
    for (int i = 0; i < N_OPTIONS; i++) {
        values[i] = options[i].fallback;
    }
    script_args = g_ptr_array_new();
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            *error = g_strdup_printf("argument '%s': expected KEY=VALUE", argv[i]);
            return false;
        }
        int k = 0;
        while (k < N_OPTIONS && !(strlen(options[k].key) == (size_t)(eq - argv[i]) &&
                                  strncmp(argv[i], options[k].key, (size_t)(eq - argv[i])) == 0)) {
            k++;
        }
        if (k == N_OPTIONS) {
            g_ptr_array_add(script_args, argv[i]);
        } else {
            values[k] = eq + 1;
        }
    }
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *o = &options[i];
        if (values[i] && o->kind == OPT_CHOICE) {
            char **choices = g_strsplit(o->choices, "|", -1);
            bool ok = g_strv_contains((const gchar *const *)choices, values[i]);
            if (!ok) {
                char *names = g_strjoinv(", ", choices);
                *error = g_strdup_printf("%s=%s: expected one of %s", o->key, values[i], names);
                g_free(names);
            }
            g_strfreev(choices);
            if (!ok) {
                return false;
            }
        }
    }
    return true;
}

static bool is(const char *values[N_OPTIONS], int k, const char *choice)
{
    return values[k] && g_str_equal(values[k], choice);
}

/* What lower layers ask of the layers above, after the outermost unlock. */
/* QEMU has set itself up: signal handlers can be wrapped, REPL chunks can run. */
static void first_translation(void)
{
    qlua_signals_install();
    qlua_repl_guest_started();
}

static void run_deferred(int bits)
{
    if (bits & QLUA_DEFER_REGISTER) {
        qlua_events_register_wanted();
    }
    bits &= ~QLUA_DEFER_REGISTER;
    if (bits) {
        qlua_reload_run(bits);
    }
}

static void finished(void)
{
    qlua_profile_report();
    qlua_repl_stop();
}

/* fork: a child must not inherit half-written output (it would be printed twice) nor a lock held
 * by a thread that does not exist in the child. QEMU forks with every other vCPU stopped:
 * deliver all batched events in the parent first. */
static void fork_prepare(void)
{
    if (qlua.L) {
        qlua_exec_drain_all();
        qlua_lock();
    }
    qlua_output_fork_prepare();
}

/* Parent, and child (whose forking thread, the only one left, holds the lock as deep as before
 * fork_prepare plus one): release what fork_prepare took. */
static void fork_parent(void)
{
    qlua_output_fork_parent();
    if (qlua.L) {
        qlua_unlock();
    }
}

static void fork_child(void)
{
    qlua_output_fork_child();
    if (qlua.L) {
        qlua_unlock();
    }
}

/* require "qlua.core": every file's primitives in one table, for lua/qemu/init.lua only. */
static int plugin_open_core(lua_State *L);

static int fail_install(char *error)
{
    qlua_report("%s", error); /* the one way qlua speaks: a copy of stderr, after any output */
    g_free(error);
    qlua.finished = true; /* QEMU refuses the plugin: no exit handler may run */
    return 1;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    static bool atfork_done;
    char *error = NULL;
    if (qlua.L != NULL) {
        return fail_install(g_strdup("this libqlua.so is already running a script; to run two "
                                     "scripts, load a copy of the file for the second"));
    }
    /* host */
    const char *missing = qlua_host_load(info);
    if (missing) {
        return fail_install(g_strdup_printf("this QEMU lacks qemu_plugin_%s, which qlua needs "
                                            "(QEMU 6.0 or later with plugins is required)",
                                            missing));
    }
    qlua.id = id;
    qlua_output_start();
    /* root */
    qlua.root = find_root();
    if (qlua.root == NULL) {
        return fail_install(g_strdup_printf("cannot find qlua's Lua files (lua/qemu/init.lua) "
                                            "in %s or %s; set QLUA_ROOT",
                                            QLUA_DATA_DIR, QLUA_SOURCE_DIR));
    }
    /* options */
    const char *values[N_OPTIONS];
    if (!parse_options(argc, argv, values, &error)) {
        return fail_install(error);
    }
    if (values[OPT_SCRIPT] == NULL) {
        usage();
        return 1;
    }
    if (!parse_size("records", values[OPT_RECORDS], &qlua.records_limit, &error)) {
        return fail_install(error);
    }
    if (qlua.records_limit && qlua.records_limit < (1u << 20)) { /* 16 chunks of 64 KiB */
        return fail_install(g_strdup_printf("records=%s: at least 1M (or off)", values[OPT_RECORDS]));
    }
    qlua.onerror_warn = is(values, OPT_ONERROR, "warn");
    qlua.profile = is(values, OPT_PROFILE, "on");
    qlua.watch = is(values, OPT_WATCH, "on");
    qlua.exec_sync = is(values, OPT_EXEC, "sync");
    qlua.polls = qlua.watch || values[OPT_REPL] != NULL;
    qlua_hooks.deferred = run_deferred;
    qlua_hooks.finished = finished;
    qlua_hooks.quit = qlua_events_exit;
    qlua_hooks.first_translation = first_translation;
    if (qlua.profile) {
        qlua_profile_start();
        qlua_hooks.site = qlua_profile_site;
    }
    /* state */
    qlua.script = resolve_script(values[OPT_SCRIPT], &error);
    if (qlua.script == NULL || !qlua_state_open(plugin_open_core, &error)) {
        return fail_install(error);
    }
    if (!atfork_done) {
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        atfork_done = true;
    }
    qlua_counter_setup(values[OPT_COUNTERS]);
    /* script */
    qlua.loading = true;
    int rc = qlua_gate_load(qlua.script, &error);
    qlua.loading = false;
    if (rc != 0) {
        qlua_out_flush();
        qlua_report("error while loading %s:\n%s", qlua.script, error);
        g_free(error);
        qlua_state_close();
        return 1;
    }
    /* events */
    qlua_events_install();
    /* Stay mapped after qemu.uninstall(): qlua's own threads (watcher, REPL) may still run, and
     * answer "the script has ended" rather than jump into unmapped code. */
    Dl_info self;
    if (dladdr((void *)probe_host, &self) && self.dli_fname) {
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
    /* services */
    if (values[OPT_REPL] && !qlua_repl_start(values[OPT_REPL], &error)) {
        return fail_install(error);
    }
    if (qlua.watch) {
        qlua_reload_start();
    }
    return 0;
}
/* core.args() -> { key = value, ... } (the last value of a repeated key), { "key", ... } and
 * { "value", ... } (every argument, in the order given) */
static int plugin_args(lua_State *L)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_newtable(L);
    for (guint i = 0; i < script_args->len; i++) {
        const char *kv = g_ptr_array_index(script_args, i);
        const char *eq = strchr(kv, '=');
        lua_pushlstring(L, kv, (size_t)(eq - kv));
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, (int)i + 1);
        lua_pushstring(L, eq + 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -4, (int)i + 1);
        lua_rawset(L, -5);
    }
    return 3;
}

static int plugin_info(lua_State *L)
{
    lua_newtable(L);
    lua_pushstring(L, qlua_host.target ? qlua_host.target : "unknown");
    lua_setfield(L, -2, "target");
    lua_pushinteger(L, qlua_host.api_min);
    lua_setfield(L, -2, "api_min");
    lua_pushinteger(L, qlua_host.api_cur);
    lua_setfield(L, -2, "api_cur");
    lua_pushinteger(L, qlua_declared_version);
    lua_setfield(L, -2, "api_declared");
    const char *release;
    qlua_host_release(&release);
    lua_pushstring(L, release); /* nil when the executable carries no version text */
    lua_setfield(L, -2, "qemu_version");
    lua_pushboolean(L, qlua_host.system);
    lua_setfield(L, -2, "system");
    if (qlua_host.system) {
        lua_pushinteger(L, qlua_host.smp_vcpus);
        lua_setfield(L, -2, "smp_vcpus");
        lua_pushinteger(L, qlua_host.max_vcpus);
        lua_setfield(L, -2, "max_vcpus");
    }
    lua_pushstring(L, qlua.script);
    lua_setfield(L, -2, "script");
    lua_pushstring(L, qlua.root);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, QLUA_VERSION);
    lua_setfield(L, -2, "qlua_version");
    lua_pushstring(L, qlua.onerror_warn ? "warn" : "fail");
    lua_setfield(L, -2, "onerror");
#ifdef LUAJIT_VERSION
    lua_pushstring(L, LUAJIT_VERSION);
#else
    lua_pushstring(L, LUA_RELEASE);
#endif
    lua_setfield(L, -2, "lua");
    qlua_host_features(L);
    lua_setfield(L, -2, "features");
    return 1;
}

/* core.has(name) -> present, since (nil since: unknown feature) */
static int plugin_has(lua_State *L)
{
    const char *since;
    bool present = qlua_host_has(luaL_checkstring(L, 1), &since);
    lua_pushboolean(L, present);
    if (since) {
        lua_pushstring(L, since);
    } else {
        lua_pushnil(L);
    }
    return 2;
}

/* core.pid(): QEMU's process id (a forked guest's child has its own). */
static int plugin_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* core.binary() -> { path, start_code, end_code, entry } in user mode, nil in system mode. */
static int plugin_binary(lua_State *L)
{
    if (qlua.loading) {
        return luaL_error(L, "qemu.binary() is not available while the script loads (QEMU 7.2 "
                             "crashes there); call it from a callback");
    }
    if (qlua_host.system || !qlua_host.path_to_binary) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    const char *path = qlua_host.path_to_binary();
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    g_free((char *)path);
    qlua_push_u64(L, qlua_host.start_code());
    lua_setfield(L, -2, "start_code");
    qlua_push_u64(L, qlua_host.end_code());
    lua_setfield(L, -2, "end_code");
    qlua_push_u64(L, qlua_host.entry_code());
    lua_setfield(L, -2, "entry");
    return 1;
}

static int plugin_counter_mode(lua_State *L)
{
    lua_pushstring(L, qlua_counter_mode());
    return 1;
}

/* core.need(what, feature): the one error every feature-gated call gives on a host without it. */
static int plugin_need(lua_State *L)
{
    qlua_host_need(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2));
    return 0;
}

static int plugin_open_core(lua_State *L)
{
    static const luaL_Reg fns[] = {{"args", plugin_args},
                                   {"info", plugin_info},
                                   {"has", plugin_has},
                                   {"need", plugin_need},
                                   {"binary", plugin_binary},
                                   {"pid", plugin_pid},
                                   {"counter_mode", plugin_counter_mode},
                                   {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_createtable(L, 0, N_OPTIONS);
    for (int i = 0; i < N_OPTIONS; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, options[i].key);
    }
    lua_setfield(L, -2, "own_options");
    qlua_gate_open(L);
    qlua_vcpu_open(L);
    qlua_buffer_open(L);
    qlua_exec_open(L);
    qlua_reload_open(L);
    qlua_events_open(L);
    qlua_tb_open(L);
    qlua_insn_open(L);
    qlua_mem_open(L);
    qlua_counter_open(L);
    qlua_tally_open(L);
    qlua_symbols_open(L);
    return 1;
}
