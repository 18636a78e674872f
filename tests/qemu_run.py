"""Running qlua in real QEMU for the tests: where the build's pieces are, the one place that builds
QEMU command lines (user mode and system mode), and helpers to read what a run printed.

Paths come from the environment meson sets (QLUA_SRC, QLUA_PLUGIN, QLUA_ORACLE, QLUA_GUESTS,
QLUA_LAUNCHER); unset, they point at ./build of this repository, so `python3 -m pytest tests/`
works from the repository root after `ninja -C build`. User mode runs on QEMU 7.2, or on QEMU 10.2
with QLUA_USER_HOST=10.2 (below); UserHost tells the tests what that host offers."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

SRC = os.environ.get("QLUA_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(SRC, "build")
PLUGIN = os.environ.get("QLUA_PLUGIN") or os.path.join(BUILD, "libqlua.so")
ORACLE = os.environ.get("QLUA_ORACLE") or os.path.join(BUILD, "tests", "liboracle.so")
GUESTS = os.environ.get("QLUA_GUESTS") or os.path.join(BUILD, "tests")
LAUNCHER = os.environ.get("QLUA_LAUNCHER") or os.path.join(BUILD, "qlua")

# QEMU 10.2 built from upstream with its example plugins (../shared/qemu-10.2 beside the
# checkout; QLUA_QEMU_10_2 points at another such folder: bin/, plugins/).
QEMU_10_2 = os.environ.get("QLUA_QEMU_10_2") or os.path.join(os.path.dirname(SRC), "shared",
                                                             "qemu-10.2")
QEMU_10_2_USER = os.path.join(QEMU_10_2, "bin", "qemu-x86_64")
QEMU_10_2_AARCH64 = os.path.join(QEMU_10_2, "bin", "qemu-aarch64")

# System mode: QEMU 7.2 (Debian's, found in PATH before the user-mode host below may change PATH),
# 10.0.2 (tools/fetch-qemu10.sh) and 10.2, each test naming the one it runs.
QEMU_SYSTEM_72 = os.environ.get("QEMU_SYSTEM_72") or shutil.which("qemu-system-x86_64") or \
    "qemu-system-x86_64"

# The user-mode hosts: Debian's 7.2 (qemu-x86_64 and qemu-aarch64 found in PATH, or QEMU_X86_64
# and QEMU_AARCH64) and QEMU 10.2's bin/. The suite runs user mode on one of them at a time: 7.2
# by default, 10.2 with QLUA_USER_HOST=10.2 (`meson test --setup qemu102`), whose bin/ then also
# comes first in PATH, so that what finds qemu-ARCH by name (the launcher) runs the same QEMU as
# the tests (and a qemu-system-x86_64 found by name is 10.2's too). USER_HOST_PROBLEM says why the
# tests cannot run (conftest.py skips each test, saying so).
USER_BINARIES = {
    "7.2": {"x86_64": os.environ.get("QEMU_X86_64") or shutil.which("qemu-x86_64") or "qemu-x86_64",
            "aarch64": (os.environ.get("QEMU_AARCH64") or shutil.which("qemu-aarch64")
                        or "qemu-aarch64")},
    "10.2": {"x86_64": QEMU_10_2_USER, "aarch64": QEMU_10_2_AARCH64},
}
USER_HOSTS = tuple(USER_BINARIES)
USER_HOST = os.environ.get("QLUA_USER_HOST") or "7.2"
USER_HOST_PROBLEM = None
if USER_HOST not in USER_BINARIES:
    USER_HOST_PROBLEM = f"QLUA_USER_HOST={USER_HOST}: expected one of {', '.join(USER_HOSTS)}"
    USER_HOST = "7.2"
QEMU, QEMU_AARCH64 = USER_BINARIES[USER_HOST]["x86_64"], USER_BINARIES[USER_HOST]["aarch64"]
if USER_HOST == "10.2":
    if not os.path.exists(QEMU):
        USER_HOST_PROBLEM = (f"QLUA_USER_HOST=10.2: QEMU 10.2 not found at {QEMU} "
                             "(set QLUA_QEMU_10_2)")
    else:
        os.environ["PATH"] = os.path.dirname(QEMU) + os.pathsep + os.environ.get("PATH", "")
QEMU_SYSTEM = {
    "7.2": QEMU_SYSTEM_72,
    "10.0": os.environ.get("QEMU_SYSTEM_10",
                           os.path.join(SRC, ".qemu10", "usr", "bin", "qemu-system-x86_64")),
    "10.2": os.path.join(QEMU_10_2, "bin", "qemu-system-x86_64"),
}


def qemu_10_2_plugin(name):
    """The path of QEMU 10.2's example plugin libNAME.so; skips the test without QEMU 10.2."""
    path = os.path.join(QEMU_10_2, "plugins", f"lib{name}.so")
    if not os.path.exists(path):
        pytest.skip(f"QEMU 10.2 and its plugins not found at {QEMU_10_2} (set QLUA_QEMU_10_2)")
    return path

