"""Tests of scripts/bb.lua, insn.lua, mem.lua and syscall.lua (ports of QEMU's tests/plugin
examples), run in real QEMU against the oracle loaded in the same run or facts of the guest."""
import os
import re

import pytest

from qemu_run import (LOOPS, fields, guest, lua_file, qemu, qemu_scripts, run_lua, symbol,
                      system_qemu, user_host)


def checked_run(args, program, oracle=True):
    r = qemu(args, program, oracle=oracle)
    assert r.status == 0, f"{args}: QEMU failed\n{r}"
    return r


def one_line(run, pattern):
    """The groups of the one log line matching `pattern` (a regex for the whole line)."""
    found = re.findall("^" + pattern + "$", run.log, re.M)
    assert len(found) == 1, f"expected one line matching {pattern!r}, found {len(found)}\n{run}"
    return found[0]


def oracle_counts(run):
    return {k: int(v) for k, v in fields(run.log, "oracle").items()}


def two_scripts(first, second, program):
    """Runs the oracle and two qlua scripts in one QEMU: `second` in a copy of libqlua.so (one
    library runs one script). Output of both goes to the same log, whole lines each."""
    r = qemu_scripts([first, second], program, oracle=True)
    assert r.status == 0, f"QEMU with two scripts failed\n{r}"
    return r


# ---- bb.lua ----

def test_bb_counts_every_executed_block_like_the_oracle():
    for extra in ([], ["inline=on"]):
        r = checked_run(["script=bb"] + extra, [guest("loop"), "20"])
        o = oracle_counts(r)
        bbs, insns = map(int, one_line(r, r"bb's: (\d+), insns: (\d+)"))
        assert bbs == o["tbs"] and bbs > 0, f"{extra}: bb's {bbs} != oracle tbs {o['tbs']}\n{r}"
        # a block adds all its instructions when it starts, so blocks left early over-count
        assert insns >= o["insns"], f"{extra}: insns {insns} < oracle {o['insns']}\n{r}"
        assert r.log.count("\n") == 2, f"only the bb line and the oracle's\n{r}"


def test_bb_is_exact_with_8_threads():
    r = checked_run(["script=bb", "inline=on"], [guest("threads")])
    bbs, _ = map(int, one_line(r, r"bb's: (\d+), insns: (\d+)"))
    assert bbs == oracle_counts(r)["tbs"], f"bb's differs from the oracle under 8 threads\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_bb_system_mode_reports_each_vcpu_or_the_total_with_inline():
    r = system_qemu("7.2", ["script=bb", "idle=on"], smp=2, oracle=True)
    assert r.status == 33, f"guest exit status\n{r}"
    # only vCPU 0 runs the bare guest; vCPU 1 stays halted, so it has no line
    bbs, insns = map(int, one_line(r, r"CPU0: bb's: (\d+), insns: (\d+)"))
    # the last block is left at the port write that ends QEMU: whole-block counting over-counts
    assert bbs == oracle_counts(r)["tbs"] and insns >= oracle_counts(r)["insns"], (
        f"CPU0 counts\n{r}")
    assert "CPU1" not in r.log, f"a vCPU that ran nothing has no line\n{r}"
    r = system_qemu("7.2", ["script=bb", "inline=on"], smp=2, oracle=True)
    bbs, _ = map(int, one_line(r, r"bb's: (\d+), insns: (\d+)"))
    assert bbs == oracle_counts(r)["tbs"], f"inline=on total\n{r}"


# ---- insn.lua ----

def test_insn_counts_match_the_oracle_in_both_modes():
    r = checked_run(["script=insn"], [guest("loop"), "20"])
    o = oracle_counts(r)
    cpu0 = int(one_line(r, r"cpu 0 insns: (\d+)"))
    total = int(one_line(r, r"total insns: (\d+)"))
    assert cpu0 == total == o["insns"], f"callback mode: cpu0 {cpu0}, total {total}\n{r}"
    r = checked_run(["script=insn", "inline=on"], [guest("loop"), "20"])
    assert int(one_line(r, r"insns: (\d+)")) == oracle_counts(r)["insns"], (
        f"inline mode total\n{r}")
    assert "repeat" not in r.log and "cpu " not in r.log, f"inline=on prints only the total\n{r}"


