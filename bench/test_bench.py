"""Tests of the benchmark's own machinery (not of qlua): what bench/compare.py counts as agreeing
outputs, that a shipped script and QEMU's plugin really agree on a real run, the queued delivery
table's arithmetic, rows and runs, the estimate of a run's duration, and that bad settings stop
run.py, bench/cref.c, bench/scripts/delivery.lua and tools/fetch-qemu-plugins.sh with a message
saying what to do.
Run: /usr/bin/python3 -m pytest -q bench/test_bench.py (real runs need build/ and the plugins of
tools/fetch-qemu-plugins.sh; they skip, saying so, without them)."""
import os
import statistics
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402
import run  # noqa: E402

BUILD = os.path.join(ROOT, "build")
BUILD_LUA54 = os.path.join(ROOT, "build-lua54")
PLUGINS = os.path.join(ROOT, "build-qemu-plugins")


def canon(kind, log, host="7.2", qlua=False, files=""):
    return compare.COMPARERS[kind][0](compare.Run(0, log, files, host, qlua))


def agree(kind, a, b, host="7.2"):
    return compare.COMPARERS[kind][1](canon(kind, a, host), canon(kind, b, host, qlua=True))


HB = "collected 9 entries in the hash table\npc, tcount, icount, ecount\n"


def test_ranked_rows_agree_whatever_order_ties_come_in():
    a = HB + "0x10, 1, 2, 50\n0x20, 1, 3, 40\n0x30, 1, 1, 40\n0x40, 1, 1, 7\n"
    b = HB + "0x10, 1, 2, 50\n0x30, 1, 1, 40\n0x20, 1, 3, 40\n0x50, 1, 1, 7\n"
    assert agree("hotblocks", a, b)


def test_a_different_count_above_the_cut_is_a_mismatch():
    a = HB + "0x10, 1, 2, 50\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    b = HB + "0x10, 1, 2, 51\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    assert not agree("hotblocks", a, b)


def test_qemus_merged_hotblocks_entry_is_left_out():
    # QEMU: 0x10 (tcount 2) holds two blocks' executions; qlua lists them apart
    a = HB + "0x10, 2, 2, 90\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    b = HB + "0x10, 1, 2, 50\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    assert agree("hotblocks", a, b)


def test_both_blocks_of_a_merged_hotblocks_entry_are_left_out():
    # 0x14 ^ 6 == 0x10 ^ 2: QEMU's one entry (first pc 0x14, tcount 2) holds both blocks, which
    # qlua lists apart, each at its own pc (seen on bzip2: 0x...48a4 and 0x...48a0)
    a = HB + "0x14, 2, 6, 90\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    b = HB + "0x14, 1, 6, 50\n0x10, 1, 2, 40\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    assert agree("hotblocks", a, b)
    c = HB + "0x14, 1, 6, 50\n0x10, 1, 2, 40\n0x20, 1, 3, 41\n0x40, 1, 1, 7\n"
    assert not agree("hotblocks", a, c)


def test_hotblocks_at_addresses_qemu_10_masks_are_compared_not_parsed():
    # on QEMU 10 a library's pc becomes "0x7f?" (it moves between runs): such rows key by the
    # masked text and their counts, a different count is still a mismatch
    a = HB + "0x00007ffff7fe4000, 1, 2, 50\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    b = HB + "0x00007fe640a73000, 1, 2, 50\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    assert agree("hotblocks", a, b, host="10.2")
    c = HB + "0x00007fe640a73000, 1, 2, 51\n0x20, 1, 3, 40\n0x40, 1, 1, 7\n"
    assert not agree("hotblocks", a, c, host="10.2")


def test_the_row_qemu_leaves_off_a_short_list_is_not_a_mismatch():
    head = "Addr, RCPUs, Reads, WCPUs, Writes\n"
    a = head + "0x1000, 0x0001, 9, 0x0001, 9\n0x2000, 0x0001, 5, 0x0000, 0\n"
    b = a + "0x3000, 0x0001, 1, 0x0000, 0\n"
    assert agree("hotpages", a, b)


def test_insn_callback_folds_vcpus_and_repeat_addresses_as_qemu_7_2_prints_them():
    qemu = ("detected repeat execution @ 0x2819a4c\ncpu 0 insns: 15\ncpu 1 insns: 5\n"
            "total insns: 20\n")
    qlua = ("detected repeat execution @ 0x4002819a4c\ncpu 0 insns: 10\ncpu 1 insns: 5\n"
            "cpu 8 insns: 5\ntotal insns: 20\n")
    assert agree("insn_callback", qemu, qlua)
    assert not agree("insn_callback", qemu, qlua.replace("cpu 1 insns: 5", "cpu 1 insns: 6"))


