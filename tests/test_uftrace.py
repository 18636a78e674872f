"""scripts/uftrace.lua against QEMU 10.2's own contrib/plugins/uftrace.c (plugins/libuftrace.so):
both run the same guest in the same folder with the same environment, and Debian's `uftrace`
reads both folders. The guest (tests/guests/uftrace_calls.c, built here with frame pointers) has
a known call tree: main calls top() 10 times, top() calls mid() twice."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from qemu_run import PLUGIN, QEMU_10_2, SRC, USER_BINARIES, env_without_preload, qemu_10_2_plugin

pytestmark = pytest.mark.user_host_independent  # every test names its QEMU (10.2, or 7.2)

GUEST_SRC = os.path.join(SRC, "tests", "guests", "uftrace_calls.c")
FLAGS = ["-O0", "-static", "-pthread", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"]
CALLS = {"main": 1, "top": 10, "mid": 20}


def qemu_10_2(arch="x86_64"):
    path = os.path.join(QEMU_10_2, "bin", f"qemu-{arch}")
    if not os.path.exists(path):
        pytest.skip(f"QEMU 10.2 not found at {QEMU_10_2} (set QLUA_QEMU_10_2)")
    return path


def uftrace():
    path = shutil.which("uftrace")
    if not path:
        pytest.skip("uftrace is not installed (Debian: apt-get install uftrace)")
    return path


@pytest.fixture(scope="module")
def guests():
    """The guest for x86_64 and, with Debian's cross compiler, aarch64, in a folder of its own."""
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-guests-") as tmp:
        built = {}
        for arch, cc in (("x86_64", "gcc"), ("aarch64", "aarch64-linux-gnu-gcc")):
            if shutil.which(cc):
                out = os.path.join(tmp, f"uftrace_calls-{arch}")
                subprocess.run([cc] + FLAGS + ["-o", out, GUEST_SRC], check=True,
                               env=env_without_preload())
                built[arch] = out
        yield built


def guest(guests, arch="x86_64"):
    if arch not in guests:
        pytest.skip(f"no compiler for {arch} guests (aarch64-linux-gnu-gcc)")
    return guests[arch]


def run(binary, plugin, program, cwd, timeout=120, preexec=None):
    """Runs `program` under `binary` with the -plugin value `plugin` in `cwd`; (status, stderr)."""
    cmd = [binary, "-plugin", plugin, "-U", "LD_PRELOAD", "-d", "plugin"] + program
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=env_without_preload(), preexec_fn=preexec)
    return p.returncode, p.stderr


def both(tmp, program, args=(), arch="x86_64"):
    """Runs QEMU 10.2's libuftrace.so, then uftrace.lua, on `program` in the same folder (so the
    guest sees the same environment); returns {"c": run, "lua": run}, each run a tuple of its
    uftrace.data folder (moved to tmp/c or tmp/lua), QEMU's status and its stderr."""
    binary = qemu_10_2(arch)
    ref = qemu_10_2_plugin("uftrace")
    work = os.path.join(tmp, "run")
    os.mkdir(work)
    extra = "".join("," + a for a in args)
    out = {}
    for name, plugin in (("c", ref + extra), ("lua", f"{PLUGIN},script=uftrace{extra}")):
        status, err = run(binary, plugin, program, work)
        folder = os.path.join(work, "uftrace.data")
        assert os.path.isdir(folder), f"{name}: no uftrace.data (status {status})\n{err}"
        os.rename(folder, os.path.join(tmp, name))
        out[name] = (os.path.join(tmp, name), status, err)
    return out


