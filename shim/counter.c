/* counter.c: native 64-bit counters, one slot per vCPU, and the code that makes translated blocks
 * add to them without entering Lua.
 * Strategy (chosen per host, see docs/counters.md):
 *  - inline: QEMU <= 8.2 can add an immediate to a raw pointer from translated code (~0.3 ns), but
 *    the add is not atomic, so it is exact only while one vCPU runs. We emit it into slot 0 while
 *    only one vCPU exists;
 *  - percpu: a tiny C callback adds to the executing vCPU's own slot (~1-3 ns), exact always.
 *    Used once a second vCPU appears (events.c then retranslates everything), with -smp > 1, or
 *    with counters=callback;
 *  - scoreboard: QEMU >= 9.0 adds inline to the executing vCPU's entry of a scoreboard.
 * Also qemu.count_every's rules: counting ops added to every translated block with no Lua.
 * Owns: counters, the strategy, pending counting ops of a translation. Must not touch: Lua
 * callbacks (a conditional callback's target is a plain C function given by exec.c). */
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "counter.h"
#include "arena.h"
#include "gate.h"
#include "handle.h"
#include "host.h"
#include "mem.h"
#include "value.h"

#define COUNTER_META "qlua.counter"
#define SLOT_STRIDE 8   /* u64 from one vCPU's slot to the next: a 64-byte line (see chunk_new) */
#define CHUNK_VCPUS 8   /* slots are allocated 8 vCPUs at a time and never move */
#define NEAR_CHUNKS 8   /* chunks for vCPUs 0..63 live in the counter itself */
#define MAX_CHUNKS 8192 /* 65536 vCPUs; chunks past the near ones hang off a table made on demand */

/* A counter costs ~170 bytes until a guest has more than 64 vCPUs, so scripts may make one per
 * block or per address. */
struct qlua_counter {
    struct qemu_plugin_scoreboard *sb; /* scoreboard mode: the values live in QEMU's scoreboard, */
    size_t sb_offset;                  /* at this offset in each vCPU's entry */
    uint64_t *near[NEAR_CHUNKS];       /* qlua's own slots, made on first use */
    uint64_t **far; /* MAX_CHUNKS entries (the first NEAR_CHUNKS unused), or NULL */
    struct qlua_counter *next;
};

/* Scoreboard mode: counters share scoreboards, SB_COUNTERS to one, each a column of the
 * scoreboard's per-vCPU entry. A vCPU's entry is then 512 bytes, a multiple of a cache line, so
 * vCPUs share at most the line at an entry's edge (QEMU does not promise the array's alignment);
 * a script that keeps a counter per block (thousands) gets them for one QEMU scoreboard per 64,
 * made ~64 times less often, and reads them from consecutive memory. */
#define SB_COUNTERS 64
#define SB_ENTRY (SB_COUNTERS * sizeof(uint64_t))

static struct qemu_plugin_scoreboard *sb_pool; /* the scoreboard new counters take columns of */
static unsigned int sb_pool_used;              /* columns taken in sb_pool */

static inline qemu_plugin_u64 sb_entry(qlua_counter *c)
{
    return (qemu_plugin_u64){c->sb, c->sb_offset};
}

typedef struct {
    qlua_counter *c;
    uint64_t n;
    enum qemu_plugin_mem_rw rw; /* memory records: which accesses count */
} count_rec;

enum count_mode { MODE_INLINE, MODE_PERCPU, MODE_SCOREBOARD };

static enum count_mode mode = MODE_PERCPU;
static bool inline_emitted;
static unsigned int vcpus_seen;
static unsigned int max_vcpu; /* highest vCPU index seen */
static qlua_counter *all_counters;

