/* repl.c: repl=PATH, a live Lua prompt inside the running plugin. A thread accepts connections
 * on a unix socket (mode 0600, so only the owner can evaluate code in QEMU's process) and
 * evaluates each request under the Lua lock, between the guest's callbacks: an expression's values
 * or a statement's output (qemu.print) go back to the client, never to the plugin log. Errors are
 * answered, never fatal. Protocol: the client sends one chunk per line (a chunk may span several
 * lines, sent as they are typed); each answer ends with a line holding one byte, \x04 when the
 * chunk ran, \x05 when it is incomplete and the server waits for more lines.
 * Owns: the socket and its threads. Must not touch: Lua except through the gate (every request
 * runs in the gate's protected call, its results through the gate's protected tostring). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "repl.h"
#include "gate.h"

#define DONE "\x04\n"
#define MORE "\x05\n"

static int listen_fd = -1;

static char *socket_path;
static pid_t owner_pid;

/* Lua reports a chunk cut short as "... near <eof>" (5.4: "near '<eof>'" in some cases). */
static bool incomplete(const char *msg)
{
    return g_str_has_suffix(msg, "<eof>") || g_str_has_suffix(msg, "'<eof>'");
}

/* QEMU has set itself up once it translates the guest's first block. Before that, a chunk could
 * race QEMU's own start: an os.exit() typed at once ran the exit handlers while QEMU's main
 * thread was still initialising its crypto library, which then failed and ended QEMU with status
 * 1. Chunks wait for the guest to start. */
static GMutex started_lock;
static GCond started_cond;
static bool guest_started;

void qlua_repl_guest_started(void)
{
    g_mutex_lock(&started_lock);
    guest_started = true;
    g_cond_broadcast(&started_cond);
    g_mutex_unlock(&started_lock);
}

static void wait_for_the_guest(void)
{
    g_mutex_lock(&started_lock);
    while (!guest_started) {
        g_cond_wait(&started_cond, &started_lock);
    }
    g_mutex_unlock(&started_lock);
}

/* Evaluates `chunk`; appends what to answer to `reply`. Returns false when more lines are needed. */
static bool evaluate(const char *chunk, GString *reply)
{
    wait_for_the_guest();
    lua_State *L = qlua_lock();
    if (L == NULL || qlua.finished) {
        g_string_append(reply, "the script has ended\n");
        qlua_unlock();
        return true;
    }
    int base = lua_gettop(L);
    int handler = qlua_gate_push_handler(L);
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
    GString *saved = qlua_out_redirect(reply); /* qemu.print answers the client */
    qlua_vcpu_context = 0;
    rc = qlua_gate_pcall_at(L, 0, LUA_MULTRET, handler);
    qlua_out_redirect(saved);
    int top = lua_gettop(L);
    for (int i = handler + 1; i <= top; i++) {
        const char *s = qlua_gate_tostring(L, i);
        g_string_append(reply, s);
        g_string_append_c(reply, i < top ? '\t' : '\n');
        lua_pop(L, 1);
    }
    (void)rc;
    lua_settop(L, base);
    qlua_unlock();
    return true;
}

/* Writes all of reply; false when the client has gone (MSG_NOSIGNAL: no SIGPIPE for QEMU). */
static bool answer(int fd, const GString *reply)
{
    for (size_t at = 0; at < reply->len;) {
        ssize_t n = send(fd, reply->str + at, reply->len - at, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        at += (size_t)n;
    }
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
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, in)) > 0) { /* a line of any length is one piece */
        g_string_append_len(chunk, line, len);
        GString *reply = g_string_new(NULL);
        bool done = evaluate(chunk->str, reply);
        g_string_append(reply, done ? DONE : MORE);
        if (done) {
            g_string_truncate(chunk, 0);
        }
        bool sent = answer(fd, reply);
        g_string_free(reply, TRUE);
        if (!sent) {
            break;
        }
    }
    free(line);
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
        qlua_thread_start("qlua-repl-client", serve, GINT_TO_POINTER(fd));
    }
}

/* Is a process listening at path? (a connect that succeeds, or is refused for want of room) */
static bool someone_listens(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    bool live = connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 || errno == EAGAIN;
    close(fd);
    return live;
}

bool qlua_repl_start(const char *path, char **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (path[0] == '\0') {
        /* an empty sun_path would bind an abstract socket, which file permissions cannot guard */
        *error = g_strdup("repl=: expected the path of a socket to create (an unset shell "
                          "variable?), e.g. repl=/tmp/qlua.sock");
        return false;
    }
    if (strlen(path) >= sizeof addr.sun_path) {
        *error = g_strdup_printf("repl=%s: path longer than %zu bytes", path,
                                 sizeof addr.sun_path - 1);
        return false;
    }
    strcpy(addr.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *error = g_strdup_printf("repl=%s: exists and is not a socket", path);
            return false;
        }
        if (someone_listens(&addr)) {
            *error = g_strdup_printf("repl=%s: another process is listening on this socket "
                                     "(a running qlua?); choose another path",
                                     path);
            return false;
        }
        unlink(path); /* a stale socket from an earlier run */
    }
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
    qlua_thread_start("qlua-repl", accept_loop, NULL);
    return true;
}

/* At exit: remove the socket, unless this is a forked child (the path is the parent's). */
void qlua_repl_stop(void)
{
    if (socket_path && getpid() == owner_pid) {
        unlink(socket_path);
    }
}
