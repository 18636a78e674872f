/* base.h: what every shim file includes first: system, GLib and Lua headers, our declarations of
 * QEMU's plugin ABI, and two portability macros. It declares no function: each file's own header
 * says what that file offers. */
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

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#endif

#endif