/* Installs a fresh zeroed block at *where unless another vCPU did first; returns the winner. */
static void *install_zeroed(void **where, size_t size)
{
    void *fresh = g_malloc0(size);
    void *expected = NULL;
    if (!__atomic_compare_exchange_n(where, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        g_free(fresh);
        return expected;
    }
    return fresh;
}

/* Slot chunks. A chunk holds one counter's slots for 8 vCPUs, SLOT_STRIDE words apart; the
 * chunks of 8 counters are interleaved in one 512-byte, line-aligned group (chunk j starts at word
 * j), so that line v of a group holds vCPU v's slots of those 8 counters, next to each other:
 * vCPUs still never share a line, and counters made one after the other, such as bb's blocks and
 * instructions, share vCPU 0's line. Measured on QEMU 7.2, whose inline adds go to vCPU 0's slot:
 * bb.lua's two adds per block in two lines (each counter in a 512-byte chunk of its own) cost
 * gzip -9 of 48 MiB (367 M blocks) about 90 ms over one add, QEMU's libbb's two in one line
 * about 35 (docs/counters.md). The groups come in blocks from mmap, not the heap: QEMU places
 * its buffer of translated code among the mappings, and an inline add's address within 2 GiB of
 * it is reached with a 7-byte lea relative to the code, where a heap address takes a 10-byte
 * movabs (QEMU 7.2's -d out_asm; libbb's static counters get the lea). Chunks are freed only by
 * qlua_counter_free_all. */
#define GROUP_WORDS (SLOT_STRIDE * CHUNK_VCPUS)
#define GROUP_BYTES (sizeof(uint64_t) * GROUP_WORDS)
#define GROUPS_PER_BLOCK 128
#define BLOCK_BYTES (GROUP_BYTES * GROUPS_PER_BLOCK) /* 64 KiB, from mmap: see above */
static GMutex chunks_lock;
static uint64_t *chunks_group;  /* the group the next chunk comes from, */
static unsigned int chunks_used; /* how many of its chunks are taken */
static unsigned int groups_left; /* groups left in the newest block after chunks_group */
static GPtrArray *chunk_blocks;  /* every block, for qlua_counter_free_all */
static uint64_t *chunks_spare;   /* chunks that lost a race to be installed, linked by word 0 */

static uint64_t *chunk_new(void)
{
    g_mutex_lock(&chunks_lock);
    uint64_t *chunk = chunks_spare;
    if (chunk) {
        chunks_spare = (uint64_t *)(uintptr_t)chunk[0];
        chunk[0] = 0;
    } else {
        if (chunks_group == NULL || chunks_used == SLOT_STRIDE) {
            if (chunks_group != NULL && groups_left > 0) {
                chunks_group += GROUP_WORDS;
                groups_left--;
            } else {
                void *block = mmap(NULL, BLOCK_BYTES, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (block == MAP_FAILED) {
                    g_error("qlua: out of memory for counter slots");
                }
                if (chunk_blocks == NULL) {
                    chunk_blocks = g_ptr_array_new();
                }
                g_ptr_array_add(chunk_blocks, block);
                chunks_group = block;
                groups_left = GROUPS_PER_BLOCK - 1;
            }
            chunks_used = 0;
        }
        chunk = chunks_group + chunks_used++;
    }
    g_mutex_unlock(&chunks_lock);
    return chunk;
}

/* Installs a fresh chunk at *ref unless another vCPU did first; returns the one installed. */
static uint64_t *chunk_install(uint64_t **ref)
{
    uint64_t *fresh = chunk_new();
    uint64_t *expected = NULL;
    if (!__atomic_compare_exchange_n(ref, &expected, fresh, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        g_mutex_lock(&chunks_lock);
        fresh[0] = (uint64_t)(uintptr_t)chunks_spare;
        chunks_spare = fresh;
        g_mutex_unlock(&chunks_lock);
        return expected;
    }
    return fresh;
}

/* Where chunk k's pointer lives, or NULL if no chunk table reaches it yet and !create. */
static uint64_t **chunk_ref(qlua_counter *c, unsigned int k, bool create)
{
    if (k < NEAR_CHUNKS) {
        return &c->near[k];
    }
    uint64_t **far = __atomic_load_n(&c->far, __ATOMIC_ACQUIRE);
    if (far == NULL) {
        if (!create) {
            return NULL;
        }
        far = install_zeroed((void **)&c->far, sizeof(uint64_t *) * MAX_CHUNKS);
    }
    return &far[k];
}

static uint64_t *chunk_get(qlua_counter *c, unsigned int k)
{
    uint64_t **ref = chunk_ref(c, k, false);
    return ref ? __atomic_load_n(ref, __ATOMIC_ACQUIRE) : NULL;
}

/* How many chunk positions may hold a chunk: the far table is only walked once it exists. */
static unsigned int chunk_limit(qlua_counter *c)
{
    return __atomic_load_n(&c->far, __ATOMIC_ACQUIRE) ? MAX_CHUNKS : NEAR_CHUNKS;
}

/* vCPU vcpu's slot in the chunk that holds it. */
static inline uint64_t *in_chunk(uint64_t *chunk, unsigned int vcpu)
{
    return &chunk[(vcpu % CHUNK_VCPUS) * SLOT_STRIDE];
}

/* vCPU vcpu's own slot if it was ever made, else NULL (reads need not make one). */
static inline uint64_t *slot_peek(qlua_counter *c, unsigned int vcpu)
{
    unsigned int k = vcpu / CHUNK_VCPUS;
    uint64_t *chunk = k < NEAR_CHUNKS ? __atomic_load_n(&c->near[k], __ATOMIC_ACQUIRE)
                                      : (k < MAX_CHUNKS ? chunk_get(c, k) : NULL);
    return chunk ? in_chunk(chunk, vcpu) : NULL;
}

/* vCPU vcpu's own slot, made (zeroed) on first use. */
static inline uint64_t *slot(qlua_counter *c, unsigned int vcpu)
{
    uint64_t *p = slot_peek(c, vcpu);
    if (G_LIKELY(p != NULL)) {
        return p;
    }
    unsigned int k = vcpu / CHUNK_VCPUS;
    if (G_UNLIKELY(k >= MAX_CHUNKS)) {
        g_error("qlua: vCPU index %u is beyond qlua's limit of %d", vcpu,
                MAX_CHUNKS * CHUNK_VCPUS);
    }
    uint64_t **ref = chunk_ref(c, k, true);
    uint64_t *chunk = __atomic_load_n(ref, __ATOMIC_ACQUIRE);
    if (chunk == NULL) {
        chunk = chunk_install(ref);
    }
    return in_chunk(chunk, vcpu);
}

static inline uint64_t slot_value(qlua_counter *c, unsigned int vcpu)
{
    uint64_t *p = slot_peek(c, vcpu);
    return p ? *p : 0;
}

/* Adds from a callback on the executing vCPU's thread. */
static inline void add_on_vcpu(qlua_counter *c, unsigned int vcpu, uint64_t n)
{
    if (c->sb) {
        qlua_host.u64_add(sb_entry(c), vcpu, n);
    } else {
        *slot(c, vcpu) += n;
    }
}

static __attribute__((noinline)) void count_percpu_first(const count_rec *r, unsigned int vcpu)
{
    add_on_vcpu(r->c, vcpu, r->n);
}

/* percpu mode's add: one C call per counted execution, the whole cost of counting there (insn's
 * callback mode with 8 threads on QEMU 7.2: 56% of the samples in the general add). The vCPU's
 * chunk among the near ones is two loads away; a chunk not made yet or a vCPU past 63 takes the
 * general path, out of line, so the common one needs no stack frame. No scoreboard test: a
 * counter has one from birth, and then its counts are never callbacks. */
static void count_percpu_cb(unsigned int vcpu, void *udata)
{
    const count_rec *r = udata;
    unsigned int k = vcpu / CHUNK_VCPUS;
    if (G_LIKELY(k < NEAR_CHUNKS)) {
        uint64_t *chunk = __atomic_load_n(&r->c->near[k], __ATOMIC_ACQUIRE);
        if (G_LIKELY(chunk != NULL)) {
            *in_chunk(chunk, vcpu) += r->n;
            return;
        }
    }
    count_percpu_first(r, vcpu);
}

static void count_mem_cb(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr,
                         void *udata)
{
    (void)vaddr;
    count_rec *r = udata;
    if (qlua_mem_wanted(r->rw, info)) {
        add_on_vcpu(r->c, vcpu, r->n);
    }
}

static count_rec *rec_new(qlua_counter *c, uint64_t n, enum qemu_plugin_mem_rw rw)
{
    count_rec *r = qlua_arena_alloc(sizeof *r);
    *r = (count_rec){c, n, rw};
    return r;
}

/* Counting ops asked for during one translation. They are emitted when the on_translate handlers
 * have returned, after every callback and condition the script registered on the block: QEMU 7.2
 * runs a block's callbacks before its inline ops whatever the order of registration, so emitting
 * counts last gives one rule on every host and strategy: callbacks and tb:when/insn:when see a
 * counter as it was before this execution of the block or instruction added to it. */
enum pending_kind { PENDING_TB, PENDING_TB_STORE, PENDING_INSN, PENDING_MEM };
typedef struct {
    enum pending_kind kind;
    void *where; /* struct qemu_plugin_tb * or struct qemu_plugin_insn * */
    qlua_counter *c;
    uint64_t n;
    enum qemu_plugin_mem_rw rw;
} pending_op;

static GArray *pending;

static void queue(enum pending_kind kind, void *where, qlua_counter *c, uint64_t n,
                  enum qemu_plugin_mem_rw rw)
{
    if (pending == NULL) {
        pending = g_array_new(FALSE, FALSE, sizeof(pending_op));
    }
    pending_op op = {kind, where, c, n, rw};
    g_array_append_val(pending, op);
}

void qlua_counter_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t n)
{
    queue(PENDING_TB, tb, c, n, QEMU_PLUGIN_MEM_RW);
}

void qlua_counter_store_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t v)
{
    queue(PENDING_TB_STORE, tb, c, v, QEMU_PLUGIN_MEM_RW);
}

void qlua_counter_insn(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n)
{
    queue(PENDING_INSN, insn, c, n, QEMU_PLUGIN_MEM_RW);
}

void qlua_counter_mem(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n,
                      enum qemu_plugin_mem_rw rw)
{
    queue(PENDING_MEM, insn, c, n, rw);
}

static void emit_tb(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t n)
{
    if (c->sb) {
        qlua_host.register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                        sb_entry(c), n);
    } else if (mode == MODE_INLINE) {
        inline_emitted = true;
        qlua_host.register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, slot(c, 0), n);
    } else {
        qlua_host.register_vcpu_tb_exec_cb(tb, count_percpu_cb, QEMU_PLUGIN_CB_NO_REGS,
                                           rec_new(c, n, QEMU_PLUGIN_MEM_RW));
    }
}

