#!/usr/bin/env python3
"""Cost of qlua's native counter strategies, side by side in one run (medians of alternated runs).
Workloads: the single-threaded loop guest and the 8-thread guest from tests/guests.
Columns: no plugin; C reference (bench/insn_inline.c: libinsn.so inline=on, one shared raw add,
inexact with threads); count.lua with counters=auto (inline while one vCPU runs, per-vCPU callbacks
after a second appears); count.lua with counters=callback (always per-vCPU callbacks).
Usage: bench/counters.py [BUILD_DIR] [RUNS]"""
import os
import statistics
import subprocess
import sys
import time

build = sys.argv[1] if len(sys.argv) > 1 else "build"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
plugin = os.path.abspath(os.path.join(build, "libqlua.so"))
guests = os.path.join(build, "tests")
workloads = {"loop (1 thread)": [os.path.join(guests, "loop"), "6000"],
             "threads (8 threads)": [os.path.join(guests, "threads"), "4000"]}
configs = {"none": [], "C": ["-plugin", os.path.abspath(os.path.join(build, "bench", "libinsn_inline.so"))],
           "auto": ["-plugin", plugin + ",script=count"],
           "callback": ["-plugin", plugin + ",script=count,counters=callback"]}

print(f"{'workload':22} {'none ms':>8} {'C ms':>7} {'auto ms':>8} {'callback ms':>12} "
      f"{'auto/C':>7} {'callback/C':>11}")
for name, program in workloads.items():
    times = {c: [] for c in configs}
    for _ in range(runs):
        for c, args in configs.items():  # alternate, so drifts in machine load hit all alike
            t = time.perf_counter()
            subprocess.run(["qemu-x86_64"] + args + ["-d", "plugin", "-D", "/dev/null"] + program,
                           check=True, stdout=subprocess.DEVNULL)
            times[c].append((time.perf_counter() - t) * 1000)
    m = {c: statistics.median(v) for c, v in times.items()}
    print(f"{name:22} {m['none']:8.0f} {m['C']:7.0f} {m['auto']:8.0f} {m['callback']:12.0f} "
          f"{m['auto'] / m['C']:7.2f} {m['callback'] / m['C']:11.2f}")
