"""The error policy: runtime errors in each callback kind, onerror=warn, errors at load and
refused arguments."""
import os
import re
import tempfile

import pytest

from qemu_run import guest, qemu, script


FAIL_WHERE = {
    # where: (program, event label in the message)
    "translate": ("loop", "on_translate"),
    "tb_exec": ("loop", "tb:on_exec"),
    "insn_exec": ("loop", "insn:on_exec"),
    "mem": ("loop", "insn:on_mem"),
    "syscall": ("loop", "on_syscall"),
    "syscall_ret": ("loop", "on_syscall_ret"),
    "vcpu_init": ("loop", "on_vcpu_init"),
    "vcpu_exit": ("threads", "on_vcpu_exit"),
    "exit": ("loop", "on_exit"),
}


def fail_run(where, extra=()):
    program, label = FAIL_WHERE[where]
    args = [guest(program)] + (["5"] if program == "loop" else [])
    return qemu(["script=" + script("fail_in.lua"), "where=" + where] + list(extra), args), label


def test_runtime_error_in_each_callback_kind_stops_the_run():
    for where in FAIL_WHERE:
        r, label = fail_run(where)
        assert r.status == 1, f"{where}: status {r.status}, expected 1\n{r}"
        assert (re.search(rf"qlua: error in {re.escape(label)} callback: .*fail_in\.lua:\d+: boom in {where}",
                          r.err)), f"{where}: message lacks event, file:line and text\n{r}"
        assert "stack traceback:" in r.err, f"{where}: no traceback\n{r}"


def test_onerror_warn_disables_the_callback_and_the_guest_runs_on():
    for where in ["translate", "tb_exec", "insn_exec", "mem", "syscall", "vcpu_init", "exit"]:
        r, label = fail_run(where, ["onerror=warn"])
        assert r.status == 0, f"{where}: guest should finish\n{r}"
        assert "sum " in r.out, f"{where}: guest output missing\n{r}"
        warnings = r.err.count("callback disabled, onerror=warn")
        assert warnings == 1, f"{where}: {warnings} warnings, expected exactly 1\n{r}"
        if where != "exit":
            assert "fail_in: errors=1" in r.log, f"{where}: callback ran again after its error\n{r}"


@pytest.mark.exits_qemu
def test_syntax_error_names_file_and_line():
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local qemu = require 'qemu'\n\nlocal x = = 1\n")
    try:
        r = qemu(["script=" + f.name], [guest("loop"), "1"])
    finally:
        os.unlink(f.name)
    assert r.status == 1, f"QEMU must refuse to start\n{r}"
    assert re.search(re.escape(os.path.basename(f.name)) + r":3:", r.err), f"no file:line\n{r}"
    assert "sum" not in r.out, f"guest must not run\n{r}"


@pytest.mark.exits_qemu
def test_error_while_loading_stops_qemu():
    r = qemu(["script=" + script("fail_in.lua"), "where=top"], [guest("loop"), "1"])
    assert r.status == 1 and "boom in top" in r.err and "fail_in.lua:" in r.err, (
        f"top-level error\n{r}")
    assert "error while loading" in r.err and "sum" not in r.out, f"guest must not run\n{r}"


def test_stale_handles_raise_a_lua_error():
    for handle, rule in [("tb", "tb used outside its on_translate callback"),
                         ("insn", "insn used outside its on_translate callback"),
                         ("access", "access used outside its on_mem callback")]:
        r = qemu(["script=" + script("stale.lua"), "handle=" + handle], [guest("loop"), "2"])
        assert r.status == 1, f"{handle}: status {r.status}\n{r}"
        assert rule in r.err and "stale.lua:" in r.err, f"{handle}: message\n{r}"
        assert "about to touch" in r.log, f"{handle}: output before the error was lost\n{r}"


@pytest.mark.exits_qemu
def test_unknown_argument_is_rejected_with_the_accepted_ones():
    r = qemu(["script=" + script("all_events.lua"), "lau=off"], [guest("loop"), "1"])
    assert r.status == 1, f"must refuse\n{r}"
    assert "all_events.lua: unknown argument 'lau'; accepted: lua" in r.err, f"message\n{r}"
    r = qemu(["script=" + script("all_events.lua"), "lua=maybe"], [guest("loop"), "1"])
    assert r.status == 1 and "lua=maybe: expected a boolean (on, off" in r.err, f"bad bool\n{r}"
    r = qemu(["script=count", "foo=1"], [guest("loop"), "1"])
    assert r.status == 1 and "count.lua: unknown argument 'foo'; accepted: pid" in r.err, (
        f"count\n{r}")


@pytest.mark.exits_qemu
def test_missing_script_and_bad_options_are_explained():
    r = qemu(["script=nope"], [guest("loop"), "1"])
    assert r.status == 1 and "script=nope: no such file (tried nope, " in r.err, f"missing\n{r}"
    assert "scripts/nope.lua" in r.err, f"should say where it looked\n{r}"
    r = qemu([], [guest("loop"), "1"])
    assert r.status == 1 and "no script given. Usage:" in r.err and "onerror=" in r.err, (
        f"usage\n{r}")
    r = qemu(["script=count", "onerror=ignore"], [guest("loop"), "1"])
    assert r.status == 1 and "onerror=ignore: expected one of fail, warn" in r.err, f"onerror\n{r}"
    r = qemu(["script=count", "profile=yes"], [guest("loop"), "1"])
    assert r.status == 1 and "profile=yes: expected one of on, off" in r.err, f"profile\n{r}"
