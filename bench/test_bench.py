"""Tests of the benchmark's own machinery (not of qlua): what bench/compare.py counts as agreeing
outputs, that a shipped script and QEMU's plugin really agree on a real run, and that bad
settings stop run.py and tools/fetch-qemu-plugins.sh with a message saying what to do.
Run: /usr/bin/python3 -m pytest -q bench/test_bench.py (real runs need build/ and the plugins of
tools/fetch-qemu-plugins.sh; they skip, saying so, without them)."""
import os
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
        program = run.shipped_workloads(BUILD, tmp)[0].command(True, False)  # gzip, small
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
