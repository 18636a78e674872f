/* profile.c: the cost report of profile=on. Every Lua function C calls is charged to a "site":
 * the kind of callback plus where the function was defined (closures made at one source line
 * share a site, so per-translation closures add up). The gate times each call; the report at exit
 * says where Lua was entered, how often, for how long, and warns where a script put Lua on a
 * per-instruction path. Nothing is measured unless profile=on.
 * Owns: the sites and the report. Must not touch: the timing itself (the gate and exec.c count
 * into a site's qlua_stats as they call). */
#include <stdio.h>

#include "profile.h"
#include "arena.h"
#include "exec.h"
#include "gate.h"
#include "host.h"

static GHashTable *sites; /* "event@where" -> qlua_stats */
static GPtrArray *order;
static uint64_t start_ns;

void qlua_profile_start(void)
{
    sites = g_hash_table_new(g_str_hash, g_str_equal);
    order = g_ptr_array_new();
    start_ns = qlua_now_ns();
}

/* The site of the function at idx, charged as `event`. NULL when profiling is off. */
qlua_stats *qlua_profile_site(lua_State *L, int idx, const char *event)
{
    if (!qlua.profile) {
        return NULL;
    }
    lua_Debug ar;
    lua_pushvalue(L, idx);
    lua_getinfo(L, ">S", &ar);
    char *where = g_strdup_printf("%s:%d", ar.short_src, ar.linedefined);
    char *key = g_strdup_printf("%s@%s", event, where);
    qlua_stats *s = g_hash_table_lookup(sites, key);
    if (s == NULL) {
        s = g_new0(qlua_stats, 1);
        s->event = event;
        s->where = where;
        g_hash_table_insert(sites, key, s);
        g_ptr_array_add(order, s);
    } else {
        g_free(where);
        g_free(key);
    }
    return s;
}

static gint by_time(gconstpointer a, gconstpointer b)
{
    const qlua_stats *x = *(qlua_stats *const *)a, *y = *(qlua_stats *const *)b;
    return x->ns < y->ns ? 1 : x->ns > y->ns ? -1 : 0;
}

static bool per_instruction(const char *event)
{
    return g_str_has_prefix(event, "insn:on_exec") || g_str_has_prefix(event, "insn:on_mem") ||
           g_str_has_prefix(event, "insn:when");
}

/* Per-instruction Lua callbacks entered more often than this earn a warning. */
#define HOT_CALLS 100000

void qlua_profile_report(void)
{
    if (!qlua.profile) {
        return;
    }
    uint64_t total_ns = 0, total_calls = 0, queued = 0;
    for (guint i = 0; i < order->len; i++) {
        qlua_stats *s = g_ptr_array_index(order, i);
        total_ns += s->ns;
        total_calls += s->calls;
        if (!g_str_equal(s->event, "tracer")) {
            queued += s->events;
        }
    }
    uint64_t run_ns = qlua_now_ns() - start_ns;
    g_ptr_array_sort(order, by_time);
    GString *out = g_string_new(NULL);
    g_string_append_printf(out,
                           "qlua profile: Lua called %" G_GUINT64_FORMAT " times, %.1f ms in Lua "
                           "(%.1f%% of %.1f ms since the script loaded)\n",
                           total_calls, total_ns / 1e6,
                           run_ns ? 100.0 * (double)total_ns / (double)run_ns : 0.0, run_ns / 1e6);
    if (queued > 0) {
        g_string_append_printf(out,
                               "qlua profile: %" G_GUINT64_FORMAT " of those calls were queued "
                               "(on_exec, on_mem), delivered in %" G_GUINT64_FORMAT
                               " batches (their time is shared out by count within a batch)\n",
                               queued, qlua_exec_batches());
    }
    qlua_arena_stats m = qlua_arena_memory();
    g_string_append_printf(out,
                           "qlua profile: per-translation records: %.1f KiB held, at most %.1f "
                           "KiB; reclaimed at %" G_GUINT64_FORMAT " flushes (%" G_GUINT64_FORMAT
                           " asked for by records=); %" G_GUINT64_FORMAT " translations seen\n",
                           m.held / 1024.0, m.peak / 1024.0, m.reclaims, m.limit_flushes,
                           m.translations);
    g_string_append_printf(out, "%-16s %-32s %12s %10s %9s %12s\n", "callback", "defined at",
                           "calls", "ms", "ns/call", "events");
    for (guint i = 0; i < order->len; i++) {
        qlua_stats *s = g_ptr_array_index(order, i);
        char events[24] = "-";
        if (s->calls == 0) {
            continue; /* never entered (e.g. a wrapper whose calls are charged elsewhere) */
        }
        if (g_str_equal(s->event, "tracer") || s->events > 0) {
            g_snprintf(events, sizeof events, "%" G_GUINT64_FORMAT, s->events);
        }
        g_string_append_printf(out, "%-16s %-32s %12" G_GUINT64_FORMAT " %10.1f %9.0f %12s\n",
                               s->event, s->where, s->calls, s->ns / 1e6,
                               s->calls ? (double)s->ns / (double)s->calls : 0.0, events);
    }
    for (guint i = 0; i < order->len; i++) {
        qlua_stats *s = g_ptr_array_index(order, i);
        if (per_instruction(s->event) && s->calls > HOT_CALLS) {
            g_string_append_printf(
                out,
                "qlua profile: warning: %s at %s put Lua on a per-instruction path (%" G_GUINT64_FORMAT
                " calls): count with insn:count/insn:count_mem, select with insn:when, or batch with "
                "qemu.tracer{} and insn:trace/insn:trace_mem\n",
                s->event, s->where, s->calls);
        }
    }
    qlua_host.outs(out->str);
    g_string_free(out, TRUE);
}