static void store_exec_cb(unsigned int vcpu, void *udata)
{
    count_rec *r = udata;
    qlua_counter_set_mine(r->c, vcpu, r->n);
}

/* A store: inline into QEMU's scoreboard entry where QEMU has STORE_U64 (9.1, with conditional
 * callbacks); elsewhere a C callback, as QEMU 7.2's inline ops only add. */
static void emit_tb_store(struct qemu_plugin_tb *tb, qlua_counter *c, uint64_t v)
{
    if (c->sb && qlua_host.register_vcpu_tb_exec_cond_cb) {
        qlua_host.register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_STORE_U64,
                                                        sb_entry(c), v);
    } else {
        qlua_host.register_vcpu_tb_exec_cb(tb, store_exec_cb, QEMU_PLUGIN_CB_NO_REGS,
                                           rec_new(c, v, QEMU_PLUGIN_MEM_RW));
    }
}

static void emit_insn(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n)
{
    if (c->sb) {
        qlua_host.register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                          sb_entry(c), n);
    } else if (mode == MODE_INLINE) {
        inline_emitted = true;
        qlua_host.register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, slot(c, 0), n);
    } else {
        qlua_host.register_vcpu_insn_exec_cb(insn, count_percpu_cb, QEMU_PLUGIN_CB_NO_REGS,
                                             rec_new(c, n, QEMU_PLUGIN_MEM_RW));
    }
}

