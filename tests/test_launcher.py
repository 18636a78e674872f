"""The qlua launcher (tools/qlua.in, build/qlua): run, -e, list, help, --system."""
import os
import re
import subprocess
import sys
import tempfile

from qemu_run import (LAUNCHER, LOOPS, Run, aarch64_guest, guest, launcher,
                      machine_args, script, user_command)


def test_launcher_run_shows_what_the_plugin_prints_and_passes_the_exit_status():
    with tempfile.TemporaryDirectory() as tmp:
        # the same environment for both guests (only PATH, which the launcher needs): the count
        # of a guest depends on its environment, which the launcher hands over as it is given
        only_path = {"PATH": os.environ["PATH"]}
        sanitized = {k: v for k, v in os.environ.items()  # the sanitizer build's QEMU needs them
                     if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
        direct = os.path.join(tmp, "direct.log")
        subprocess.run(user_command([["script=count"]], [guest("loop"), "3"], direct), check=True,
                       env=dict(only_path, **sanitized), capture_output=True)
        want = open(direct).read()
        via_file = os.path.join(tmp, "launcher.log")
        p = subprocess.run([sys.executable, LAUNCHER, "run", "-o", via_file, "count", "--",
                            guest("loop"), "3"], capture_output=True, text=True,
                           env=dict(only_path, **sanitized))
        r = Run(p.returncode, p.stdout, p.stderr, "")
        assert r.status == 0 and "sum " in r.out, f"guest output passes through\n{r}"
        got = open(via_file).read()
        if sanitized:  # the launcher hands QEMU's LD_PRELOAD (ASan's runtime) to the guest too
            assert re.fullmatch(r"insns: \d+\n", got), f"launcher output:\n{got}\n{r}"
        else:
            assert got == want, f"launcher output differs from the plugin's:\n{want}\n{r}"
    p = subprocess.run([sys.executable, LAUNCHER, "run", "count", "--", guest("loop"), "3"],
                       capture_output=True, text=True, env=dict(only_path, **sanitized))
    assert re.search(r"^insns: \d+$", p.stderr, re.M) and (sanitized or want.strip() in p.stderr), (
        f"script output on the terminal (stderr)\n{p}")
    r = launcher(["run", "count", "--", "/bin/false"])
    assert r.status == 1 and "insns: " in r.err, f"exit status of the program\n{r}"
    r = launcher(["run", script("all_events.lua"), "lua=off", "--", aarch64_guest("loop"), "2"])
    assert r.status == 0 and "native: tbs=" in r.err, (
        f"qemu-aarch64 picked from the ELF header\n{r}")


def test_launcher_one_liners_and_arguments_with_commas():
    r = launcher(["-e", "qemu.on_exit(function() qemu.print('args', qemu.args.x, qemu.args.y) end)",
                  "x=1,2", "y=a,,b", "--", guest("loop"), "1"])
    assert r.status == 0 and "args\t1,2\ta,,b" in r.err, f"one-liner with escaped commas\n{r}"
    r = launcher(["-e", "error('oops')", "--", guest("loop"), "1"])
    assert r.status == 1 and "(command line):1: oops" in r.err, f"errors in one-liners\n{r}"


def test_launcher_lists_and_explains_the_scripts():
    r = launcher(["list"])
    assert r.status == 0 and re.search(r"^count\s+total executed guest instructions", r.out, re.M), (
        f"list shows count and its description\n{r}")
    r = launcher(["help", script("all_events.lua")])
    assert r.status == 0 and "lua=bool (default true)  also count with Lua callbacks" in r.out, (
        f"help\n{r}")
    r = launcher(["help", "nope"])
    assert r.status == 2 and "nope: no such script" in r.err, f"unknown script\n{r}"
    r = launcher(["run", "count", guest("loop")])
    assert r.status == 2 and "missing '--'" in r.err, f"missing --\n{r}"


def test_launcher_runs_system_emulators():
    r = launcher(["run", "--system", script("all_events.lua"), "--"] + machine_args("boot.bin"))
    assert r.status == 33 and f"reads={LOOPS} writes={LOOPS}" in r.err, f"system mode via qlua\n{r}"