def test_execlog_opcodes_are_compared_on_qemu_10_only():
    qemu = '0, 0x401000, 0xe78955, "pushq %rbp", store, 0x40028e06e0\n'
    qlua = '0, 0x401000, 0x55, "pushq %rbp", store, 0x40028e06e0\n'
    assert agree("execlog", qemu, qlua, host="7.2")
    assert not agree("execlog", qemu, qlua, host="10.2")


def test_bb_totals_read_qemu_10s_total_line():
    assert agree("bb", "CPU0: bb's: 7, insns: 30\nTotal: bb's: 7, insns: 30\n",
                 "bb's: 7, insns: 30\n", host="10.2")


def test_addresses_qemu_10_maps_anew_are_masked_there_only():
    a = "0x00007ffff6b24000, 0x0001, 3, 0x0000, 0\n0x1000, 0x0001, 2, 0x0000, 0\n"
    b = a.replace("7ffff6b24000", "7fe640a73000")
    head = "Addr, RCPUs, Reads, WCPUs, Writes\n"
    assert agree("hotpages", head + a, head + b, host="10.2")
    assert not agree("hotpages", head + a, head + b, host="7.2")


def test_a_run_that_wrote_nothing_to_compare_is_marked_not_agreeing():
    row = next(r for r in run.SHIPPED if r.label == "drcov")
    gzip = run.Workload("gzip -9", {})
    with tempfile.TemporaryDirectory() as tmp:
        missing = canon("drcov", "", files=os.path.join(tmp, "none"))
    assert run.check_mark(row, "7.2", gzip, [missing], [missing]) == "no output"


def test_text_inputs_have_the_size_or_lines_asked_for():
    with tempfile.TemporaryDirectory() as tmp:
        path = run.write_text(os.path.join(tmp, "t"), lines=100)
        assert open(path).read().count("\n") == 100
        path = run.write_text(os.path.join(tmp, "s"), size=5000)
        assert 5000 <= os.path.getsize(path) < 5100


def real_run_needs():
    if not os.path.exists(os.path.join(BUILD, "libqlua.so")):
        pytest.skip(f"no qlua build in {BUILD}")
    if not os.path.exists(os.path.join(PLUGINS, "libbb.so")):
        pytest.skip(f"no QEMU 7.2 plugins in {PLUGINS} (tools/fetch-qemu-plugins.sh)")


@pytest.mark.parametrize("label", ["bb inline=on", "mem callback=on", "syscall", "drcov"])
def test_shipped_script_and_qemus_plugin_agree_on_a_real_run(label):
    real_run_needs()
    row = next(r for r in run.SHIPPED if r.label == label)
    v = run.Variant("7.2", PLUGINS, [BUILD])
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as work:
        program = run.shipped_workloads(BUILD, tmp)[0].command(True, "full").make()  # gzip, small
        _, c, c_failed = run.one_shipped(v, BUILD, row, program, work, qlua=False)
        _, q, q_failed = run.one_shipped(v, BUILD, row, program, work, qlua=True)
    assert not c_failed and not q_failed
    assert c and q, "both runs produced output to compare"
    assert compare.COMPARERS[row.compare][1](c, q)


def test_an_argument_a_plugin_does_not_take_stops_the_run_naming_it():
    real_run_needs()
    v = run.Variant("7.2", PLUGINS, [BUILD])
    bad = run.Row("bb bogus=on", "bb", "bogus=on", run.COUNTS, "bb")
    with pytest.raises(SystemExit) as e:
        run.argument_notes([v], [bad])
    assert "argument bogus is not accepted by QEMU 7.2 and bb.lua" in str(e.value)


def bench(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(HERE, "run.py"), *args],
                          capture_output=True, text=True, env=env)


def test_missing_qemu_plugins_name_the_command_that_builds_them():
    real_run_needs()
    p = bench("--quick", "--plugins", "/nonexistent/plugins")
    assert p.returncode == 1
    assert "tools/fetch-qemu-plugins.sh /nonexistent/plugins" in p.stderr


