# Tests of scripts/bb.lua, insn.lua, mem.lua and syscall.lua (ports of QEMU's tests/plugin
# examples), run in real QEMU against the oracle loaded in the same run or facts of the guest.
# Exec'd in tests/integration.py's namespace (case, qemu, guest, fields, expect, system_qemu ...).
import shutil as _basic_shutil


def _basic_run(args, program, oracle=True):
    r = qemu(args, program, oracle=oracle)
    expect(r.status == 0, f"{args}: QEMU failed", r)
    return r


def _basic_line(run, pattern):
    """The groups of the one log line matching `pattern` (a regex for the whole line)."""
    found = re.findall("^" + pattern + "$", run.log, re.M)
    expect(len(found) == 1, f"expected one line matching {pattern!r}, found {len(found)}", run)
    return found[0]


def _basic_oracle(run):
    return {k: int(v) for k, v in fields(run.log, "oracle").items()}


def _basic_two_scripts(first, second, program):
    """Runs the oracle and two qlua scripts in one QEMU: `second` in a copy of libqlua.so (one
    library runs one script). Output of both goes to the same log, whole lines each."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "libqlua2.so")
        _basic_shutil.copy(PLUGIN, copy)
        logfile = os.path.join(tmp, "plugin.log")
        cmd = [QEMU, "-plugin", ORACLE, "-plugin", ",".join([PLUGIN] + first),
               "-plugin", ",".join([copy] + second), "-U", "LD_PRELOAD",
               "-d", "plugin", "-D", logfile] + program
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        text = open(logfile).read() if os.path.exists(logfile) else ""
        r = Run(p.returncode, p.stdout, p.stderr, text)
    expect(r.status == 0, "QEMU with two scripts failed", r)
    return r


def _basic_symbol(program, name):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run(["nm", program], capture_output=True, text=True, check=True, env=env).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"no symbol {name} in {program}")


# ---- bb.lua ----

@case
def bb_counts_every_executed_block_like_the_oracle():
    for extra in ([], ["inline=on"]):
        r = _basic_run(["script=bb"] + extra, [guest("loop"), "20"])
        o = _basic_oracle(r)
        bbs, insns = map(int, _basic_line(r, r"bb's: (\d+), insns: (\d+)"))
        expect(bbs == o["tbs"] and bbs > 0, f"{extra}: bb's {bbs} != oracle tbs {o['tbs']}", r)
        # a block adds all its instructions when it starts, so blocks left early over-count
        expect(insns >= o["insns"], f"{extra}: insns {insns} < oracle {o['insns']}", r)
        expect(r.log.count("\n") == 2, "only the bb line and the oracle's", r)


@case
def bb_is_exact_with_8_threads():
    r = _basic_run(["script=bb", "inline=on"], [guest("threads")])
    bbs, _ = map(int, _basic_line(r, r"bb's: (\d+), insns: (\d+)"))
    expect(bbs == _basic_oracle(r)["tbs"], "bb's differs from the oracle under 8 threads", r)


@case
def bb_system_mode_reports_each_vcpu_or_the_total_with_inline():
    r = system_qemu("7.2", ["script=bb", "idle=on"], smp=2, oracle=True)
    expect(r.status == 33, "guest exit status", r)
    # only vCPU 0 runs the bare guest; vCPU 1 stays halted, so it has no line
    bbs, insns = map(int, _basic_line(r, r"CPU0: bb's: (\d+), insns: (\d+)"))
    # the last block is left at the port write that ends QEMU: whole-block counting over-counts
    expect(bbs == _basic_oracle(r)["tbs"] and insns >= _basic_oracle(r)["insns"], "CPU0 counts", r)
    expect("CPU1" not in r.log, "a vCPU that ran nothing has no line", r)
    r = system_qemu("7.2", ["script=bb", "inline=on"], smp=2, oracle=True)
    bbs, _ = map(int, _basic_line(r, r"bb's: (\d+), insns: (\d+)"))
    expect(bbs == _basic_oracle(r)["tbs"], "inline=on total", r)


# ---- insn.lua ----

@case
def insn_counts_match_the_oracle_in_both_modes():
    r = _basic_run(["script=insn"], [guest("loop"), "20"])
    o = _basic_oracle(r)
    cpu0 = int(_basic_line(r, r"cpu 0 insns: (\d+)"))
    total = int(_basic_line(r, r"total insns: (\d+)"))
    expect(cpu0 == total == o["insns"], f"callback mode: cpu0 {cpu0}, total {total}", r)
    r = _basic_run(["script=insn", "inline=on"], [guest("loop"), "20"])
    expect(int(_basic_line(r, r"insns: (\d+)")) == _basic_oracle(r)["insns"], "inline mode total", r)
    expect("repeat" not in r.log and "cpu " not in r.log, "inline=on prints only the total", r)


@case
def insn_counts_each_vcpu_with_8_threads():
    r = _basic_run(["script=insn"], [guest("threads")])
    per = {int(v): int(n) for v, n in re.findall(r"^cpu (\d+) insns: (\d+)$", r.log, re.M)}
    total = int(_basic_line(r, r"total insns: (\d+)"))
    expect(len(per) >= 2 and all(n > 0 for n in per.values()), f"per-vCPU lines {per}", r)
    expect(sum(per.values()) == total == _basic_oracle(r)["insns"], "per-vCPU sum, total, oracle", r)
    expect(list(per) == sorted(per), "lines in vCPU order", r)


_BASIC_REP_BYTES, _BASIC_LOOP_TIMES = 100, 50  # tests/guests/repeats.c


def _basic_matches(run):
    """(address, disassembly, hits, match hits, delta, average) of each match line."""
    rows = re.findall(r"^0x([0-9a-f]+), '([^']*)', (\d+) hits, (\d+) match hits, "
                      "\u0394\\+(\\d+) since last match, (\\d+) avg insns/match$", run.log, re.M)
    return [(int(a, 16), d, int(h), int(m), int(delta), int(avg)) for a, d, h, m, delta, avg in rows]


def _basic_repeats(run):
    found = {}
    for a in re.findall(r"^detected repeat execution @ 0x([0-9a-f]+)$", run.log, re.M):
        found[int(a, 16)] = found.get(int(a, 16), 0) + 1
    return found


@case
def insn_detects_each_repeat_execution():
    # repeats.c: each round runs `loop_site` _BASIC_LOOP_TIMES times in a row and `rep_site` once per
    # byte in a row; an execution right after one of the same instruction is a repeat.
    rounds = 7
    program = guest("repeats")
    rep_site, loop_site = _basic_symbol(program, "rep_site"), _basic_symbol(program, "loop_site")
    r = _basic_run(["script=insn", "match=rep|loop"], [program, str(rounds)])
    expect(f"repeats {rounds} " in r.out, "guest output", r)
    repeats = _basic_repeats(r)
    expect(repeats.get(loop_site) == rounds * (_BASIC_LOOP_TIMES - 1),
           f"loop_site: {repeats.get(loop_site)} repeats, expected {rounds * (_BASIC_LOOP_TIMES - 1)}", r)
    execs = {}
    for addr, *_ in _basic_matches(r):
        execs[addr] = execs.get(addr, 0) + 1
    expect(execs.get(loop_site) == rounds * _BASIC_LOOP_TIMES, "loop_site executions", r)
    expect(execs.get(rep_site, 0) >= rounds * _BASIC_REP_BYTES, "rep_site executes once per byte", r)
    # only instructions that loop on themselves repeat (here: rep string ops and loop_site)
    expect(set(repeats) <= set(execs), f"repeats at {sorted(map(hex, set(repeats) - set(execs)))}", r)
    # every execution of rep_site but the first of each round repeats the one before
    expect(repeats.get(rep_site) == execs[rep_site] - rounds, "rep_site repeats", r)
    expect(int(_basic_line(r, r"total insns: (\d+)")) == _basic_oracle(r)["insns"], "total", r)
    # match= repeated, as QEMU takes it, reports the same as one '|'-separated value
    r2 = _basic_run(["script=insn", "match=rep", "match=loop"], [program, str(rounds)])
    expect(_basic_matches(r2) == _basic_matches(r), "match=rep,match=loop equals match=rep|loop", r2)


@case
def insn_prints_full_repeat_addresses_of_a_pie_program():
    # QEMU's own plugin truncates these to 32 bits; QEMU loads a PIE guest at 0x4000000000.
    r = _basic_run(["script=insn", "match=rep"], ["/bin/ls", "-l", "/"])
    repeats = _basic_repeats(r)
    reps = {addr for addr, disas, *_ in _basic_matches(r) if disas.startswith("rep")}
    expect(len(repeats) > 0, "ls repeats no rep instruction?", r)
    expect(all(a >= 2 ** 32 for a in repeats), "addresses above 4 GiB", r)
    expect(set(repeats) <= reps, f"repeat addresses {sorted(map(hex, set(repeats) - reps))} "
           "are no rep instructions", r)


@case
def insn_match_reports_every_execution_with_running_statistics():
    r = _basic_run(["script=insn", "match=syscall"], [guest("loop"), "20"])
    o = _basic_oracle(r)
    rows = _basic_matches(r)
    expect(len(rows) == o["syscalls"], f"{len(rows)} match lines, oracle syscalls {o['syscalls']}", r)
    total_delta, per_copy = 0, {}
    for i, (addr, disas, hits, mhits, delta, avg) in enumerate(rows, 1):
        expect(disas.startswith("syscall"), f"line {i}: {disas}", r)
        expect(mhits == i, f"line {i}: match hits {mhits}", r)
        expect(hits == per_copy.get(addr, 0) + 1, f"line {i}: hits of 0x{addr:x}", r)
        per_copy[addr] = hits
        total_delta += delta
        expect(avg == total_delta // mhits, f"line {i}: average", r)
    expect(0 < total_delta <= o["insns"], "the deltas add up to the count at the last match", r)
    # in inline mode too the deltas are real (QEMU prints 0 there)
    r2 = _basic_run(["script=insn", "match=syscall", "inline=on"], [guest("loop"), "20"])
    expect([row[4] for row in _basic_matches(r2)] == [row[4] for row in rows], "inline=on deltas", r2)
    # consecutive executions of one instruction are 1 instruction apart
    program = guest("repeats")
    r = _basic_run(["script=insn", "match=loop"], [program, "3"])
    loop_site = _basic_symbol(program, "loop_site")
    rows = _basic_matches(r)
    expect(all(row[0] == loop_site for row in rows) and len(rows) == 3 * _BASIC_LOOP_TIMES, "loop rows", r)
    expect(sum(row[4] == 1 for row in rows) == 3 * (_BASIC_LOOP_TIMES - 1), "Δ+1 between iterations", r)


@case
def insn_sizes_counts_translated_instructions_by_length():
    probe = lua_file("local n = {}\n"
                     "qemu.on_translate(function(tb) for i in tb:insns() do"
                     " n[i.size] = (n[i.size] or 0) + 1 end end)\n"
                     "qemu.on_exit(function() for s = 1, 15 do if n[s] then"
                     " qemu.printf('probe %d %d\\n', s, n[s]) end end end)\n")
    try:
        r = _basic_two_scripts(["script=insn", "sizes=on"], ["script=" + probe], [guest("loop"), "5"])
    finally:
        os.unlink(probe)
    mine = re.findall(r"^len (\d+) bytes: (\d+) insns$", r.log, re.M)
    seen = re.findall(r"^probe (\d+) (\d+)$", r.log, re.M)
    expect(mine == seen and len(mine) >= 5, "sizes differ from the translations seen", r)
    expect(any(size == "2" for size, _ in mine), "syscall is 2 bytes long", r)
    expect("total insns" not in r.log, "sizes=on replaces the counts", r)


# ---- mem.lua ----

@case
def mem_counts_match_the_oracle_for_each_track():
    for extra, want in [([], lambda o: o["reads"] + o["writes"]),
                        (["track=rw"], lambda o: o["reads"] + o["writes"]),
                        (["track=r"], lambda o: o["reads"]),
                        (["track=w"], lambda o: o["writes"])]:
        r = _basic_run(["script=mem", "inline=on", "callback=on", "haddr=on"] + extra,
                        [guest("loop"), "10"])
        expected = want(_basic_oracle(r))
        inline = int(_basic_line(r, r"inline mem accesses: (\d+)"))
        callback = int(_basic_line(r, r"callback mem accesses: (\d+)"))
        expect(inline == callback == expected and expected > 0,
               f"{extra}: inline {inline}, callback {callback}, oracle {expected}", r)
        expect(_basic_line(r, r"io accesses: (\d+)") == "0", "user mode has no I/O accesses", r)


@case
def mem_prints_only_what_was_asked():
    r = _basic_run(["script=mem"], [guest("loop"), "2"])
    expect(r.log.startswith("oracle:"), "no counting asked: no output", r)
    r = _basic_run(["script=mem", "callback=on", "track=w"], [guest("loop"), "2"])
    expect(r.log.splitlines()[0] == f"callback mem accesses: {_basic_oracle(r)['writes']}", "callback", r)
    expect("inline" not in r.log and "io accesses" not in r.log, "only the callback line", r)
    r = _basic_run(["script=mem", "haddr=on"], [guest("loop"), "2"])
    expect(r.log.splitlines()[0] == "io accesses: 0", "haddr alone", r)


@case
def mem_is_exact_with_8_threads():
    r = _basic_run(["script=mem", "inline=on", "callback=on", "track=r"], [guest("threads")])
    o = _basic_oracle(r)
    expect(int(_basic_line(r, r"inline mem accesses: (\d+)")) == o["reads"], "inline", r)
    expect(int(_basic_line(r, r"callback mem accesses: (\d+)")) == o["reads"], "callback", r)


@case
def mem_system_mode_tells_io_from_ram():
    # boot.S: LOOPS iterations of one 4-byte store and one load, all to RAM
    for track, want in [("rw", 2 * LOOPS), ("r", LOOPS), ("w", LOOPS)]:
        r = system_qemu("7.2", ["script=mem", "inline=on", "callback=on", "haddr=on",
                                "track=" + track], smp=1)
        expect(r.status == 33, "guest exit status", r)
        expect(r.log == f"inline mem accesses: {want}\ncallback mem accesses: {want}\n"
               "io accesses: 0\n", f"track={track}", r)


@refused_install
def mem_rejects_an_unknown_track():
    r = qemu(["script=mem", "track=x"], [guest("loop"), "1"])
    expect(r.status == 1 and "mem.lua: track=x: expected one of r, w, rw" in r.err, "track", r)


# ---- syscall.lua ----

def _basic_syscall_table(run):
    lines = run.log.splitlines()
    start = lines.index("syscall no.  calls  errors")
    rows = []
    for line in lines[start + 1:]:
        m = re.match(r"^(-?\d+) *(\d+) +(\d+)$", line)
        if not m:
            break
        expect(line == "%-13d%-6d %d" % tuple(map(int, m.groups())), f"row format: {line!r}", run)
        rows.append(tuple(map(int, m.groups())))
    return rows


@case
def syscall_table_matches_the_printed_events_and_the_oracle():
    r = _basic_two_scripts(["script=syscall"], ["script=syscall", "print=on"], ["/bin/ls", "-l", "/"])
    o = _basic_oracle(r)
    rows = _basic_syscall_table(r)
    expect(sum(c for _, c, _ in rows) == o["syscalls"], "calls add up to the oracle's syscalls", r)
    expect(rows == sorted(rows, key=lambda row: (-row[1], row[0])), "ranked by calls, then number", r)
    calls = re.findall(r"^syscall #(-?\d+)$", r.log, re.M)
    rets = re.findall(r"^syscall #(-?\d+) returned -> (-?\d+)$", r.log, re.M)
    expect(len(calls) == o["syscalls"] and len(rets) == o["syscall_rets"], "print=on lines", r)
    for num, n_calls, errors in rows:
        expect(n_calls == calls.count(str(num)), f"syscall {num}: calls", r)
        expect(errors == sum(1 for n, ret in rets if n == str(num) and int(ret) < 0),
               f"syscall {num}: errors", r)
    expect(any(e > 0 for _, _, e in rows), "ls has failing syscalls", r)


@case
def syscall_print_shows_each_call_and_its_result():
    r = _basic_run(["script=syscall", "print=on"], [guest("loop"), "3"])
    o = _basic_oracle(r)
    expect(len(re.findall(r"^syscall #\d+$", r.log, re.M)) == o["syscalls"], "calls", r)
    expect(len(re.findall(r"^syscall #\d+ returned -> -?\d+$", r.log, re.M)) == o["syscall_rets"],
           "returns", r)
    # loop.c writes "round 0\n" (8 bytes) with write(2) (x86_64 syscall 1)
    expect("syscall #1\nsyscall #1 returned -> 8\n" in r.log, "the guest's write", r)
    expect("syscall no." not in r.log, "print=on prints no table", r)


@case
def syscall_table_is_exact_with_8_threads():
    r = _basic_run(["script=syscall"], [guest("threads")])
    rows = _basic_syscall_table(r)
    expect(sum(c for _, c, _ in rows) == _basic_oracle(r)["syscalls"], "calls under 8 threads", r)
    getpid = [row for row in rows if row[0] == 39]  # each thread calls getpid every 20 rounds
    expect(getpid == [(39, 8 * 400 // 20, 0)], f"getpid row {getpid}", r)


# ---- mem.lua, QEMU 10.x format (plugin API >= 2): system mode on QEMU 10.0 ----
# boot.S (64 KiB image at 0xf0000): "xor %ax,%ax" (2 bytes) and "mov %ax,%ds" (2) and
# "mov $LOOPS,%ecx" (6) put the store "mov %ecx,0x1000" at 0xf000a and the 5-byte store before the
# load "mov 0x1000,%edx" at 0xf000f; iteration i stores and loads ecx = LOOPS - i at 0x1000.

def _mem10_run(extra, image="boot.bin"):
    r = system_qemu("10.0", ["script=mem"] + extra, smp=1, image=image)
    expect(r.status == 33, f"{extra}: the guest exits through isa-debug-exit with status 33", r)
    return r


def _mem10_access_line(pc, kind, value):
    return f"0x{pc:x},,0x1000,0x1000,32,{kind},0x{value:08x}"


@case
def mem_10_counts_in_one_line():
    for extra, want in [(["inline=on"], f"mem accesses: {2 * LOOPS}\n"),
                        (["callback=on"], f"mem accesses: {2 * LOOPS}\n"),
                        (["inline=on", "track=w"], f"mem accesses: {LOOPS}\n"),
                        (["callback=on", "track=r"], f"mem accesses: {LOOPS}\n"),
                        (["callback=on", "haddr=on"], f"mem accesses: {2 * LOOPS}\nio accesses: 0\n"),
                        (["inline=on", "haddr=on"], f"mem accesses: {2 * LOOPS}\nio accesses: 0\n"),
                        (["haddr=on"], "io accesses: 0\n"),
                        ([], "")]:
        r = _mem10_run(extra)
        expect(r.log == want, f"{extra}: expected {want!r}", r)


@case
def mem_10_haddr_moves_device_accesses_to_the_io_line():
    # io.S: 6 reads and 3 writes reach the local APIC and the IOAPIC
    for track, io in [("rw", 9), ("r", 6), ("w", 3)]:
        total = int(_basic_line(_mem10_run(["inline=on", "track=" + track], "io.bin"),
                                r"mem accesses: (\d+)"))
        r = _mem10_run(["callback=on", "haddr=on", "track=" + track], "io.bin")
        expect(r.log == f"mem accesses: {total - io}\nio accesses: {io}\n",
               f"track={track}: {total} accesses of which {io} I/O", r)


@case
def mem_10_print_accesses_lists_every_access_with_its_value():
    for track, kinds in [("rw", ["store", "load"]), ("w", ["store"]), ("r", ["load"])]:
        r = _mem10_run(["print-accesses=on", "track=" + track])
        want = ["insn_vaddr,insn_symbol,mem_vaddr,mem_hwaddr,access_size,access_type,mem_value"]
        for ecx in range(LOOPS, 0, -1):
            for kind in kinds:
                want.append(_mem10_access_line(0xf000a if kind == "store" else 0xf000f, kind, ecx))
        lines = r.log.splitlines()
        expect(len(lines) == len(want), f"track={track}: {len(lines)} lines, want {len(want)}", r)
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(lines, want)) if a != b]
        expect(not bad, f"track={track}: first difference (line, got, want): {bad[:1]}", r)


@case
def mem_10_print_accesses_shows_device_addresses():
    r = _mem10_run(["print-accesses=on", "track=w"], "io.bin")
    rows = [line.split(",") for line in r.log.splitlines()[1:]]
    io = [(row[2], row[3], row[4], row[5]) for row in rows if row[2].startswith("0xfe")]
    expect(io == [("0xfee00080", "0xfee00080", "32", "store")] * 2
           + [("0xfec00000", "0xfec00000", "32", "store")], f"device stores: {io}", r)
    expect([row[6] for row in rows if row[2].startswith("0xfe")]
           == ["0x00000000", "0x00000000", "0x00000001"], "values stored to the devices", r)
    expect(rows[-1][1:] == ["", "0x1000", "0x1000", "32", "store", "0x00000007"], "RAM store", r)


@case
def mem_10_region_summary_checks_loads_against_stores():
    head = "Region Base, Reads, Writes, Seen all\n"
    r = _mem10_run(["region-summary=on"])
    expect(r.log == head + f"0x{0:016x}, {LOOPS}, {LOOPS}, true\n", "every load saw its store", r)
    r = _mem10_run(["region-summary=on", "inline=on"])
    expect(r.log == f"mem accesses: {2 * LOOPS}\n" + head + f"0x{0:016x}, {LOOPS}, {LOOPS}, true\n",
           "each access counts once", r)
    # loads only: the first one returns 1000 where nothing was seen stored (offset 0x1000)
    r = _mem10_run(["region-summary=on", "track=r"])
    expect(r.log == f"Warning: 0x{0:016x}:4096 read an un-instrumented value\n" + head
           + f"0x{0:016x}, {LOOPS}, 0, false\n", "unseen stores", r)
    r = _mem10_run(["region-summary=on", "track=w", "callback=on"])
    expect(r.log == f"mem accesses: {LOOPS}\n" + head + f"0x{0:016x}, 0, {LOOPS}, true\n",
           "stores only", r)


@refused_install
def mem_10_refuses_inline_with_callback():
    r = system_qemu("10.0", ["script=mem", "inline=on", "callback=on"], smp=1)
    expect(r.status == 1 and "mem.lua: can't enable inline and callback counting at the same time"
           in r.err, "inline= and callback= are exclusive on QEMU 10", r)


@refused_install
def mem_7_2_refuses_the_10x_arguments_naming_the_feature():
    for arg in ["print-accesses=on", "region-summary=on"]:
        r = qemu(["script=mem", arg], [guest("loop"), "1"])
        expect(r.status == 1 and f"mem.lua: {arg}: " in r.err and "'mem_value' feature" in r.err
               and "QEMU 9.2" in r.err, f"{arg} on QEMU 7.2", r)