def report(folder):
    """`uftrace report`'s named functions and their call counts ({name: calls}); functions
    uftrace shows as <address> are left out (garbage unwound from the stack, whose values come
    from the environment and the guest's stack address)."""
    p = subprocess.run([uftrace(), "report", "-d", folder], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"uftrace report -d {folder}:\n{p.stderr}"
    calls = {}
    for line in p.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[-2].isdigit() and not fields[-1].startswith("<"):
            calls[fields[-1]] = int(fields[-2])
    assert calls, f"uftrace report -d {folder} lists no function:\n{p.stdout}\n{p.stderr}"
    return calls


def replay(folder):
    p = subprocess.run([uftrace(), "replay", "-d", folder], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"uftrace replay -d {folder}:\n{p.stderr}"
    return p.stdout


def entries(text, name):
    """How many times `uftrace replay` shows `name` entered."""
    return len(re.findall(rf"\| +{name}\(\)( \{{|;)$", text, re.M))


def records(path):
    """The records of a .dat file without their timestamps: (kind, magic, depth, address)."""
    data = open(path, "rb").read()
    assert len(data) % 16 == 0, f"{path}: {len(data)} bytes, not 16-byte records"
    out = []
    for i in range(0, len(data), 16):
        word = int.from_bytes(data[i + 8:i + 16], "little")
        out.append((word & 3, (word >> 3) & 7, (word >> 6) & 1023, word >> 16))
    return out


def text_range(program):
    """The lowest and highest function address of the static guest (from nm)."""
    out = subprocess.run(["nm", program], capture_output=True, text=True, check=True,
                         env=env_without_preload()).stdout
    addrs = [int(p[0], 16) for p in (l.split() for l in out.splitlines())
             if len(p) == 3 and p[1] in "tT"]
    return min(addrs), max(addrs)


def test_uftrace_report_shows_the_calls_qemus_own_plugin_records(guests):
    program = guest(guests)
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program])
        (c, cs, cerr), (lua, ls, lerr) = runs["c"], runs["lua"]
        assert cs == 0 and ls == 0, f"statuses {cs} {ls}\n{cerr}\n{lerr}"
        mine, theirs = report(lua), report(c)
        assert {k: mine.get(k) for k in CALLS} == CALLS, f"uftrace report of qlua's: {mine}"
        assert mine == theirs, f"qlua's report {mine}\nQEMU's plugin's {theirs}"

        # byte for byte where nothing depends on time or on the process: info, task.txt
        for name in ("info", "task.txt"):
            assert open(os.path.join(lua, name), "rb").read() == \
                open(os.path.join(c, name), "rb").read(), f"{name} differs from QEMU's"
        assert os.listdir(lua) and sorted(os.listdir(lua)) == sorted(os.listdir(c))
        # the map is QEMU's own (another process, other addresses) but maps the guest the same
        mapped = [l for l in open(os.path.join(lua, "sid-0.map")) if l.rstrip().endswith(program)]
        assert mapped and mapped[0].startswith("00400000-"), f"sid-0.map maps the guest: {mapped}"

        # the records: the same kinds and depths in the same order, the same addresses inside
        # the guest's code (addresses read from the stack outside it vary from run to run)
        lo, hi = text_range(program)
        a, b = records(os.path.join(lua, "100.dat")), records(os.path.join(c, "100.dat"))
        assert len(a) == len(b) and len(a) > 100, f"{len(a)} records, QEMU's plugin {len(b)}"
        assert all(r[1] == 5 for r in a), "every record has uftrace's magic 5"
        for i, (x, y) in enumerate(zip(a, b)):
            same = x == y if lo <= y[3] <= hi else x[:3] == y[:3]
            assert same, f"record {i}: qlua {x}, QEMU's plugin {y}"

        shown = replay(lua)
        assert [entries(shown, f) for f in CALLS] == list(CALLS.values()), (
            f"uftrace replay of qlua's trace:\n{shown[-3000:]}")


def test_uftrace_traces_each_privilege_level_as_qemus_plugin_does(guests):
    program = guest(guests)
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program], ["trace-privilege-level=on"])
        c, lua = runs["c"][0], runs["lua"][0]
        task = open(os.path.join(lua, "task.txt")).read()
        assert task == open(os.path.join(c, "task.txt")).read(), task
        names = re.findall(r'^SESS .*pid=(\d+) .*exename="([^"]+)"$', task, re.M)
        assert names == [("100", "cpu0 Ring0"), ("101", "cpu0 Ring1"), ("102", "cpu0 Ring2"),
                         ("103", "cpu0 Ring3"), ("104", "cpu0 RealMode")], names
        sizes = {n: os.path.getsize(os.path.join(lua, f"{n}.dat")) for n, _ in names}
        assert sizes == {n: os.path.getsize(os.path.join(c, f"{n}.dat")) for n, _ in names}
        assert [n for n, s in sizes.items() if s] == ["103"], f"user code runs in ring 3: {sizes}"
        assert report(lua) == report(c)


def test_uftrace_follows_aarch64_frames_as_qemus_plugin_does(guests):
    program = guest(guests, "aarch64")
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program], arch="aarch64")
        mine = report(runs["lua"][0])
        assert {k: mine.get(k) for k in CALLS} == CALLS, mine
        assert mine == report(runs["c"][0])


def test_uftrace_gives_each_thread_its_trace(guests):
    program = guest(guests)
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program, "threads"])
        c, lua = runs["c"][0], runs["lua"][0]
        # the guest's own functions: libc's differ between runs (main may wait for the thread
        # in a futex, or find it done)
        own = ("main", "top", "mid", "worker")
        mine, theirs = report(lua), report(c)
        assert {k: mine.get(k) for k in own} == {"main": 1, "top": 20, "mid": 40, "worker": 1}, mine
        assert {k: mine.get(k) for k in own} == {k: theirs.get(k) for k in own}, theirs
        assert b"taskinfo:tids=100,200\n" in open(os.path.join(lua, "info"), "rb").read()


def test_uftrace_leaves_a_readable_trace_when_the_guest_crashes(guests):
    program = guest(guests)
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program, "crash"])
        for name in ("c", "lua"):
            folder, status, err = runs[name]
            assert status == -signal.SIGSEGV, f"{name}: the guest dies of SIGSEGV ({status})\n{err}"
        # QEMU 10.2 runs the exit callbacks of a guest killed by a signal: both are complete
        mine = report(runs["lua"][0])
        assert {k: mine.get(k) for k in CALLS} == CALLS, mine
        assert mine == report(runs["c"][0])
        replay(runs["lua"][0])


