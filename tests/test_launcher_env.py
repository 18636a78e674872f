"""The qlua launcher (build/qlua) is invisible to the guest: the program gets the environment,
arguments, working directory and open files it would get from a shell, byte for byte; bare program
names are looked up in PATH as a shell does; --version, --help and -o FILE with %p."""
import os
import re
import subprocess
import sys
import tempfile

import pytest

from qemu_run import LAUNCHER, SRC, env_without_preload, guest

# The sanitizer build needs ASan's runtime preloaded into QEMU, and these tests hand the launcher
# exact environments without it. The launcher is the same program in every build: the LuaJIT and
# Lua 5.4 builds run these tests.
pytestmark = pytest.mark.skipif(bool(os.environ.get("QLUA_SANITIZED")),
                                reason="the sanitizer build's QEMU needs LD_PRELOAD in its environment")

# The environments the guest must see unchanged. Under LANG=C (a C locale) Python puts
# LC_CTYPE=C.UTF-8 into its own environment before the launcher's first line runs (PEP 538).
ENVIRONMENTS = {
    "LANG=C": {"LANG": "C"},
    "LC_ALL=C.UTF-8": {"LC_ALL": "C.UTF-8"},
    "LANG=C.UTF-8 FOO=bar": {"LANG": "C.UTF-8", "FOO": "bar"},
    "LANG=C with PATH": {"LANG": "C", "PATH": "/usr/local/bin:/usr/bin:/bin"},
    "nothing": {},
    "the test's own": env_without_preload(),
}

# the launcher started both ways a user can: through its #! line, and by a python3 named
STARTS = {"#!": [LAUNCHER], "python3": [sys.executable, LAUNCHER]}


def native(program, env, **kw):
    return subprocess.run(program, capture_output=True, env=env, timeout=60, **kw)


def qlua(args, env=None, start="#!", **kw):
    """build/qlua with ARGS in exactly the environment ENV (default: the test's, without the
    sanitizer's LD_PRELOAD), bytes in and out."""
    return subprocess.run(STARTS[start] + args, capture_output=True, timeout=120,
                          env=env_without_preload() if env is None else env, **kw)


def same_output(r, want, what):
    assert r.returncode == want.returncode, (
        f"{what}: status {r.returncode}, natively {want.returncode}\n{r.stderr.decode()}")
    assert r.stdout == want.stdout, (
        f"{what}: the guest's output differs from the native one\n--- native\n"
        f"{want.stdout.decode(errors='replace')}\n--- under qlua\n"
        f"{r.stdout.decode(errors='replace')}\n--- stderr\n{r.stderr.decode(errors='replace')}")


@pytest.mark.parametrize("name", list(ENVIRONMENTS))
def test_the_guest_gets_the_environment_it_was_given(name):
    env = ENVIRONMENTS[name]
    want = native(["/usr/bin/env"], env)
    for start in STARTS:
        r = qlua(["run", "count", "--", "/usr/bin/env"], env, start)
        same_output(r, want, f"qlua run ({start}) under {name}")
        assert b"insns: " in r.stderr, f"the script ran\n{r.stderr.decode()}"
    r = qlua(["-e", "qemu.on_exit(function() end)", "--", "/usr/bin/env"], env)
    same_output(r, want, f"qlua -e under {name}")


def test_arguments_reach_the_guest_byte_for_byte():
    args = ["a b", "", "  ", "ünïcødé", os.fsdecode(b"\xff\xfe not utf-8"), "--", "-o", "x=1,2"]
    program = ["/bin/sh", "-c", 'for a; do printf "[%s]\\n" "$a"; done', "sh"] + args
    for env in (ENVIRONMENTS["LANG=C"], ENVIRONMENTS["the test's own"]):
        want = native(program, env)
        assert want.stdout.count(b"[") == len(args), want
        same_output(qlua(["run", "count", "--"] + program, env), want, "arguments")
        same_output(qlua(["run", "count", "--"] + program, env, "python3"), want, "arguments")


def test_the_guest_runs_in_the_working_directory_with_the_open_files_it_was_given():
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(env_without_preload(), PWD=tmp)
        want = native(["/bin/pwd"], env, cwd=tmp)
        same_output(qlua(["run", "count", "--", "/bin/pwd"], env, cwd=tmp), want, "pwd")
        # standard input, and a file the user opened for the program (3<file)
        r = qlua(["run", "count", "--", "/bin/cat"], input=b"abc")
        assert r.returncode == 0 and r.stdout == b"abc", f"stdin passes through\n{r}"
        path = os.path.join(tmp, "three")
        with open(path, "wb") as f:
            f.write(b"on fd 3\n")
        r = subprocess.run(["/bin/sh", "-c", 'exec "$@" 3<"$0"', path, LAUNCHER, "run", "count",
                            "--", "/bin/sh", "-c", "cat <&3"], capture_output=True, timeout=120,
                           env=env_without_preload())
        assert r.returncode == 0 and r.stdout == b"on fd 3\n", f"fd 3 stays open\n{r}"