/* QEMU 7.2 applies the r/w filter of memory callbacks and raw inline ops off by one (R selects
 * stores, W selects everything; see docs/counters.md). There only RW means what it says, so qlua
 * registers RW and filters in the callback, and uses a raw inline op for "rw" only. QEMU >= 9.0
 * (scoreboards) filters correctly. */
static void emit_mem(struct qemu_plugin_insn *insn, qlua_counter *c, uint64_t n,
                     enum qemu_plugin_mem_rw rw)
{
    if (c->sb) {
        qlua_host.register_vcpu_mem_inline_per_vcpu(insn, rw, QEMU_PLUGIN_INLINE_ADD_U64,
                                                    sb_entry(c), n);
    } else if (mode == MODE_INLINE && rw == QEMU_PLUGIN_MEM_RW) {
        inline_emitted = true;
        qlua_host.register_vcpu_mem_inline(insn, QEMU_PLUGIN_MEM_RW, QEMU_PLUGIN_INLINE_ADD_U64,
                                           slot(c, 0), n);
    } else {
        qlua_host.register_vcpu_mem_cb(insn, count_mem_cb, QEMU_PLUGIN_CB_NO_REGS,
                                       QEMU_PLUGIN_MEM_RW, rec_new(c, n, rw));
    }
}

/* Called by events.c when a translation's handlers have returned (handles are still valid). */
void qlua_counter_emit_pending(void)
{
    if (pending == NULL) {
        return;
    }
    for (guint i = 0; i < pending->len; i++) {
        pending_op *op = &g_array_index(pending, pending_op, i);
        switch (op->kind) {
        case PENDING_TB: emit_tb(op->where, op->c, op->n); break;
        case PENDING_TB_STORE: emit_tb_store(op->where, op->c, op->n); break;
        case PENDING_INSN: emit_insn(op->where, op->c, op->n); break;
        case PENDING_MEM: emit_mem(op->where, op->c, op->n, op->rw); break;
        }
    }
    g_array_set_size(pending, 0);
}

/* counters=auto (default) or counters=callback. */
void qlua_counter_setup(const char *how)
{
    bool can_inline = qlua_host.register_vcpu_tb_exec_inline &&
                      qlua_host.register_vcpu_insn_exec_inline && qlua_host.register_vcpu_mem_inline;
    bool one_vcpu = !qlua_host.system || qlua_host.smp_vcpus <= 1;
    bool can_scoreboard = qlua_host.scoreboard_new && qlua_host.u64_get && qlua_host.u64_sum &&
                          qlua_host.u64_set && qlua_host.u64_add &&
                          qlua_host.register_vcpu_tb_exec_inline_per_vcpu &&
                          qlua_host.register_vcpu_insn_exec_inline_per_vcpu &&
                          qlua_host.register_vcpu_mem_inline_per_vcpu;
    if (!g_str_equal(how, "auto")) {
        mode = MODE_PERCPU;
    } else if (can_scoreboard) {
        mode = MODE_SCOREBOARD;
    } else {
        mode = can_inline && one_vcpu ? MODE_INLINE : MODE_PERCPU;
    }
}

const char *qlua_counter_mode(void)
{
    static const char *const names[] = {"inline", "percpu", "scoreboard"};
    return names[mode];
}

/* Called for every new vCPU. Returns true when code translated so far used shared inline adds
 * and must be retranslated now that two vCPUs may run it concurrently. */
