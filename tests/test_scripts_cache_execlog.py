"""Tests of scripts/cache.lua and scripts/execlog.lua."""
import os
import re
import subprocess

import pytest

from qemu_run import (LOOPS, QEMU_10_2, env_without_preload, fields, guest, qemu, symbol,
                      system_qemu, user_host)


CACHE_HEADER = ("core #, data accesses, data misses, dmiss rate, insn accesses, insn misses, "
                 "imiss rate")


CACHE_ROW = re.compile(r"^(\d+|sum) +(\d+) +(\d+) +(\d+\.\d{4})%  (\d+) +(\d+) +(\d+\.\d{4})%"
                        r"(?:  (\d+) +(\d+) +(\d+\.\d{4})%)?$")


def cache_run(extra, program, oracle=False):
    r = qemu(["script=cache"] + list(extra), program, oracle=oracle)
    assert r.status == 0, f"cache.lua run failed\n{r}"
    return r


def cache_summary(r):
    """{core: [d_acc, d_miss, i_acc, i_miss, l2_acc, l2_miss]} from the summary table, checking
    its layout (header, one line per row in QEMU's column widths, an empty line after)."""
    lines = r.log.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("core #")), None)
    assert start is not None, f"no summary header\n{r}"
    rows = {}
    i = start + 1
    while lines[i]:
        m = CACHE_ROW.match(lines[i])
        assert m is not None, f"malformed summary row {lines[i]!r}\n{r}"
        first = m.group(1)
        assert lines[i].startswith(first.ljust(8)), f"core column is 8 wide\n{r}"
        nums = [int(x) for x in m.group(2, 3, 5, 6)]
        if m.group(8):
            nums += [int(m.group(8)), int(m.group(9))]
        for acc, miss, rate in ((nums[0], nums[1], m.group(4)), (nums[2], nums[3], m.group(7))):
            assert miss <= acc, f"more misses than accesses in {lines[i]!r}\n{r}"
            assert rate == "%.4f" % (miss / acc * 100 if acc else 0.0), f"rate in {lines[i]!r}\n{r}"
        rows[first] = nums
        i += 1
    return lines[start], rows


def cache_tables(r):
    """{title: [(addr, symbol or None, count, disas)]} for each top-N table."""
    tables, current = {}, None
    for line in r.log.splitlines():
        if line.startswith("oracle:"):
            continue
        if line.startswith("address, "):
            current = tables.setdefault(line, [])
        elif current is not None and line:
            m = re.match(r"^0x([0-9a-f]+)(?: \((.*?)\))?, (\d+), (.*)$", line)
            assert m is not None, f"malformed table row {line!r}\n{r}"
            current.append((int(m.group(1), 16), m.group(2), int(m.group(3)), m.group(4)))
        elif not line:
            current = None
    return tables


DMISS = "address, data misses, instruction"


IMISS = "address, fetch misses, instruction"


L2MISS = "address, L2 misses, instruction"


def test_cache_accesses_equal_the_oracle_and_l2_sees_every_l1_miss():
    for extra in ([], ["l2=on"], ["evict=fifo", "l2cachesize=65536", "l2assoc=4"]):
        r = cache_run(extra, [guest("loop"), "3"], oracle=True)
        o = fields(r.log, "oracle")
        header, rows = cache_summary(r)
        l2 = bool(extra)
        assert header == CACHE_HEADER + (", l2 accesses, l2 misses, l2 miss rate" if l2 else ""), (
            f"{extra}: header\n{r}")
        assert list(rows) == ["0"], f"{extra}: user mode simulates one core\n{r}"
        d_acc, d_miss, i_acc, i_miss = rows["0"][:4]
        assert d_acc == int(o["reads"]) + int(o["writes"]), f"{extra}: data accesses != oracle\n{r}"
        assert i_acc == int(o["insns"]), f"{extra}: insn accesses != oracle insns\n{r}"
        assert 0 < d_miss < d_acc and 0 < i_miss < i_acc, f"{extra}: implausible misses\n{r}"
        tables = cache_tables(r)
        assert list(tables) == [DMISS, IMISS] + ([L2MISS] if l2 else []), f"{extra}: tables\n{r}"
        if l2:
            l2_acc, l2_miss = rows["0"][4:]
            assert l2_acc == d_miss + i_miss, f"{extra}: L2 is accessed on each L1 miss only\n{r}"
            assert 0 < l2_miss <= l2_acc, f"{extra}: L2 misses\n{r}"


