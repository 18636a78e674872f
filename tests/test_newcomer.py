"""What a new user meets first: the result on screen whatever the program does with its stderr,
helper modules beside a script, and one output file per process of a forking guest."""
import glob
import os
import re
import subprocess
import tempfile

from qemu_run import PLUGIN, QEMU, env_without_preload, guest, qemu, run_lua


def test_the_count_is_shown_for_ls_without_a_log_file():
    # ls closes its fd 2 at exit: QEMU's log (stderr, without -D) would swallow the count
    p = subprocess.run([QEMU, "-plugin", f"{PLUGIN},script=count", "-d", "plugin", "/bin/ls", "-l", "/"],
                       capture_output=True, text=True, timeout=120, env=env_without_preload())
    assert p.returncode == 0 and "bin" in p.stdout, p.stderr
    assert p.stderr.startswith("insns: ") and int(p.stderr.split()[1]) > 100000, p.stderr


def test_without_d_plugin_the_output_stays_out_of_sight_and_guest_arguments_are_not_qemus():
    p = subprocess.run([QEMU, "-plugin", f"{PLUGIN},script=count", "/bin/echo", "-d", "plugin"],
                       capture_output=True, text=True, timeout=60, env=env_without_preload())
    assert p.returncode == 0 and p.stdout == "-d plugin\n" and p.stderr == "", p


def test_a_scripts_helper_module_is_found_from_any_working_directory():
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as elsewhere:
        with open(os.path.join(tmp, "myhelper.lua"), "w") as f:
            f.write("return { greeting = 'hello from the helper' }\n")
        script = os.path.join(tmp, "main.lua")
        with open(script, "w") as f:
            f.write("local h = require 'myhelper'\nqemu.on_exit(function() qemu.print(h.greeting) end)\n")
        log = os.path.join(elsewhere, "plugin.log")
        p = subprocess.run([QEMU, "-plugin", f"{PLUGIN},script=main.lua", "-d", "plugin", "-D", log,
                            guest("loop"), "1"], cwd=tmp, capture_output=True, text=True,
                           timeout=60, env=env_without_preload())
        assert p.returncode == 0 and open(log).read() == "hello from the helper\n", p.stderr
        # a relative script= from another folder, and a guest that changes directory meanwhile
        r = qemu([f"script={os.path.relpath(script)}"], ["/bin/sh", "-c", f"cd {elsewhere} && true"])
        assert r.status == 0 and r.log == "hello from the helper\n", f"{r}"


def test_percent_p_gives_each_process_of_a_forking_guest_its_own_file():
    with tempfile.TemporaryDirectory() as tmp:
        r = qemu(["script=drcov", f"filename={tmp}/cov.%p.drcov"], [guest("forks")])
        files = glob.glob(os.path.join(tmp, "cov.*.drcov"))
        assert r.status == 0 and len(files) == 2, f"{files}\n{r}"
        assert all(open(f, "rb").read().startswith(b"DRCOV VERSION: 2") for f in files)
    r = run_lua("qemu.print(qemu.output_path('a.%p.%%.txt') == 'a.' .. qemu.pid() .. '.%.txt')\n"
                "qemu.print(pcall(qemu.output_path, 'a.%q'))")
    lines = r.log.splitlines()
    assert lines[0] == "true" and "only %p (the pid) and %% are known" in lines[1], f"{r}"


def test_the_counts_of_a_forking_guests_processes_can_be_told_apart():
    r = qemu(["script=count", "pid=on"], [guest("forks")])
    pids = [int(p) for p in re.findall(r"^insns: \d+ \(pid (\d+)\)$", r.log, re.M)]
    assert r.status == 0 and len(pids) == 2 and pids[0] != pids[1], f"{r}"


def test_the_plugin_says_once_that_an_execd_program_runs_without_it():
    r = run_lua("qemu.print('before the exec')", [guest("ends"), "exec", "10"])
    assert r.status == 0 and r.err.count("the guest calls execve") == 1, f"{r}"
    assert "before the exec" in r.log, f"{r}"