LOOPS = 1000  # tests/guests/bare/boot.S: LOOPS iterations of store, load, dec, jnz


class Run:
    """What one QEMU (or launcher) run left: exit status, stdout, stderr and the plugin log."""

    def __init__(self, status, out, err, log):
        self.status, self.out, self.err, self.log = status, out, err, log

    def __repr__(self):
        return f"status={self.status}\n--- stdout\n{self.out}\n--- stderr\n{self.err}\n--- log\n{self.log}"


def guest(name):
    return os.path.join(GUESTS, name)


def script(name):
    return os.path.join(SRC, "tests", "scripts", name)


def aarch64_guest(name):
    """The build's aarch64 copy of guest NAME; skips when the build had no cross compiler or
    there is no qemu-aarch64 to run it."""
    path = guest(name + "-aarch64")
    if not os.path.exists(path):
        pytest.skip("no aarch64 guests: the build found no aarch64-linux-gnu-gcc")
    if not shutil.which(QEMU_AARCH64):
        pytest.skip(f"no {QEMU_AARCH64} to run aarch64 guests")
    return path


def env_without_preload():
    """os.environ without LD_PRELOAD (the sanitizer build preloads ASan, meant for QEMU only)."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


# ---- what a user-mode host offers ----

class UserHost:
    """What a user-mode QEMU offers, from its `--version` and the release table of
    docs/qemu-versions.md, never from qlua: tests compare what qlua reports (qemu.info, qemu.has,
    qemu.counter_mode) and what it does with this, so each checks its thing on every host."""

    def __init__(self, binary):
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                           env=env_without_preload())
        m = re.search(r"version (\d+)\.(\d+)", p.stdout)
        assert m, f"{binary} --version names no release:\n{p.stdout}{p.stderr}"
        v = self.version = (int(m.group(1)), int(m.group(2)))
        self.binary, self.release = binary, f"{v[0]}.{v[1]}"
        self.api = (6 if v >= (11, 0) else 5 if v >= (10, 1) else 4 if v >= (9, 2) else
                    3 if v >= (9, 1) else 2 if v >= (9, 0) else 1)
        self.scoreboard = self.registers = v >= (9, 0)
        self.inline = not self.scoreboard  # raw shared inline adds: QEMU 8.2 and older
        self.declared = 2 if self.scoreboard else 1  # the API version qlua declares
        self.mem_value = v >= (9, 2)  # access.value (and qemu.read_memory)
        # x86 string instructions: up to 9.2 a rep instruction executes once per iteration (it
        # jumps to itself); from 10.0 the iterations loop inside its translation and it executes
        # once (target/i386's do_gen_rep, December 2024)
        self.rep_once = v >= (10, 0)
        # the guest's stack: at one host address run after run on 7.2, at a new one each run on
        # 10.2 (which release between changed it is not pinned down here)
        self.stack_moves = v >= (10, 0)

    def counter_mode(self, threads):
        """qemu.counter_mode() at exit with counters=auto: scoreboards where the host has them,
        else raw inline adds until a second vCPU appears (threads), per-vCPU callbacks after."""
        if self.scoreboard:
            return "scoreboard"
        return "percpu" if threads else "inline"

    def __repr__(self):
        return f"QEMU {self.release} ({self.binary}, plugin API {self.api})"


_hosts = {}


def user_host(binary=None):
    """The UserHost of `binary` (default: QEMU, the x86_64 user-mode host), asked once."""
    binary = binary or QEMU
    if binary not in _hosts:
        _hosts[binary] = UserHost(binary)
    return _hosts[binary]


def stack_addresses_alike(text, host=None):
    """`text` with the guest's stack addresses (0x7e... or 0x7f..., the top of the 47-bit user
    half, also zero-padded to 16 digits) made alike where the stack moves from run to run: on
    hosts that map it anew each run (QEMU 10.2 put it at 0x7efe... in one CI run), and under the
    sanitizer build, whose preloaded ASan maps it at a random address. Elsewhere `text` itself."""
    if os.environ.get("QLUA_SANITIZED") or (host or user_host()).stack_moves:
        return re.sub(r"0x(?:0000)?7[ef][0-9a-f]{10}(?![0-9a-f])", "0x7f(stack)", text)
    return text


# ---- the command lines ----

def user_command(scripts, program, logfile=None, oracle=False, binary=None, copies=None):
    """The qemu-ARCH command line running `program` (a list: path and arguments) under one qlua
    per entry of `scripts` (each a list of key=value), the oracle first if asked. One library runs
    one script, so the second and later load copies of libqlua.so made in the directory `copies`.
    logfile: where -d plugin output goes (None: no -d plugin, output is dropped)."""
    cmd = [binary or QEMU]
    if oracle:
        cmd += ["-plugin", ORACLE]
    for i, plugin_args in enumerate(scripts):
        lib = PLUGIN
        if i > 0:
            lib = os.path.join(copies, f"libqlua{i}.so")
            shutil.copy(PLUGIN, lib)
        cmd += ["-plugin", ",".join([lib] + list(plugin_args))]
    cmd += ["-U", "LD_PRELOAD"]  # the sanitizer build preloads ASan into QEMU, not the guest
    if logfile:
        cmd += ["-d", "plugin", "-D", logfile]
    return cmd + list(program)


def machine_args(image="boot.bin"):
    """qemu-system-x86_64 options for the bare-metal guests (tests/guests/bare/*.S): no devices
    but isa-debug-exit, through which the guest ends QEMU with status 33, and IMAGE as the BIOS."""
    return ["-accel", "tcg", "-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none",
            "-serial", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-bios", guest(image)]


def system_binary(version):
    """qemu-system-x86_64 of QEMU `version` ("7.2", "10.0" or "10.2"); skips the test, saying
    why, without QEMU 10.0.2 or 10.2."""
    binary = QEMU_SYSTEM[version]
    if version == "10.0" and not os.path.exists(binary):
        pytest.skip(f"QEMU 10.0.2 not unpacked at {binary} (tools/fetch-qemu10.sh does it)")
    if version == "10.2" and not os.path.exists(binary):
        pytest.skip(f"QEMU 10.2 not found at {binary} (set QLUA_QEMU_10_2)")
    return binary


def system_command(version, plugin_args, logfile, smp=1, oracle=False, image="boot.bin",
                   before=(), after=()):
    """The qemu-system-x86_64 command line of QEMU `version` ("7.2", "10.0" or "10.2") booting
    IMAGE with qlua (plugin_args: list of key=value), the oracle first if asked, and other plugins
    (-plugin values) before or after qlua. Skips without QEMU 10.0.2 or 10.2."""
    binary = system_binary(version)
    cmd = [binary, "-smp", str(smp)] + machine_args(image)
    if version == "10.0":
        cmd += ["-L", os.path.join(os.path.dirname(binary), "..", "share", "qemu")]
    return cmd + system_plugins(plugin_args, logfile, oracle, before, after)


def system_plugins(plugin_args, logfile, oracle=False, before=(), after=()):
    """The -plugin options of a system-mode run (the oracle first if asked, other plugins before
    and after qlua) and its plugin log: the end of system_command's and linux_command's lines."""
    cmd = ["-plugin", ORACLE] if oracle else []
    for other in before:
        cmd += ["-plugin", other]
    cmd += ["-plugin", ",".join([PLUGIN] + list(plugin_args))]
    for other in after:
        cmd += ["-plugin", other]
    return cmd + ["-d", "plugin", "-D", logfile]


# ---- runs ----

def stacks(pid):
    """Every thread's backtrace in process `pid` (by gdb, when installed), for the message of a
    test whose QEMU hung: a hang seen once in CI is otherwise gone without a trace."""
    if not shutil.which("gdb"):
        return "(no gdb: no backtraces)"
    try:
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 30"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "(gdb did not attach within 60 s)"
    return "\n".join(line for line in r.stdout.splitlines()
                     if line.startswith(("Thread ", "#"))) or r.stderr[-2000:]


def communicate_or_stacks(proc, timeout):
    """proc.communicate(timeout): (stdout, stderr), or, when the process outlives the timeout,
    its threads' stacks taken, the process killed, and the test failed with both."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        where = stacks(proc.pid)
        proc.kill()
        out, err = proc.communicate()
        if isinstance(err, bytes):
            err = err.decode("utf-8", "replace")
        pytest.fail(f"QEMU did not end within {timeout} s: {proc.args!r}\n--- stderr tail\n"
                    f"{(err or '')[-2000:]}\n--- its threads when killed\n{where}")


def repl_connect(sock):
    """A client of the REPL at socket path `sock`, once the plugin listens (6 s at most)."""
    for _ in range(300):
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            return c
        except OSError:
            time.sleep(0.02)
    pytest.fail("no REPL socket")


def repl_ask(c, text):
    """Sends `text` (bytes: a chunk and its newline) and returns the answer up to its end marker
    (\\x04\\n, end of transmission), or what came before the REPL closed."""
    c.sendall(text)
    data = b""
    while not data.endswith(b"\x04\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _run(cmd, logfile, timeout, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = communicate_or_stacks(p, timeout)
    text = open(logfile).read() if logfile and os.path.exists(logfile) else ""
    return Run(p.returncode, out, err, text)


def qemu_scripts(scripts, program, oracle=False, log=True, env=None, timeout=300, binary=None):
    """Runs user-mode QEMU with one qlua per entry of `scripts`, all logging to one plugin log."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log") if log else None
        cmd = user_command(scripts, program, logfile, oracle=oracle, binary=binary, copies=tmp)
        return _run(cmd, logfile, timeout, dict(os.environ, **(env or {})))


def qemu(plugin_args, program, oracle=False, log=True, env=None, timeout=300, binary=None):
    """Runs QEMU with qlua (plugin_args: list of key=value) and optionally the oracle."""
    return qemu_scripts([plugin_args], program, oracle=oracle, log=log, env=env, timeout=timeout,
                        binary=binary)


def system_qemu(version, plugin_args, smp=1, oracle=False, image="boot.bin"):
    """Runs a bare-metal guest on QEMU `version` in system mode with qlua."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        return _run(system_command(version, plugin_args, logfile, smp, oracle, image), logfile, 120)


def lua_file(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(text)
    f.close()
    return f.name


def run_lua(text, program=None, extra=(), **kw):
    """Runs the Lua source `text` as the script (on the loop guest unless told otherwise)."""
    path = lua_file(text)
    try:
        return qemu(["script=" + path] + list(extra), program or [guest("loop"), "3"], **kw)
    finally:
        os.unlink(path)


def system_lua(version, text, extra=(), **kw):
    """Runs the Lua source `text` as the script on a bare-metal guest in system mode."""
    path = lua_file(text)
    try:
        return system_qemu(version, ["script=" + path] + list(extra), **kw)
    finally:
        os.unlink(path)


def launcher(args, **kw):
    """Runs the qlua launcher (build/qlua) with `args`; its output is in out and err."""
    p = subprocess.run([sys.executable, LAUNCHER] + args, capture_output=True, text=True,
                       timeout=300, env=env_without_preload(), **kw)
    return Run(p.returncode, p.stdout, p.stderr, "")


# ---- reading results ----

def fields(text, prefix):
    """Parses 'prefix: a=1 b=2' into {'a': '1', 'b': '2'} (last such line)."""
    found = None
    for line in text.splitlines():
        if line.startswith(prefix + ":"):
            found = dict(kv.split("=", 1) for kv in line[len(prefix) + 1:].split())
    assert found is not None, f"no '{prefix}:' line in:\n{text}"
    return found


def expect_equal_counts(run, mine, keys):
    """Each of `keys` in `mine` equals the oracle's count of the run, which is not zero."""
    oracle = fields(run.log, "oracle")
    for k in keys:
        assert mine[k] == oracle[k], f"{k}: qlua {mine[k]} != oracle {oracle[k]}\n{run}"
        assert int(oracle[k]) > 0, f"{k}: oracle counted nothing\n{run}"


def symbol(program, name):
    """The address of `name` in the (static, unstripped) guest, from nm."""
    out = subprocess.run(["nm", program], capture_output=True, text=True, check=True,
                         env=env_without_preload()).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"no symbol {name} in {program}")
