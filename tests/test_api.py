"""The qemu module in real QEMU: info and features, translation handles, syscalls, counters,
handlers, uninstall and Lua C modules."""
import os
import re

import pytest

from qemu_run import SRC, guest, lua_file, run_lua, system_qemu, user_host


def test_info_and_features_describe_the_host():
    # what qlua reports against what the host's release offers (qemu_run.UserHost)
    host = user_host()
    r = run_lua("local i = qemu.info\n"
                "qemu.print(i.target, i.mode, i.api.cur, i.api.declared, tostring(i.system))\n"
                "qemu.print(qemu.has('syscalls'), qemu.has('idle'), qemu.has('inline'),"
                " qemu.has('scoreboard'), qemu.has('registers'), qemu.has('mem_value'))\n"
                "qemu.print(pcall(qemu.has, 'warp'))\n"
                "qemu.print(pcall(qemu.need, 'idle'))\n"
                "qemu.print(pcall(qemu.binary))\n"
                "qemu.on_syscall(function() local b = qemu.binary(); if b and not done then done = true;"
                " qemu.print(b.path, b.entry > 0, b.end_code > b.start_code) end end)")
    lines = r.log.splitlines()
    assert lines[0] == f"x86_64\tuser\t{host.api}\t{host.declared}\tfalse", f"info on {host}\n{r}"
    has = [host.inline, host.scoreboard, host.registers, host.mem_value]
    assert lines[1] == "\t".join(["true", "false"] + [str(h).lower() for h in has]), (
        f"has on {host}\n{r}")
    assert lines[2].startswith("false\t") and "unknown feature 'warp'; known: " in lines[2], (
        f"unknown\n{r}")
    assert "needs the 'idle' feature" in lines[3] and "system mode" in lines[3], f"need\n{r}"
    assert "not available while the script loads" in lines[4], f"binary at load\n{r}"
    assert lines[5] == guest("loop") + "\ttrue\ttrue", f"binary\n{r}"


# qemu.info has no features field: the names come from the core's info(), as qemu.has's do.
FEATURE_NAMES = """
local names = {}
for name in pairs(require("qlua.core").info().features) do names[#names + 1] = name end
table.sort(names)
qemu.print(table.concat(names, " "))
"""


def fake_core_features():
    """{table: sorted names} of the M.FEATURES and M.SINCE tables in spec/helpers/fake_core.lua."""
    text = open(os.path.join(SRC, "spec", "helpers", "fake_core.lua")).read()
    found = {}
    for table in ("FEATURES", "SINCE"):
        m = re.search(r"^M\.%s = \{\n(.*?)^\}" % table, text, re.M | re.S)
        assert m is not None, f"no M.{table} table in fake_core.lua"
        found[table] = sorted(re.findall(r"(\w+) = ", m.group(1)))
    return found


def test_fake_core_features_match_the_real_ones():
    # The specs' fake core copies shim/host.c's feature list by hand: compare it with what qlua
    # reports in user mode and in 7.2, 10.2 and 10.0 system mode (the last two may skip).
    fake = fake_core_features()

    def check(where, r):
        real = r.log.split()
        assert real, f"{where}: no feature names printed\n{r}"
        for table, names in fake.items():
            assert names == real, (
                f"{where}: fake_core.lua's M.{table} lists {names}, qlua reports {real}\n{r}")

    check(f"{user_host().release} user mode", run_lua(FEATURE_NAMES))
    path = lua_file(FEATURE_NAMES)
    try:
        for version in ("7.2", "10.2", "10.0"):
            check(f"{version} system mode", system_qemu(version, ["script=" + path]))
    finally:
        os.unlink(path)


def test_translation_handles_expose_instructions():
    # The loop guest is static and not stripped: main has a symbol, and its first block starts it.
    r = run_lua(
        "local seen = {}\n"
        "qemu.on_translate(function(tb)\n"
        "  local size = 0\n"
        "  for insn in tb:insns() do\n"
        "    size = size + insn.size\n"
        "    assert(#insn.bytes == insn.size, 'bytes length')\n"
        "    assert(type(insn.disas) == 'string' and #insn.disas > 0, 'disas')\n"
        "  end\n"
        "  assert(size == tb.size, 'tb.size is the sum of instruction sizes')\n"
        "  assert(tb[1].vaddr == tb.vaddr and tb[#tb].vaddr < tb.vaddr + tb.size and tb[#tb + 1] == nil)\n"
        "  local first = tb[1]\n"
        "  if first.symbol == 'main' and not seen.main then\n"
        "    seen.main = true\n"
        "    qemu.printf('main %s %d %s\\n', first.disas, first.index, tostring(first.haddr > 0))\n"
        "  end\n"
        "  for insn in tb:insns() do\n"
        "    if insn.disas == 'syscall ' and not seen.sys then\n"
        "      seen.sys = true\n"
        "      qemu.printf('syscall bytes %02x%02x\\n', insn.bytes:byte(1, 2))\n"
        "    end\n"
        "  end\n"
        "end)\n", extra=[])
    assert r.status == 0, f"script failed\n{r}"
    assert re.search(r"^main \S.* 1 true$", r.log, re.M), f"main's first instruction\n{r}"
    assert "syscall bytes 0f05" in r.log, f"syscall encoding\n{r}"


