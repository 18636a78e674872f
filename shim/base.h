/* base.h: what every shim file includes first: system, GLib and Lua headers, our declarations of
 * QEMU's plugin ABI, two portability macros and a list helper. It declares no function: each
 * file's own header says what that file offers. */
#ifndef QLUA_BASE_H
#define QLUA_BASE_H

#include <glib.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>

#include "qemu_plugin_abi.h"

/* Thread-locals read on every event: initial-exec avoids a __tls_get_addr call per access (the
 * few bytes come from the static TLS reserve glibc keeps for libraries loaded with dlopen). */
#define QLUA_TLS __thread __attribute__((tls_model("initial-exec")))

/* Takes `node` out of the singly linked list at `head` (linked through ->next), if it is there:
 * the per-thread lists of queues, buffers and feeds, under their own locks. */
#define QLUA_LIST_UNLINK(head, node)                                                               \
    do {                                                                                           \
        for (__typeof__(node) *p_ = &(head); *p_; p_ = &(*p_)->next) {                             \
            if (*p_ == (node)) {                                                                   \
                *p_ = (node)->next;                                                                \
                break;                                                                             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#endif

#endif
