"""Tests of scripts/hotblocks.lua, scripts/hotpages.lua and scripts/howvec.lua (ports of QEMU 7.2's
contrib plugins)."""
import os
import re
import subprocess
import tempfile

import pytest

from qemu_run import LOOPS, QEMU_AARCH64, SRC, fields, guest, qemu, system_qemu


HB_ROW = re.compile(r"^0x([0-9a-f]{16}), (\d+), (\d+), (\d+)$")


HP_ROW = re.compile(r"^0x([0-9a-f]{16}), 0x([0-9a-f]{4,}), (\d+), 0x([0-9a-f]{4,}), (\d+)$")


HV_CLASS = re.compile(r"^Class: (.{24,}?)\t\((\d+) hits\)$")


HV_INSN = re.compile(r"^Instr: (.{24,}?)\t\((\d+) hits\)\t\(op=0x([0-9a-f]{8})/(.*)\)$")


def without_oracle(log):
    return "".join(l for l in log.splitlines(True) if not l.startswith("oracle:"))


def hotblocks(run):
    """Parses hotblocks output: (entries collected, [(pc, tcount, icount, ecount), ...])."""
    lines = without_oracle(run.log).splitlines()
    m = re.fullmatch(r"collected (\d+) entries in the hash table", lines[0]) if lines else None
    assert m is not None, f"no 'collected N entries' line\n{run}"
    n = int(m.group(1))
    if n == 0:
        assert len(lines) == 1, f"no rows expected for an empty table\n{run}"
        return n, []
    assert lines[1] == "pc, tcount, icount, ecount", f"header line\n{run}"
    rows = []
    for line in lines[2:]:
        r = HB_ROW.match(line)
        assert r is not None, f"malformed row {line!r}\n{run}"
        rows.append((int(r.group(1), 16), int(r.group(2)), int(r.group(3)), int(r.group(4))))
    assert len(rows) == min(20, n), f"{len(rows)} rows for {n} entries\n{run}"
    keys = [(-e, pc, ic) for pc, _, ic, e in rows]
    assert keys == sorted(keys), f"rows not ranked by ecount, then address\n{run}"
    return n, rows


def hotpages(run):
    """Parses hotpages output: [(addr, rcpus, reads, wcpus, writes), ...]."""
    lines = without_oracle(run.log).splitlines()
    assert lines and lines[0] == "Addr, RCPUs, Reads, WCPUs, Writes", f"header line\n{run}"
    rows = []
    for line in lines[1:]:
        r = HP_ROW.match(line)
        assert r is not None, f"malformed row {line!r}\n{run}"
        rows.append((int(r.group(1), 16), int(r.group(2), 16), int(r.group(3)),
                     int(r.group(4), 16), int(r.group(5))))
    assert len(rows) <= 50, f"more than 50 rows\n{run}"
    return rows


def howvec(run):
    """Parses howvec output: ({class: hits or 'individually' or 'not counted'}, [instr rows])."""
    lines = without_oracle(run.log).splitlines()
    assert lines and lines[0] == "Instruction Classes:", f"first line\n{run}"
    classes, instrs, i = {}, [], 1
    while i < len(lines) and lines[i].startswith("Class: "):
        m = HV_CLASS.match(lines[i])
        if m:
            classes[m.group(1).strip()] = int(m.group(2))
        else:
            m = re.match(r"^Class: (.{24,}?)\t(counted individually|not counted)$", lines[i])
            assert m is not None, f"malformed class line {lines[i]!r}\n{run}"
            classes[m.group(1).strip()] = m.group(2)
        i += 1
    if i < len(lines):
        assert lines[i] == "Individual Instructions:", f"unexpected line {lines[i]!r}\n{run}"
        for line in lines[i + 1:]:
            m = HV_INSN.match(line)
            assert m is not None, f"malformed instruction line {line!r}\n{run}"
            instrs.append((m.group(1).rstrip(), int(m.group(2)), int(m.group(3), 16), m.group(4)))
        assert len(instrs) <= 50, f"more than 50 instructions\n{run}"
    return classes, instrs