bool qlua_counter_vcpu_init(unsigned int vcpu)
{
    if (vcpu > max_vcpu) {
        max_vcpu = vcpu;
    }
    vcpus_seen++;
    if (mode == MODE_INLINE && vcpus_seen >= 2) {
        mode = MODE_PERCPU;
        return inline_emitted;
    }
    return false;
}

/* vCPU indices that may hold a value: those seen by vcpu_init, and QEMU's own count (>= 9.0). */
static unsigned int known_vcpus(void)
{
    unsigned int n = vcpus_seen ? max_vcpu + 1 : 0;
    if (qlua_host.num_vcpus && (unsigned int)qlua_host.num_vcpus() > n) {
        n = (unsigned int)qlua_host.num_vcpus();
    }
    return n;
}

/* A scoreboard counter is QEMU's entry plus qlua's own slot. Lua's adds and sets go to QEMU's
 * entry, where native conditions (tb:when) see them, except for a vCPU QEMU has not created yet
 * (e.g. while the script loads): QEMU asserts on such an entry, so they wait in qlua's slot. */
static bool in_scoreboard(qlua_counter *c, unsigned int vcpu)
{
    return c->sb && vcpu < known_vcpus();
}

/* The value of a counter for vcpu: qlua's slot, plus QEMU's entry once QEMU has created the
 * vCPU (`created`: vcpu < known_vcpus(), which a loop over many counters asks once). */
static uint64_t value_of(qlua_counter *c, unsigned int vcpu, bool created)
{
    return slot_value(c, vcpu) + (c->sb && created ? qlua_host.u64_get(sb_entry(c), vcpu) : 0);
}

uint64_t qlua_counter_value(qlua_counter *c, unsigned int vcpu)
{
    return value_of(c, vcpu, vcpu < known_vcpus());
}

uint64_t qlua_counter_value_mine(qlua_counter *c, unsigned int vcpu)
{
    return (c->sb ? qlua_host.u64_get(sb_entry(c), vcpu) : 0) + slot_value(c, vcpu);
}

/* A value in QEMU's entry: qlua's slot, where there is one, no longer adds to it. */
static void set_in_scoreboard(qlua_counter *c, unsigned int vcpu, uint64_t v)
{
    qlua_host.u64_set(sb_entry(c), vcpu, v);
    uint64_t *own = slot_peek(c, vcpu);
    if (own) {
        __atomic_store_n(own, 0, __ATOMIC_RELAXED);
    }
}

void qlua_counter_set_mine(qlua_counter *c, unsigned int vcpu, uint64_t v)
{
    if (c->sb) {
        set_in_scoreboard(c, vcpu, v);
    } else {
        *slot(c, vcpu) = v;
    }
}

void qlua_counter_set(qlua_counter *c, unsigned int vcpu, uint64_t v)
{
    if (in_scoreboard(c, vcpu)) {
        set_in_scoreboard(c, vcpu, v);
    } else {
        __atomic_store_n(slot(c, vcpu), v, __ATOMIC_RELAXED);
    }
}

/* Conditional execution callbacks (tb:when, insn:when): native on hosts with scoreboards and
 * conditional callbacks (QEMU >= 9.1); elsewhere a C callback tests the executing vCPU's slot and
 * calls `cb` only when the condition holds, so Lua still runs only when it must. */
typedef struct {
    qlua_counter *c;
    enum qemu_plugin_cond cond;
    uint64_t imm;
    qemu_plugin_vcpu_udata_cb_t cb;
    void *udata;
} cond_rec;

static bool cond_holds(enum qemu_plugin_cond cond, uint64_t v, uint64_t imm)
{
    switch (cond) {
    case QEMU_PLUGIN_COND_NEVER: return false;
    case QEMU_PLUGIN_COND_ALWAYS: return true;
    case QEMU_PLUGIN_COND_EQ: return v == imm;
    case QEMU_PLUGIN_COND_NE: return v != imm;
    case QEMU_PLUGIN_COND_LT: return v < imm;
    case QEMU_PLUGIN_COND_LE: return v <= imm;
    case QEMU_PLUGIN_COND_GT: return v > imm;
    case QEMU_PLUGIN_COND_GE: return v >= imm;
    }
    return false;
}

static void cond_cb(unsigned int vcpu, void *udata)
{
    cond_rec *r = udata;
    if (cond_holds(r->cond, qlua_counter_value_mine(r->c, vcpu), r->imm)) {
        r->cb(vcpu, r->udata);
    }
}

static cond_rec *cond_rec_new(qlua_counter *c, enum qemu_plugin_cond cond, uint64_t imm,
                              qemu_plugin_vcpu_udata_cb_t cb, void *udata)
{
    cond_rec *r = qlua_arena_alloc(sizeof *r);
    *r = (cond_rec){c, cond, imm, cb, udata};
    return r;
}

