#!/usr/bin/env python3
"""qlua against QEMU's C plugins, side by side in one run.

Three tables:
  shipped scripts vs QEMU's plugins  each shipped script that has a QEMU counterpart
      (scripts/NAME.lua against QEMU's own libNAME.so with the same arguments) on real programs:
      C ms, qlua ms, qlua / C, the goal, and whether the two outputs agree (bench/compare.py);
  bench-only mechanisms  the kinds of work qlua does (bench/scripts/, scripts/count.lua) against
      bench/cref.c and bench/insn_inline.c (QEMU 7.2 only: they use API 1's inline ops);
  insn.lua's cost per event  insn.lua in callback mode on a short input and one 10x longer: ns per
      executed instruction, to see whether the per-event cost grows with the run.
Runs alternate (C, qlua, C, qlua, ...) so that machine noise hits both alike; each figure is the
median of --runs rounds. Several --host and --build values are measured in the same rounds and
printed side by side.

QEMU 7.2's plugins come from tools/fetch-qemu-plugins.sh (Debian's source of the installed
qemu-user; --plugins DIR), QEMU 10.2's from QLUA_QEMU_10_2 (default ../shared/qemu-10.2: bin/,
plugins/).

Usage: bench/run.py [--host 7.2|10.2]... [--build DIR]... [--runs N] [--quick] [--only TEXT]
                    [--plugins DIR] [--record [FILE]]"""
import argparse
import collections
import glob
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import compare  # noqa: E402  (bench/compare.py, beside this file)

QEMU_10_2 = os.environ.get("QLUA_QEMU_10_2") or os.path.join(os.path.dirname(ROOT), "shared",
                                                             "qemu-10.2")
HOSTS = ("7.2", "10.2")

# Goals for qlua / C: where QEMU's plugin only counts, qlua counts natively too and should cost
# the same; where qlua is meant to be faster than QEMU's callback-and-lock plugins, "ahead".
COUNTS = ("<= 1.05", lambda r: r <= 1.05)
OTHER = ("<= 1.5", lambda r: r <= 1.5)
AHEAD = ("< 1.0 (ahead)", lambda r: r < 1.0)


class Row:
    """A shipped script against its QEMU plugin. args: the same for both ({files}: a per-run path
    prefix for the files the plugin writes). compare: a key of compare.COMPARERS, or None with
    `why`. racy: hosts whose plugin's counts race with several vCPUs (shared counters without
    atomics): marked on the 8-thread guest. light: Lua per instruction or access, run on the light
    inputs. hosts: where QEMU has the plugin."""

    def __init__(self, label, script, args, goal, compare, why=None, racy=(), light=False,
                 hosts=HOSTS):
        self.label, self.script, self.args, self.goal = label, script, args, goal
        self.compare, self.why, self.racy = compare, why, set(racy)
        self.light, self.hosts = light, set(hosts)


SHIPPED = [
    Row("bb inline=on", "bb", "inline=on", COUNTS, "bb", racy={"7.2"}),
    Row("bb (callback mode)", "bb", "", AHEAD, "bb"),
    Row("insn inline=on", "insn", "inline=on", COUNTS, "insn_total", racy={"7.2"}),
    Row("insn (callback mode)", "insn", "", COUNTS, "insn_callback", racy={"7.2"}),
    Row("mem inline=on", "mem", "inline=on", COUNTS, "exact", racy={"7.2"}),
    Row("mem callback=on", "mem", "callback=on", COUNTS, "exact", racy={"7.2"}),
    Row("syscall", "syscall", "", COUNTS, "line_set"),
    Row("hotblocks", "hotblocks", "", AHEAD, "hotblocks"),
    Row("hotpages", "hotpages", "", AHEAD, "hotpages"),
    Row("howvec", "howvec", "", COUNTS, None,
        why="on x86 QEMU's howvec has no class table (all 'Unclassified', counted by their first "
            "4 bytes); howvec.lua's x86 classes are its own"),
    Row("cache", "cache", "", OTHER, "cache", light=True),
    Row("execlog", "execlog", "", OTHER, "execlog", light=True),
    Row("drcov", "drcov", "filename={files}.drcov", OTHER, "drcov"),
    Row("cflow", "cflow", "", OTHER, "cflow", hosts={"10.2"}),
    # never reached: the row measures what watching the count costs over a whole run
    Row("stoptrigger icount=1e15", "stoptrigger", "icount=1000000000000000", OTHER, "status",
        hosts={"10.2"}),
    Row("bbv interval=1000000", "bbv", "interval=1000000,outfile={files}", OTHER, "bbv",
        hosts={"10.2"}),
]
NOT_MEASURED = [
    "hwprofile: QEMU's libhwprofile.so counts device (I/O) accesses, which only system mode has; "
    "this table runs user mode, so it is left out",
    "lockstep: needs two QEMUs talking over a socket (not a single run to time); left out",
]

