#!/usr/bin/env python3
"""qlua against QEMU-style C plugins, side by side in one run.

For each workload and each kind of work it runs: no plugin, the C reference plugin (bench/cref.c,
bench/insn_inline.c) and the equivalent qlua script (bench/scripts/, scripts/count.lua), alternating
the three in every round so machine noise hits all alike, and prints medians and the ratio
qlua / C. The table is also written to bench/RESULTS.md with the machine and QEMU version.
Usage: bench/run.py [--build DIR] [--runs N] [--quick] [--only TEXT]"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# kind of work: (C plugin, C args, qlua script, target ratio qlua / C, what the target means)
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


def workloads(build, tmp, quick):
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:  # deterministic, compressible, not trivial
        words = ["qemu", "plugin", "lua", "block", "translate", "vcpu", "memory", "counter"]
        size = 64 * 1024 if quick else 1024 * 1024
        i, n = 0, 0
        while n < size:
            w = words[(i * 7 + i // 13) % len(words)] + (" " if i % 11 else ".\n")
            f.write(w)
            n += len(w)
            i += 1
    guests = os.path.join(build, "tests")
    return [
        # runs long enough (0.1 s and more) that start-up and timer noise do not decide the ratio
        ("loop guest", [os.path.join(guests, "loop"), "100" if quick else "6000"]),
        ("gzip -9", ["/bin/gzip", "-9", "-c", text]),
        ("bzip2 -9", ["/bin/bzip2", "-9", "-c", text]),
        ("python3 import json, email", ["/usr/bin/python3", "-c", "import json, email"]),
        ("8 threads", [os.path.join(guests, "threads"), "50" if quick else "3000"]),
    ]


def timed(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{p.stderr.decode()}")
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    ap.add_argument("--only", help="run only the kinds of work whose name contains this text")
    a = ap.parse_args()
    plugin = os.path.join(a.build, "libqlua.so")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for wname, program in workloads(a.build, tmp, a.quick):
            base = ["qemu-x86_64"]
            for pname, cso, carg, script, target, *where in PAIRS:
                if (a.only and a.only not in pname) or (where and wname not in where[0]):
                    continue
                c = os.path.join(a.build, cso) + ("," + carg if carg else "")
                configs = {
                    "none": base + program,
                    "C": base + ["-plugin", c, "-d", "plugin", "-D", "/dev/null"] + program,
                    "qlua": base + ["-plugin", f"{plugin},script={os.path.join(ROOT, script)}",
                                    "-d", "plugin", "-D", "/dev/null"] + program,
                }
                times = {k: [] for k in configs}
                for _ in range(a.runs):
                    for k, cmd in configs.items():
                        times[k].append(timed(cmd))
                m = {k: statistics.median(v) for k, v in times.items()}
                ratio = m["qlua"] / m["C"]
                rows.append((wname, pname, m["none"], m["C"], m["qlua"], ratio, target))
                print(f"{wname:28} {pname:30} none {m['none']:8.0f}  C {m['C']:8.0f}  "
                      f"qlua {m['qlua']:8.0f}  qlua/C {ratio:5.2f}  (goal <= {target})", flush=True)
    qemu_version = subprocess.run(["qemu-x86_64", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = ["# Benchmark results", "",
             f"Machine: {cpu}, {os.cpu_count()} cores; {platform.system()} {platform.release()}. "
             f"{qemu_version}. Medians of {a.runs} alternated runs{' (--quick)' if a.quick else ''}, ms.",
             "Produced by `bench/run.py`; ratios compare qlua with the C plugin doing the same work "
             "in the same run.", "",
             "| workload | work | no plugin | C plugin | qlua | qlua / C | goal |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for w, p, none, c, q, r, t in rows:
        mark = "" if round(r, 2) <= t else " ✗"
        lines.append(f"| {w} | {p} | {none:.0f} | {c:.0f} | {q:.0f} | {r:.2f}{mark} | ≤ {t} |")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written {os.path.join(HERE, 'RESULTS.md')}")


if __name__ == "__main__":
    main()