def test_cache_counts_the_fetches_of_blocks_left_in_the_middle_by_a_fault_exactly():
    # cache.lua sends only the first fetch of each run of instructions in one cache block through
    # the model and counts the rest natively, per instruction: a block left at a fault must not
    # count the instructions after it (the faults guest leaves one 2000 times, mid-line)
    for extra in ([], ["l2=on", "iblksize=16"]):
        r = cache_run(extra, [guest("faults"), "2000"], oracle=True)
        assert "2000 faults" in r.out, f"{extra}: the guest's faults\n{r}"
        o = fields(r.log, "oracle")
        _, rows = cache_summary(r)
        d_acc, _, i_acc, i_miss = rows["0"][:4]
        assert i_acc == int(o["insns"]), f"{extra}: insn accesses != oracle insns\n{r}"
        assert d_acc == int(o["reads"]) + int(o["writes"]), f"{extra}: data accesses\n{r}"
        assert 0 < i_miss < i_acc, f"{extra}: implausible fetch misses\n{r}"
        if extra:
            assert rows["0"][4] == rows["0"][1] + i_miss, f"L2 sees every L1 miss\n{r}"


def test_cache_in_system_mode_counts_every_fetch_through_traps_and_interrupts():
    # traps.bin leaves blocks at ud2 and div-by-zero faults, int3, int $0x30 and timer interrupts;
    # boot.bin with 2 vCPUs gives a row per simulated core
    for image, smp in (("traps.bin", 1), ("boot.bin", 2)):
        r = system_qemu("7.2", ["script=cache"], smp=smp, oracle=True, image=image)
        assert r.status == 33, f"{image}: the guest exits through isa-debug-exit\n{r}"
        o = fields(r.log, "oracle")
        _, rows = cache_summary(r)
        total = rows["sum"] if smp > 1 else rows["0"]
        assert list(rows) == [str(c) for c in range(smp)] + (["sum"] if smp > 1 else []), (
            f"{image}: one row per vCPU\n{r}")
        assert total[2] == int(o["insns"]), f"{image}: insn accesses != oracle insns\n{r}"
        assert 0 < total[3] < total[2], f"{image}: implausible fetch misses\n{r}"


def test_cache_per_core_rows_add_up_to_the_oracle_with_8_threads():
    r = cache_run(["cores=3", "limit=4"], [guest("threads")], oracle=True)
    o = fields(r.log, "oracle")
    _, rows = cache_summary(r)
    assert list(rows) == ["0", "1", "2", "sum"], f"three cores and a sum row\n{r}"
    for j in range(4):
        assert rows["sum"][j] == sum(rows[c][j] for c in "012"), f"sum column {j}\n{r}"
    assert rows["sum"][0] == int(o["reads"]) + int(o["writes"]), f"data accesses != oracle\n{r}"
    assert rows["sum"][2] == int(o["insns"]), f"insn accesses != oracle insns\n{r}"
    assert all(rows[c][2] > 0 for c in "012"), f"9 vCPUs spread over 3 cores\n{r}"


