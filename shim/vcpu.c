/* vcpu.c: what a script can read and change in the vCPU running the current callback: its
 * registers (qemu.registers, qemu.reg: QEMU >= 9.0; qemu.write_reg: 10.1), its guest memory by
 * virtual address (qemu.read_memory: 9.2; qemu.write_memory: 10.1) or physical address ({ phys =
 * true }, qemu.translate: 10.1, system mode). QEMU answers these for "the current vCPU" only (it
 * asserts there is one), so each is refused outside a vCPU callback, and the writes in a queued
 * callback (which runs after the fact) and in on_translate (QEMU holds the translation's locks).
 * Also the guest's clock (qemu.time_control; QEMU >= 9.1, system mode).
 * Owns: the register list, the time handle. Must not touch: when callbacks run (it reads the
 * gate's context counters to know whether a vCPU is current). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vcpu.h"
#include "gate.h"
#include "handle.h"
#include "host.h"
#include "value.h"

static GHashTable *reg_handles; /* name -> struct qemu_plugin_register * */
static GPtrArray *reg_names;    /* in QEMU's order */

static void need_with(lua_State *L, const char *what, const char *feature, const char *regs)
{
    qlua_host_need(L, what, feature);
    if (qlua_vcpu_context <= 0 && qlua_queue_context > 0) {
        luaL_error(L, "%s works only at the moment of a vCPU event, and this callback is "
                      "queued (an on_exec or on_mem delivered in a batch after the fact): "
                      "register it with { sync = true }, e.g. on_exec(fn, data, { sync = true }), "
                      "or with on_exec's { regs = \"%s\" } to %s registers",
                   what, regs, regs[1] ? "write" : "read");
    }
    if (qlua_vcpu_context <= 0) {
        luaL_error(L, "%s works only inside a vCPU callback (on_exec, on_mem, when, on_syscall, "
                      "on_translate): QEMU reads the vCPU that runs it",
                   what);
    }
}

static void need(lua_State *L, const char *what, const char *feature)
{
    need_with(L, what, feature, "r");
}

/* Writes also stay out of translation: QEMU holds the page locks of the code it translates, and
 * a register written there would not belong to any executed instruction. */