def test_insn_counts_each_vcpu_with_8_threads():
    r = checked_run(["script=insn"], [guest("threads")])
    per = {int(v): int(n) for v, n in re.findall(r"^cpu (\d+) insns: (\d+)$", r.log, re.M)}
    total = int(one_line(r, r"total insns: (\d+)"))
    assert len(per) >= 2 and all(n > 0 for n in per.values()), f"per-vCPU lines {per}\n{r}"
    assert sum(per.values()) == total == oracle_counts(r)["insns"], (
        f"per-vCPU sum, total, oracle\n{r}")
    assert list(per) == sorted(per), f"lines in vCPU order\n{r}"


REP_BYTES, LOOP_TIMES = 100, 50  # tests/guests/repeats.c


def match_rows(run):
    """(address, disassembly, hits, match hits, delta, average) of each match line."""
    rows = re.findall(r"^0x([0-9a-f]+), '([^']*)', (\d+) hits, (\d+) match hits, "
                      "\u0394\\+(\\d+) since last match, (\\d+) avg insns/match$", run.log, re.M)
    return [(int(a, 16), d, int(h), int(m), int(delta), int(avg)) for a, d, h, m, delta, avg in rows]


def repeat_counts(run):
    found = {}
    for a in re.findall(r"^detected repeat execution @ 0x([0-9a-f]+)$", run.log, re.M):
        found[int(a, 16)] = found.get(int(a, 16), 0) + 1
    return found


def test_insn_detects_each_repeat_execution():
    # repeats.c: each round runs `loop_site` LOOP_TIMES times in a row and `rep_site` once per
    # byte in a row (once per round from QEMU 10.0, where a rep instruction's iterations loop
    # inside its translation); an execution right after one of the same instruction is a repeat.
    host = user_host()
    rounds = 7
    program = guest("repeats")
    rep_site, loop_site = symbol(program, "rep_site"), symbol(program, "loop_site")
    r = checked_run(["script=insn", "match=rep|loop"], [program, str(rounds)])
    assert f"repeats {rounds} " in r.out, f"guest output\n{r}"
    repeats = repeat_counts(r)
    assert repeats.get(loop_site) == rounds * (LOOP_TIMES - 1), (
        f"loop_site: {repeats.get(loop_site)} repeats, expected {rounds * (LOOP_TIMES - 1)}\n{r}")
    execs = {}
    for addr, *_ in match_rows(r):
        execs[addr] = execs.get(addr, 0) + 1
    assert execs.get(loop_site) == rounds * LOOP_TIMES, f"loop_site executions\n{r}"
    if host.rep_once:
        assert execs.get(rep_site) == rounds, f"rep_site executes once a round on {host}\n{r}"
    else:
        assert execs.get(rep_site, 0) >= rounds * REP_BYTES, (
            f"rep_site executes once per byte on {host}\n{r}")
    # only instructions that loop on themselves repeat (here: rep string ops and loop_site)
    assert set(repeats) <= set(execs), (
        f"repeats at {sorted(map(hex, set(repeats) - set(execs)))}\n{r}")
    # every execution of rep_site but the first of each round repeats the one before
    assert repeats.get(rep_site, 0) == execs[rep_site] - rounds, f"rep_site repeats\n{r}"
    assert int(one_line(r, r"total insns: (\d+)")) == oracle_counts(r)["insns"], f"total\n{r}"
    # match= repeated, as QEMU takes it, reports the same as one '|'-separated value
    r2 = checked_run(["script=insn", "match=rep", "match=loop"], [program, str(rounds)])
    assert match_rows(r2) == match_rows(r), (
        f"match=rep,match=loop equals match=rep|loop\n{r2}")