def test_cache_top_tables_rank_by_count_then_address_within_the_limit():
    r = cache_run(["limit=7", "l2=on"], [guest("loop"), "2"])
    tables = cache_tables(r)
    for title, rows in tables.items():
        assert len(rows) == 7, f"{title}: limit=7 rows\n{r}"
        keys = [(-count, addr) for addr, _, count, _ in rows]
        assert keys == sorted(keys), f"{title}: not ranked by count, then address\n{r}"
    # The loop guest's hottest load (table[i] in main) misses once per 8 elements of 8 bytes.
    top = tables[DMISS][0]
    assert top[1] == "main" and top[2] >= 2 * 4096 // 8, f"main's table load misses most\n{r}"
    r = cache_run(["limit=0"], [guest("loop"), "1"])
    assert (r.log.endswith("\n\naddress, data misses, instruction\n\naddress, fetch misses, "
                           "instruction\n")), f"limit=0: titles only\n{r}"


def sweep_misses(extra, passes, nbytes, step, table=DMISS):
    """Data (or L2) misses of the single load in the stride guest's sweep()."""
    r = cache_run(["limit=100000"] + extra, [guest("stride"), str(passes), str(nbytes), str(step)])
    rows = [row for row in cache_tables(r)[table] if row[1] == "sweep" and "(" in row[3]]
    assert len(rows) == 1 and rows[0][3].startswith("movzb"), f"sweep's load not found\n{r}"
    return rows[0][2], r


def test_cache_misses_of_a_strided_sweep_follow_from_the_geometry():
    # 8 KiB, 4 ways, 64-byte blocks: 32 sets. 16 KiB = 256 blocks, 8 per set: LRU and FIFO miss
    # on every access of every pass; 4 KiB = 64 blocks, 2 per set: only compulsory misses.
    geometry = ["dcachesize=8192", "dassoc=4", "dblksize=64"]
    for policy in ("lru", "fifo"):
        misses, r = sweep_misses(geometry + ["evict=" + policy], 3, 16384, 64)
        assert misses == 3 * 256, f"{policy}: thrashing sweep: {misses} != 768\n{r}"
        misses, r = sweep_misses(geometry + ["evict=" + policy], 3, 4096, 64)
        assert misses == 64, f"{policy}: fitting sweep: {misses} != 64\n{r}"
    # Block size: 16-byte steps touch each 64-byte block 4 times (1 miss), each 16-byte block once.
    misses, r = sweep_misses(geometry, 1, 4096, 16)
    assert misses == 64, f"64-byte blocks, 16-byte steps: {misses} != 64\n{r}"
    misses, r = sweep_misses(["dcachesize=8192", "dassoc=4", "dblksize=16"], 1, 4096, 16)
    assert misses == 256, f"16-byte blocks, 16-byte steps: {misses} != 256\n{r}"
    # Direct-mapped, 4 KiB: 8 KiB of array puts two blocks in every set, which evict each other.
    misses, r = sweep_misses(["dcachesize=4096", "dassoc=1"], 2, 8192, 64)
    assert misses == 2 * 128, f"direct-mapped conflicts: {misses} != 256\n{r}"
    # The default 2 MiB L2 holds the whole array: only first-pass (compulsory) misses reach past it.
    misses, r = sweep_misses(geometry + ["l2=on"], 3, 16384, 64, table=L2MISS)
    assert misses == 256, f"L2 misses: {misses} != 256\n{r}"


def test_cache_rand_eviction_is_reproducible_and_bounded():
    extra = ["dcachesize=8192", "dassoc=4", "evict=rand", "seed=7"]
    first, r1 = sweep_misses(extra, 3, 16384, 64)
    second, r2 = sweep_misses(extra, 3, 16384, 64)
    assert 256 < first < 3 * 256, f"rand keeps some blocks across passes: {first}\n{r1}"
    assert r1.log == r2.log, f"same seed, same run: the reports must be identical\n{r2}"
    # Fitting (2 array blocks a set) still loses some: a miss in a full set may evict any way,
    # also an array block, where LRU would have evicted older start-up data.
    fitting, r = sweep_misses(extra, 3, 4096, 64)
    assert 64 <= fitting < 3 * 64, f"fitting sweep under rand: {fitting}\n{r}"


