# Tests of scripts/hotblocks.lua, scripts/hotpages.lua and scripts/howvec.lua (ports of QEMU 7.2's
# contrib plugins). Run inside tests/integration.py's namespace: case, qemu, guest, fields,
# expect, system_qemu, LOOPS, Skip, subprocess, tempfile, os and re come from there.

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
    expect(m is not None, "no 'collected N entries' line", run)
    n = int(m.group(1))
    if n == 0:
        expect(len(lines) == 1, "no rows expected for an empty table", run)
        return n, []
    expect(lines[1] == "pc, tcount, icount, ecount", "header line", run)
    rows = []
    for line in lines[2:]:
        r = HB_ROW.match(line)
        expect(r is not None, f"malformed row {line!r}", run)
        rows.append((int(r.group(1), 16), int(r.group(2)), int(r.group(3)), int(r.group(4))))
    expect(len(rows) == min(20, n), f"{len(rows)} rows for {n} entries", run)
    keys = [(-e, pc, ic) for pc, _, ic, e in rows]
    expect(keys == sorted(keys), "rows not ranked by ecount, then address", run)
    return n, rows


def hotpages(run):
    """Parses hotpages output: [(addr, rcpus, reads, wcpus, writes), ...]."""
    lines = without_oracle(run.log).splitlines()
    expect(lines and lines[0] == "Addr, RCPUs, Reads, WCPUs, Writes", "header line", run)
    rows = []
    for line in lines[1:]:
        r = HP_ROW.match(line)
        expect(r is not None, f"malformed row {line!r}", run)
        rows.append((int(r.group(1), 16), int(r.group(2), 16), int(r.group(3)),
                     int(r.group(4), 16), int(r.group(5))))
    expect(len(rows) <= 50, "more than 50 rows", run)
    return rows


def howvec(run):
    """Parses howvec output: ({class: hits or 'individually' or 'not counted'}, [instr rows])."""
    lines = without_oracle(run.log).splitlines()
    expect(lines and lines[0] == "Instruction Classes:", "first line", run)
    classes, instrs, i = {}, [], 1
    while i < len(lines) and lines[i].startswith("Class: "):
        m = HV_CLASS.match(lines[i])
        if m:
            classes[m.group(1).strip()] = int(m.group(2))
        else:
            m = re.match(r"^Class: (.{24,}?)\t(counted individually|not counted)$", lines[i])
            expect(m is not None, f"malformed class line {lines[i]!r}", run)
            classes[m.group(1).strip()] = m.group(2)
        i += 1
    if i < len(lines):
        expect(lines[i] == "Individual Instructions:", f"unexpected line {lines[i]!r}", run)
        for line in lines[i + 1:]:
            m = HV_INSN.match(line)
            expect(m is not None, f"malformed instruction line {line!r}", run)
            instrs.append((m.group(1).rstrip(), int(m.group(2)), int(m.group(3), 16), m.group(4)))
        expect(len(instrs) <= 50, "more than 50 instructions", run)
    return classes, instrs


def ok(run, what):
    expect(run.status == 0, f"{what}: QEMU failed", run)
    return run


# ---- hotblocks ----

@case
def hotblocks_hottest_block_is_the_inner_loop_in_both_modes():
    # loop.c's inner loop runs 4096 times a round: its body block starts 4095 or 4096 times a round
    # (4095 when the first iteration runs inside the block that enters the loop).
    tops = {}
    for rounds in (100, 300):
        outputs = []
        for mode in ("on", "off"):
            r = ok(qemu(["script=hotblocks", "inline=" + mode], [guest("loop"), str(rounds)]), mode)
            n, rows = hotblocks(r)
            expect(n > 20, f"only {n} entries collected", r)
            pc, tcount, icount, ecount = rows[0]
            expect(ecount in (4095 * rounds, 4096 * rounds),
                   f"hottest block ran {ecount} times, expected 4095 or 4096 x {rounds}", r)
            expect(tcount == 1 and icount > 1, "the loop body is translated once", r)
            outputs.append(r.log)
            tops[rounds] = (pc, icount, ecount)
        expect(outputs[0] == outputs[1], "inline=on and inline=off disagree:\n" + outputs[0] +
               "\n---\n" + outputs[1])
    expect(tops[300][:2] == tops[100][:2] and tops[300][2] == 3 * tops[100][2],
           f"hottest block should run 3x as often with 3x the rounds: {tops}")