def test_bare_program_names_are_found_in_path_as_a_shell_finds_them():
    env = env_without_preload()
    want = native(["ls", "/"], env)
    same_output(qlua(["run", "count", "--", "ls", "/"]), want, "qlua run count -- ls /")
    # argv[0] stays the name the program was called by
    want = native(["sh", "-c", 'echo "$0"'], env)
    assert want.stdout == b"sh\n"
    same_output(qlua(["run", "count", "--", "sh", "-c", 'echo "$0"']), want, "argv[0]")
    # the first executable file of PATH; a file without the x bit is passed over
    with tempfile.TemporaryDirectory() as tmp:
        first, second = os.path.join(tmp, "first"), os.path.join(tmp, "second")
        for folder in (first, second):
            os.mkdir(folder)
        os.symlink("/bin/true", os.path.join(second, "tool"))
        with open(os.path.join(first, "tool"), "w") as f:
            f.write("not executable\n")
        path_env = dict(env, PATH=f"{first}:{second}:/usr/bin:/bin")
        r = qlua(["run", "count", "--", "tool"], path_env)
        assert r.returncode == 0 and b"insns: " in r.stderr, f"second/tool ran\n{r}"
        alone = dict(env, PATH=first)
        r = qlua(["run", "count", "--", "tool"], alone, "python3")
        # bash's status (dash says "Permission denied" too, but with 127)
        shell = subprocess.run(["/bin/bash", "-c", "tool"], capture_output=True, env=alone)
        assert r.returncode == shell.returncode == 126, f"found, not executable: 126\n{r}"
        assert r.stderr.decode().splitlines() == [f"qlua: {first}/tool: permission denied"], r


def test_a_program_not_found_gets_the_shells_127_and_one_line():
    name = "qlua-no-such-command"
    shell = subprocess.run(["/bin/sh", "-c", name], capture_output=True, env=env_without_preload())
    r = qlua(["run", "count", "--", name])
    assert r.returncode == shell.returncode == 127, f"status 127 as a shell gives\n{r}"
    assert r.stderr.decode().splitlines() == [f"qlua: {name}: command not found"], r
    assert r.stdout == b""
    r = qlua(["-e", "qemu.on_exit(function() end)", "--", "/nonexistent/" + name])
    assert r.returncode == 127, r
    assert r.stderr.decode().splitlines() == [
        f"qlua: /nonexistent/{name}: no such file or directory"], r


def test_version_and_usage():
    with open(os.path.join(SRC, "include", "qlua.h")) as f:
        plugin = re.search(r'#define QLUA_VERSION "([^"]+)"', f.read()).group(1)
    with open(os.path.join(SRC, "meson.build")) as f:
        project = re.search(r"version : '([^']+)'", f.read()).group(1)
    assert plugin == project, "include/qlua.h and meson.build give the same version"
    r = qlua(["--version"])
    assert r.returncode == 0 and r.stdout == f"qlua {plugin}\n".encode() and r.stderr == b"", r
    for args in (["--help"], ["-h"], [], ["help"], ["run", "--help"], ["run", "count", "-h"]):
        r = qlua(args)
        assert r.returncode == 0 and r.stdout.startswith(b"qlua: run qlua scripts") and (
            b"qlua run SCRIPT" in r.stdout and b"--version" in r.stdout), f"{args}: usage\n{r}"
    for args in (["help", "count", "hotblocks"], ["run"], ["frobnicate"]):
        r = qlua(args)
        lines = r.stderr.decode().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("qlua: "), (
            f"{args}: a usage error is one line and status 2\n{r}")


def test_the_usage_says_what_happens_at_exec():
    r = qlua(["--help"])
    text = b" ".join(r.stdout.split())
    assert b"an exec is not" in text and b"qlua cannot see it happen" in text, r
    assert b"qemu-user-binfmt" in text and b"QEMU_PLUGIN" in text, r


def test_output_file_with_pid_gives_each_run_its_own_file():
    with tempfile.TemporaryDirectory() as tmp:
        pattern = os.path.join(tmp, "count.%p.log")
        for n in ("1", "2"):
            r = qlua(["run", "-o", pattern, "count", "--", guest("loop"), n])
            assert r.returncode == 0 and b"insns: " not in r.stderr, f"output in the file\n{r}"
        names = sorted(os.listdir(tmp))
        assert len(names) == 2 and all(re.fullmatch(r"count\.[0-9]+\.log", n) for n in names), (
            f"two files, each named by a pid: {names}")
        for n in names:
            with open(os.path.join(tmp, n)) as f:
                assert "insns: " in f.read(), f"{n} holds a run's output"
        # the forking guest: its child is a copy of the QEMU process, writing to the same file
        forks = os.path.join(tmp, "forks")
        os.mkdir(forks)
        r = qlua(["run", "-o", os.path.join(forks, "%p"), "count", "--", guest("forks")])
        assert r.returncode == 0 and b"child exited 0" in r.stdout, r
        assert len(os.listdir(forks)) == 1, os.listdir(forks)
        for bad in ("a%d.log", "a%%.log", "%p%p.log", "100%.log"):
            r = qlua(["run", "-o", os.path.join(tmp, bad), "count", "--", guest("loop"), "1"])
            lines = r.stderr.decode().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and "can only be one %p" in lines[0], (
                f"{bad}: refused with the reason\n{r}")
        assert len(os.listdir(tmp)) == 3, "no file made for a refused name"