static void need_write(lua_State *L, const char *what, const char *feature)
{
    need_with(L, what, feature, "rw");
    if (qlua_translate_gen != 0) {
        luaL_error(L, "%s cannot run in on_translate (QEMU holds the translation's locks and no "
                      "instruction is executing): do it from an execution callback, e.g. "
                      "tb:on_exec(fn, data, { sync = true })%s",
                   what, strstr(what, "reg") ? " with regs = \"rw\"" : "");
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

static struct qemu_plugin_register *find_register(lua_State *L, const char *who,
                                                  const char *name)
{
    load_registers();
    struct qemu_plugin_register *handle = NULL;
    if (!g_hash_table_lookup_extended(reg_handles, name, NULL, (gpointer *)&handle)) {
        luaL_error(L, "%s: no register '%s' on this %s vCPU (qemu.registers() lists them)", who,
                   name, qlua_host.target);
    }
    return handle;
}

/* Reads `handle` into a new buffer; raises (after freeing it) when QEMU refuses. */
static GByteArray *read_register(lua_State *L, const char *who, const char *name,
                                 struct qemu_plugin_register *handle, const char *regs)
{
    GByteArray *buf = g_byte_array_new();
    if (!qlua_host_read_register(handle, buf)) {
        g_byte_array_free(buf, TRUE);
        luaL_error(L, "%s: QEMU cannot %s '%s' here: register %s need a callback registered with "
                      "register access, e.g. insn:on_exec(fn, data, { regs = \"%s\" })",
                   who, regs[1] ? "write" : "read", name, regs[1] ? "writes" : "reads", regs);
    }
    return buf;
}

/* qemu.reg(name) -> value (registers of up to 8 bytes, read as little-endian), raw bytes */
static int vcpu_reg(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    need(L, "qemu.reg()", "registers");
    GByteArray *buf = read_register(L, "qemu.reg", name, find_register(L, "qemu.reg", name), "r");
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

/* core.write_reg(name, value): value an integer (little-endian in the register's width, which
 * must hold it) or a string of exactly the register's width. The width is learned by reading the
 * register first: QEMU writes as many bytes as the register has, whatever the buffer holds. */
static int vcpu_write_reg(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int type = lua_type(L, 2);
    if (type != LUA_TSTRING && type != LUA_TNUMBER) {
        return luaL_argerror(L, 2, "expected an integer or a string of the register's bytes");
    }
    need_write(L, "qemu.write_reg()", "write_registers");
    struct qemu_plugin_register *handle = find_register(L, "qemu.write_reg", name);
    GByteArray *buf = read_register(L, "qemu.write_reg", name, handle, "rw");
    guint width = buf->len;
    if (type == LUA_TSTRING) {
        size_t len;
        const char *bytes = lua_tolstring(L, 2, &len);
        if (len != width) {
            g_byte_array_free(buf, TRUE);
            return luaL_error(L, "qemu.write_reg: '%s' is %d bytes wide, the string has %d", name,
                              (int)width, (int)len);
        }
        memcpy(buf->data, bytes, len);
    } else {
        /* negative integers are written in two's complement, as a register holds them */
        uint64_t value = lua_tonumber(L, 2) < 0 ? (uint64_t)luaL_checkinteger(L, 2)
                                                : qlua_check_u64(L, 2);
        if (width < 8 && (value >> (8 * width)) != 0 &&
            (int64_t)value >> (8 * width - 1) != -1) { /* a negative value sign-extends */
            g_byte_array_free(buf, TRUE);
            char hex[24]; /* lua_pushfstring has no 64-bit conversion */
            g_snprintf(hex, sizeof hex, "0x%" G_GINT64_MODIFIER "x", value);
            return luaL_error(L, "qemu.write_reg: %s does not fit in '%s' (%d bytes)", hex, name,
                              (int)width);
        }
        for (guint i = 0; i < width; i++) {
            buf->data[i] = i < 8 ? (uint8_t)(value >> (8 * i)) : 0;
        }
    }
    bool ok = qlua_host_write_register(handle, buf);
    g_byte_array_free(buf, TRUE);
    if (!ok) {
        return luaL_error(L, "qemu.write_reg: QEMU refused to write '%s' here: register writes "
                             "need a callback registered with { regs = \"rw\" }",
                          name);
    }
    return 0;
}

/* ---- user mode with several threads: guest memory through /proc/self/mem ----
 * QEMU's vaddr reads and writes take its mmap_lock, which a thread translating code holds while
 * it waits for qlua's lock (on_translate): with a second guest thread, a read from a callback
 * (qlua's lock held) would deadlock against a translation. There qlua reads and writes the guest's
 * memory where QEMU maps it in its own process, at vaddr + guest_base (learned from the host
 * address of a translated instruction), through /proc/self/mem. */
static bool guest_base_known;
static int64_t guest_base;
static unsigned int vcpus_seen;
static int self_mem = -1;

void qlua_vcpu_translated(struct qemu_plugin_tb *tb)
{
    if (guest_base_known || qlua_host.system || !qlua_host.insn_haddr) {
        return;
    }
    struct qemu_plugin_insn *insn = qlua_host.tb_get_insn(tb, 0);
    void *haddr = insn ? qlua_host.insn_haddr(insn) : NULL;
    if (haddr) {
        guest_base = (int64_t)((uintptr_t)haddr - qlua_host.insn_vaddr(insn));
        guest_base_known = true;
    }
}

void qlua_vcpu_started(void)
{
    vcpus_seen++;
}

static bool direct_memory(void)
{
    if (qlua_host.system || vcpus_seen < 2 || !guest_base_known) {
        return false;
    }
    if (self_mem < 0) {
        self_mem = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    }
    return self_mem >= 0;
}

/* pread/pwrite of the whole range, or false (an unmapped page: EIO) */
static bool direct_transfer(uint64_t vaddr, void *buf, size_t len, bool write)
{
    off_t at = (off_t)(vaddr + (uint64_t)guest_base);
    for (size_t done = 0; done < len;) {
        ssize_t n = write ? pwrite(self_mem, (char *)buf + done, len - done, at + (off_t)done)
                          : pread(self_mem, (char *)buf + done, len - done, at + (off_t)done);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return false;
        }
        done += (size_t)n;
    }
    return true;
}

static bool read_vaddr(uint64_t vaddr, GByteArray *buf, size_t len)
{
    if (direct_memory()) {
        g_byte_array_set_size(buf, (guint)len);
        return direct_transfer(vaddr, buf->data, len, false);
    }
    return qlua_host.read_memory_vaddr(vaddr, buf, len);
}

static bool write_vaddr(uint64_t vaddr, GByteArray *buf)
{
    if (direct_memory()) {
        return direct_transfer(vaddr, buf->data, buf->len, true);
    }
    return qlua_host.write_memory_vaddr(vaddr, buf);
}

static const char *hwaddr_reason(enum qemu_plugin_hwaddr_operation_result r)
{
    switch (r) {
    case QEMU_PLUGIN_HWADDR_OPERATION_OK: return "ok";
    case QEMU_PLUGIN_HWADDR_OPERATION_ERROR: return "error";
    case QEMU_PLUGIN_HWADDR_OPERATION_DEVICE_ERROR: return "device error";
    case QEMU_PLUGIN_HWADDR_OPERATION_ACCESS_DENIED: return "access denied";
    case QEMU_PLUGIN_HWADDR_OPERATION_INVALID_ADDRESS: return "invalid address";
    case QEMU_PLUGIN_HWADDR_OPERATION_INVALID_ADDRESS_SPACE: return "invalid address space";
    }
    return "unknown result";
}

/* core.read_memory(addr, len, phys) -> string, or nil and a reason */
static int vcpu_read_memory(lua_State *L)
{
    uint64_t addr = qlua_check_u64(L, 1);
    lua_Integer len = luaL_checkinteger(L, 2);
    bool phys = lua_toboolean(L, 3);
    luaL_argcheck(L, len > 0 && len <= (1 << 24), 2, "expected a length from 1 to 16 MiB");
    if (phys) {
        need(L, "qemu.read_memory(paddr, len, { phys = true })", "phys_memory");
    } else {
        need(L, "qemu.read_memory()", "read_memory");
    }
    GByteArray *buf = g_byte_array_new();
    const char *reason = NULL;
    if (phys) {
        enum qemu_plugin_hwaddr_operation_result r =
            qlua_host.read_memory_hwaddr(addr, buf, (size_t)len);
        if (r != QEMU_PLUGIN_HWADDR_OPERATION_OK) {
            reason = hwaddr_reason(r);
        }
    } else if (!read_vaddr(addr, buf, (size_t)len)) {
        reason = "guest memory not readable at that address";
    }
    if (reason) {
        lua_pushnil(L);
        lua_pushstring(L, reason);
    } else {
        lua_pushlstring(L, (const char *)buf->data, buf->len);
    }
    g_byte_array_free(buf, TRUE);
    return reason ? 2 : 1;
}

/* core.write_memory(addr, bytes, phys) -> true, or nil and a reason */
static int vcpu_write_memory(lua_State *L)
{
    uint64_t addr = qlua_check_u64(L, 1);
    size_t len;
    const char *bytes = luaL_checklstring(L, 2, &len);
    bool phys = lua_toboolean(L, 3);
    luaL_argcheck(L, len > 0 && len <= (1 << 24), 2, "expected 1 byte to 16 MiB");
    if (phys) {
        need_write(L, "qemu.write_memory(paddr, bytes, { phys = true })", "phys_memory");
    } else {
        need_write(L, "qemu.write_memory()", "write_memory");
    }
    GByteArray *buf = g_byte_array_sized_new((guint)len);
    g_byte_array_append(buf, (const guint8 *)bytes, (guint)len);
    const char *reason = NULL;
    if (phys) {
        enum qemu_plugin_hwaddr_operation_result r = qlua_host.write_memory_hwaddr(addr, buf);
        if (r != QEMU_PLUGIN_HWADDR_OPERATION_OK) {
            reason = hwaddr_reason(r);
        }
    } else if (!write_vaddr(addr, buf)) {
        reason = "guest memory not writable at that address";
    }
    g_byte_array_free(buf, TRUE);
    if (reason) {
        lua_pushnil(L);
        lua_pushstring(L, reason);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.translate(vaddr) -> the guest physical address, or nil */
static int vcpu_translate(lua_State *L)
{
    uint64_t vaddr = qlua_check_u64(L, 1);
    need(L, "qemu.translate()", "translate");
    uint64_t paddr = 0;
    if (!qlua_host.translate_vaddr(vaddr, &paddr)) {
        lua_pushnil(L);
        return 1;
    }
    qlua_push_u64(L, paddr);
    return 1;
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
                                   {"write_reg", vcpu_write_reg},
                                   {"write_memory", vcpu_write_memory},
                                   {"translate", vcpu_translate},
                                   {"time_control", vcpu_time_control},
                                   {"set_time", vcpu_set_time},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}