def ok(run, what):
    assert run.status == 0, f"{what}: QEMU failed\n{run}"
    return run


# ---- hotblocks ----

def test_hotblocks_hottest_block_is_the_inner_loop_in_both_modes():
    # loop.c's inner loop runs 4096 times a round: its body block starts 4095 or 4096 times a round
    # (4095 when the first iteration runs inside the block that enters the loop).
    tops = {}
    for rounds in (100, 300):
        outputs = []
        for mode in ("on", "off"):
            r = ok(qemu(["script=hotblocks", "inline=" + mode], [guest("loop"), str(rounds)]), mode)
            n, rows = hotblocks(r)
            assert n > 20, f"only {n} entries collected\n{r}"
            pc, tcount, icount, ecount = rows[0]
            assert ecount in (4095 * rounds, 4096 * rounds), (
                f"hottest block ran {ecount} times, expected 4095 or 4096 x {rounds}\n{r}")
            assert tcount == 1 and icount > 1, f"the loop body is translated once\n{r}"
            outputs.append(r.log)
            tops[rounds] = (pc, icount, ecount)
        assert outputs[0] == outputs[1], (
            "inline=on and inline=off disagree:\n" + outputs[0] +
            "\n---\n" + outputs[1])
    assert tops[300][:2] == tops[100][:2] and tops[300][2] == 3 * tops[100][2], (
        f"hottest block should run 3x as often with 3x the rounds: {tops}")


@pytest.mark.user_host_independent  # system mode only
def test_hotblocks_counts_every_block_execution_exactly_in_system_mode():
    # The bare-metal guest has 4 blocks, so the whole table is listed: the ecounts add up to the
    # blocks the oracle saw run, and the loop block (4 instructions) runs LOOPS - 1 times (the
    # first iteration is part of the entry block). On QEMU 7.2 inline=off feeds a tally from a
    # callback; on 10.0 (scoreboards) both modes take per-block counters.
    for version, mode in (("7.2", "on"), ("7.2", "off"), ("10.0", "off")):
        r = system_qemu(version, ["script=hotblocks", "inline=" + mode], oracle=True)
        assert r.status == 33, f"the guest exits through isa-debug-exit with status 33\n{r}"
        n, rows = hotblocks(r)
        assert n == len(rows) < 20, f"the table must be complete\n{r}"
        assert sum(row[3] for row in rows) == int(fields(r.log, "oracle")["tbs"]), (
            f"ecounts do not add up to the oracle's blocks\n{r}")
        assert rows[0][2:] == (4, LOOPS - 1), f"loop block: expected 4 insns, {LOOPS - 1} runs\n{r}"


def test_hotblocks_is_exact_with_8_threads():
    # threads.c: 8 threads x 400 rounds x 512 iterations of one inner loop.
    for mode in ("on", "off"):
        r = ok(qemu(["script=hotblocks", "inline=" + mode], [guest("threads")]), mode)
        assert "threads 8 total" in r.out, f"guest output\n{r}"
        _, rows = hotblocks(r)
        assert rows[0][3] in (8 * 400 * 511, 8 * 400 * 512), (
            f"hottest block ran {rows[0][3]} times: counts lost or doubled\n{r}")


# ---- hotpages ----