def test_insn_prints_full_repeat_addresses_of_a_pie_program():
    # QEMU's own plugin truncates these to 32 bits; QEMU loads a PIE guest at 0x4000000000.
    # A rep instruction repeats where it executes once per iteration (7.2); from QEMU 10.0 it
    # executes once per run of iterations, so there the match lines carry the addresses.
    r = checked_run(["script=insn", "match=rep"], ["/bin/ls", "-l", "/"])
    repeats = repeat_counts(r)
    reps = {addr for addr, disas, *_ in match_rows(r) if disas.startswith("rep")}
    if user_host().rep_once:
        assert reps and all(a >= 2 ** 32 for a in reps), f"rep addresses above 4 GiB\n{r}"
    else:
        assert len(repeats) > 0, f"ls repeats no rep instruction?\n{r}"
        assert all(a >= 2 ** 32 for a in repeats), f"addresses above 4 GiB\n{r}"
    assert set(repeats) <= reps, (
        f"repeat addresses {sorted(map(hex, set(repeats) - reps))} "
        f"are no rep instructions\n{r}")


def test_insn_match_reports_every_execution_with_running_statistics():
    r = checked_run(["script=insn", "match=syscall"], [guest("loop"), "20"])
    o = oracle_counts(r)
    rows = match_rows(r)
    assert len(rows) == o["syscalls"], (
        f"{len(rows)} match lines, oracle syscalls {o['syscalls']}\n{r}")
    total_delta, per_copy = 0, {}
    for i, (addr, disas, hits, mhits, delta, avg) in enumerate(rows, 1):
        assert disas.startswith("syscall"), f"line {i}: {disas}\n{r}"
        assert mhits == i, f"line {i}: match hits {mhits}\n{r}"
        assert hits == per_copy.get(addr, 0) + 1, f"line {i}: hits of 0x{addr:x}\n{r}"
        per_copy[addr] = hits
        total_delta += delta
        assert avg == total_delta // mhits, f"line {i}: average\n{r}"
    assert 0 < total_delta <= o["insns"], f"the deltas add up to the count at the last match\n{r}"
    # in inline mode too the deltas are real (QEMU prints 0 there)
    r2 = checked_run(["script=insn", "match=syscall", "inline=on"], [guest("loop"), "20"])
    assert [row[4] for row in match_rows(r2)] == [row[4] for row in rows], (
        f"inline=on deltas\n{r2}")
    # consecutive executions of one instruction are 1 instruction apart
    program = guest("repeats")
    r = checked_run(["script=insn", "match=loop"], [program, "3"])
    loop_site = symbol(program, "loop_site")
    rows = match_rows(r)
    assert all(row[0] == loop_site for row in rows) and len(rows) == 3 * LOOP_TIMES, (
        f"loop rows\n{r}")
    assert sum(row[4] == 1 for row in rows) == 3 * (LOOP_TIMES - 1), (
        f"Δ+1 between iterations\n{r}")


def test_insn_sizes_counts_translated_instructions_by_length():
    probe = lua_file("local n = {}\n"
                     "qemu.on_translate(function(tb) for i in tb:insns() do"
                     " n[i.size] = (n[i.size] or 0) + 1 end end)\n"
                     "qemu.on_exit(function() for s = 1, 15 do if n[s] then"
                     " qemu.printf('probe %d %d\\n', s, n[s]) end end end)\n")
    try:
        r = two_scripts(["script=insn", "sizes=on"], ["script=" + probe], [guest("loop"), "5"])
    finally:
        os.unlink(probe)
    mine = re.findall(r"^len (\d+) bytes: (\d+) insns$", r.log, re.M)
    seen = re.findall(r"^probe (\d+) (\d+)$", r.log, re.M)
    assert mine == seen and len(mine) >= 5, f"sizes differ from the translations seen\n{r}"
    assert any(size == "2" for size, _ in mine), f"syscall is 2 bytes long\n{r}"
    assert "total insns" not in r.log, f"sizes=on replaces the counts\n{r}"


# ---- mem.lua ----
# mem.lua speaks the format of the QEMU it runs on (scripts/mem.lua): 7.2's where the plugin API
# is 1 (an "inline" and a "callback" line, both at once), 10.x's from API 2 on (one "mem accesses"
# line; inline= and callback= are exclusive).

