#!/usr/bin/env python3
"""How long script output takes to reach QEMU's log (docs/promises.md states the bound).

A script (LuaJIT build: it reads CLOCK_MONOTONIC through the FFI) prints the time of its print
every 97th translation while a real program runs; this process polls the log file and notes when
each line arrives, on the same clock. Prints the median and maximum delay over the run.
Usage: bench/output_latency.py [--build DIR] [--runs N]"""
import argparse
import os
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = """
local ffi = require "ffi"
ffi.cdef "typedef struct { long s, ns; } qlua_bench_ts; int clock_gettime(int, qlua_bench_ts *);"
local ts, n = ffi.new("qlua_bench_ts"), 0
qemu.on_translate(function(tb)
  n = n + 1
  if n % 97 == 0 then
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC, as Python's time.monotonic_ns
    qemu.printf("t %d\\n", tonumber(ts.s) * 1000000000 + tonumber(ts.ns))
  end
end)
"""


def one_run(plugin, tmp):
    script, log = os.path.join(tmp, "stamp.lua"), os.path.join(tmp, "stamp.log")
    with open(script, "w") as f:
        f.write(SCRIPT)
    if os.path.exists(log):
        os.unlink(log)
    p = subprocess.Popen(["qemu-x86_64", "-plugin", f"{plugin},script={script}", "-d", "plugin",
                          "-D", log, "/usr/bin/python3", "-c", "import json, email, argparse, decimal"],
                         stdout=subprocess.DEVNULL)
    arrived, pos, pending = {}, 0, ""
    while p.poll() is None:
        try:
            with open(log) as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = ""
        now = time.monotonic_ns()
        pos += len(data)
        *lines, pending = (pending + data).split("\n")
        for line in lines:
            if line.startswith("t "):
                arrived[int(line[2:])] = now
        time.sleep(0.0005)
    return sorted((seen - printed) / 1e6 for printed, seen in arrived.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.runs):
            d = one_run(os.path.join(a.build, "libqlua.so"), tmp)
            print(f"{len(d)} lines seen while the program ran; delay from print to log: "
                  f"median {d[len(d) // 2]:.1f} ms, max {d[-1]:.1f} ms")


if __name__ == "__main__":
    main()