# QEMU 10.2's plugin arguments (from QEMU's source and the strings of its plugins/lib*.so; each
# is checked against the .so at run time, a name missing there is dropped). 7.2's are read from
# the Debian source tree that tools/fetch-qemu-plugins.sh unpacked.
ARGS_10_2 = {
    "bb": ["inline", "idle"], "insn": ["inline", "sizes", "match", "trace"],
    "mem": ["haddr", "track", "inline", "callback", "print-accesses", "region-summary"],
    "syscall": ["print", "log_writes"], "hotblocks": ["inline"], "hotpages": ["sortby", "io",
    "pagesize"], "howvec": ["inline", "verbose", "count"],
    "cache": ["iblksize", "iassoc", "icachesize", "dblksize", "dassoc", "dcachesize", "limit",
              "cores", "l2cachesize", "l2blksize", "l2assoc", "l2", "evict"],
    "execlog": ["ifilter", "afilter", "reg", "rdisas"], "drcov": ["filename"], "cflow": ["sort"],
    "stoptrigger": ["icount", "addr"], "bbv": ["interval", "outfile"],
}

# bench-only mechanisms: (kind of work, C plugin, C args, qlua script, goal qlua / C[, workloads])
PAIRS = [
    ("count (inline, per insn)", "bench/libinsn_inline.so", None, "scripts/count.lua", 1.03),
    ("bb inline (per block)", "bench/libcref.so", "mode=bb_inline", "bench/scripts/bb_inline.lua", 1.03),
    ("hotpages (batched mem)", "bench/libcref.so", "mode=hotpages", "bench/scripts/hotpages.lua", 1.5),
    ("tb callback (Lua per block)", "bench/libcref.so", "mode=tb_cb", "bench/scripts/tb_cb.lua", 4.0),
    ("insn callback (Lua per insn)", "bench/libcref.so", "mode=insn_cb", "bench/scripts/insn_cb.lua", 4.0),
    ("on_translate only", "bench/libcref.so", "mode=trans", "bench/scripts/trans.lua", 1.3),
    # a line per block: C hands each to QEMU's log (a write each); qlua buffers, flushing within
    # 20 ms (docs/promises.md). Only on the python3 workload: a line per block is a lot of text.
    ("a line printed per block", "bench/libcref.so", "mode=print", "bench/scripts/print.lua", 1.0,
     {"python3 import json, email"}),
]

WORDS = ["qemu", "plugin", "lua", "block", "translate", "vcpu", "memory", "counter"]


