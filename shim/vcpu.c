/* vcpu.c: what a script can read from the vCPU running the current callback: its registers
 * (qemu.registers, qemu.reg; QEMU >= 9.0) and its guest memory (qemu.read_memory; QEMU >= 9.2).
 * QEMU answers these for "the current vCPU" only, so each is refused outside a vCPU callback.
 * Also the guest's clock (qemu.time_control; QEMU >= 9.1, system mode).
 * Owns: the register list, the time handle. Must not touch: when callbacks run (it reads the
 * gate's context counters to know whether a vCPU is current). */
#include <string.h>

#include "vcpu.h"
#include "gate.h"
#include "host.h"
#include "value.h"

static GHashTable *reg_handles; /* name -> struct qemu_plugin_register * */
static GPtrArray *reg_names;    /* in QEMU's order */

static void need(lua_State *L, const char *what, const char *feature)
{
    qlua_host_need(L, what, feature);
    if (qlua_vcpu_context <= 0 && qlua_queue_context > 0) {
        luaL_error(L, "%s works only at the moment of a vCPU event, and this on_exec callback is "
                      "queued (delivered in a batch after the fact): register it with "
                      "on_exec(fn, data, { sync = true }), or { regs = \"r\" } to read registers",
                   what);
    }
    if (qlua_vcpu_context <= 0) {
        luaL_error(L, "%s works only inside a vCPU callback (on_exec, on_mem, when, on_syscall, "
                      "on_translate): QEMU reads the vCPU that runs it",
                   what);
    }
}

/* The register list is the same for every vCPU of a machine; it is read once. */
static void load_registers(void)
{
    if (reg_handles) {
        return;
    }
    reg_handles = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    reg_names = g_ptr_array_new();
    GArray *regs = qlua_host.get_registers();
    for (guint i = 0; regs && i < regs->len; i++) {
        qemu_plugin_reg_descriptor *d = &g_array_index(regs, qemu_plugin_reg_descriptor, i);
        char *name = g_strdup(d->name);
        g_hash_table_insert(reg_handles, name, d->handle);
        g_ptr_array_add(reg_names, name);
    }
    if (regs) {
        g_array_free(regs, TRUE);
    }
}

/* qemu.registers() -> { "rax", "rbx", ... } */
static int vcpu_registers(lua_State *L)
{
    need(L, "qemu.registers()", "registers");
    load_registers();
    lua_createtable(L, (int)reg_names->len, 0);
    for (guint i = 0; i < reg_names->len; i++) {
        lua_pushstring(L, g_ptr_array_index(reg_names, i));
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* qemu.reg(name) -> value (registers of up to 8 bytes, read as little-endian), raw bytes */
static int vcpu_reg(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    need(L, "qemu.reg()", "registers");
    load_registers();
    struct qemu_plugin_register *handle = NULL;
    if (!g_hash_table_lookup_extended(reg_handles, name, NULL, (gpointer *)&handle)) {
        return luaL_error(L, "qemu.reg: no register '%s' on this %s vCPU (qemu.registers() lists "
                             "them)",
                          name, qlua_host.target);
    }
    GByteArray *buf = g_byte_array_new();
    if (!qlua_host_read_register(handle, buf)) {
        g_byte_array_free(buf, TRUE);
        return luaL_error(L, "qemu.reg: QEMU cannot read '%s' here: register reads need a callback "
                             "registered with register access, e.g. insn:on_exec(fn, data, { regs = \"r\" })",
                          name);
    }
    uint64_t value = 0;
    for (guint i = 0; i < buf->len && i < 8; i++) {
        value |= (uint64_t)buf->data[i] << (8 * i);
    }
    if (buf->len <= 8) {
        qlua_push_u64(L, value);
    } else {
        lua_pushnil(L);
    }
    lua_pushlstring(L, (const char *)buf->data, buf->len);
    g_byte_array_free(buf, TRUE);
    return 2;
}

/* qemu.read_memory(vaddr, len) -> string, or nil and a reason */
static int vcpu_read_memory(lua_State *L)
{
    uint64_t vaddr = qlua_check_u64(L, 1);
    lua_Integer len = luaL_checkinteger(L, 2);
    luaL_argcheck(L, len > 0 && len <= (1 << 24), 2, "expected a length from 1 to 16 MiB");
    need(L, "qemu.read_memory()", "read_memory");
    GByteArray *buf = g_byte_array_new();
    bool ok = qlua_host.read_memory_vaddr(vaddr, buf, (size_t)len);
    if (ok) {
        lua_pushlstring(L, (const char *)buf->data, buf->len);
    } else {
        lua_pushnil(L);
        lua_pushliteral(L, "guest memory not readable at that address");
    }
    g_byte_array_free(buf, TRUE);
    return ok ? 1 : 2;
}

static const void *time_handle;

/* core.time_control() -> true: from now on the script drives the guest's virtual clock. */
static int vcpu_time_control(lua_State *L)
{
    qlua_host_need(L, "qemu.time_control()", "time_control");
    if (time_handle == NULL) {
        time_handle = qlua_host.request_time_control();
        if (time_handle == NULL) {
            return luaL_error(L, "qemu.time_control(): another plugin already controls time "
                                 "(QEMU grants it to one plugin only)");
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.set_time(ns): move the guest's clock forward to ns (from 0 at start). */
static int vcpu_set_time(lua_State *L)
{
    lua_Integer ns = luaL_checkinteger(L, 1);
    luaL_argcheck(L, ns >= 0, 1, "expected nanoseconds >= 0");
    if (time_handle == NULL) {
        return luaL_error(L, "qemu.set_time(): call qemu.time_control() first");
    }
    qlua_host.update_ns(time_handle, (int64_t)ns);
    return 0;
}

void qlua_vcpu_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"registers", vcpu_registers},
                                   {"reg", vcpu_reg},
                                   {"read_memory", vcpu_read_memory},
                                   {"time_control", vcpu_time_control},
                                   {"set_time", vcpu_set_time},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