@case
def hotblocks_counts_every_block_execution_exactly_in_system_mode():
    # The bare-metal guest has 4 blocks, so the whole table is listed: the ecounts add up to the
    # blocks the oracle saw run, and the loop block (4 instructions) runs LOOPS - 1 times (the
    # first iteration is part of the entry block).
    for mode in ("on", "off"):
        r = system_qemu("7.2", ["script=hotblocks", "inline=" + mode], oracle=True)
        expect(r.status == 33, "the guest exits through isa-debug-exit with status 33", r)
        n, rows = hotblocks(r)
        expect(n == len(rows) < 20, "the table must be complete", r)
        expect(sum(row[3] for row in rows) == int(fields(r.log, "oracle")["tbs"]),
               "ecounts do not add up to the oracle's blocks", r)
        expect(rows[0][2:] == (4, LOOPS - 1), f"loop block: expected 4 insns, {LOOPS - 1} runs", r)


@case
def hotblocks_is_exact_with_8_threads():
    # threads.c: 8 threads x 400 rounds x 512 iterations of one inner loop.
    for mode in ("on", "off"):
        r = ok(qemu(["script=hotblocks", "inline=" + mode], [guest("threads")]), mode)
        expect("threads 8 total" in r.out, "guest output", r)
        _, rows = hotblocks(r)
        expect(rows[0][3] in (8 * 400 * 511, 8 * 400 * 512),
               f"hottest block ran {rows[0][3]} times: counts lost or doubled", r)


# ---- hotpages ----