def write_text(path, size=None, lines=None):
    """Deterministic, compressible, not trivial text of `size` bytes or `lines` lines."""
    with open(path, "w") as f:
        i, n, nl = 0, 0, 0
        while (size is not None and n < size) or (lines is not None and nl < lines):
            end = i % 11 == 0
            w = WORDS[(i * 7 + i // 13) % len(WORDS)] + (".\n" if end else " ")
            f.write(w)
            n, nl, i = n + len(w), nl + end, i + 1
    return path


class Workload:
    """A real program: its command lines by kind of run, "quick" and "full", and "quick light"
    and "light" for rows that run Lua per instruction or access (a missing kind: those rows skip
    the program); each made when first asked for (input files are written then). varies: hosts
    where the program's output varies from run to run, so outputs are not compared there, with
    the reason."""

    def __init__(self, name, commands, varies=(), why=None):
        self.name, self.commands, self.varies, self.why = name, commands, set(varies), why

    def command(self, quick, light):
        kind = ("quick light" if light else "quick") if quick else ("light" if light else "full")
        make = self.commands.get(kind)
        return make() if make else None


def shipped_workloads(build, tmp):
    def t(kib):
        path = os.path.join(tmp, f"text{kib}k.txt")
        return path if os.path.exists(path) else write_text(path, size=kib * 1024)
    gz = lambda kib: lambda: ["/bin/gzip", "-9", "-c", t(kib)]
    bz = lambda kib: lambda: ["/bin/bzip2", "-9", "-c", t(kib)]
    srt = lambda kib: lambda: ["/usr/bin/sort", "--parallel=1", t(kib)]  # one thread: same work
    threads = lambda n: lambda: [os.path.join(build, "tests", "threads"), str(n)]
    python = "/usr/bin/python3"
    return [
        # full runs: about 1 s each under QEMU 7.2 without a plugin here, bzip2 about 2.5-4.5 s
        Workload("gzip -9", {"quick": gz(16), "quick light": gz(16), "full": gz(49152),
                             "light": gz(64)}),
        Workload("bzip2 -9", {"quick": bz(16), "full": bz(3072)}),
        Workload("python3", {"quick": lambda: [python, "-S", "-c", "pass"],
                             "full": lambda: [python, "-c", "import json, email, decimal, "
                                              "argparse; json.dumps([str(i) for i in "
                                              "range(300000)])"]},
                 varies={"10.2"},
                 why="python3 on QEMU 10: Python hashes object addresses, and there the guest's "
                     "heap lies where the host's mmap leaves room, which the plugin's own "
                     "allocations change"),
        Workload("sort", {"quick": srt(16), "full": srt(4096), "light": srt(64)}),
        Workload("8 threads", {"quick": threads(20), "quick light": threads(20),
                               "full": threads(20000), "light": threads(50)},
                 varies=HOSTS,
                 why="8 threads: how many instructions, syscalls and blocks run changes from run "
                     "to run (glibc's thread start and exit take locks and futex waits as timing "
                     "decides)"),
    ]


def mechanism_workloads(build, tmp, quick):
    text = write_text(os.path.join(tmp, "mech.txt"), size=(64 if quick else 1024) * 1024)
    guests = os.path.join(build, "tests")
    all_ = [
        # runs long enough (0.1 s and more) that start-up and timer noise do not decide the ratio
        ("loop guest", [os.path.join(guests, "loop"), "100" if quick else "6000"]),
        ("gzip -9", ["/bin/gzip", "-9", "-c", text]),
        ("bzip2 -9", ["/bin/bzip2", "-9", "-c", text]),
        ("python3 import json, email", ["/usr/bin/python3", "-c", "import json, email"]),
        ("8 threads", [os.path.join(guests, "threads"), "50" if quick else "3000"]),
    ]
    return all_[:1] if quick else all_


# ---- running QEMU ----

class Variant:
    """A host (QEMU and its plugins) with the qlua builds measured on it."""

    def __init__(self, host, plugins, builds):
        self.host, self.builds = host, builds
        if host == "7.2":
            self.qemu = os.environ.get("QEMU_X86_64", "qemu-x86_64")
            self.plugins = plugins
        else:
            self.qemu = os.path.join(QEMU_10_2, "bin", "qemu-x86_64")
            self.plugins = os.path.join(QEMU_10_2, "plugins")

    def c_plugin(self, script):
        return os.path.join(self.plugins, f"lib{script}.so")


# Guest addresses the same from run to run: QEMU 10 maps the guest's libraries and stack where
# the host's mmap puts them, which ASLR would move. Costs nothing measurable (one exec).
NO_ASLR = ["setarch", platform.machine(), "-R"]
# The same guest run every time: getrandom and AT_RANDOM from QEMU's seeded generator (-seed),
# Python's string hashes unsalted, and one environment for all runs (its size moves the stack).
SEED = ["-seed", "1"]
GUEST_ENV = dict(os.environ, PYTHONHASHSEED="0")


def run_qemu(cmd):
    """Runs cmd; returns (ms, exit status, stderr)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=GUEST_ENV)
    ms = (time.perf_counter() - t) * 1000
    return ms, p.returncode, p.stderr.decode(errors="replace")


def fail(message):
    sys.exit(f"bench: {message}")


def shipped_command(v, build, row, program, work, qlua):
    """(command, prefix of the files it writes, its plugin log) of one side of a row."""
    who = "q" if qlua else "c"
    files, log = os.path.join(work, who), os.path.join(work, who + ".log")
    args = row.args.format(files=files)
    if qlua:
        plugin = f"{os.path.join(build, 'libqlua.so')},script={row.script}"
    else:
        plugin = v.c_plugin(row.script)
    plugin += "," + args if args else ""
    cmd = NO_ASLR + [v.qemu] + SEED + ["-plugin", plugin, "-d", "plugin", "-D", log] + program
    return cmd, files, log


def one_shipped(v, build, row, program, work, qlua):
    """Runs one side of a row once; returns (ms, canonical output or None, None) or, when QEMU
    failed, (ms, None, what happened)."""
    cmd, files, log = shipped_command(v, build, row, program, work, qlua)
    for old in glob.glob(glob.escape(files) + "*"):
        os.unlink(old)
    ms, status, err = run_qemu(cmd)
    canon, failure = None, None
    if status != 0:
        what = f"signal {-status}" if status < 0 else f"exit {status}"
        last = err.strip().splitlines()[-1] if err.strip() else ""
        failure = f"{what}: {last}" if last else what
    elif row.compare:
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        run = compare.Run(status, text, files, v.host, qlua)
        canon = compare.COMPARERS[row.compare][0](run)
    for old in glob.glob(glob.escape(files) + "*"):
        os.unlink(old)
    return ms, canon, failure


def check_mark(row, host, workload, c_outs, q_outs):
    """=: the outputs agree; ≠: they do not; race/vary/n/c: not compared (see the notes)."""
    if not row.compare:
        return "n/c"
    if host in workload.varies:
        return "race" if host in row.racy and workload.name == "8 threads" else "vary"
    if any(o is None for o in c_outs + q_outs):
        return "no output"  # the line or file the comparison reads was not there
    same = compare.COMPARERS[row.compare][1]
    if not all(same(c_outs[0], c) for c in c_outs[1:]) or \
            not all(same(q_outs[0], q) for q in q_outs[1:]):
        return "vary"
    return "=" if same(c_outs[0], q_outs[0]) else "≠"


# ---- arguments: what each side accepts ----

def c_args_7_2(plugins, script):
    """The argument names of QEMU 7.2's plugin, read from the Debian source tree."""
    for sub in ("contrib/plugins", "tests/plugin"):
        path = os.path.join(plugins, "src", sub, script + ".c")
        if os.path.exists(path):
            return re.findall(r'tokens\[0\], "([^"]+)"', open(path).read())
    return None


def c_args(v, script):
    if v.host == "7.2":
        return c_args_7_2(v.plugins, script)
    names = ARGS_10_2.get(script, [])
    data = open(v.c_plugin(script), "rb").read()
    return [n for n in names if b"\0" + n.encode() + b"\0" in data]


def qlua_args(build, script):
    """The argument names a shipped script declares (`qlua help NAME`)."""
    p = subprocess.run([os.path.join(build, "qlua"), "help", script], capture_output=True,
                       text=True)
    return re.findall(r"^  ([\w-]+)=", p.stdout, re.M)


def argument_notes(variants, rows):
    notes = []
    for v in variants:
        for row in rows:
            if v.host not in row.hosts:
                continue
            theirs = c_args(v, row.script)
            if theirs is None:
                notes.append(f"{row.script}: no source of QEMU {v.host}'s plugin in "
                             f"{v.plugins}/src")
                continue
            ours = qlua_args(v.builds[0], row.script)
            used = [a.split("=")[0] for a in row.args.split(",") if a]
            for a in used:
                refusing = ([f"QEMU {v.host}"] if a not in theirs else []) + (
                    [f"{row.script}.lua"] if a not in ours else [])
                if refusing:
                    fail(f"{row.label}: argument {a} is not accepted by {' and '.join(refusing)}")
            missing = [a for a in theirs if a not in ours]
            if missing:
                notes.append(f"{row.script}: QEMU {v.host}'s plugin takes {', '.join(missing)}, "
                             f"which {row.script}.lua lacks")
    return sorted(set(notes))


# ---- the tables ----

def fmt_ms(ms):
    return f"{ms:.0f}"


def shipped_table(variants, rows, workloads, a, work, out):
    header = ["script (args)", "workload"]
    for v in variants:
        header += [f"C {v.host} ms"]
        for b in v.builds:
            tag = f"{v.host} {os.path.basename(b)}"
            header += [f"qlua {tag} ms", f"qlua/C {tag}", f"check {tag}"]
    header += ["goal"]
    out.table("Shipped scripts vs QEMU's plugins (scripts/NAME.lua vs QEMU's libNAME.so, same "
              "arguments)", header)
    for row in rows:
        for w in workloads:
            cmd = w.command(a.quick, row.light)
            if cmd is None:
                continue
            cells, measured = [row.label, w.name], False
            # one round: for each host C, then each build's qlua; rounds repeat that. A side that
            # fails is not run again.
            times, outs = collections.defaultdict(list), collections.defaultdict(list)
            failed = {}
            live = [v for v in variants if v.host in row.hosts]
            for _ in range(a.runs):
                for v in live:
                    for b in [None] + v.builds:
                        if (v.host, b) in failed:
                            continue
                        ms, canon, why = one_shipped(v, b or v.builds[0], row, cmd, work,
                                                     qlua=b is not None)
                        if why:
                            failed[(v.host, b)] = why
                            out.later(f"{row.label}, {w.name}: "
                                      f"{'qlua ' + os.path.basename(b) if b else 'QEMU'} "
                                      f"{v.host} failed ({why})")
                        times[(v.host, b)].append(ms)
                        outs[(v.host, b)].append(canon)
            for v in variants:
                if v not in live:
                    none = ["–", "–", f"QEMU {v.host} has no {row.script}"]
                    cells += ["–"] + none * len(v.builds)
                    continue
                measured = True
                c_failed = failed.get((v.host, None))
                c_ms = statistics.median(times[(v.host, None)])
                cells.append("failed" if c_failed else fmt_ms(c_ms))
                for b in v.builds:
                    q_ms = statistics.median(times[(v.host, b)])
                    if c_failed or (v.host, b) in failed:
                        who = "QEMU's plugin" if c_failed else "qlua"
                        cells += ["failed" if (v.host, b) in failed else fmt_ms(q_ms), "–",
                                  f"{who} failed"]
                        continue
                    ratio = q_ms / c_ms
                    mark = "" if row.goal[1](round(ratio, 2)) else " ✗"
                    check = check_mark(row, v.host, w, outs[(v.host, None)], outs[(v.host, b)])
                    cells += [fmt_ms(q_ms), f"{ratio:.2f}{mark}", check]
            cells.append(row.goal[0])
            if measured:
                out.row(cells)


def growth_table(variants, a, tmp, work, out):
    """insn.lua callback mode (a Lua call per block) against libinsn.so's callback mode on gzip -9
    of a short text and one 10x longer: ns per executed instruction over the no-plugin run, and
    the marginal cost (long minus short), which leaves start-up out."""
    lines = 1000 if a.quick else 10000
    inputs = [(n, write_text(os.path.join(tmp, f"lines{n}.txt"), lines=n))
              for n in (lines, 10 * lines)]
    header = ["host", "qlua build"]
    for n, _ in inputs:
        header += [f"insns ({n} lines)", f"C ns/insn ({n})", f"qlua ns/insn ({n})",
                   f"qlua/C ({n})"]
    header += ["qlua marginal ns/insn", "C marginal ns/insn"]
    out.table("insn.lua's cost per event (callback mode, gzip -9 of N lines of text; "
              "ns per instruction over the run without a plugin)", header)
    row = Row("insn", "insn", "", COUNTS, "insn_callback")
    for v in variants:
        per = {}
        for n, path in inputs:
            program = ["/bin/gzip", "-9", "-c", path]
            t = collections.defaultdict(list)
            insns = None
            for _ in range(a.runs):
                t["none"].append(run_qemu(NO_ASLR + [v.qemu] + SEED + program)[0])
                ms, _, why = one_shipped(v, v.builds[0], row, program, work, qlua=False)
                t["C"].append(ms)
                for b in v.builds:
                    ms, canon, why2 = one_shipped(v, b, row, program, work, qlua=True)
                    if why or why2:
                        fail(f"insn growth on {' '.join(program)}: {why or why2}")
                    t[b].append(ms)
                    insns = canon[1]
            per[n] = ({k: statistics.median(x) for k, x in t.items()}, insns)
        for b in v.builds:
            cells = [v.host, os.path.basename(b)]
            for n, _ in inputs:
                m, insns = per[n]
                c_ns = (m["C"] - m["none"]) * 1e6 / insns
                q_ns = (m[b] - m["none"]) * 1e6 / insns
                cells += [str(insns), f"{c_ns:.1f}", f"{q_ns:.1f}", f"{q_ns / c_ns:.2f}"]
            (ms_s, i_s), (ms_l, i_l) = per[inputs[0][0]], per[inputs[1][0]]
            cells += [f"{(ms_l[b] - ms_s[b]) * 1e6 / (i_l - i_s):.1f}",
                      f"{(ms_l['C'] - ms_s['C']) * 1e6 / (i_l - i_s):.1f}"]
            out.row(cells)


def mechanism_table(variants, a, tmp, out):
    v72 = [v for v in variants if v.host == "7.2"]
    title = "Bench-only mechanisms (bench/scripts/ vs bench/cref.c, QEMU 7.2)"
    if not v72:
        out.table(title)
        out.note("bench-only mechanisms: measured on QEMU 7.2 only (bench/cref.c and "
                 "bench/insn_inline.c use API 1's raw inline ops, which QEMU 9 removed)")
        return
    v = v72[0]
    header = ["workload", "work", "no plugin ms", "C ms"]
    for b in v.builds:
        header += [f"qlua {os.path.basename(b)} ms", f"qlua/C {os.path.basename(b)}"]
    header += ["goal"]
    out.table(title, header)
    for wname, program in mechanism_workloads(v.builds[0], tmp, a.quick):
        for pname, cso, carg, script, target, *where in PAIRS:
            if (a.only and a.only not in pname) or (where and wname not in where[0]):
                continue
            c = os.path.join(v.builds[0], cso) + ("," + carg if carg else "")
            log = ["-d", "plugin", "-D", "/dev/null"]
            configs = {"none": [v.qemu] + program, "C": [v.qemu, "-plugin", c] + log + program}
            for b in v.builds:
                configs[b] = [v.qemu, "-plugin", f"{os.path.join(b, 'libqlua.so')},script="
                              f"{os.path.join(ROOT, script)}"] + log + program
            times = {k: [] for k in configs}
            for _ in range(a.runs):
                for k, cmd in configs.items():
                    ms, status, err = run_qemu(cmd)
                    if status:
                        fail(f"{' '.join(cmd)} failed:\n{err}")
                    times[k].append(ms)
            m = {k: statistics.median(x) for k, x in times.items()}
            cells = [wname, pname, fmt_ms(m["none"]), fmt_ms(m["C"])]
            for b in v.builds:
                r = m[b] / m["C"]
                cells += [fmt_ms(m[b]), f"{r:.2f}{'' if round(r, 2) <= target else ' ✗'}"]
            out.row(cells + [f"<= {target}"])


class Output:
    """Prints markdown tables as rows arrive and keeps them for --record."""

    def __init__(self):
        self.sections, self.pending = [], []

    def table(self, title, header=None):
        """Starts a section: its title and the header of its table (None: no table)."""
        self.sections.append([f"## {title}", ""])
        if header:
            self.sections[-1] += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        print("\n" + "\n".join(self.sections[-1]), flush=True)

    def row(self, cells):
        line = "| " + " | ".join(cells) + " |"
        self.sections[-1].append(line)
        print(line, flush=True)

    def note(self, text):
        line = f"- {text}"
        if self.sections:
            self.sections[-1].append(line)
        print(line, flush=True)

    def later(self, text):
        """A note printed below the current table (failures found while it is filled)."""
        self.pending.append(text)

    def flush_later(self):
        for text in self.pending:
            self.note(text)
        self.pending = []


def record(path, out, tag, preamble):
    """Puts this run's sections into `path`, titled "TITLE (TAG)", each replacing the section of
    the same title (so a run on other hosts or builds adds its own; the rest of the file stays)."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    for sec in out.sections:
        title = f"{sec[0]} ({tag})"
        body = "\n".join([title, "", preamble] + sec[1:]) + "\n"
        at = text.find(title + "\n")
        if at < 0:
            text = text.rstrip("\n") + "\n\n" + body
        else:
            nxt = text.find("\n## ", at + len(title))
            text = text[:at] + body + (text[nxt + 1:] if nxt >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", action="append", choices=HOSTS,
                    help="QEMU to measure on (repeatable; default 7.2)")
    ap.add_argument("--build", action="append",
                    help="qlua build folder (repeatable: build, build-lua54; default build)")
    ap.add_argument("--runs", type=int, help="rounds per row (default 5; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="small inputs, one round: a smoke run")
    ap.add_argument("--only", help="only rows whose label or kind of work contains this text "
                                   "('insn growth': only insn.lua's cost per event)")
    ap.add_argument("--plugins", default=os.path.join(ROOT, "build-qemu-plugins"),
                    help="QEMU 7.2's plugins (tools/fetch-qemu-plugins.sh DIR)")
    ap.add_argument("--record", nargs="?", const=os.path.join(HERE, "RESULTS.md"),
                    help="also write the tables into FILE (default bench/RESULTS.md), replacing "
                         "the sections of the same titles")
    a = ap.parse_args()
    a.runs = a.runs or (1 if a.quick else 5)
    builds = [os.path.abspath(b) for b in (a.build or [os.path.join(ROOT, "build")])]
    for b in builds:
        if not os.path.exists(os.path.join(b, "libqlua.so")):
            fail(f"no libqlua.so in {b} (meson setup {b} -Dtests=true && ninja -C {b})")
    if not os.path.exists(os.path.join(builds[0], "tests", "threads")):
        fail(f"no tests/threads in {builds[0]}: configure it with -Dtests=true")
    variants = [Variant(h, os.path.abspath(a.plugins), builds) for h in (a.host or ["7.2"])]
    for v in variants:
        if shutil.which(v.qemu) is None:
            fail(f"QEMU {v.host} not found: {v.qemu}"
                 + (" (set QLUA_QEMU_10_2)" if v.host == "10.2" else ""))
        if not os.path.exists(v.c_plugin("bb")):
            fail(f"QEMU {v.host}'s plugins not found in {v.plugins}"
                 + (f" (tools/fetch-qemu-plugins.sh {v.plugins})" if v.host == "7.2" else ""))
    if shutil.which(NO_ASLR[0]) is None:
        fail("setarch (util-linux) not found")

    rows = [r for r in SHIPPED if not a.only or a.only in r.label]
    out = Output()
    scratch = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=scratch) as work:
        notes = argument_notes(variants, rows)
        if rows:
            workloads = shipped_workloads(builds[0], tmp)
            shipped_table(variants, rows, workloads, a, work, out)
            out.flush_later()
            out.note("check: = the outputs agree (what the two promise alike: counts, rows "
                     "ranked above the ties at the cut, blocks; see bench/compare.py), ≠ they "
                     "do not; no output: a run did not write what the comparison reads; race: "
                     "QEMU's plugin counts with shared unsynchronised adds, inexact with several "
                     "threads (and the program varies, below); vary: the program's output "
                     "varies from run to run (below), or did between rounds; n/c: not "
                     "comparable (below)")
            for r in rows:
                if r.why:
                    out.note(f"{r.script}: n/c: {r.why}")
            for w in workloads:
                if w.why and any(v.host in w.varies for v in variants):
                    out.note(f"vary: {w.why}")
            for n in notes + NOT_MEASURED:
                out.note(n)
        if not a.only or any(a.only in p[0] for p in PAIRS):
            mechanism_table(variants, a, tmp, out)
        if not a.only or a.only in "insn growth":
            growth_table(variants, a, tmp, work, out)

    qemus = "; ".join(subprocess.run([v.qemu, "--version"], capture_output=True, text=True)
                      .stdout.splitlines()[0] for v in variants)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    quick = " (--quick: small inputs, noisy)" if a.quick else ""
    preamble = (f"Machine: {cpu}, {os.cpu_count()} cores; {platform.system()} "
                f"{platform.release()}. {qemus}. Medians of {a.runs} alternated runs{quick}, ms. "
                f"Produced by `bench/run.py`.")
    print("\n" + preamble)
    if a.record:
        tag = ", ".join(f"QEMU {v.host}" for v in variants) + "; " + ", ".join(
            os.path.basename(b) for b in builds) + (", --quick" if a.quick else "")
        record(a.record, out, tag, preamble)
        print(f"written {a.record}")


if __name__ == "__main__":
    main()