def test_an_unknown_host_is_refused_listing_the_accepted_ones():
    p = bench("--host", "9.0")
    assert p.returncode == 2 and "choose from '7.2', '10.2'" in p.stderr


def test_missing_qemu_10_2_says_which_variable_points_at_it():
    real_run_needs()
    p = bench("--host", "10.2", env=dict(os.environ, QLUA_QEMU_10_2="/nonexistent"))
    assert p.returncode == 1 and "set QLUA_QEMU_10_2" in p.stderr


def test_fetch_script_refuses_a_folder_it_cannot_write_before_downloading():
    p = subprocess.run([os.path.join(ROOT, "tools", "fetch-qemu-plugins.sh"), "/proc/no/such"],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip() == "fetch-qemu-plugins: cannot write to /proc/no/such"


def test_fetch_script_with_every_plugin_built_does_nothing_but_name_the_folder():
    real_run_needs()
    before = {f: os.path.getmtime(os.path.join(PLUGINS, f)) for f in os.listdir(PLUGINS)}
    p = subprocess.run([os.path.join(ROOT, "tools", "fetch-qemu-plugins.sh"), PLUGINS],
                       capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == PLUGINS and p.stderr == ""
    assert before == {f: os.path.getmtime(os.path.join(PLUGINS, f)) for f in os.listdir(PLUGINS)}


# ---- the queued delivery table ----

def delivery(kind):
    return next(d for d in run.DELIVERIES if d.kind == kind)


def test_ns_per_event_is_qluas_extra_time_over_the_events():
    assert run.ns_per_event(1500.0, 1000.0, 100_000_000) == pytest.approx(5.0)
    assert run.ns_per_event(900.0, 1000.0, 50_000_000) == pytest.approx(-2.0)  # noise shows


def test_marginal_cost_leaves_the_start_up_out():
    # 20 ms of start-up in both qlua runs, 8 ns per event on top
    short = (100 + 20 + 45e6 * 8e-6, 100, 45e6)
    long = (1000 + 20 + 450e6 * 8e-6, 1000, 450e6)
    assert run.marginal_ns(short, long) == pytest.approx(8.0)
    assert run.ns_per_event(*short) > 8.4  # the start-up weighs on the short run alone


def test_a_delivery_row_shows_both_runs_side_by_side_and_marks_the_goal():
    d = delivery("exec")
    short = (1000, 345.0, 90.0, 45_100_000)
    long = (10000, 3300.0, 900.0, 451_000_000)
    cells = run.delivery_cells(d, "/x/build", "luajit", short, long, 0)
    assert cells == ["insn:on_exec(fn)", "build", "1000", "45.1 M", "131", "5.7", "10000",
                     "451.0 M", "137", "5.3", "5.3", "=", "<= 10"]
    over = run.delivery_cells(d, "/x/build", "luajit", short, (10000, 6000.0, 900.0, 451e6), 0)
    assert over[-1] == "<= 10 ✗" and over[9] == "11.3"


def test_lua54_rows_carry_no_goal_and_lost_events_are_counted():
    d = delivery("trace")
    cells = run.delivery_cells(d, "/x/build-lua54", "lua54", (100, 1400.0, 40.0, 4_510_000),
                               (1000, 13600.0, 90.0, 45_100_000), 7)
    assert cells[-1] == "– (LuaJIT's)" and cells[-2] == "lost 7"
    assert cells[3] == "4.5 M" and cells[5] == "301.6"


def test_runs_size_by_kind_of_event_lua_and_quick():
    exec_, mem = delivery("exec"), delivery("mem")
    assert run.delivery_rounds(exec_, "luajit", False) == 1000
    assert run.delivery_rounds(mem, "luajit", False) == 5000  # fewer events per round
    assert run.delivery_rounds(exec_, "lua54", False) == 100
    assert run.delivery_rounds(mem, "lua54", True) == 50


def test_each_size_runs_c_once_just_before_the_qlua_runs_of_that_size():
    jobs = run.delivery_jobs(delivery("exec"), {"jit": "luajit", "jit2": "luajit",
                                                "l54": "lua54"}, False)
    assert jobs == [(None, 100), ("l54", 100), (None, 1000), ("jit", 1000), ("jit2", 1000),
                    ("l54", 1000), (None, 10000), ("jit", 10000), ("jit2", 10000)]


def test_a_builds_lua_is_read_from_its_meson_options():
    with tempfile.TemporaryDirectory() as tmp:
        assert run.lua_of(tmp) == "luajit"  # nothing to read: the default build
        os.mkdir(os.path.join(tmp, "meson-info"))
        with open(os.path.join(tmp, "meson-info", "intro-buildoptions.json"), "w") as f:
            f.write('[{"name": "buildtype", "value": "debug"}, {"name": "lua", "value": "lua54"}]')
        assert run.lua_of(tmp) == "lua54"



def test_a_lua54_builds_ratio_is_marked_against_its_own_goal():
    # issue 14: LuaJIT's goals per row, <= 3x for every Lua 5.4 row
    with tempfile.TemporaryDirectory() as lj, tempfile.TemporaryDirectory() as l54:
        os.mkdir(os.path.join(l54, "meson-info"))
        with open(os.path.join(l54, "meson-info", "intro-buildoptions.json"), "w") as f:
            f.write('[{"name": "lua", "value": "lua54"}]')
        counts = run.COUNTS[1]
        assert run.meets_goal(lj, 1.05, counts) and not run.meets_goal(lj, 1.06, counts)
        assert run.meets_goal(l54, 1.06, counts) and run.meets_goal(l54, 3.0, counts)
        assert not run.meets_goal(l54, 3.01, counts)
        assert run.meets_goal(lj, 1.054, counts), "ratios are judged as shown, to 2 decimals"
        assert not run.meets_goal(l54, 3.006, run.AHEAD[1])
        assert run.meets_goal(l54, 3.9, lambda r: r <= 4.0), "a looser row goal stands"


# ---- the estimate ----

def test_a_runs_estimate_multiplies_only_what_follows_qemus_start():
    assert run.est_ms(run.START_MS + 100, 3) == run.START_MS + 300
    assert run.est_ms(10, 50) == run.START_MS  # shorter than QEMU's start: nothing to multiply
    assert run.side_cost((5, 2, 9), None) == 5 and run.side_cost((5, 2, 9), "lua54") == 9


def flavors_by_name(monkeypatch):
    monkeypatch.setattr(run, "lua_of", lambda b: "lua54" if b.endswith("l54") else "luajit")


def test_the_plan_counts_every_qemu_run_of_the_selection(monkeypatch):
    flavors_by_name(monkeypatch)
    v = run.Variant("7.2", PLUGINS, ["/x/jit", "/x/l54"])
    row = next(r for r in run.SHIPPED if r.label == "cache")  # light: three programs have input
    pair = next(p for p in run.PAIRS if p.label == "a line printed per block")  # python3 only
    sel = {"rows": [row], "pairs": [pair], "deliveries": [delivery("mem")], "growth": True}
    planned = run.plan([v], sel, False, 3)
    assert len(planned["shipped"]) == 3 * 3 * 3  # programs x (C + 2 builds) x rounds
    assert len(planned["mechanisms"]) == 1 * 4 * 3  # python3 x (none, C, 2 builds) x rounds
    # C at 500, 5000 and 50000 rounds, LuaJIT at 5000 and 50000, Lua 5.4 at 500 and 5000
    assert len(planned["delivery"]) == 7 * 3
    assert len(planned["growth"]) == 2 * 4 * 3
    gzip = next(w for w in run.shipped_workloads("b", "/x") if w.name == "gzip -9")
    inp, cost = gzip.command(False, "light"), run.SHIPPED_COST["cache"]["gzip -9"]
    assert planned["shipped"][:3] == [run.est_ms(inp.ms, c) for c in cost]


def test_the_plan_of_another_host_leaves_out_the_tables_of_qemu_7_2_only():
    v = run.Variant("10.2", PLUGINS, ["/x/jit"])
    sel = {"rows": [], "pairs": run.PAIRS, "deliveries": run.DELIVERIES, "growth": False}
    assert run.plan([v], sel, False, 3) == {"shipped": [], "mechanisms": [], "delivery": [],
                                            "growth": []}


def test_the_estimate_prints_each_table_and_the_total():
    lines = run.estimate_lines({"shipped": [60000, 30000], "mechanisms": [], "delivery": [6000],
                                "growth": []})
    assert lines == ["  shipped         2 QEMU runs,   1.5 min",
                     "  delivery        1 QEMU runs,   0.1 min",
                     "  total           3 QEMU runs,   1.6 min"]


def test_a_full_run_is_estimated_to_fit_in_35_minutes_and_quick_in_two(monkeypatch):
    flavors_by_name(monkeypatch)
    full = run.Variant("7.2", PLUGINS, ["/x/jit", "/x/l54"])
    sel = {"rows": run.SHIPPED, "pairs": run.PAIRS, "deliveries": run.DELIVERIES, "growth": True}
    assert sum(sum(ms) for ms in run.plan([full], sel, False, 3).values()) < 35 * 60000
    quick = run.Variant("7.2", PLUGINS, ["/x/jit"])
    assert sum(sum(ms) for ms in run.plan([quick], sel, True, 1).values()) < 2 * 60000


def test_rows_of_each_size_find_their_input_or_skip_the_program():
    with tempfile.TemporaryDirectory() as tmp:
        ws = {w.name: w for w in run.shipped_workloads(BUILD, tmp)}
        assert ws["bzip2 -9"].command(False, "light") is None  # no light bzip2: cache skips it
        assert ws["bzip2 -9"].command(False, "full").ms >= 2000  # the program of 2 s and more
        assert ws["bzip2 -9"].command(True, "heavy").label == "16 KiB of text"
        assert ws["gzip -9"].command(False, "heavy").label == "8 MiB of text"
        assert ws["8 threads"].command(False, "full").make()[-1] == "20000"


def test_elapsed_and_estimated_times_read_in_minutes():
    assert run.fmt_minutes(90000) == "1.5 min"
    assert run.size_label(2560) == "2.5 MiB" and run.size_label(640) == "640 KiB"


# ---- bad settings of the delivery table ----

def test_a_libcref_without_the_modes_asked_for_stops_the_run_naming_the_rebuild():
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "bench"))
        with open(os.path.join(tmp, "bench", "libcref.so"), "wb") as f:
            f.write(b"\0bb_inline\0tb_cb\0insn_empty\0")  # an older plugin: no mem_empty
        sel = {"pairs": [], "deliveries": [delivery("exec"), delivery("mem")]}
        with pytest.raises(SystemExit) as e:
            run.check_cref(tmp, sel)
        assert str(e.value) == (f"bench: {tmp}/bench/libcref.so predates mode=mem_empty "
                                f"(rebuild it: ninja -C {tmp}; or pass --cref BUILD)")
        with pytest.raises(SystemExit) as e:
            run.check_cref(os.path.join(tmp, "none"), sel)
        assert "no bench/libcref.so in" in str(e.value) and "--cref BUILD" in str(e.value)