def table_range():
    """The address range of loop.c's `table` (4096 unsigned longs), from the guest's symbols."""
    out = subprocess.run(["nm", guest("loop")], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^([0-9a-f]+) [bB] table$", out, re.M)
    assert m is not None, "no 'table' symbol in the loop guest:\n" + out
    start = int(m.group(1), 16)
    return start, start + 4096 * 8


def test_hotpages_totals_and_table_pages_match_the_guest():
    rounds = 100
    r = ok(qemu(["script=hotpages"], [guest("loop"), str(rounds)], oracle=True), "hotpages")
    rows = hotpages(r)
    oracle = fields(r.log, "oracle")
    assert 0 < len(rows) < 50, f"{len(rows)} pages: the listing must hold them all\n{r}"
    assert sum(p[2] for p in rows) == int(oracle["reads"]), f"reads differ from the oracle\n{r}"
    assert sum(p[4] for p in rows) == int(oracle["writes"]), f"writes differ from the oracle\n{r}"
    assert all(p[1] in (0, 1) and p[3] in (0, 1) for p in rows), f"one vCPU: masks 0 or 1\n{r}"
    assert all(p[0] % 4096 == 0 for p in rows), f"page addresses must be 4 KiB aligned\n{r}"
    keys = [(-(p[2] + p[4]), p[0]) for p in rows]
    assert keys == sorted(keys), f"not ranked by reads + writes, then address\n{r}"
    # Each round loads and stores every element of `table` once: a page inside it sees
    # 512 * rounds of each.
    start, end = table_range()
    inside = [p for p in rows if p[0] >= start and p[0] + 4096 <= end]
    assert len(inside) >= 7, f"expected the 7+ pages inside table, found {len(inside)}\n{r}"
    for p in inside:
        assert p[2] == p[4] == 512 * rounds, f"page {p[0]:#x}: {p[2]} reads, {p[4]} writes\n{r}"


def test_hotpages_sort_orders_and_page_size():
    # Each run is checked on its own against the oracle: where the guest's stack and heap land can
    # differ from run to run (the host's memory layout decides, e.g. under ASan).
    prog = [guest("loop"), "20"]

    def complete(extra):
        r = ok(qemu(["script=hotpages"] + extra, prog, oracle=True), " ".join(extra))
        rows = hotpages(r)
        oracle = fields(r.log, "oracle")
        assert 0 < len(rows) < 50, f"{len(rows)} pages: the listing must hold them all\n{r}"
        assert sum(p[2] for p in rows) == int(oracle["reads"]), f"reads differ from the oracle\n{r}"
        assert sum(p[4] for p in rows) == int(oracle["writes"]), (
            f"writes differ from the oracle\n{r}")
        return r, rows

    r, rows = complete(["sortby=address"])
    addrs = [p[0] for p in rows]
    assert addrs == sorted(set(addrs), reverse=True), f"sortby=address: highest address first\n{r}"
    for what, col in (("reads", 2), ("writes", 4)):
        r, rows = complete(["sortby=" + what])
        keys = [(-p[col], p[0]) for p in rows]
        assert keys == sorted(keys), f"sortby={what}: most {what} first, ties by address\n{r}"
    r, rows = complete(["pagesize=65536"])
    assert all(p[0] % 65536 == 0 for p in rows), f"64 KiB pages must be 64 KiB aligned\n{r}"
    r = ok(qemu(["script=hotpages", "io=on"], prog), "io")
    assert without_oracle(r.log) == "Addr, RCPUs, Reads, WCPUs, Writes\n", (
        f"user mode has no I/O accesses\n{r}")


@pytest.mark.exits_qemu
def test_hotpages_rejects_bad_arguments():
    prog = [guest("loop"), "1"]
    r = qemu(["script=hotpages", "pagesize=1000"], prog)
    assert r.status == 1 and "pagesize=1000: expected a power of two" in r.err, (
        f"pagesize check\n{r}")
    r = qemu(["script=hotpages", "sortby=size"], prog)
    assert r.status == 1 and "sortby=size: expected one of reads, writes, address" in r.err, (
        f"sortby check\n{r}")


def test_hotpages_masks_and_totals_with_8_threads():
    r = ok(qemu(["script=hotpages"], [guest("threads"), "50"], oracle=True), "threads")
    rows = hotpages(r)
    oracle = fields(r.log, "oracle")
    assert len(rows) < 50, f"{len(rows)} pages: the listing must hold them all\n{r}"
    assert sum(p[2] for p in rows) == int(oracle["reads"]), f"reads differ from the oracle\n{r}"
    assert sum(p[4] for p in rows) == int(oracle["writes"]), f"writes differ from the oracle\n{r}"
    rmask = wmask = 0
    for p in rows:
        rmask |= p[1]
        wmask |= p[3]
    # vCPU indices are reused once threads exit, so which of 1..8 appear depends on timing.
    assert rmask & 1 and wmask & 1 and rmask & ~1 and wmask & ~1, (
        f"the main thread and other threads must appear: {rmask:#x} {wmask:#x}\n{r}")
    assert rmask <= 0x1ff and wmask <= 0x1ff, f"at most 9 vCPUs: {rmask:#x} {wmask:#x}\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_hotpages_in_system_mode_counts_by_physical_page():
    # boot.S: LOOPS stores and LOOPS loads at physical 0x1000, nothing else; the port write is not
    # a memory access.
    r = system_qemu("7.2", ["script=hotpages"])
    assert r.status == 33, f"guest\n{r}"
    assert (r.log == "Addr, RCPUs, Reads, WCPUs, Writes\n"
            f"0x0000000000001000, 0x0001, {LOOPS}, 0x0001, {LOOPS}\n"), f"the one page\n{r}"
    r = system_qemu("7.2", ["script=hotpages", "io=on"])
    assert r.status == 33 and r.log == "Addr, RCPUs, Reads, WCPUs, Writes\n", (
        f"no I/O accesses\n{r}")


# ---- howvec ----

X86_CLASSES = ["Integer ALU", "Integer Mul/Div", "Move (reg/imm)", "Load/Store", "Push/Pop",
               "String ops", "Atomic/Fence", "Cond Branch", "Branch", "Call/Return",
               "System/Syscall", "Nop/Hint", "x87 FP", "Scalar FP (SSE/AVX)",
               "SIMD (SSE/AVX/MMX)", "Unclassified"]


def test_howvec_x86_class_hits_add_up_to_the_instructions_executed():
    for program in ([guest("loop"), "20"], ["/bin/ls", "-l", "/"]):
        logs = []
        for mode in ("on", "off"):
            r = ok(qemu(["script=howvec", "inline=" + mode], program, oracle=True), mode)
            classes, instrs = howvec(r)
            assert not instrs, f"nothing is counted individually by default\n{r}"
            assert list(classes) == [c for c in X86_CLASSES if c in classes], f"class order\n{r}"
            assert all(v > 0 for v in classes.values()), f"only classes with hits are listed\n{r}"
            assert sum(classes.values()) == int(fields(r.log, "oracle")["insns"]), (
                f"class hits differ from the oracle's instruction count\n{r}")
            logs.append(without_oracle(r.log))
        if program[0] == guest("loop"):  # deterministic, unlike ls
            assert logs[0] == logs[1], "inline=on and inline=off disagree:\n" + "\n".join(logs)


INSNMIX_PER_ITERATION = {
    "Integer ALU": 5, "Integer Mul/Div": 1, "Move (reg/imm)": 1, "Load/Store": 2, "Push/Pop": 2,
    "String ops": 1, "Atomic/Fence": 1, "Cond Branch": 1, "Branch": 1, "Call/Return": 2,
    "System/Syscall": 1, "Nop/Hint": 1, "x87 FP": 2, "Scalar FP (SSE/AVX)": 1,
    "SIMD (SSE/AVX/MMX)": 1, "Unclassified": 0,
}


def test_howvec_x86_classes_of_a_known_instruction_mix():
    # insnmix.c runs a loop of known instructions N times; runs with N = 1000 and 3000 (same
    # length, so the same environment) differ by 2000 iterations of it, and by nothing else.
    runs = {}
    for n in (1000, 3000):
        r = ok(qemu(["script=howvec", "verbose=on"], [guest("insnmix"), str(n)], oracle=True), n)
        assert "insnmix done" in r.out, f"guest output\n{r}"
        classes, _ = howvec(r)
        assert list(classes) == X86_CLASSES, f"verbose=on lists every class, in order\n{r}"
        assert sum(classes.values()) == int(fields(r.log, "oracle")["insns"]), f"total\n{r}"
        runs[n] = classes
    for name, per in INSNMIX_PER_ITERATION.items():
        delta = runs[3000][name] - runs[1000][name]
        assert delta == 2000 * per, f"{name}: grew by {delta}, expected 2000 x {per}\n{runs}"


def test_howvec_counts_chosen_classes_individually_or_not_at_all():
    runs = {}
    for n in (1000, 3000):
        r = ok(qemu(["script=howvec", "count=x87", "count=!nop"], [guest("insnmix"), str(n)],
                    oracle=True), n)
        classes, instrs = howvec(r)
        assert classes["x87 FP"] == "counted individually", f"x87 line\n{r}"
        assert classes["Nop/Hint"] == "not counted", f"nop line\n{r}"
        assert re.search(r"^Class: x87 FP {18}\tcounted individually$", r.log, re.M), (
            f"padding\n{r}")
        assert all(cls == "x87 FP" for _, _, _, cls in instrs), f"only x87 listed\n{r}"
        keys = [(-hits, op) for _, hits, op, _ in instrs]
        assert keys == sorted(keys), f"instructions ranked by hits, then op\n{r}"
        runs[n] = {(d, op): hits for d, hits, op, _ in instrs}
    for key, per in ((("fld1", 0xe8d9), 1), (("fstp %st(0)", 0xd8dd), 1)):
        delta = runs[3000].get(key, 0) - runs[1000].get(key, 0)
        assert delta == 2000 * per, f"{key}: grew by {delta}, expected {2000 * per}\n{runs}"


@pytest.mark.exits_qemu
def test_howvec_rejects_unknown_classes():
    r = qemu(["script=howvec", "count=vector"], [guest("loop"), "1"])
    assert (r.status == 1 and
            "count=vector: unknown class 'vector' for x86_64; classes: alu, " in r.err), (
        f"unknown class\n{r}")


AARCH64_GCC = "aarch64-linux-gnu-gcc"


def build_aarch64_guest(tmp, name, extra=()):
    """Builds tests/guests/NAME.c for aarch64 (static) into tmp; skips without a cross compiler."""
    try:
        out = os.path.join(tmp, name)
        subprocess.run([AARCH64_GCC, "-static", "-O1", "-pthread", "-o", out,
                        os.path.join(SRC, "tests", "guests", name + ".c")] + list(extra),
                       check=True, capture_output=True)
        return out
    except FileNotFoundError:
        pytest.skip(f"{AARCH64_GCC} not installed (tools/setup-debian.sh installs it)")


def qemu_aarch64(plugin_args, program):
    """qemu-aarch64 with the oracle and qlua."""
    return qemu(plugin_args, program, oracle=True, binary=QEMU_AARCH64)


def test_howvec_aarch64_uses_qemus_class_table():
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in (("loop", ["20"]), ("threads", ["20"])):
            program = [build_aarch64_guest(tmp, name)] + args
            logs = []
            for mode in ("on", "off"):
                # count=nop: NOPs listed one by one, so only UDEF (never executed) is left uncounted
                r = ok(qemu_aarch64(["script=howvec", "count=nop", "inline=" + mode], program),
                       name)
                classes, instrs = howvec(r)
                assert classes["UDEF"] == "not counted", f"UDEF line\n{r}"
                assert classes["NOP"] == "counted individually", f"NOP line\n{r}"
                assert re.search(r"^Class:   UDEF {18}\tnot counted$", r.log, re.M), f"padding\n{r}"
                assert re.search(r"^Class:   Cond Branch \(imm\)     \t\(\d+ hits\)$", r.log, re.M), (
                    f"a branch class with QEMU's name\n{r}")
                assert all(op == 0xd503201f and cls == "    NOP" for _, _, op, cls in instrs), (
                    f"only the NOP encoding is listed\n{r}")
                total = sum(v for v in classes.values() if isinstance(v, int))
                total += sum(hits for _, hits, _, _ in instrs)
                assert total == int(fields(r.log, "oracle")["insns"]), (
                    f"{name}: hits differ from the oracle's instruction count\n{r}")
                if name == "loop":
                    logs.append(without_oracle(r.log))
            assert len(set(logs)) <= 1, "inline=on and inline=off disagree:\n" + "\n".join(logs)
        program = [build_aarch64_guest(tmp, "loop"), "1"]
        r = ok(qemu_aarch64(["script=howvec", "verbose=on"], program), "verbose")
        classes, _ = howvec(r)
        assert len(classes) == 42 and classes["Unclassified"] == 0, f"verbose: all 42 classes\n{r}"