@pytest.mark.exits_qemu
def test_cache_bad_arguments_are_refused_with_the_reason():
    for arg, text in [("dcachesize=1000", "dcache cannot be constructed from given parameters "
                       "(size 1000, block 64, assoc 8): cache size must be divisible by block size"),
                      ("iassoc=3", "icache cannot be constructed from given parameters (size 16384, "
                       "block 64, assoc 3): cache size must be divisible by set size"),
                      ("l2blksize=48", "L2 cache cannot be constructed"),
                      ("evict=mru", "evict=mru: expected one of lru, fifo, rand"),
                      ("limit=-1", "limit=-1: expected an integer >= 0")]:
        r = qemu(["script=cache", arg], [guest("loop"), "1"])
        assert r.status == 1 and text in r.err, f"{arg}: refusal\n{r}"


# ---- execlog ----

EXECLOG_LINE = re.compile(r'^(\d+), 0x([0-9a-f]+), 0x([0-9a-f]+), "(.*)"((?:, (?:load|store), '
                           r'0x[0-9a-f]{8,})*)$')


def execlog(extra, program, oracle=False):
    r = qemu(["script=execlog"] + list(extra), program, oracle=oracle)
    assert r.status == 0, f"execlog.lua run failed\n{r}"
    lines = [l for l in r.log.splitlines() if not l.startswith("oracle:")]
    parsed = []
    for line in lines:
        m = EXECLOG_LINE.match(line)
        assert m is not None, f"malformed line {line!r}\n{r}"
        parsed.append((int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16), m.group(4),
                       re.findall(r", (load|store), ", m.group(5))))
    return r, parsed


def test_execlog_logs_each_executed_instruction_and_access_once():
    r, lines = execlog([], [guest("loop"), "1"], oracle=True)
    o = fields(r.log, "oracle")
    assert len(lines) == int(o["insns"]), f"{len(lines)} lines != {o['insns']} instructions\n{r}"
    loads = sum(kinds.count("load") for *_, kinds in lines)
    stores = sum(kinds.count("store") for *_, kinds in lines)
    assert (loads, stores) == (int(o["reads"]), int(o["writes"])), f"accesses != oracle\n{r}"
    assert {vcpu for vcpu, *_ in lines} == {0}, f"one vCPU\n{r}"
    # The opcode is the instruction's own bytes (at most 4, little-endian), never what follows it.
    for _, _, op, disas, _ in lines:
        assert op < 1 << 32, f"opcode 0x{op:x} has more than 4 bytes\n{r}"
        if disas == "syscall ":
            assert op == 0x050f, f"syscall opcode 0x{op:x}\n{r}"
        elif disas == "retq ":
            assert op == 0xc3, f"retq opcode 0x{op:x}\n{r}"


def without_vcpu(lines):
    return [(pc, op, disas, kinds) for _, pc, op, disas, kinds in lines]


def test_execlog_filters_keep_exactly_the_matching_instructions():
    _, full = execlog([], [guest("loop"), "1"])
    r, sys_lines = execlog(["ifilter=syscall"], [guest("loop"), "1"], oracle=True)
    want = [l for l in full if l[3].startswith("syscall")]
    assert without_vcpu(sys_lines) == without_vcpu(want), f"ifilter=syscall lines\n{r}"
    assert len(sys_lines) == int(fields(r.log, "oracle")["syscalls"]), f"one line per syscall\n{r}"
    # The hottest instruction of the loop guest, by address, with and without 0x.
    counts = {}
    for l in full:
        counts[l[1]] = counts.get(l[1], 0) + 1
    hot = max(counts, key=lambda pc: (counts[pc], -pc))
    want = [l for l in full if l[1] == hot]
    for spelling in ("0x%x" % hot, "%x" % hot):
        r, hot_lines = execlog(["afilter=" + spelling], [guest("loop"), "1"])
        assert without_vcpu(hot_lines) == without_vcpu(want), f"afilter={spelling}\n{r}"
        assert len(hot_lines) >= 4096, f"runs once per element at least\n{r}"
    # Both: either filter lets an instruction through.
    r, both = execlog(["afilter=0x%x" % hot, "ifilter=syscall"], [guest("loop"), "1"])
    want = [l for l in full if l[1] == hot or l[3].startswith("syscall")]
    assert without_vcpu(both) == without_vcpu(want), f"ifilter and afilter together\n{r}"
    # Repeated filters: an instruction matching any of them is logged.
    r, several = execlog(["ifilter=syscall", "ifilter=ret", "afilter=0x%x" % hot],
                          [guest("loop"), "1"])
    want = [l for l in full if l[1] == hot or l[3].startswith("syscall") or l[3].startswith("ret")]
    assert without_vcpu(several) == without_vcpu(want), f"repeated ifilter and afilter\n{r}"
    r, none = execlog(["ifilter=no such mnemonic"], [guest("loop"), "1"])
    assert none == [] and r.log == "", f"nothing matches: no output\n{r}"