def test_zero_rounds_are_refused():
    p = bench("--runs", "0", "--estimate")
    assert p.returncode == 1
    assert p.stderr.strip() == "bench: --runs 0: expected a whole number of rounds, 1 or more"


def delivery_needs(build=BUILD):
    if not os.path.exists(os.path.join(build, "libqlua.so")):
        pytest.skip(f"no qlua build in {build}")
    if not os.path.exists(os.path.join(BUILD, "bench", "libcref.so")):
        pytest.skip(f"no bench/libcref.so in {BUILD}")


@pytest.mark.parametrize("build", [BUILD, BUILD_LUA54])
@pytest.mark.parametrize("kind", ["exec", "exec_data", "exec_counter", "mem", "trace",
                                  "trace_mem"])
def test_every_queued_event_reaches_lua_once_on_a_real_run(kind, build):
    delivery_needs(build)
    v = run.Variant("7.2", PLUGINS, [build])
    loop = os.path.join(BUILD, "tests", "loop")
    d = delivery(kind)
    with tempfile.TemporaryDirectory() as work:
        _, c_total, c_failed = run.one_delivery(v, BUILD, d, None, 20, loop, work)
        _, counted, q_failed = run.one_delivery(v, BUILD, d, build, 20, loop, work)
    assert c_failed is None and q_failed is None
    seen, native = counted
    per_round = 45000 if d.per == "insn" else 8000  # the loop guest's, about
    assert seen == native and native > 20 * per_round
    assert abs(native - c_total) < native // 100  # the C side counted the same events