def mem_format_10():
    return user_host().api >= 2


def test_mem_counts_match_the_oracle_for_each_track():
    for extra, want in [([], lambda o: o["reads"] + o["writes"]),
                        (["track=rw"], lambda o: o["reads"] + o["writes"]),
                        (["track=r"], lambda o: o["reads"]),
                        (["track=w"], lambda o: o["writes"])]:
        if not mem_format_10():
            r = checked_run(["script=mem", "inline=on", "callback=on", "haddr=on"] + extra,
                            [guest("loop"), "10"])
            expected = want(oracle_counts(r))
            inline = int(one_line(r, r"inline mem accesses: (\d+)"))
            callback = int(one_line(r, r"callback mem accesses: (\d+)"))
            assert inline == callback == expected and expected > 0, (
                f"{extra}: inline {inline}, callback {callback}, oracle {expected}\n{r}")
            assert one_line(r, r"io accesses: (\d+)") == "0", f"user mode has no I/O accesses\n{r}"
            continue
        for way in ("inline=on", "callback=on"):
            r = checked_run(["script=mem", way, "haddr=on"] + extra, [guest("loop"), "10"])
            expected = want(oracle_counts(r))
            assert expected > 0 and r.log.startswith(
                f"mem accesses: {expected}\nio accesses: 0\noracle:"), (
                f"{way} {extra} on {user_host()}: {expected} accesses, none to I/O\n{r}")


def test_mem_prints_only_what_was_asked():
    r = checked_run(["script=mem"], [guest("loop"), "2"])
    assert r.log.startswith("oracle:"), f"no counting asked: no output\n{r}"
    r = checked_run(["script=mem", "callback=on", "track=w"], [guest("loop"), "2"])
    label = "mem accesses" if mem_format_10() else "callback mem accesses"
    assert r.log.splitlines()[0] == f"{label}: {oracle_counts(r)['writes']}", (
        f"callback on {user_host()}\n{r}")
    assert "inline" not in r.log and "io accesses" not in r.log, f"only the callback line\n{r}"
    r = checked_run(["script=mem", "haddr=on"], [guest("loop"), "2"])
    assert r.log.splitlines()[0] == "io accesses: 0", f"haddr alone\n{r}"