void qlua_counter_when_tb(struct qemu_plugin_tb *tb, qlua_counter *c, enum qemu_plugin_cond cond,
                          uint64_t imm, qemu_plugin_vcpu_udata_cb_t cb, void *udata)
{
    if (c->sb && qlua_host.register_vcpu_tb_exec_cond_cb) {
        qlua_host.register_vcpu_tb_exec_cond_cb(tb, cb, QEMU_PLUGIN_CB_NO_REGS, cond, sb_entry(c),
                                                imm, udata);
    } else {
        qlua_host.register_vcpu_tb_exec_cb(tb, cond_cb, QEMU_PLUGIN_CB_NO_REGS,
                                           cond_rec_new(c, cond, imm, cb, udata));
    }
}

void qlua_counter_when_insn(struct qemu_plugin_insn *insn, qlua_counter *c,
                            enum qemu_plugin_cond cond, uint64_t imm,
                            qemu_plugin_vcpu_udata_cb_t cb, void *udata)
{
    if (c->sb && qlua_host.register_vcpu_insn_exec_cond_cb) {
        qlua_host.register_vcpu_insn_exec_cond_cb(insn, cb, QEMU_PLUGIN_CB_NO_REGS, cond,
                                                  sb_entry(c), imm, udata);
    } else {
        qlua_host.register_vcpu_insn_exec_cb(insn, cond_cb, QEMU_PLUGIN_CB_NO_REGS,
                                             cond_rec_new(c, cond, imm, cb, udata));
    }
}

static int counter_meta;

qlua_counter *qlua_counter_check(lua_State *L, int idx)
{
    return *(qlua_counter **)qlua_meta_check(L, idx, counter_meta, "counter");
}

static uint64_t counter_sum(qlua_counter *c)
{
    uint64_t sum = c->sb ? qlua_host.u64_sum(sb_entry(c)) : 0;
    for (unsigned int k = 0, n = chunk_limit(c); k < n; k++) {
        uint64_t *chunk = chunk_get(c, k);
        if (chunk) {
            for (unsigned int i = 0; i < CHUNK_VCPUS; i++) {
                sum += chunk[i * SLOT_STRIDE];
            }
        }
    }
    return sum;
}

/* Counters are referenced by translated code, which outlives any Lua value: they are never freed
 * before the plugin is (a script should create its counters once, at top level). */
qlua_counter *qlua_counter_new(void)
{
    qlua_counter *c = g_new0(qlua_counter, 1);
    if (mode == MODE_SCOREBOARD) {
        if (sb_pool == NULL || sb_pool_used == SB_COUNTERS) {
            sb_pool = qlua_host.scoreboard_new(SB_ENTRY);
            sb_pool_used = 0;
        }
        c->sb = sb_pool;
        c->sb_offset = sizeof(uint64_t) * sb_pool_used++;
    } else {
        slot(c, 0); /* made now, not by translated code's first add (inline: its address) */
    }
    c->next = all_counters;
    all_counters = c;
    return c;
}

static int counter_new(lua_State *L)
{
    qlua_counter *c = qlua_counter_new();
    *(qlua_counter **)lua_newuserdata(L, sizeof c) = c;
    qlua_meta_set(L, counter_meta);
    return 1;
}

static unsigned int check_vcpu(lua_State *L, int idx)
{
    lua_Integer v = luaL_checkinteger(L, idx);
    luaL_argcheck(L, (lua_Number)v == lua_tonumber(L, idx), idx, "expected a whole vCPU index");
    luaL_argcheck(L, v >= 0 && v < MAX_CHUNKS * CHUNK_VCPUS, idx, "expected a vCPU index");
    return (unsigned int)v;
}

/* Reading or overwriting a counter from a queued callback would act on its value at delivery,
 * not at the event: refused, saying how to get the value of the moment. (c:add is allowed: adds
 * commute.) */
static void not_queued(lua_State *L, const char *what)
{
    if (qlua_queue_context > 0) {
        luaL_error(L, "%s in a queued callback (on_exec, on_mem) would see the counter "
                      "as of the batch's delivery, not of the event: pass the value with "
                      "on_exec(fn, data, { counter = c }) (fn gets it as a third argument), or "
                      "make the callback synchronous with { sync = true }",
                   what);
    }
}

static int counter_sum_l(lua_State *L)
{
    not_queued(L, "counter:sum()");
    qlua_push_u64(L, counter_sum(qlua_counter_check(L, 1)));
    return 1;
}

static int counter_get(lua_State *L)
{
    not_queued(L, "counter:get()");
    qlua_push_u64(L, qlua_counter_value(qlua_counter_check(L, 1), check_vcpu(L, 2)));
    return 1;
}

/* c:add(n [, vcpu = 0]) from Lua (slow path; translated code uses count/count_mem). */
static int counter_add(lua_State *L)
{
    qlua_counter *c = qlua_counter_check(L, 1);
    uint64_t n = qlua_check_u64(L, 2);
    unsigned int vcpu = lua_isnoneornil(L, 3) ? 0 : check_vcpu(L, 3);
    if (in_scoreboard(c, vcpu)) {
        qlua_host.u64_add(sb_entry(c), vcpu, n);
    } else {
        __atomic_fetch_add(slot(c, vcpu), n, __ATOMIC_RELAXED);
    }
    return 0;
}

