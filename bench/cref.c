/* cref.c: the C reference plugins of the benchmark, one per kind of work, chosen with mode=:
 *   bb_inline    one raw inline add per block of its instruction count (QEMU's bb inline=on)
 *   tb_cb        a C callback per executed block counting blocks (QEMU's bb without inline)
 *   insn_cb      a C callback per executed instruction (QEMU's insn without inline)
 *   hotpages     a C memory callback per access updating a per-page hash table (QEMU's hotpages)
 *   trans        work at translation time only: a hash table of block address -> instruction
 *                count, updated per translation (what an on_translate script does)
 *   print        a line of output per executed block, each handed to qemu_plugin_outs
 *   insn_empty   an empty C callback per executed instruction (its address as data) and a raw
 *                inline add per instruction: the baseline of qlua's queued insn:on_exec and
 *                insn:trace, whose bench scripts count the same way (qemu.count_every "insn")
 *   mem_empty    an empty C callback per memory access and a raw inline add per access: the
 *                baseline of insn:on_mem and insn:trace_mem (qemu.count_every "mem")
 * Each prints one line at exit so the run does the same observable work as the qlua script.
 * Written against qlua's own ABI header; API v1 (QEMU 7.2). */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "qemu_plugin_abi.h"

#define EXPORT __attribute__((visibility("default")))

EXPORT int qemu_plugin_version = 1;

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, qemu_plugin_vcpu_udata_cb_t,
                                          enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *,
                                              uint64_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *,
                                            qemu_plugin_vcpu_udata_cb_t,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op,
                                                void *, uint64_t);
void qemu_plugin_register_vcpu_mem_inline(struct qemu_plugin_insn *, enum qemu_plugin_mem_rw,
                                          enum qemu_plugin_op, void *, uint64_t);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *, qemu_plugin_vcpu_mem_cb_t,
                                      enum qemu_plugin_cb_flags, enum qemu_plugin_mem_rw, void *);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
bool qemu_plugin_mem_is_store(qemu_plugin_meminfo_t);
void qemu_plugin_outs(const char *);

static enum { BB_INLINE, TB_CB, INSN_CB, HOTPAGES, TRANS, PRINT, INSN_EMPTY, MEM_EMPTY } mode;
static uint64_t total, blocks;
static GHashTable *table;
static GMutex lock;

typedef struct {
    uint64_t reads, writes;
} page_counts;

static void on_tb(unsigned int vcpu, void *u)
{
    (void)vcpu;
    (void)u;
    __atomic_fetch_add(&blocks, 1, __ATOMIC_RELAXED);
}

static void on_tb_print(unsigned int vcpu, void *u)
{
    char line[48];
    snprintf(line, sizeof line, "block %u 0x%" PRIxPTR "\n", vcpu, (uintptr_t)u);
    qemu_plugin_outs(line);
}

static void on_insn(unsigned int vcpu, void *u)
{
    (void)vcpu;
    (void)u;
    __atomic_fetch_add(&total, 1, __ATOMIC_RELAXED);
}

/* The callbacks of insn_empty and mem_empty: what QEMU's helper call costs, with nothing done. */
static void on_insn_empty(unsigned int vcpu, void *u)
{
    (void)vcpu;
    (void)u;
}

static void on_mem_empty(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *u)
{
    (void)vcpu;
    (void)info;
    (void)vaddr;
    (void)u;
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *u)
{
    (void)vcpu;
    (void)u;
    uint64_t page = vaddr & ~(uint64_t)0xfff;
    g_mutex_lock(&lock);
    page_counts *c = g_hash_table_lookup(table, &page);
    if (c == NULL) {
        uint64_t *key = g_new(uint64_t, 1);
        *key = page;
        c = g_new0(page_counts, 1);
        g_hash_table_insert(table, key, c);
    }
    if (qemu_plugin_mem_is_store(info)) {
        c->writes++;
    } else {
        c->reads++;
    }
    g_mutex_unlock(&lock);
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    switch (mode) {
    case BB_INLINE: qemu_plugin_register_vcpu_tb_exec_inline(tb, 0, &total, n); break;
    case TB_CB: qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb, QEMU_PLUGIN_CB_NO_REGS, NULL); break;
    case PRINT:
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_print, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)(uintptr_t)qemu_plugin_tb_vaddr(tb));
        break;
    case INSN_CB:
        for (size_t i = 0; i < n; i++) {
            qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i), on_insn,
                                                   QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        break;
    case HOTPAGES:
        for (size_t i = 0; i < n; i++) {
            qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_mem,
                                             QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, NULL);
        }
        break;
    case INSN_EMPTY:
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn_empty, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)qemu_plugin_insn_vaddr(insn));
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
        }
        break;
    case MEM_EMPTY:
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            qemu_plugin_register_vcpu_mem_cb(insn, on_mem_empty, QEMU_PLUGIN_CB_NO_REGS,
                                             QEMU_PLUGIN_MEM_RW, NULL);
            qemu_plugin_register_vcpu_mem_inline(insn, QEMU_PLUGIN_MEM_RW,
                                                 QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
        }
        break;
    case TRANS: {
        uint64_t *key = g_new(uint64_t, 1);
        *key = qemu_plugin_tb_vaddr(tb);
        g_mutex_lock(&lock);
        g_hash_table_insert(table, key, GUINT_TO_POINTER(n));
        g_mutex_unlock(&lock);
        break;
    }
    }
}

static void report(qemu_plugin_id_t id, void *u)
{
    (void)id;
    (void)u;
    char line[128];
    snprintf(line, sizeof line, "total %" PRIu64 " blocks %" PRIu64 " entries %u\n", total,
             blocks, table ? g_hash_table_size(table) : 0);
    qemu_plugin_outs(line);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    static const char *const names[] = {"bb_inline", "tb_cb", "insn_cb",    "hotpages",
                                        "trans",     "print", "insn_empty", "mem_empty"};
    const char *want = argc == 1 && strncmp(argv[0], "mode=", 5) == 0 ? argv[0] + 5 : NULL;
    size_t i = 0;
    while (want && i < G_N_ELEMENTS(names) && strcmp(want, names[i]) != 0) {
        i++;
    }
    if (want == NULL || i == G_N_ELEMENTS(names)) {
        GString *all = g_string_new(NULL);
        for (size_t j = 0; j < G_N_ELEMENTS(names); j++) {
            g_string_append_printf(all, "%s%s", j ? ", " : "", names[j]);
        }
        fprintf(stderr, "cref: expected one argument mode=MODE, MODE one of %s; got %s\n",
                all->str, argc >= 1 ? argv[0] : "nothing");
        g_string_free(all, TRUE);
        return 1;
    }
    mode = i;
    table = g_hash_table_new(g_int64_hash, g_int64_equal);
    qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
    qemu_plugin_register_atexit_cb(id, report, NULL);
    return 0;
}
