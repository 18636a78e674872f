/* plugin.c: what QEMU's loader sees (qemu_plugin_version, qemu_plugin_install), the plugin's own
 * arguments, where lua/ and scripts/ are, and the facts about the run that the script can read
 * (qemu.info, qemu.args, qemu.has, qemu.binary). */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "qlua.h"
#ifdef QLUA_LUAJIT
#include <luajit.h>
#endif

/* Not const: the constructor below sets it from the host before the loader reads it. */
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
int qlua_declared_version;

__attribute__((constructor)) static void probe_host(void)
{
    qemu_plugin_version = qlua_host_probe_version();
    qlua_declared_version = qemu_plugin_version;
}

/* The plugin's own options; everything else is the script's. */
static const char *const own_options[] = {"script", "onerror", "counters", "profile", "repl",
                                          "watch", "exec", "records", NULL};

static GPtrArray *script_args; /* "key=value" strings, in order */

static void usage(void)
{
    fprintf(stderr,
            "qlua %s: no script given. Usage:\n"
            "  -plugin libqlua.so,script=PATH|NAME[,onerror=fail|warn][,counters=auto|callback]"
            "[,profile=on][,repl=PATH][,watch=on][,exec=queued|sync][,records=SIZE][,KEY=VALUE...]\n"
            "    script=    a Lua file, or the name of a script shipped in %s/scripts "
            "(e.g. script=count)\n"
            "    onerror=   fail (default): a Lua error ends the run with status 1;\n"
            "               warn: report it, disable that callback and let the guest run on\n"
            "    counters=  auto (default): QEMU >= 9.0 scoreboards; before, inline adds while one\n"
            "               vCPU runs, per-vCPU callbacks after; callback: always per-vCPU callbacks\n"
            "    profile=   on: report at exit where and how long Lua ran (default off)\n"
            "    repl=PATH  a unix socket (mode 0600) for `qlua attach PATH`: a live Lua prompt\n"
            "    watch=     on: reload the script when its file changes (qemu.persist survives)\n"
            "    exec=      queued (default): on_exec callbacks are delivered in batches, in order,\n"
            "               before the thread's next other callback; sync: each one as it executes\n"
            "    records=   memory for per-translation records before qlua flushes translated code\n"
            "               to reclaim it (default 64M; K, M, G suffixes; off: never)\n"
            "    KEY=VALUE  any other argument is given to the script as qemu.args.KEY\n",
            QLUA_VERSION, qlua.root ? qlua.root : "<qlua>");
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
            return g_strdup(candidates[i]);
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
    *error = g_strdup_printf("script=%s: no such file (tried %s)", arg, tried->str);
    g_string_free(tried, TRUE);
    return NULL;
}

static bool check_choice(const char *key, const char *value, const char *a, const char *b,
                         char **error)
{
    if (g_str_equal(value, a) || g_str_equal(value, b)) {
        return true;
    }
    *error = g_strdup_printf("%s=%s: expected one of %s, %s", key, value, a, b);
    return false;
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

static int fail_install(char *error)
{
    fprintf(stderr, "qlua: %s\n", error);
    g_free(error);
    return 1;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info, int argc,
                                                               char **argv)
{
    char *error = NULL;
    if (qlua.L != NULL) {
        return fail_install(g_strdup("this libqlua.so is already running a script; to run two "
                                     "scripts, load a copy of the file for the second"));
    }
    const char *missing = qlua_host_load(info);
    if (missing) {
        return fail_install(g_strdup_printf("this QEMU lacks qemu_plugin_%s, which qlua needs "
                                            "(QEMU 6.0 or later with plugins is required)",
                                            missing));
    }
    qlua.id = id;
    qlua.root = find_root();
    if (qlua.root == NULL) {
        return fail_install(g_strdup_printf("cannot find qlua's Lua files (lua/qemu/init.lua) "
                                            "in %s or %s; set QLUA_ROOT",
                                            QLUA_DATA_DIR, QLUA_SOURCE_DIR));
    }
    const char *script = NULL, *onerror = "fail", *counters = "auto", *profile = "off";
    const char *repl = NULL, *watch = "off", *exec = "queued", *records = "64M";
    script_args = g_ptr_array_new();
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            return fail_install(g_strdup_printf("argument '%s': expected KEY=VALUE", argv[i]));
        }
        const char *value = eq + 1;
        if (g_str_has_prefix(argv[i], "script=")) {
            script = value;
        } else if (g_str_has_prefix(argv[i], "onerror=")) {
            onerror = value;
        } else if (g_str_has_prefix(argv[i], "counters=")) {
            counters = value;
        } else if (g_str_has_prefix(argv[i], "profile=")) {
            profile = value;
        } else if (g_str_has_prefix(argv[i], "repl=")) {
            repl = value;
        } else if (g_str_has_prefix(argv[i], "watch=")) {
            watch = value;
        } else if (g_str_has_prefix(argv[i], "exec=")) {
            exec = value;
        } else if (g_str_has_prefix(argv[i], "records=")) {
            records = value;
        } else {
            g_ptr_array_add(script_args, argv[i]);
        }
    }
    if (script == NULL) {
        usage();
        return 1;
    }
    if (!check_choice("onerror", onerror, "fail", "warn", &error) ||
        !check_choice("counters", counters, "auto", "callback", &error) ||
        !check_choice("profile", profile, "on", "off", &error) ||
        !check_choice("watch", watch, "on", "off", &error) ||
        !check_choice("exec", exec, "queued", "sync", &error)) {
        return fail_install(error);
    }
    if (!parse_size("records", records, &qlua.records_limit, &error)) {
        return fail_install(error);
    }
    if (qlua.records_limit && qlua.records_limit < (1u << 20)) { /* 16 chunks of 64 KiB */
        return fail_install(g_strdup_printf("records=%s: at least 1M (or off)", records));
    }
    qlua.profile = g_str_equal(profile, "on");
    qlua.watch = g_str_equal(watch, "on");
    qlua.exec_sync = g_str_equal(exec, "sync");
    qlua.polls = qlua.watch || repl != NULL;
    if (qlua.profile) {
        qlua_profile_start();
    }
    qlua.onerror_warn = g_str_equal(onerror, "warn");
    qlua.script = resolve_script(script, &error);
    if (qlua.script == NULL || !qlua_state_open(&error)) {
        return fail_install(error);
    }
    qlua_counter_setup(counters);
    qlua.loading = true;
    int rc = qlua_gate_load(qlua.script, &error);
    qlua.loading = false;
    if (rc != 0) {
        qlua_out_flush();
        fprintf(stderr, "qlua: error while loading %s:\n%s\n", qlua.script, error);
        g_free(error);
        qlua_state_close();
        return 1;
    }
    qlua_events_install();
    /* Stay mapped after qemu.uninstall(): qlua's own threads (watcher, REPL) may still run, and
     * answer "the script has ended" rather than jump into unmapped code. */
    Dl_info self;
    if (dladdr((void *)probe_host, &self) && self.dli_fname) {
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
    if (repl && !qlua_repl_start(repl, &error)) {
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

void qlua_plugin_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"args", plugin_args},
                                   {"info", plugin_info},
                                   {"has", plugin_has},
                                   {"binary", plugin_binary},
                                   {"counter_mode", plugin_counter_mode},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    lua_createtable(L, 0, 3);
    for (int i = 0; own_options[i]; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, own_options[i]);
    }
    lua_setfield(L, -2, "own_options");
}