def test_uftrace_leaves_a_readable_trace_when_the_guest_execs(guests):
    program = guest(guests)
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        runs = both(tmp, [program, "exec"])
        # QEMU becomes /bin/true without its exit callbacks: uftrace.lua has written everything
        # before the execve; QEMU's plugin leaves its .dat empty and no info or task.txt
        mine = report(runs["lua"][0])
        assert {k: mine.get(k) for k in CALLS} == CALLS, mine
        c = runs["c"][0]
        assert not os.path.exists(os.path.join(c, "info")), sorted(os.listdir(c))
        assert os.path.getsize(os.path.join(c, "100.dat")) == 0


def test_uftrace_leaves_a_readable_trace_when_qemu_is_terminated(guests):
    program = guest(guests)
    binary = qemu_10_2()
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        cmd = [binary, "-plugin", f"{PLUGIN},script=uftrace", "-U", "LD_PRELOAD", program,
               "forever"]
        p = subprocess.Popen(cmd, cwd=tmp, stderr=subprocess.PIPE, text=True,
                             env=env_without_preload())
        dat = os.path.join(tmp, "uftrace.data", "100.dat")
        for _ in range(600):  # until the first records are written (8192 of them), at most 60 s
            if os.path.exists(dat) and os.path.getsize(dat) > 0:
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == -signal.SIGTERM, f"{p.returncode}\n{err}"
        mine = report(os.path.join(tmp, "uftrace.data"))
        # the last top() may have made none, one or both of its calls of mid()
        top = mine.get("top", 0)
        assert mine.get("main") == 1 and top > 100 and 2 * top - 2 <= mine.get("mid") <= 2 * top, (
            mine)


def test_uftrace_refuses_bad_arguments_with_what_it_accepts(guests):
    program = guest(guests)
    binary = qemu_10_2()
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        for arg, message in (
                ("trace-privilege-level=maybe", "uftrace.lua: trace-privilege-level=maybe: "
                 "expected a boolean (on, off, yes, no, true, false, y, n)"),
                ("depth=3", "uftrace.lua: unknown argument 'depth'; accepted: "
                 "trace-privilege-level")):
            status, err = run(binary, f"{PLUGIN},script=uftrace,{arg}", [program], tmp)
            assert status == 1 and message in err, f"{arg}: {status}\n{err}"
        assert not os.path.exists(os.path.join(tmp, "uftrace.data")), "nothing written"


def test_uftrace_says_why_its_folder_cannot_be_made(guests):
    program = guest(guests)
    binary = qemu_10_2()
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        # a file where the folder goes: QEMU's plugin fails an assertion and aborts
        open(os.path.join(tmp, "uftrace.data"), "w").close()
        status, err = run(binary, f"{PLUGIN},script=uftrace", [program], tmp)
        where = os.path.join(os.path.realpath(tmp), "uftrace.data")
        assert status == 1 and f"uftrace.lua: cannot write in {where}: Not a directory" in err, (
            f"{status}\n{err}")
        status, err = run(binary, qemu_10_2_plugin("uftrace"), [program], tmp)
        assert status == -signal.SIGABRT, f"QEMU's plugin: {status}\n{err}"

        # a working directory that was removed
        gone = os.path.join(tmp, "gone")

        def into_removed():
            os.mkdir(gone)
            os.chdir(gone)
            os.rmdir(gone)

        status, err = run(binary, f"{PLUGIN},script=uftrace", [program], tmp,
                          preexec=into_removed)
        assert status == 1 and ("uftrace.lua: cannot tell QEMU's working directory, where "
                                "uftrace.data goes: No such file or directory") in err, (
            f"{status}\n{err}")


def test_uftrace_refuses_qemu_7_2_naming_what_it_needs(guests):
    program = guest(guests)
    # Debian's 7.2, also when the suite runs user mode on 10.2 (qemu_run.USER_BINARIES)
    qemu_7_2 = USER_BINARIES["7.2"]["x86_64"]
    if not shutil.which(qemu_7_2):
        pytest.skip(f"{qemu_7_2} not found")
    with tempfile.TemporaryDirectory(prefix="qlua-uftrace-") as tmp:
        status, err = run(qemu_7_2, f"{PLUGIN},script=uftrace", [program], tmp)
        if "needs the" not in err and status == 0:
            pytest.skip(f"{qemu_7_2} is not a QEMU older than 9.2")
        assert status == 1 and re.search(
            r"uftrace\.lua needs the 'read_memory' feature, which this QEMU \(plugin API \d+\) "
            r"lacks: it comes with QEMU 9\.2", err), f"{status}\n{err}"
        assert not os.path.exists(os.path.join(tmp, "uftrace.data")), "nothing written"