@pytest.mark.exits_qemu
def test_execlog_bad_filters_are_refused():
    r = qemu(["script=execlog", "afilter=0xzz"], [guest("loop"), "1"])
    assert r.status == 1 and "afilter=0xzz: expected a hexadecimal address" in r.err, (
        f"afilter\n{r}")
    r = qemu(["script=execlog", "filter=mov"], [guest("loop"), "1"])
    assert r.status == 1 and "unknown argument 'filter'; accepted: ifilter, afilter" in r.err, (
        f"unknown argument\n{r}")


# ---- execlog reg= and rdisas= (QEMU 10.0.2, bare-metal guest tests/guests/bare/boot.S) ----
# boot.S: xor %ax,%ax; mov %ax,%ds; mov $LOOPS,%ecx; then LOOPS times: movl %ecx,0x1000;
# movl 0x1000,%edx; decl %ecx; jne; then movb $0x10,%al; outb; hlt.

EXECLOG10_LINE = re.compile(r'^0, 0x([0-9a-f]+), 0x[0-9a-f]+, "(.*)"((?:, (?:load|store), '
                             r'0x[0-9a-f]{8,}, RAM)*)((?:, [a-z0-9_]+ -> 0x[0-9a-f]+)*)$')


def execlog10_run(extra):
    """Runs execlog.lua on QEMU 10.0.2 with boot.S: (run, [(pc, disas, [(reg, hex digits)])])."""
    r = system_qemu("10.0", ["script=execlog"] + list(extra), smp=1)
    assert r.status == 33, f"the guest exits through isa-debug-exit with status 33\n{r}"
    parsed = []
    for line in r.log.splitlines():
        m = EXECLOG10_LINE.match(line)
        assert m is not None, f"malformed line {line!r}\n{r}"
        changes = re.findall(r", ([a-z0-9_]+) -> 0x([0-9a-f]+)", m.group(4))
        parsed.append((int(m.group(1), 16), m.group(2), changes))
    return r, parsed


def execlog10_body(lines):
    """The lines without register changes and without the final hlt, which QEMU 10 runs or not
    depending on a race with the asynchronous debug-exit."""
    body = [(pc, disas) for pc, disas, _ in lines]
    return body[:-1] if body and body[-1][1].startswith("hlt") else body


