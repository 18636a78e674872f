/* repl.c: repl=PATH, a live Lua prompt inside the running plugin. A thread accepts connections
 * on a unix socket (mode 0600, so only the owner can evaluate code in QEMU's process) and
 * evaluates each request under the Lua lock, between the guest's callbacks: an expression's values
 * or a statement's output (qemu.print) go back to the client, never to the plugin log. Errors are
 * answered, never fatal. Protocol: the client sends one chunk per line (a chunk may span several
 * lines, sent as they are typed); each answer ends with a line holding one byte, \x04 when the
 * chunk ran, \x05 when it is incomplete and the server waits for more lines. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

#define DONE "\x04\n"
#define MORE "\x05\n"

static int listen_fd = -1;
static char *socket_path;
static pid_t owner_pid;

static int repl_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Lua reports a chunk cut short as "... near <eof>" (5.4: "near '<eof>'" in some cases). */
static bool incomplete(const char *msg)
{
    return g_str_has_suffix(msg, "<eof>") || g_str_has_suffix(msg, "'<eof>'");
}

/* Evaluates `chunk`; appends what to answer to `reply`. Returns false when more lines are needed. */
static bool evaluate(const char *chunk, GString *reply)
{
    lua_State *L = qlua_lock();
    if (L == NULL || qlua.finished) {
        g_string_append(reply, "the script has ended\n");
        qlua_unlock();
        return true;
    }
    int base = lua_gettop(L);
    lua_pushcfunction(L, repl_traceback);
    char *expr = g_strconcat("return ", chunk, NULL);
    int rc = luaL_loadbuffer(L, expr, strlen(expr), "=repl");
    g_free(expr);
    if (rc != 0) {
        lua_pop(L, 1);
        rc = luaL_loadbuffer(L, chunk, strlen(chunk), "=repl");
    }
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        bool more = incomplete(msg);
        if (!more) {
            g_string_append_printf(reply, "%s\n", msg);
        }
        lua_settop(L, base);
        qlua_unlock();
        return !more;
    }
    GString *saved = qlua.out_redirect;
    qlua.out_redirect = reply; /* qemu.print answers the client */
    qlua_vcpu_context = 0;
    rc = lua_pcall(L, 0, LUA_MULTRET, base + 1);
    qlua.out_redirect = saved;
    int top = lua_gettop(L);
    for (int i = base + 2; i <= top; i++) {
        const char *s = luaL_tolstring_compat(L, i);
        g_string_append(reply, s);
        g_string_append_c(reply, i < top ? '\t' : '\n');
        lua_pop(L, 1);
    }
    (void)rc;
    lua_settop(L, base);
    qlua_unlock();
    return true;
}

static gpointer serve(gpointer data)
{
    int fd = GPOINTER_TO_INT(data);
    qlua_own_thread = true;
    FILE *in = fdopen(fd, "r");
    if (in == NULL) {
        close(fd);
        return NULL;
    }
    GString *chunk = g_string_new(NULL);
    char line[8192];
    while (fgets(line, sizeof line, in)) {
        g_string_append(chunk, line);
        GString *reply = g_string_new(NULL);
        bool done = evaluate(chunk->str, reply);
        g_string_append(reply, done ? DONE : MORE);
        if (done) {
            g_string_truncate(chunk, 0);
        }
        if (write(fd, reply->str, reply->len) < 0) {
            g_string_free(reply, TRUE);
            break;
        }
        g_string_free(reply, TRUE);
    }
    g_string_free(chunk, TRUE);
    fclose(in);
    return NULL;
}

static gpointer accept_loop(gpointer unused)
{
    (void)unused;
    qlua_own_thread = true;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NULL;
        }
        /* a thread per client: evaluations still take turns through the Lua lock */
        g_thread_unref(g_thread_new("qlua-repl-client", serve, GINT_TO_POINTER(fd)));
    }
}

bool qlua_repl_start(const char *path, char **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        *error = g_strdup_printf("repl=%s: path longer than %zu bytes", path,
                                 sizeof addr.sun_path - 1);
        return false;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *error = g_strdup_printf("repl=%s: exists and is not a socket", path);
            return false;
        }
        unlink(path); /* a stale socket from an earlier run */
    }
    strcpy(addr.sun_path, path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177); /* born 0600: nobody else may connect, even for a moment */
    int rc = listen_fd < 0 ? -1 : bind(listen_fd, (struct sockaddr *)&addr, sizeof addr);
    umask(old);
    if (rc != 0 || listen(listen_fd, 4) != 0) {
        *error = g_strdup_printf("repl=%s: %s", path, g_strerror(errno));
        return false;
    }
    socket_path = g_strdup(path);
    owner_pid = getpid();
    g_thread_unref(g_thread_new("qlua-repl", accept_loop, NULL));
    return true;
}

/* At exit: remove the socket, unless this is a forked child (the path is the parent's). */
void qlua_repl_stop(void)
{
    if (socket_path && getpid() == owner_pid) {
        unlink(socket_path);
    }
}