def test_the_c_reference_refuses_an_unknown_mode_listing_the_accepted_ones():
    delivery_needs()
    p = subprocess.run(["qemu-x86_64", "-plugin",
                        os.path.join(BUILD, "bench", "libcref.so") + ",mode=empty",
                        os.path.join(BUILD, "tests", "loop"), "1"], capture_output=True, text=True)
    assert p.returncode != 0
    assert ("cref: expected one argument mode=MODE, MODE one of bb_inline, tb_cb, insn_cb, "
            "hotpages, trans, print, insn_empty, mem_empty; got mode=empty") in p.stderr


def test_the_delivery_script_refuses_an_unknown_kind_listing_the_accepted_ones():
    delivery_needs()
    script = os.path.join(HERE, "scripts", "delivery.lua")
    p = subprocess.run(["qemu-x86_64", "-plugin",
                        os.path.join(BUILD, "libqlua.so") + f",script={script},kind=on_exec",
                        os.path.join(BUILD, "tests", "loop"), "1"], capture_output=True, text=True)
    assert p.returncode != 0
    assert ("delivery.lua: kind=on_exec: expected one of exec, exec_data, exec_counter, mem, "
            "trace, trace_mem") in p.stderr


def test_a_rows_ratio_is_the_median_of_each_rounds_own_ratio():
    # round 2 ran while the machine was slow: both sides took twice as long
    c, q = [100, 200, 100], [110, 220, 120]
    assert run.paired_ratio(q, c) == pytest.approx(1.1)
    assert run.paired_ratio(q, c) != pytest.approx(statistics.median(q) / statistics.median(c))


