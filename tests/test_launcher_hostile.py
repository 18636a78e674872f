"""The qlua launcher (build/qlua) on bad and hostile input: scripts that must not run when only
their declaration is read, programs that are not programs, odd bytes and closed pipes, guests
killed by signals, one-liner error messages. Each bad input gets one 'qlua: ...' line, never a
Python traceback."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from qemu_run import LAUNCHER, SRC, env_without_preload, guest, launcher, user_command


def qlua(args, timeout=60, env=None, **kw):
    """build/qlua as a subprocess with bytes in and out, bounded in time (the launcher's own
    helper waits 300 s, and a hanging `help` is one of the things tested)."""
    return subprocess.run([sys.executable, LAUNCHER] + args, capture_output=True, timeout=timeout,
                          env=dict(env_without_preload(), **(env or {})), **kw)


def one_line_message(r, *wanted):
    """The run failed with status 2 and one line 'qlua: ...' holding each of `wanted`."""
    err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else r.stderr
    lines = err.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("qlua: "), (
        f"one 'qlua:' line and status 2, got status {r.returncode}:\n{err}")
    for w in wanted:
        assert w in lines[0], f"{w!r} in the message: {lines[0]}"
    return lines[0]


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---- help and list read the declaration, nothing else ----

def test_help_reads_the_declaration_without_running_the_script():
    with tempfile.TemporaryDirectory() as tmp:
        before = os.path.join(tmp, "written-before")
        after = os.path.join(tmp, "written-after")
        path = write(tmp, "sneaky.lua",
                     f'io.open("{before}", "w"):write("x")\n'
                     'qemu.script { name = "sneaky", description = "d" }\n')
        r = qlua(["help", path])
        assert not os.path.exists(before), "help ran the script's io.open"
        one_line_message(r, "cannot be inspected", "io.open")
        # a script that declares itself first is described; what follows the declaration is not
        # run, even when the script catches the stop
        path = write(tmp, "declares.lua",
                     'local qemu = require "qemu"\n'
                     'pcall(qemu.script, { name = "declares", description = "then writes",\n'
                     '  args = { { name = "n", type = "int", default = 3,\n'
                     '             help = "how many" } } })\n'
                     f'io.open("{after}", "w"):write("x")\n'
                     'os.exit(7)\n')
        r = qlua(["help", path])
        assert r.returncode == 0 and b"declares: then writes" in r.stdout and (
            b"n=int (default 3)  how many" in r.stdout), f"declaration shown\n{r}"
        assert not os.path.exists(after), "help ran the script past qemu.script{}"


def test_help_of_a_script_that_never_ends_stops_in_time():
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "spin.lua", "while true do end\n")
        start = time.monotonic()
        try:
            r = qlua(["help", path], timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail("qlua help hung on a script whose top level loops")
        assert time.monotonic() - start < 30, "the inspection is bounded in time"
        one_line_message(r, "spin.lua: cannot be inspected", "more than 5 s")


def test_help_says_why_a_script_cannot_be_inspected():
    cases = {
        "exits.lua": ("os.exit(0)\n", "os.exit is not available"),
        "syntax.lua": ("x = = 1\n", "syntax error: "),
        "fails.lua": ("local t = nil\nt.x = 1\n", "error before qemu.script{}: "),
        "silent.lua": ("local x = 1\n", "never calls qemu.script{}"),
        "requires.lua": ('require "socket"\n', 'require "socket" is not available'),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (text, why) in cases.items():
            r = qlua(["help", write(tmp, name, text)])
            line = one_line_message(r, f"{name}: cannot be inspected", why)
            if name in ("syntax.lua", "fails.lua"):
                assert f"{name}:{text.count(chr(10))}:" in line, (
                    f"the message gives the script's line: {line}")


def test_list_notes_the_scripts_that_cannot_be_inspected_and_goes_on():
    with tempfile.TemporaryDirectory() as root:
        os.symlink(os.path.join(SRC, "lua"), os.path.join(root, "lua"))
        os.mkdir(os.path.join(root, "scripts"))
        write(root, "scripts/a_broken.lua", "-- a broken script\nqemu.script { name = \n")
        write(root, "scripts/b_fails.lua", "-- fails at once\nerror('no')\n")
        write(root, "scripts/c_good.lua",
              'qemu.script { name = "c_good", description = "the good one" }\n')
        r = qlua(["list"], env={"QLUA_ROOT": root})
        out = r.stdout.decode()
        lines = out.splitlines()
        assert r.returncode == 0 and len(lines) == 3, f"three scripts listed\n{r}"
        assert lines[0].startswith("a_broken") and (
            "(cannot be inspected: syntax error" in lines[0]), f"the broken one has a note\n{out}"
        assert lines[1].startswith("b_fails") and (
            "(cannot be inspected: error before qemu.script{}" in lines[1]), f"{out}"
        assert lines[2].split() == ["c_good", "the", "good", "one"], f"listing went on\n{out}"


# ---- no tracebacks ----

def test_programs_that_are_not_programs_get_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        one_line_message(qlua(["run", "count", "--", tmp]), "is a directory")
        with open(guest("loop"), "rb") as f:
            elf = f.read(64)
        for n in (4, 19):
            path = os.path.join(tmp, f"elf{n}")
            with open(path, "wb") as f:
                f.write(elf[:n])
            one_line_message(qlua(["run", "count", "--", path]), "truncated ELF header")
        # an emulator that cannot be executed at all
        bogus = os.path.join(tmp, "qemu-bogus")
        with open(bogus, "wb") as f:
            f.write(b"\x00\x01garbage")
        os.chmod(bogus, 0o755)
        one_line_message(qlua(["run", "--qemu", bogus, "count", "--", guest("loop"), "1"]),
                         "cannot run it")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_program_gets_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "secret")
        shutil.copy(guest("loop"), path)
        os.chmod(path, 0)
        one_line_message(qlua(["run", "count", "--", path]), "cannot read it")


def start_repl(tmp):
    """A guest running long under qlua with repl=SOCKET; returns the process and the socket."""
    sock = os.path.join(tmp, "repl.sock")
    script = write(tmp, "idle.lua", "qemu.on_exit(function() end)\n")
    proc = subprocess.Popen(user_command([[f"script={script}", f"repl={sock}"]],
                                         [guest("loop"), "10000000"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_without_preload())
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.02)
    assert os.path.exists(sock), "the REPL socket appeared"
    return proc, sock


def test_attach_sends_bytes_that_are_not_utf8_as_they_are():
    with tempfile.TemporaryDirectory() as tmp:
        proc, sock = start_repl(tmp)
        try:
            r = qlua(["attach", sock], input=b"s = '\xff\xfe'\n#s\ns\n")
            assert r.returncode == 0 and b"Traceback" not in r.stderr, f"no crash\n{r}"
            # two bytes reached Lua (not two replacement characters), and came back unchanged
            assert r.stdout == b"2\n\xff\xfe\n", f"answers\n{r}"
        finally:
            proc.kill()
            proc.wait()


def test_attach_to_what_is_not_a_listening_socket_gets_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        plain = write(tmp, "plain", "not a socket\n")
        one_line_message(qlua(["attach", plain]), "not a socket")
        dead = os.path.join(tmp, "dead.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(dead)  # bound, never listening: what a run that ended without cleaning up leaves
        s.close()
        one_line_message(qlua(["attach", dead]), "nobody listens")
        one_line_message(qlua(["attach", os.path.join(tmp, "missing")]), "No such file")


@pytest.mark.user_host_independent  # the launcher alone, no QEMU
def test_list_into_a_pipe_closed_early_leaves_quietly():
    lister = subprocess.Popen([sys.executable, LAUNCHER, "list"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env_without_preload())
    head = subprocess.Popen(["head", "-1"], stdin=lister.stdout, stdout=subprocess.PIPE)
    lister.stdout.close()  # head holds the only reading end: when it leaves, writes fail
    first, _ = head.communicate(timeout=120)
    err = lister.stderr.read()
    status = lister.wait(timeout=120)
    assert first.decode().startswith("bb "), f"head got the first line: {first!r}"
    assert err == b"", f"nothing on stderr (no BrokenPipeError): {err.decode()}"
    assert status == 128 + 13, f"left as a program killed by SIGPIPE: status {status}"


# ---- exit status of a guest killed by a signal ----

def test_a_guest_killed_by_a_signal_gives_the_status_a_shell_shows():
    if not shutil.which("gcc"):
        pytest.skip("no gcc to build the crashing guest")
    with tempfile.TemporaryDirectory() as tmp:
        source = write(tmp, "segv.c", "int main(void) { *(volatile int *)0 = 1; return 0; }\n")
        program = os.path.join(tmp, "segv")
        subprocess.run(["gcc", "-static", "-O0", "-o", program, source], check=True,
                       env=env_without_preload())
        shell = subprocess.run(["sh", "-c", '"$1"; echo $?', "sh", program], capture_output=True,
                               text=True, env=env_without_preload())
        assert shell.stdout.strip() == "139", f"the shell reports SIGSEGV as 139: {shell}"
        r = launcher(["run", "count", "--", program])
        assert r.status == 139, f"qlua run reports the guest's SIGSEGV as the shell does\n{r}"


# ---- -o and -e ----

def test_options_without_their_value_say_so():
    one_line_message(qlua(["run", "count", "-o"]), "-o needs a FILE")
    one_line_message(qlua(["run", "count", "-o", "--", guest("loop"), "1"]), "-o needs a FILE")
    one_line_message(qlua(["run", "count", "--qemu"]), "--qemu needs a PATH")


def qlua_lines(err):
    """stderr without QEMU's own lines (which name the plugin's path, wherever the build is)."""
    return "\n".join(line for line in err.splitlines() if not line.startswith("qemu-"))


def test_one_liner_errors_name_the_command_line():
    r = launcher(["-e", "x = = 1", "--", guest("loop"), "1"])
    header, _, rest = qlua_lines(r.err).partition("\n")
    assert r.status == 1 and "(command line):1: unexpected symbol" in rest, f"syntax error\n{r}"
    assert "e.lua" not in rest and "/tmp" not in rest, f"no temp file in the message\n{r}"
    r = launcher(["-e", "local t = nil\nerror('oops')", "--", guest("loop"), "1"])
    header, _, rest = qlua_lines(r.err).partition("\n")
    assert r.status == 1 and "(command line):2: oops" in rest, f"runtime error, line 2\n{r}"
    assert "e.lua" not in rest and "/tmp" not in rest, f"no temp file in the traceback\n{r}"
    # the code reaches Lua byte for byte: quotes, backslashes, bytes that are not UTF-8
    code = os.fsdecode(b"qemu.on_exit(function() qemu.print('len', #\"\\\\\\\"\xff\") end)")
    r = launcher(["-e", code, "--", guest("loop"), "1"])
    assert r.status == 0 and "len\t3" in r.err, f"code with quotes and odd bytes\n{r}"