def table_range():
    """The address range of loop.c's `table` (4096 unsigned longs), from the guest's symbols."""
    out = subprocess.run(["nm", guest("loop")], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^([0-9a-f]+) [bB] table$", out, re.M)
    expect(m is not None, "no 'table' symbol in the loop guest:\n" + out)
    start = int(m.group(1), 16)
    return start, start + 4096 * 8


@case
def hotpages_totals_and_table_pages_match_the_guest():
    rounds = 100
    r = ok(qemu(["script=hotpages"], [guest("loop"), str(rounds)], oracle=True), "hotpages")
    rows = hotpages(r)
    oracle = fields(r.log, "oracle")
    expect(0 < len(rows) < 50, f"{len(rows)} pages: the listing must hold them all", r)
    expect(sum(p[2] for p in rows) == int(oracle["reads"]), "reads differ from the oracle", r)
    expect(sum(p[4] for p in rows) == int(oracle["writes"]), "writes differ from the oracle", r)
    expect(all(p[1] in (0, 1) and p[3] in (0, 1) for p in rows), "one vCPU: masks 0 or 1", r)
    expect(all(p[0] % 4096 == 0 for p in rows), "page addresses must be 4 KiB aligned", r)
    keys = [(-(p[2] + p[4]), p[0]) for p in rows]
    expect(keys == sorted(keys), "not ranked by reads + writes, then address", r)
    # Each round loads and stores every element of `table` once: a page inside it sees
    # 512 * rounds of each.
    start, end = table_range()
    inside = [p for p in rows if p[0] >= start and p[0] + 4096 <= end]
    expect(len(inside) >= 7, f"expected the 7+ pages inside table, found {len(inside)}", r)
    for p in inside:
        expect(p[2] == p[4] == 512 * rounds, f"page {p[0]:#x}: {p[2]} reads, {p[4]} writes", r)


@case
def hotpages_sort_orders_and_page_size():
    # Each run is checked on its own against the oracle: where the guest's stack and heap land can
    # differ from run to run (the host's memory layout decides, e.g. under ASan).
    prog = [guest("loop"), "20"]

    def complete(extra):
        r = ok(qemu(["script=hotpages"] + extra, prog, oracle=True), " ".join(extra))
        rows = hotpages(r)
        oracle = fields(r.log, "oracle")
        expect(0 < len(rows) < 50, f"{len(rows)} pages: the listing must hold them all", r)
        expect(sum(p[2] for p in rows) == int(oracle["reads"]), "reads differ from the oracle", r)
        expect(sum(p[4] for p in rows) == int(oracle["writes"]), "writes differ from the oracle", r)
        return r, rows

    r, rows = complete(["sortby=address"])
    addrs = [p[0] for p in rows]
    expect(addrs == sorted(set(addrs), reverse=True), "sortby=address: highest address first", r)
    for what, col in (("reads", 2), ("writes", 4)):
        r, rows = complete(["sortby=" + what])
        keys = [(-p[col], p[0]) for p in rows]
        expect(keys == sorted(keys), f"sortby={what}: most {what} first, ties by address", r)
    r, rows = complete(["pagesize=65536"])
    expect(all(p[0] % 65536 == 0 for p in rows), "64 KiB pages must be 64 KiB aligned", r)
    r = ok(qemu(["script=hotpages", "io=on"], prog), "io")
    expect(without_oracle(r.log) == "Addr, RCPUs, Reads, WCPUs, Writes\n",
           "user mode has no I/O accesses", r)


@refused_install
def hotpages_rejects_bad_arguments():
    prog = [guest("loop"), "1"]
    r = qemu(["script=hotpages", "pagesize=1000"], prog)
    expect(r.status == 1 and "pagesize=1000: expected a power of two" in r.err, "pagesize check", r)
    r = qemu(["script=hotpages", "sortby=size"], prog)
    expect(r.status == 1 and "sortby=size: expected one of reads, writes, address" in r.err,
           "sortby check", r)


@case
def hotpages_masks_and_totals_with_8_threads():
    r = ok(qemu(["script=hotpages"], [guest("threads"), "50"], oracle=True), "threads")
    rows = hotpages(r)
    oracle = fields(r.log, "oracle")
    expect(len(rows) < 50, f"{len(rows)} pages: the listing must hold them all", r)
    expect(sum(p[2] for p in rows) == int(oracle["reads"]), "reads differ from the oracle", r)
    expect(sum(p[4] for p in rows) == int(oracle["writes"]), "writes differ from the oracle", r)
    rmask = wmask = 0
    for p in rows:
        rmask |= p[1]
        wmask |= p[3]
    # vCPU indices are reused once threads exit, so which of 1..8 appear depends on timing.
    expect(rmask & 1 and wmask & 1 and rmask & ~1 and wmask & ~1,
           f"the main thread and other threads must appear: {rmask:#x} {wmask:#x}", r)
    expect(rmask <= 0x1ff and wmask <= 0x1ff, f"at most 9 vCPUs: {rmask:#x} {wmask:#x}", r)


@case
def hotpages_in_system_mode_counts_by_physical_page():
    # boot.S: LOOPS stores and LOOPS loads at physical 0x1000, nothing else; the port write is not
    # a memory access.
    r = system_qemu("7.2", ["script=hotpages"])
    expect(r.status == 33, "guest", r)
    expect(r.log == "Addr, RCPUs, Reads, WCPUs, Writes\n"
           f"0x0000000000001000, 0x0001, {LOOPS}, 0x0001, {LOOPS}\n", "the one page", r)
    r = system_qemu("7.2", ["script=hotpages", "io=on"])
    expect(r.status == 33 and r.log == "Addr, RCPUs, Reads, WCPUs, Writes\n", "no I/O accesses", r)


# ---- howvec ----

X86_CLASSES = ["Integer ALU", "Integer Mul/Div", "Move (reg/imm)", "Load/Store", "Push/Pop",
               "String ops", "Atomic/Fence", "Cond Branch", "Branch", "Call/Return",
               "System/Syscall", "Nop/Hint", "x87 FP", "Scalar FP (SSE/AVX)",
               "SIMD (SSE/AVX/MMX)", "Unclassified"]


@case
def howvec_x86_class_hits_add_up_to_the_instructions_executed():
    for program in ([guest("loop"), "20"], ["/bin/ls", "-l", "/"]):
        logs = []
        for mode in ("on", "off"):
            r = ok(qemu(["script=howvec", "inline=" + mode], program, oracle=True), mode)
            classes, instrs = howvec(r)
            expect(not instrs, "nothing is counted individually by default", r)
            expect(list(classes) == [c for c in X86_CLASSES if c in classes], "class order", r)
            expect(all(v > 0 for v in classes.values()), "only classes with hits are listed", r)
            expect(sum(classes.values()) == int(fields(r.log, "oracle")["insns"]),
                   "class hits differ from the oracle's instruction count", r)
            logs.append(without_oracle(r.log))
        if program[0] == guest("loop"):  # deterministic, unlike ls
            expect(logs[0] == logs[1], "inline=on and inline=off disagree:\n" + "\n".join(logs))


INSNMIX_PER_ITERATION = {
    "Integer ALU": 5, "Integer Mul/Div": 1, "Move (reg/imm)": 1, "Load/Store": 2, "Push/Pop": 2,
    "String ops": 1, "Atomic/Fence": 1, "Cond Branch": 1, "Branch": 1, "Call/Return": 2,
    "System/Syscall": 1, "Nop/Hint": 1, "x87 FP": 2, "Scalar FP (SSE/AVX)": 1,
    "SIMD (SSE/AVX/MMX)": 1, "Unclassified": 0,
}


@case
def howvec_x86_classes_of_a_known_instruction_mix():
    # insnmix.c runs a loop of known instructions N times; runs with N = 1000 and 3000 (same
    # length, so the same environment) differ by 2000 iterations of it, and by nothing else.
    runs = {}
    for n in (1000, 3000):
        r = ok(qemu(["script=howvec", "verbose=on"], [guest("insnmix"), str(n)], oracle=True), n)
        expect("insnmix done" in r.out, "guest output", r)
        classes, _ = howvec(r)
        expect(list(classes) == X86_CLASSES, "verbose=on lists every class, in order", r)
        expect(sum(classes.values()) == int(fields(r.log, "oracle")["insns"]), "total", r)
        runs[n] = classes
    for name, per in INSNMIX_PER_ITERATION.items():
        delta = runs[3000][name] - runs[1000][name]
        expect(delta == 2000 * per, f"{name}: grew by {delta}, expected 2000 x {per}\n{runs}")


@case
def howvec_counts_chosen_classes_individually_or_not_at_all():
    runs = {}
    for n in (1000, 3000):
        r = ok(qemu(["script=howvec", "count=x87", "count=!nop"], [guest("insnmix"), str(n)],
                    oracle=True), n)
        classes, instrs = howvec(r)
        expect(classes["x87 FP"] == "counted individually", "x87 line", r)
        expect(classes["Nop/Hint"] == "not counted", "nop line", r)
        expect(re.search(r"^Class: x87 FP {18}\tcounted individually$", r.log, re.M), "padding", r)
        expect(all(cls == "x87 FP" for _, _, _, cls in instrs), "only x87 listed", r)
        keys = [(-hits, op) for _, hits, op, _ in instrs]
        expect(keys == sorted(keys), "instructions ranked by hits, then op", r)
        runs[n] = {(d, op): hits for d, hits, op, _ in instrs}
    for key, per in ((("fld1", 0xe8d9), 1), (("fstp %st(0)", 0xd8dd), 1)):
        delta = runs[3000].get(key, 0) - runs[1000].get(key, 0)
        expect(delta == 2000 * per, f"{key}: grew by {delta}, expected {2000 * per}\n{runs}")


@refused_install
def howvec_rejects_unknown_classes():
    r = qemu(["script=howvec", "count=vector"], [guest("loop"), "1"])
    expect(r.status == 1 and
           "count=vector: unknown class 'vector' for x86_64; classes: alu, " in r.err,
           "unknown class", r)


AARCH64_GCC = "aarch64-linux-gnu-gcc"
QEMU_AARCH64 = os.environ.get("QEMU_AARCH64", "qemu-aarch64")


def aarch64_guest(tmp, name, extra=()):
    """Builds tests/guests/NAME.c for aarch64 (static) into tmp; skips without a cross compiler."""
    try:
        out = os.path.join(tmp, name)
        subprocess.run([AARCH64_GCC, "-static", "-O1", "-pthread", "-o", out,
                        os.path.join(SRC, "tests", "guests", name + ".c")] + list(extra),
                       check=True, capture_output=True)
        return out
    except FileNotFoundError:
        raise Skip(f"{AARCH64_GCC} not installed (tools/setup-debian.sh installs it)")


def qemu_aarch64(plugin_args, program):
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        cmd = [QEMU_AARCH64, "-plugin", ORACLE, "-plugin", ",".join([PLUGIN] + plugin_args),
               "-U", "LD_PRELOAD", "-d", "plugin", "-D", logfile] + program
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        text = open(logfile).read() if os.path.exists(logfile) else ""
        return Run(p.returncode, p.stdout, p.stderr, text)


@case
def howvec_aarch64_uses_qemus_class_table():
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in (("loop", ["20"]), ("threads", ["20"])):
            program = [aarch64_guest(tmp, name)] + args
            logs = []
            for mode in ("on", "off"):
                # count=nop: NOPs listed one by one, so only UDEF (never executed) is left uncounted
                r = ok(qemu_aarch64(["script=howvec", "count=nop", "inline=" + mode], program),
                       name)
                classes, instrs = howvec(r)
                expect(classes["UDEF"] == "not counted", "UDEF line", r)
                expect(classes["NOP"] == "counted individually", "NOP line", r)
                expect(re.search(r"^Class:   UDEF {18}\tnot counted$", r.log, re.M), "padding", r)
                expect(re.search(r"^Class:   Cond Branch \(imm\)     \t\(\d+ hits\)$", r.log, re.M),
                       "a branch class with QEMU's name", r)
                expect(all(op == 0xd503201f and cls == "    NOP" for _, _, op, cls in instrs),
                       "only the NOP encoding is listed", r)
                total = sum(v for v in classes.values() if isinstance(v, int))
                total += sum(hits for _, hits, _, _ in instrs)
                expect(total == int(fields(r.log, "oracle")["insns"]),
                       f"{name}: hits differ from the oracle's instruction count", r)
                if name == "loop":
                    logs.append(without_oracle(r.log))
            expect(len(set(logs)) <= 1, "inline=on and inline=off disagree:\n" + "\n".join(logs))
        program = [aarch64_guest(tmp, "loop"), "1"]
        r = ok(qemu_aarch64(["script=howvec", "verbose=on"], program), "verbose")
        classes, _ = howvec(r)
        expect(len(classes) == 42 and classes["Unclassified"] == 0, "verbose: all 42 classes", r)