def test_a_start_up_rows_figure_is_the_median_of_each_rounds_own_difference():
    # round 2 ran while the machine was slow: a ratio there would double the few ms of start-up
    c, q = [40, 80, 41], [44, 88, 44]
    assert run.paired_added(q, c) == pytest.approx(4)
    assert run.paired_added(q, c) != pytest.approx(statistics.median(q) - statistics.median(c))


def test_the_start_up_row_runs_alone_on_a_program_that_exits_and_the_inline_rows_run_long():
    startup = next(p for p in run.PAIRS if p.added_ms)
    inline = [p for p in run.PAIRS if p.label.startswith(("count (inline", "bb inline"))]
    for quick in (False, True):
        runs = list(run.mechanism_runs(run.mechanism_workloads("b", "/x", quick),
                                       [startup] + inline, quick))
        assert [(w.name, inp.label) for w, inp, p in runs if p is startup] == \
            [("/bin/true", "exits at once")]
        assert all(w.name != "/bin/true" for w, inp, p in runs if p is not startup)
        assert len([r for r in runs if r[2] is not startup]) == (2 if quick else 10)
    # long: start-up (a few ms) is at most ~3% of the run without a plugin, on every program
    for w, inp, p in run.mechanism_runs(run.mechanism_workloads("b", "/x", False), inline, False):
        assert inp.ms >= 150, (w.name, inp.label)
    planned = run.plan([run.Variant("7.2", PLUGINS, ["/x/jit"])],
                       {"rows": [], "pairs": [startup], "deliveries": [], "growth": False},
                       False, 3)
    assert len(planned["mechanisms"]) == 3 * 3 * run.STARTUP_ROUNDS  # (none, C, qlua) x rounds


def test_hwprofile_device_lines_agree_in_any_order_but_not_with_other_counts():
    head = "Device, Address, RCPUs, Reads,  WCPUs, Writes\n"
    a = head + "ioapic, 0x0, 1, 4, 1, 2\napic-msi, 0x0, 1, 3, 0, 0\nanon80a7eee0, 0x0, 1, 9, 0, 0\n"
    b = head + "anonb14a0e60, 0x0, 1, 9, 0, 0\napic-msi, 0x0, 1, 3, 0, 0\nioapic, 0x0, 1, 4, 1, 2\n"
    assert agree("hwprofile", a, b), "unnamed regions are named after a host pointer"
    assert not agree("hwprofile", a, b.replace("1, 4, 1, 2", "1, 5, 1, 2"))
    assert not agree("hwprofile", a, b.replace("1, 9, 0, 0", "1, 8, 0, 0"))


def test_the_linux_boot_runs_qemu_system_with_the_plugin_after_the_machines_options():
    v = run.Variant("7.2", PLUGINS, [BUILD])
    row = next(r for r in run.SHIPPED if r.script == "hwprofile")
    cmd, _, log = run.shipped_command(v, BUILD, row, ["-kernel", "k"], "/tmp/w", True, system=True)
    assert cmd[0] == v.qemu_system and cmd[1:3] == ["-kernel", "k"] and "-plugin" in cmd
    assert cmd[cmd.index("-plugin") + 1].endswith("libqlua.so,script=hwprofile") and log in cmd