/* c:set(value [, vcpu = 0]) from Lua (slow path): e.g. to restart a per-vCPU interval. */
static int counter_set(lua_State *L)
{
    not_queued(L, "counter:set()");
    qlua_counter *c = qlua_counter_check(L, 1);
    uint64_t v = qlua_check_u64(L, 2);
    qlua_counter_set(c, lua_isnoneornil(L, 3) ? 0 : check_vcpu(L, 3), v);
    return 0;
}

static int counter_reset(lua_State *L)
{
    not_queued(L, "counter:reset()");
    qlua_counter_reset(qlua_counter_check(L, 1));
    return 0;
}

void qlua_counter_reset(qlua_counter *c)
{
    if (c->sb) {
        for (unsigned int v = 0; v < known_vcpus(); v++) {
            qlua_host.u64_set(sb_entry(c), v, 0);
        }
    }
    for (unsigned int k = 0, n = chunk_limit(c); k < n; k++) {
        uint64_t *chunk = chunk_get(c, k);
        if (chunk) { /* its slots only: other counters' are between them */
            for (unsigned int i = 0; i < CHUNK_VCPUS; i++) {
                chunk[i * SLOT_STRIDE] = 0;
            }
        }
    }
}

/* c:values() -> { [0] = n0, n1, ... } up to the highest vCPU index seen. */
static int counter_values(lua_State *L)
{
    not_queued(L, "counter:values()");
    qlua_counter *c = qlua_counter_check(L, 1);
    unsigned int n = MAX(known_vcpus(), 1);
    lua_createtable(L, (int)n, 1);
    for (unsigned int v = 0; v < n; v++) {
        qlua_push_u64(L, qlua_counter_value(c, v));
        lua_rawseti(L, -2, (int)v);
    }
    return 1;
}

/* core.read_counters(list, vcpu, into) -> into, with into[i] = list[i]'s value for vcpu (i = 1 ..
 * #list, in one call: a script that keeps a counter per block reads them all per interval); or
 * nil, i when list[i] is not a counter (init.lua says so, at the script's line). */
static int counters_read(lua_State *L)
{
    if (qlua_queue_context > 0) {
        return luaL_error(L, "qemu.read_counters() in a queued callback (on_exec, on_mem) would "
                             "see the counters as of the batch's delivery, not of the event: "
                             "read them from a synchronous callback ({ sync = true }, tb:when, "
                             "on_syscall) or at exit");
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    unsigned int vcpu = check_vcpu(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    lua_rawgeti(L, LUA_REGISTRYINDEX, counter_meta); /* 4: compared with each element's */
    bool created = vcpu < known_vcpus(); /* QEMU's entries exist: in_scoreboard, once */
    size_t n = lua_rawlen(L, 1);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i);
        qlua_counter **c = lua_touserdata(L, -1);
        bool is_counter = c && lua_getmetatable(L, -1) && lua_rawequal(L, -1, 4);
        if (!is_counter) {
            lua_pushnil(L);
            lua_pushinteger(L, (lua_Integer)i);
            return 2;
        }
        lua_pop(L, 2);
        qlua_counter *k = *c;
        /* one u64_get each, no entry address kept across the loop: in user mode QEMU can grow
         * (move) its scoreboards while this thread runs Lua outside guest code (a syscall
         * callback), as another thread starts */
        qlua_push_u64(L, value_of(k, vcpu, created));
        lua_rawseti(L, 3, (lua_Integer)i);
    }
    lua_settop(L, 3);
    return 1;
}

static int counter_tostring(lua_State *L)
{
    not_queued(L, "counter:tostring()");
    char text[48];
    g_snprintf(text, sizeof text, "counter (sum %" G_GUINT64_FORMAT ")",
               counter_sum(qlua_counter_check(L, 1)));
    lua_pushstring(L, text);
    return 1;
}

/* core.vcpus(): how many vCPU indices exist so far (highest index seen + 1). */
static int counter_vcpus(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)known_vcpus());
    return 1;
}

void qlua_counter_free_all(void)
{
    while (all_counters) {
        qlua_counter *c = all_counters;
        all_counters = c->next;
        g_free(c->far);
        g_free(c);
    }
    g_mutex_lock(&chunks_lock);
    if (chunk_blocks) {
        for (unsigned int i = 0; i < chunk_blocks->len; i++) {
            munmap(g_ptr_array_index(chunk_blocks, i), BLOCK_BYTES);
        }
        g_ptr_array_free(chunk_blocks, true);
        chunk_blocks = NULL;
    }
    chunks_group = NULL;
    chunks_used = groups_left = 0;
    chunks_spare = NULL;
    g_mutex_unlock(&chunks_lock);
}