def test_syscall_arguments_and_results_reach_lua():
    # The loop guest writes "round 0\n" (8 bytes) with write(1, ...): x86_64 syscall 1.
    r = run_lua("qemu.on_syscall(function(vcpu, num, fd, buf, len)\n"
                "  if num == 1 and fd == 1 then qemu.printf('write len=%d buf>0=%s\\n', len, tostring(buf > 0)) end end)\n"
                "qemu.on_syscall_ret(function(vcpu, num, ret)\n"
                "  if num == 1 then qemu.printf('write ret=%d\\n', ret) end end)")
    assert "write len=8 buf>0=true" in r.log and "write ret=8" in r.log, f"syscall args\n{r}"


def test_a_script_that_needs_no_translations_stops_qemu_reporting_them_until_it_asks():
    # QEMU prepares every block for instrumentation while a plugin takes translations, so qlua
    # takes them only while something needs them: here nothing does after the first (a syscall
    # counter), then a handler added from a syscall callback and a count_every rule bring them
    # back, and a script with an on_translate handler sees them all along
    syscalls_only = ("local n = 0\n"
                     "qemu.on_syscall(function() n = n + 1 end)\n"
                     "qemu.on_exit(function() qemu.print('syscalls', n, "
                     "'translations', qemu.memory().translations) end)\n")
    quiet = run_lua(syscalls_only, [guest("loop"), "3"])
    m = re.search(r"^syscalls\t(\d+)\ttranslations\t(\d+)$", quiet.log, re.M)
    assert quiet.status == 0 and m, f"the report\n{quiet}"
    assert int(m.group(1)) > 5, f"syscalls still reach Lua\n{quiet}"
    assert 1 <= int(m.group(2)) <= 3, f"translations stop after the first\n{quiet}"

    told = run_lua(syscalls_only + "qemu.on_translate(function() end)\n", [guest("loop"), "3"])
    seen = int(re.search(r"translations\t(\d+)", told.log).group(1))
    assert seen > 100, f"an on_translate handler sees every translation\n{told}"

    later = run_lua("local calls, blocks, c = 0, 0, qemu.counter()\n"
                    "qemu.on_syscall(function()\n"
                    "  calls = calls + 1\n"
                    "  if calls == 3 then\n"
                    "    qemu.on_translate(function() blocks = blocks + 1 end)\n"
                    "    qemu.count_every('insn', c)\n"
                    "  end\n"
                    "end)\n"
                    "qemu.on_exit(function() qemu.print('late', blocks, c:sum() > 0) end)\n",
                    [guest("loop"), "3"])
    m = re.search(r"^late\t(\d+)\ttrue$", later.log, re.M)
    assert later.status == 0 and m and int(m.group(1)) > 10, (
        f"a handler added later gets the translations from then on\n{later}")


def test_lua_c_modules_load():
    r = run_lua("local lfs = require 'lfs'\nqemu.print(type(lfs.currentdir()))")
    assert r.status == 0 and r.log == "string\n", f"require 'lfs' failed\n{r}"


def test_uninstall_runs_exit_handlers_and_the_guest_finishes():
    r = run_lua("local n = 0\n"
                "qemu.on_translate(function(tb) n = n + 1; if n == 10 then qemu.uninstall() end end)\n"
                "qemu.on_exit(function() qemu.printf('translated %d\\n', n) end)",
                [guest("loop"), "3"])
    assert r.status == 0 and "sum " in r.out, f"guest must finish\n{r}"
    m = re.search(r"^translated (\d+)$", r.log, re.M)
    assert m and int(m.group(1)) >= 10, f"exit handler output\n{r}"


@pytest.mark.exits_qemu
def test_uninstall_while_loading_is_refused():
    r = run_lua("qemu.uninstall()")
    assert r.status == 1 and "cannot run while the script loads" in r.err, f"uninstall at load\n{r}"


def test_counters_from_lua_and_per_vcpu_values():
    r = run_lua("local c = qemu.counter()\nc:add(5)\nc:add(2, 3)\n"
                "qemu.print(c:sum(), c:get(0), c:get(3), c:get(1))\nc:reset()\nqemu.print(c:sum())")
    assert r.log == "7\t5\t2\t0\n0\n", f"counter arithmetic\n{r}"


def test_handlers_of_one_event_run_in_order():
    r = run_lua("qemu.on_exit(function() qemu.print('first') end)\n"
                "qemu.on_exit(function() qemu.print('second') end)")
    assert r.log == "first\nsecond\n", f"order\n{r}"