@pytest.mark.user_host_independent  # system mode only
def test_execlog10_reg_rcx_shows_rcx_changing_at_each_decl():
    _, plain = execlog10_run([])
    r, lines = execlog10_run(["reg=rcx"])
    assert execlog10_body(lines) == execlog10_body(plain), f"reg= changes only the suffixes\n{r}"
    changed = [(disas, changes) for _, disas, changes in lines if changes]
    # mov $LOOPS,%ecx sets it, each decl lowers it by one; 64-bit register: 16 hex digits.
    want = [("movl $0x3e8, %ecx", [("rcx", "%016x" % LOOPS)])]
    want += [("decl %ecx", [("rcx", "%016x" % n)]) for n in range(LOOPS - 1, -1, -1)]
    assert changed == want, f"{len(changed)} changed lines; expected {LOOPS + 1}\n{r}"
    assert r.log.count("rcx -> ") == LOOPS + 1, f"one change per write of ecx\n{r}"
    assert "\n0, 0xf0014, 0x4966, \"decl %ecx\", rcx -> 0x00000000000003e7\n" in r.log, (
        f"QEMU 10.0.2's exact line format\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_execlog10_reg_globs_follow_qemu_order_and_name_each_register_once():
    r, lines = execlog10_run(["reg=r?x", "reg=rcx", "reg=RDX"])
    loop = [l for l in lines if 0xf000a <= l[0] <= 0xf0016]
    assert len(loop) == 4 * LOOPS, f"the loop's lines\n{r}"
    for i in range(LOOPS):
        (_, d0, c0), (_, d1, c1), (_, d2, c2), (_, d3, c3) = loop[4 * i:4 * i + 4]
        n = LOOPS - i  # ecx during this iteration, before decl
        # The first load of 0x1000 changes rdx from its reset value; later ones from n + 1.
        assert d1 == "movl 0x1000, %edx" and c1 == [("rdx", "%016x" % n)], f"load {i}\n{r}"
        assert d2 == "decl %ecx" and c2 == [("rcx", "%016x" % (n - 1))], f"decl {i}\n{r}"
        assert c0 == [] and c3 == [], f"store and jne {i} change no tracked register\n{r}"
    # r?x matches rax: the movb $0x10, %al line changes it (rax was 0 after xor %ax, %ax).
    movb = [l for l in lines if l[1] == "movb $0x10, %al"]
    assert movb and movb[0][2] == [("rax", "%016x" % 0x10)], f"rax after movb\n{r}"
    names = {name for _, _, changes in lines for name, _ in changes}
    assert names <= {"rax", "rbx", "rcx", "rdx"}, f"only r?x registers: {names}\n{r}"
    for _, _, changes in lines:
        order = [name for name, _ in changes]
        assert order == sorted(order, key="rax rbx rcx rdx".split().index), f"QEMU's order\n{r}"
        assert len(order) == len(set(order)), f"a register matched twice is printed once\n{r}"
    r, lines = execlog10_run(["reg=nothing*"])
    assert all(not changes for *_, changes in lines) and len(lines) >= 4 * LOOPS + 6, (
        f"a pattern matching no register: plain log\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_execlog10_reg_with_a_filter_reports_changes_on_the_logged_lines_only():
    r, lines = execlog10_run(["reg=rcx", "ifilter=decl"])
    want = [(0xf0014, "decl %ecx", [("rcx", "%016x" % n)]) for n in range(LOOPS - 1, -1, -1)]
    assert lines == want, (
        f"{len(lines)} lines: one per decl with its change, no repeat at exit\n{r}")
    # Each load's line is checked when decl starts, against the previous check (the previous
    # decl's start): it carries ecx as stored by its own iteration, set by mov $LOOPS,%ecx or by
    # the previous decl, both unlogged. The last decl's change is never checked.
    r, lines = execlog10_run(["reg=rcx", "afilter=0xf000f"])
    want = [(0xf000f, "movl 0x1000, %edx", [("rcx", "%016x" % (LOOPS - i))]) for i in range(LOOPS)]
    assert lines == want, f"a load's line carries the changes made since the previous check\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_execlog10_rdisas_checks_after_instructions_naming_a_register_and_at_block_starts():
    # decl %ecx does not name rcx: its change is seen at the next block's start, after jne.
    r, lines = execlog10_run(["reg=rcx", "rdisas=on"])
    _, plain = execlog10_run([])
    assert execlog10_body(lines) == execlog10_body(plain), f"rdisas= logs the same lines\n{r}"
    changed = [(disas, changes) for _, disas, changes in lines if changes]
    want = [("jne 0xa", [("rcx", "%016x" % n)]) for n in range(LOOPS - 1, -1, -1)]
    assert changed == want, f"the changes, reported on the block-ending jne lines\n{r}"
    # An instruction naming a tracked register is logged even when the filters skip it.
    r, lines = execlog10_run(["reg=ds", "rdisas=on", "ifilter=out"])
    assert [d for _, d, _ in lines] == ["movw %ax, %ds", "outb %al, $0xf4"], (
        f"movw names ds, outb matches the filter\n{r}")
    r, lines = execlog10_run(["reg=ds", "rdisas=off", "ifilter=out"])
    assert [d for _, d, _ in lines] == ["outb %al, $0xf4"], f"rdisas=off: the filter alone\n{r}"


@pytest.mark.exits_qemu
def test_execlog_reg_needs_registers_and_is_refused_on_7_2():
    # (where the host has registers, test_execlog_reg_follows_a_register_in_user_mode runs reg=)
    if not user_host().registers:
        r = qemu(["script=execlog", "reg=rcx"], [guest("loop"), "1"])
        assert (r.status == 1 and "needs the 'registers' feature, which this QEMU (plugin API 1) "
                "lacks: it comes with QEMU 9.0" in r.err), f"reg= on QEMU 7.2\n{r}"
    r = qemu(["script=execlog", "rdisas=maybe"], [guest("loop"), "1"])
    assert r.status == 1 and "rdisas=maybe: expected a boolean" in r.err, f"rdisas word\n{r}"


def test_execlog_reg_follows_a_register_in_user_mode():
    # repeats.c: each round's `loop loop_site` runs LOOP_TIMES times, each lowering rcx by one
    host = user_host()
    if not host.registers:
        pytest.skip(f"{host} has no registers: "
                    "test_execlog_reg_needs_registers_and_is_refused_on_7_2 covers it")
    program = guest("repeats")
    loop_site, times = symbol(program, "loop_site"), 50
    r = qemu(["script=execlog", "reg=rcx", "ifilter=loop"], [program, "2"])
    assert r.status == 0 and "repeats 2 " in r.out, f"guest\n{r}"
    line = '0, 0x%x, 0x%s, "loop 0x%x", rcx -> 0x%016x'
    want = [line % (loop_site, "fee2", loop_site, n) for n in list(range(times - 1, -1, -1)) * 2]
    assert r.log.splitlines() == want, f"one line per loop with rcx after it, on {host}\n{r}"


REP_GUEST = r"""
static char buf[200000];
int main(void)
{
    void *d = buf;
    unsigned long n = sizeof buf;
    __asm__ volatile(".globl big_rep\nbig_rep: rep stosb" : "+D"(d), "+c"(n) : "a"(1) : "memory");
    return buf[sizeof buf - 1] - 1;
}
"""


@pytest.mark.user_host_independent
def test_execlog_logs_a_rep_instruction_of_200000_stores_in_linear_time(tmp_path):
    # From QEMU 10.0 one execution of `rep stosb` makes many iterations' accesses: its line grows
    # by tens of thousands of parts (a string grown per access was quadratic).
    binary = os.path.join(QEMU_10_2, "bin", "qemu-x86_64")
    if not os.path.exists(binary):
        pytest.skip(f"QEMU 10.2 not found at {QEMU_10_2} (set QLUA_QEMU_10_2)")
    src, exe = tmp_path / "rep.c", tmp_path / "rep"
    src.write_text(REP_GUEST)
    subprocess.run(["cc", "-O1", "-static", "-o", str(exe), str(src)], check=True,
                   env=env_without_preload())
    r = qemu(["script=execlog", "ifilter=rep"], [str(exe)], binary=binary, timeout=60)
    assert r.status == 0, r
    lines = [l for l in r.log.splitlines() if "rep stosb" in l]
    # (QEMU runs the iterations in a few executions, a page or so each)
    assert lines and sum(l.count(", store, ") for l in lines) == 200000, (
        f"one store per byte: {[l[:200] for l in lines]}")