/* qemu.count_every(kind, counter, rw): ops qlua adds to every translated block itself, with no
 * Lua at translation time. A reload swaps the rules with the script's handlers. */
enum rule_kind { RULE_INSN, RULE_BLOCK, RULE_BLOCK_INSNS, RULE_MEM };
typedef struct {
    enum rule_kind kind;
    qlua_counter *counter;      /* NULL: a tally's rule */
    enum qemu_plugin_mem_rw rw;
    void *foreign;              /* another file's rule (first member: its qlua_rule_ops *) */
} count_rule;
static GPtrArray *rules; /* of count_rule */

static void rule_free(void *p)
{
    count_rule *rule = p;
    if (rule->foreign) {
        (*(const qlua_rule_ops **)rule->foreign)->free(rule->foreign);
    }
    g_free(rule);
}

static GPtrArray *rule_list(void)
{
    if (rules == NULL) {
        rules = g_ptr_array_new_with_free_func(rule_free);
    }
    return rules;
}

bool qlua_counter_has_rules(void)
{
    return rule_list()->len > 0;
}

void qlua_counter_apply_rules(struct qemu_plugin_tb *tb)
{
    GPtrArray *list = rule_list();
    size_t n = qlua_host.tb_n_insns(tb);
    for (guint r = 0; r < list->len; r++) {
        const count_rule *rule = g_ptr_array_index(list, r);
        if (rule->foreign) {
            (*(const qlua_rule_ops **)rule->foreign)->apply(rule->foreign, tb);
            continue;
        }
        switch (rule->kind) {
        case RULE_BLOCK: qlua_counter_tb(tb, rule->counter, 1); break;
        case RULE_BLOCK_INSNS: qlua_counter_tb(tb, rule->counter, n); break;
        case RULE_INSN:
        case RULE_MEM:
            for (size_t i = 0; i < n; i++) {
                struct qemu_plugin_insn *insn = qlua_host.tb_get_insn(tb, i);
                if (rule->kind == RULE_INSN) {
                    qlua_counter_insn(insn, rule->counter, 1);
                } else {
                    qlua_counter_mem(insn, rule->counter, 1, rule->rw);
                }
            }
            break;
        }
    }
}

void *qlua_counter_take_rules(void)
{
    GPtrArray *taken = rule_list();
    rules = NULL;
    return taken;
}

void qlua_counter_put_rules(void *given)
{
    if (rules) {
        g_ptr_array_free(rules, TRUE);
    }
    rules = given;
}

void qlua_counter_drop_rules(void *dropped)
{
    g_ptr_array_free(dropped, TRUE);
}

/* Whether an earlier rule of the same file took `foreign` in (qlua_rule_ops.absorb). */
static bool absorbed(void *foreign)
{
    const qlua_rule_ops *ops = *(const qlua_rule_ops **)foreign;
    GPtrArray *list = rule_list();
    for (guint r = 0; ops->absorb && r < list->len; r++) {
        const count_rule *had = g_ptr_array_index(list, r);
        if (had->foreign && *(const qlua_rule_ops **)had->foreign == ops &&
            ops->absorb(had->foreign, foreign)) {
            return true;
        }
    }
    return false;
}

/* core.count_every(kind, counter, rw): kind "insn", "block", "block_insns" or "mem"; or
 * core.count_every(kind, rule) with another file's rule (core.tally_rule), which knows its kind. */
static int counter_count_every(lua_State *L)
{
    static const char *const kinds[] = {"insn", "block", "block_insns", "mem", NULL};
    luaL_checktype(L, 1, LUA_TSTRING);
    count_rule *rule = g_new0(count_rule, 1);
    if (lua_islightuserdata(L, 2)) {
        rule->foreign = lua_touserdata(L, 2);
    } else {
        rule->kind = (enum rule_kind)luaL_checkoption(L, 1, NULL, kinds);
        rule->counter = qlua_counter_check(L, 2);
        rule->rw = qlua_mem_check_rw(L, 3);
    }
    if (rule->foreign && absorbed(rule->foreign)) {
        g_free(rule);
        return 0;
    }
    g_ptr_array_add(rule_list(), rule);
    return 0;
}

void qlua_counter_open(lua_State *L)
{
    static const luaL_Reg methods[] = {{"sum", counter_sum_l}, {"get", counter_get},
                                       {"add", counter_add},   {"set", counter_set},
                                       {"reset", counter_reset},
                                       {"values", counter_values}, {NULL, NULL}};
    counter_meta = qlua_meta_new(L, COUNTER_META);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, counter_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, counter_new);
    lua_setfield(L, -2, "counter_new");
    lua_pushcfunction(L, counter_vcpus);
    lua_setfield(L, -2, "vcpus");
    lua_pushcfunction(L, counters_read);
    lua_setfield(L, -2, "read_counters");
    lua_pushcfunction(L, counter_count_every);
    lua_setfield(L, -2, "count_every_rule");
}