def test_mem_is_exact_with_8_threads():
    if not mem_format_10():
        r = checked_run(["script=mem", "inline=on", "callback=on", "track=r"], [guest("threads")])
        o = oracle_counts(r)
        assert int(one_line(r, r"inline mem accesses: (\d+)")) == o["reads"], f"inline\n{r}"
        assert int(one_line(r, r"callback mem accesses: (\d+)")) == o["reads"], f"callback\n{r}"
        return
    for way in ("inline=on", "callback=on"):
        r = checked_run(["script=mem", way, "track=r"], [guest("threads")])
        assert int(one_line(r, r"mem accesses: (\d+)")) == oracle_counts(r)["reads"], (
            f"{way} on {user_host()}\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_mem_system_mode_tells_io_from_ram():
    # boot.S: LOOPS iterations of one 4-byte store and one load, all to RAM
    for track, want in [("rw", 2 * LOOPS), ("r", LOOPS), ("w", LOOPS)]:
        r = system_qemu("7.2", ["script=mem", "inline=on", "callback=on", "haddr=on",
                                "track=" + track], smp=1)
        assert r.status == 33, f"guest exit status\n{r}"
        assert (r.log == f"inline mem accesses: {want}\ncallback mem accesses: {want}\n"
                "io accesses: 0\n"), f"track={track}\n{r}"


@pytest.mark.exits_qemu
def test_mem_rejects_an_unknown_track():
    r = qemu(["script=mem", "track=x"], [guest("loop"), "1"])
    assert r.status == 1 and "mem.lua: track=x: expected one of r, w, rw" in r.err, f"track\n{r}"


# ---- syscall.lua ----

def syscall_table(run):
    lines = run.log.splitlines()
    start = lines.index("syscall no.  calls  errors")
    rows = []
    for line in lines[start + 1:]:
        m = re.match(r"^(-?\d+) *(\d+) +(\d+)$", line)
        if not m:
            break
        assert line == "%-13d%-6d %d" % tuple(map(int, m.groups())), f"row format: {line!r}\n{run}"
        rows.append(tuple(map(int, m.groups())))
    return rows


def test_syscall_table_matches_the_printed_events_and_the_oracle():
    r = two_scripts(["script=syscall"], ["script=syscall", "print=on"], ["/bin/ls", "-l", "/"])
    o = oracle_counts(r)
    rows = syscall_table(r)
    assert sum(c for _, c, _ in rows) == o["syscalls"], (
        f"calls add up to the oracle's syscalls\n{r}")
    assert rows == sorted(rows, key=lambda row: (-row[1], row[0])), (
        f"ranked by calls, then number\n{r}")
    calls = re.findall(r"^syscall #(-?\d+)$", r.log, re.M)
    rets = re.findall(r"^syscall #(-?\d+) returned -> (-?\d+)$", r.log, re.M)
    assert len(calls) == o["syscalls"] and len(rets) == o["syscall_rets"], f"print=on lines\n{r}"
    for num, n_calls, errors in rows:
        assert n_calls == calls.count(str(num)), f"syscall {num}: calls\n{r}"
        assert errors == sum(1 for n, ret in rets if n == str(num) and int(ret) < 0), (
            f"syscall {num}: errors\n{r}")
    assert any(e > 0 for _, _, e in rows), f"ls has failing syscalls\n{r}"


def test_syscall_print_shows_each_call_and_its_result():
    r = checked_run(["script=syscall", "print=on"], [guest("loop"), "3"])
    o = oracle_counts(r)
    assert len(re.findall(r"^syscall #\d+$", r.log, re.M)) == o["syscalls"], f"calls\n{r}"
    assert len(re.findall(r"^syscall #\d+ returned -> -?\d+$", r.log, re.M)) == o["syscall_rets"], (
        f"returns\n{r}")
    # loop.c writes "round 0\n" (8 bytes) with write(2) (x86_64 syscall 1)
    assert "syscall #1\nsyscall #1 returned -> 8\n" in r.log, f"the guest's write\n{r}"
    assert "syscall no." not in r.log, f"print=on prints no table\n{r}"


def test_syscall_table_is_exact_with_8_threads():
    r = checked_run(["script=syscall"], [guest("threads")])
    rows = syscall_table(r)
    assert sum(c for _, c, _ in rows) == oracle_counts(r)["syscalls"], f"calls under 8 threads\n{r}"
    getpid = [row for row in rows if row[0] == 39]  # each thread calls getpid every 20 rounds
    assert getpid == [(39, 8 * 400 // 20, 0)], f"getpid row {getpid}\n{r}"


# ---- mem.lua, QEMU 10.x format (plugin API >= 2): system mode on QEMU 10.0 ----
# boot.S (64 KiB image at 0xf0000): "xor %ax,%ax" (2 bytes) and "mov %ax,%ds" (2) and
# "mov $LOOPS,%ecx" (6) put the store "mov %ecx,0x1000" at 0xf000a and the 5-byte store before the
# load "mov 0x1000,%edx" at 0xf000f; iteration i stores and loads ecx = LOOPS - i at 0x1000.

def mem10_run(extra, image="boot.bin"):
    r = system_qemu("10.0", ["script=mem"] + extra, smp=1, image=image)
    assert r.status == 33, f"{extra}: the guest exits through isa-debug-exit with status 33\n{r}"
    return r


def access_line(pc, kind, value):
    return f"0x{pc:x},,0x1000,0x1000,32,{kind},0x{value:08x}"


@pytest.mark.user_host_independent  # system mode only
def test_mem_10_counts_in_one_line():
    for extra, want in [(["inline=on"], f"mem accesses: {2 * LOOPS}\n"),
                        (["callback=on"], f"mem accesses: {2 * LOOPS}\n"),
                        (["inline=on", "track=w"], f"mem accesses: {LOOPS}\n"),
                        (["callback=on", "track=r"], f"mem accesses: {LOOPS}\n"),
                        (["callback=on", "haddr=on"], f"mem accesses: {2 * LOOPS}\nio accesses: 0\n"),
                        (["inline=on", "haddr=on"], f"mem accesses: {2 * LOOPS}\nio accesses: 0\n"),
                        (["haddr=on"], "io accesses: 0\n"),
                        ([], "")]:
        r = mem10_run(extra)
        assert r.log == want, f"{extra}: expected {want!r}\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_mem_10_haddr_moves_device_accesses_to_the_io_line():
    # io.S: 6 reads and 3 writes reach the local APIC and the IOAPIC
    for track, io in [("rw", 9), ("r", 6), ("w", 3)]:
        total = int(one_line(mem10_run(["inline=on", "track=" + track], "io.bin"),
                                r"mem accesses: (\d+)"))
        r = mem10_run(["callback=on", "haddr=on", "track=" + track], "io.bin")
        assert r.log == f"mem accesses: {total - io}\nio accesses: {io}\n", (
            f"track={track}: {total} accesses of which {io} I/O\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_mem_10_print_accesses_lists_every_access_with_its_value():
    for track, kinds in [("rw", ["store", "load"]), ("w", ["store"]), ("r", ["load"])]:
        r = mem10_run(["print-accesses=on", "track=" + track])
        want = ["insn_vaddr,insn_symbol,mem_vaddr,mem_hwaddr,access_size,access_type,mem_value"]
        for ecx in range(LOOPS, 0, -1):
            for kind in kinds:
                want.append(access_line(0xf000a if kind == "store" else 0xf000f, kind, ecx))
        lines = r.log.splitlines()
        assert len(lines) == len(want), f"track={track}: {len(lines)} lines, want {len(want)}\n{r}"
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(lines, want)) if a != b]
        assert not bad, f"track={track}: first difference (line, got, want): {bad[:1]}\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_mem_10_print_accesses_shows_device_addresses():
    r = mem10_run(["print-accesses=on", "track=w"], "io.bin")
    rows = [line.split(",") for line in r.log.splitlines()[1:]]
    io = [(row[2], row[3], row[4], row[5]) for row in rows if row[2].startswith("0xfe")]
    assert (io == [("0xfee00080", "0xfee00080", "32", "store")] * 2
            + [("0xfec00000", "0xfec00000", "32", "store")]), f"device stores: {io}\n{r}"
    assert ([row[6] for row in rows if row[2].startswith("0xfe")]
            == ["0x00000000", "0x00000000", "0x00000001"]), f"values stored to the devices\n{r}"
    assert rows[-1][1:] == ["", "0x1000", "0x1000", "32", "store", "0x00000007"], f"RAM store\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_mem_10_region_summary_checks_loads_against_stores():
    head = "Region Base, Reads, Writes, Seen all\n"
    r = mem10_run(["region-summary=on"])
    assert r.log == head + f"0x{0:016x}, {LOOPS}, {LOOPS}, true\n", f"every load saw its store\n{r}"
    r = mem10_run(["region-summary=on", "inline=on"])
    assert r.log == f"mem accesses: {2 * LOOPS}\n" + head + f"0x{0:016x}, {LOOPS}, {LOOPS}, true\n", (
        f"each access counts once\n{r}")
    # loads only: the first one returns 1000 where nothing was seen stored (offset 0x1000)
    r = mem10_run(["region-summary=on", "track=r"])
    assert (r.log == f"Warning: 0x{0:016x}:4096 read an un-instrumented value\n" + head
            + f"0x{0:016x}, {LOOPS}, 0, false\n"), f"unseen stores\n{r}"
    r = mem10_run(["region-summary=on", "track=w", "callback=on"])
    assert r.log == f"mem accesses: {LOOPS}\n" + head + f"0x{0:016x}, 0, {LOOPS}, true\n", (
        f"stores only\n{r}")


@pytest.mark.exits_qemu
@pytest.mark.user_host_independent  # system mode only
def test_mem_10_refuses_inline_with_callback():
    r = system_qemu("10.0", ["script=mem", "inline=on", "callback=on"], smp=1)
    assert (r.status == 1 and "mem.lua: can't enable inline and callback counting at the same time"
            in r.err), f"inline= and callback= are exclusive on QEMU 10\n{r}"


@pytest.mark.exits_qemu
def test_mem_7_2_refuses_the_10x_arguments_naming_the_feature():
    if user_host().mem_value:
        pytest.skip(f"{user_host()} has access values: test_mem_prints_accesses_in_user_mode "
                    "and test_mem_region_summary_in_user_mode run the arguments there")
    for arg in ["print-accesses=on", "region-summary=on"]:
        r = qemu(["script=mem", arg], [guest("loop"), "1"])
        assert (r.status == 1 and f"mem.lua: {arg}: " in r.err and "'mem_value' feature" in r.err
                and "QEMU 9.2" in r.err), f"{arg} on QEMU 7.2\n{r}"


ACCESS_LINE = re.compile(r"0x[0-9a-f]+,[\w.@]*,0x[0-9a-f]+,0x0,(8|16|32|64|128),(load|store),"
                         r"0x([0-9a-f]+)")


def test_mem_prints_accesses_in_user_mode():
    # on a host with access values: after the header, one line per access the oracle saw, each
    # with the physical address 0x0 (user mode) and the value in as many digits as its width
    host = user_host()
    if not host.mem_value:
        pytest.skip(f"{host} has no access values: "
                    "test_mem_7_2_refuses_the_10x_arguments_naming_the_feature covers it")
    r = qemu(["script=mem", "print-accesses=on"], [guest("loop"), "1"], oracle=True)
    # (under LuaJIT an 8-byte value from 2^64 - 1024 up, a store of -1, once reached Lua as the
    # double 2^64, which no u64 is, and the run stopped there)
    assert r.status == 0, f"print-accesses in user mode on {host}\n{r}"
    lines = r.log.splitlines()
    assert lines[0] == ("insn_vaddr,insn_symbol,mem_vaddr,mem_hwaddr,access_size,access_type,"
                        "mem_value"), f"the header\n{r}"
    rows = [ACCESS_LINE.fullmatch(line) for line in lines[1:-1]]
    bad = [line for line, m in zip(lines[1:-1], rows)
           if not m or len(m.group(3)) * 4 != int(m.group(1))]
    assert not bad, f"malformed lines, e.g. {bad[:3]}\n{r}"
    o = oracle_counts(r)
    kinds = [m.group(2) for m in rows]
    assert (kinds.count("load"), kinds.count("store")) == (o["reads"], o["writes"]), (
        f"one line per load and per store the oracle saw\n{r}")


def test_mem_region_summary_in_user_mode():
    # the region rows add up to every load and store the oracle saw
    host = user_host()
    if not host.mem_value:
        pytest.skip(f"{host} has no access values: "
                    "test_mem_7_2_refuses_the_10x_arguments_naming_the_feature covers it")
    r = checked_run(["script=mem", "region-summary=on"], [guest("loop"), "2"])
    lines = r.log.splitlines()
    head = lines.index("Region Base, Reads, Writes, Seen all")
    rows = [re.fullmatch(r"0x([0-9a-f]{16}), (\d+), (\d+), (true|false)", line)
            for line in lines[head + 1:-1]]
    assert rows and all(rows) and lines[-1].startswith("oracle:"), f"region rows\n{r}"
    bases = [int(m.group(1), 16) for m in rows]
    assert bases == sorted(bases) and all(b % 16384 == 0 for b in bases), f"16 KiB regions\n{r}"
    o = oracle_counts(r)
    assert (sum(int(m.group(2)) for m in rows), sum(int(m.group(3)) for m in rows)) == (
        o["reads"], o["writes"]), f"reads and writes of all regions against the oracle\n{r}"
