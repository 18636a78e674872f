"""Hostile input, bounded in time: every case runs real QEMU and asserts no crash and no hang.

A run passes when QEMU's status is below 128 (the guest itself raised no signal in these cases),
it ended within its timeout, and whatever went wrong was reported as a clean Lua error by qlua
(`qlua: ...` on stderr), never a C-level crash, an assertion, a Lua PANIC, "error in error
handling" or a sanitizer report. Cases: the Lua API surface fuzzer (tests/scripts/hostile_api.lua,
under onerror=fail and onerror=warn, in user and system mode, and the C core called directly),
the plugin argument fuzzer, the REPL input fuzzer, and a few cheap hostile odds and ends."""
import os
import random
import re
import socket
import stat
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qemu_run import Run, guest, lua_file, script, stacks, system_command, user_command

SEED = 20240607
API = script("hostile_api.lua")

# What must never appear on stderr, whatever the input.
BAD = [
    "PANIC",
    "error in error handling",
    "Assertion",
    "assertion failed",
    "AddressSanitizer",
    "LeakSanitizer",
    "UndefinedBehaviorSanitizer",
    "runtime error:",
    "Segmentation fault",
    "core dumped",
    "uncaught target signal",
    "-CRITICAL **",
    "-ERROR **",
    "double free",
    "free(): ",
    "malloc(): ",
    "stack smashing",
]


class Hang(AssertionError):
    pass


def run(cmd, timeout, logfile=None, **kw):
    """Runs cmd (a command line from qemu_run's builders) with a timeout; bytes are decoded with
    replacement (hostile values are echoed in messages). A timeout is a hang: an assertion."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        where = stacks(p.pid)
        p.kill()
        err = p.communicate()[1].decode("utf-8", "replace")
        raise Hang(f"hang: no end within {timeout} s: {cmd!r}\n--- stderr tail\n{err[-2000:]}\n"
                   f"--- its threads when killed\n{where}")
    log = ""
    if logfile and os.path.exists(logfile):
        with open(logfile, "rb") as f:
            log = f.read().decode("utf-8", "replace")
    return Run(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), log)


def tail(text, n=12):
    return "\n".join(text.splitlines()[-n:])


def describe(r, what):
    return f"{what}: status {r.status}\n--- stderr (last lines)\n{tail(r.err)}\n--- log tail\n{tail(r.log, 5)}"


def assert_clean(r, what, allowed=(0,)):
    """No crash, no hang (run() raised already), an allowed status, no C-level failure text; a
    status 1 must come with a qlua (or QEMU) message, not silently."""
    assert r.status >= 0 and r.status < 128, f"crash (signal or status >= 128)\n{describe(r, what)}"
    bad = [m for m in BAD if m in r.err]
    assert not bad, f"C-level failure text {bad}\n{describe(r, what)}"
    assert r.status in allowed, f"unexpected status\n{describe(r, what)}"
    if r.status == 1:
        assert "qlua" in r.err or "qemu" in r.err, f"status 1 with no message\n{describe(r, what)}"


def user(plugin_args, program, timeout=60, log=True, **kw):
    """User-mode QEMU with qlua (plugin_args: list of key=value) through qemu_run's builder."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log") if log else None
        return run(user_command([plugin_args], program, logfile), timeout, logfile,
                   cwd=kw.pop("cwd", tmp), **kw)


def lua_run(text, program=None, extra=(), timeout=60, **kw):
    path = lua_file(text)
    try:
        return user(["script=" + path] + list(extra), program or [guest("loop"), "3"], timeout,
                    **kw)
    finally:
        os.unlink(path)


SUMMARY = re.compile(r"^hostile-summary: calls=(\d+) errors=(\d+) translations=(\d+) mems=(\d+)",
                     re.M)


def assert_summary(r, what, min_calls=10000):
    m = SUMMARY.search(r.err)
    assert m, f"the fuzzer did not reach its summary line\n{describe(r, what)}"
    calls, errors, translations, mems = map(int, m.groups())
    assert calls >= min_calls and 0 < errors < calls, f"{what}: calls={calls} errors={errors}"
    assert translations > 0 and mems > 0, f"{what}: callbacks never ran: {m.group(0)}"
    return calls


# ---- 1. the Lua API surface fuzzer ----

def test_api_fuzzer_onerror_fail():
    r = user(["script=" + API, f"seed={SEED}", "calls=2000"], [guest("loop"), "3"])
    assert_clean(r, "API fuzzer, onerror=fail")
    assert_summary(r, "API fuzzer, onerror=fail")
    assert "sum " in r.out, describe(r, "the guest ran to its end")


def test_api_fuzzer_onerror_warn_with_raising_callbacks():
    # the pool's functions include ones that raise when QEMU calls them: each is reported once,
    # disabled, and the guest runs on
    r = user(["script=" + API, f"seed={SEED + 1}", "calls=2000", "raising=on", "onerror=warn"],
             [guest("loop"), "3"])
    assert_clean(r, "API fuzzer, onerror=warn")
    assert_summary(r, "API fuzzer, onerror=warn")
    assert "callback disabled, onerror=warn" in r.err, describe(r, "raising callbacks warned")
    assert "sum " in r.out, describe(r, "the guest ran to its end")


def test_api_fuzzer_several_seeds_with_profile_and_small_records():
    # other seeds, and the services that wrap every call (profile=on charges sites; records=1M
    # makes qlua flush translated code while the fuzzer keeps registering callbacks)
    for i, extra in enumerate([["profile=on"], ["records=1M", "exec=sync"],
                               ["counters=callback", "onerror=warn", "raising=on"]]):
        r = user(["script=" + API, f"seed={SEED + 10 + i}", "calls=800"] + extra,
                 [guest("loop"), "3"])
        assert_clean(r, f"API fuzzer {extra}")
        assert_summary(r, f"API fuzzer {extra}", min_calls=5000)


@pytest.mark.user_host_independent  # system mode only
def test_api_fuzzer_system_mode():
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        cmd = system_command("7.2", ["script=" + API, f"seed={SEED + 2}", "calls=800"], logfile)
        r = run(cmd, 90, logfile)
    # the bare-metal guest ends QEMU through isa-debug-exit with status 33
    assert_clean(r, "API fuzzer, system mode", allowed=(33,))
    assert_summary(r, "API fuzzer, system mode", min_calls=5000)


def test_core_primitives_called_directly_raise_lua_errors():
    # docs/architecture.md: "a script that calls qlua.core directly gets an error, never a crash"
    # (core.events_fill takes a raw pointer and is tested on its own below)
    r = user(["script=" + API, f"seed={SEED + 3}", "calls=1000", "core=on"], [guest("loop"), "3"])
    assert_clean(r, "core fuzzer")
    assert_summary(r, "core fuzzer")


# ---- 2. the plugin argument fuzzer ----

OWN_KEYS = ["script", "onerror", "counters", "profile", "repl", "watch", "exec", "records"]
GOOD = {"script": ["count", "bb", "insn", "mem", "syscall", "hotblocks"],
        "onerror": ["fail", "warn"], "counters": ["auto", "callback"], "profile": ["on", "off"],
        "watch": ["on", "off"], "exec": ["queued", "sync"],
        "records": ["64M", "1M", "off", "1G", "1023K", "0", "18446744073709551615", "9G"]}
WEIRD = ["", "=", "==", ",,", ",,,,", "a,,b", "on,,", "\u00e9\u00e8\u4e2d\U0001f600", "\x01\x02\x1b[31m",
         "\x7f", "\t", " ", "\n", "\r\n", "%s%n%x", "-1", "0x10", "1e400", "nan", "inf", "\\",
         "'\"", "$(true)", "`true`", ".", "..", "*", "?"]


def fuzz_value(rnd, key):
    roll = rnd.random()
    if roll < 0.35 and key in GOOD:
        return rnd.choice(GOOD[key])
    if roll < 0.6:
        return rnd.choice(WEIRD)
    if roll < 0.7:
        return rnd.choice("xyz=,") * rnd.choice([100, 1000, 20000])  # very long
    alphabet = [chr(c) for c in range(1, 128) if chr(c) != "/"] + ["\u00ff", "\u2028", "\ufeff"]
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 24)))


def fuzz_args(rnd):
    args = []
    if rnd.random() < 0.8:  # most runs name a script, so later options are reached
        args.append("script=" + rnd.choice(GOOD["script"] + ["nope", "", API]))
    for _ in range(rnd.randint(0, 5)):
        roll = rnd.random()
        key = (rnd.choice(OWN_KEYS) if roll < 0.7 else
               rnd.choice(["", "x", "KEY", "script ", " onerror", "a=b", "\u00e9", "lua"]))
        if key == "repl":  # a socket in the run's own folder, or a hostile path
            value = rnd.choice(["s", "", "x" * 200, ".", "..", "d", "f", "s,,t"])
        else:
            value = fuzz_value(rnd, key)
        args.append(key + "=" + value if rnd.random() < 0.9 else key)
    return args


def run_plugin_args(args):
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "d"))
        open(os.path.join(tmp, "f"), "w").close()
        # the -plugin value is one argument: QEMU splits it at single commas
        cmd = user_command([args], [guest("loop"), "1"])
        return run(cmd, 30, cwd=tmp)


@pytest.mark.exits_qemu
def test_plugin_argument_fuzzer():
    rnd = random.Random(SEED)
    cases = [fuzz_args(rnd) for _ in range(300)]
    cases += [["script=count", "records=" + "9" * 40], ["script=count", "watch=on", "repl=s"],
              ["script=count,,x"], ["script=" + API + ",seed=1"], ["=", "=="], [",", ""],
              ["script=count"] * 50, ["script=count", "x=" + "y" * 100000]]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run_plugin_args, cases))
    failures = []
    for args, r in zip(cases, results):
        try:
            assert_clean(r, f"-plugin {','.join(args)!r}"[:300], allowed=(0, 1))
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, f"{len(failures)} of {len(cases)} runs failed; first ones:\n" + "\n\n".join(
        failures[:5])
    assert time.monotonic() - start < 120, "plugin argument fuzzer over its time budget"


# ---- 3. the REPL input fuzzer ----

REPL_SCRIPT = ("insns = qemu.counter()\n"
               "qemu.count_every('insn', insns)\n"
               "qemu.on_exit(function() qemu.printf('final %d\\n', insns:sum()) end)\n")


def _connect(path, timeout=20):
    # the listen backlog is 4: a burst of clients may find it full for a moment (EAGAIN)
    for attempt in range(200):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(timeout)
        try:
            c.connect(path)
            return c
        except BlockingIOError:
            c.close()
            time.sleep(0.02)
    raise AssertionError("the REPL accepted no connection for 4 s")


def _until_done(c, limit=8 << 20):
    """Reads until an answer ends with the \\x04 line (the chunk ran) or the \\x05 line."""
    data = b""
    while not (data.endswith(b"\x04\n") or data.endswith(b"\x05\n")) and len(data) < limit:
        piece = c.recv(65536)
        if not piece:
            break
        data += piece
    return data


def _drain(c, seconds=0.2):
    c.settimeout(seconds)
    try:
        while c.recv(65536):
            pass
    except (socket.timeout, OSError):
        pass


def test_repl_input_fuzzer():
    path = lua_file(REPL_SCRIPT)
    rnd = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        sock, log = os.path.join(tmp, "repl.sock"), os.path.join(tmp, "plugin.log")
        errf = open(os.path.join(tmp, "stderr"), "w+b")
        proc = subprocess.Popen(user_command([[f"script={path}", f"repl={sock}"]],
                                             [guest("loop"), "600000"], log),
                                stdout=subprocess.DEVNULL, stderr=errf)
        answers = {}
        try:
            for _ in range(300):
                if os.path.exists(sock) or proc.poll() is not None:
                    break
                time.sleep(0.02)
            assert stat.S_ISSOCK(os.stat(sock).st_mode), "no REPL socket"

            # random binary chunks, with and without newlines, on one connection
            c = _connect(sock)
            for _ in range(60):
                c.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 3000))))
                if rnd.random() < 0.5:
                    c.sendall(b"\n")
            _drain(c)
            c.close()

            def ask(name, line, disconnect=False):
                c = _connect(sock)
                c.sendall(line)
                if disconnect:
                    c.close()
                    return
                answers[name] = _until_done(c)
                c.close()

            ask("100 KB line", b"return '" + b"a" * 100000 + b"'\n")
            ask("only EOT", b"\x04\n")
            ask("NUL in chunk", b"return 1\x00 garbage\n")
            ask("raising __tostring",
                b"return setmetatable({}, {__tostring=function() error('x') end})\n")
            ask("error object with raising __tostring",
                b"error(setmetatable({}, {__tostring=function() error('y') end}))\n")
            ask("recursive __index", b"local t = setmetatable({}, {__index=function(t, k) "
                                     b"return t[k] end}) return t.x\n")
            ask("error nil", b"error()\n")
            ask("yield", b"coroutine.yield(1)\n")
            ask("1 MB answer", b"return string.rep('z', 1048576)\n")
            ask("__tostring returning a table",
                b"return setmetatable({}, {__tostring=function() return {} end})\n")
            ask("incomplete then more", b"for i = 1, 2 do\nqemu.print(i)\nend\n")
            ask("gc", b"collectgarbage() collectgarbage('step') return collectgarbage('count') > 0\n")
            # many lines without newline, then gone
            c = _connect(sock)
            for _ in range(200):
                c.sendall(b"local x = 1 " * 20)
            c.close()
            ask("loop then gone", b"for i=1,1e7 do end\n", disconnect=True)
            ask("long loop then gone", b"for i=1,3e8 do end return 1\n", disconnect=True)
            ask("incomplete then gone", b"function f()\n", disconnect=True)
            # many clients at once, none reading
            clients = [_connect(sock) for _ in range(8)]
            for k in clients:
                k.sendall(b"return string.rep('q', 200000)\n" * 4)
            for k in clients:
                k.close()

            assert proc.poll() is None, "QEMU ended while the REPL was fuzzed"
            c = _connect(sock)
            c.sendall(b"return 1+1\n")
            final = _until_done(c)
            c.close()
            assert final == b"2\n\x04\n", f"after the fuzz, `return 1+1` answered {final!r}"
            status = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise Hang("QEMU did not end within 120 s of the REPL fuzz")
        finally:
            proc.kill()
            proc.wait()
            os.unlink(path)
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace")
            errf.close()
        text = open(log, "rb").read().decode("utf-8", "replace") if os.path.exists(log) else ""
        r = Run(status, "", err, text)
        assert_clean(r, "REPL fuzz")
        assert re.search(r"^final \d+$", text, re.M), describe(r, "exit handler ran")
        for name in ["raising __tostring", "error object with raising __tostring", "100 KB line",
                     "only EOT", "1 MB answer", "recursive __index"]:
            a = answers.get(name, b"")
            assert a.endswith(b"\x04\n"), f"{name}: answered {a[:300]!r}"
            assert b"error in error handling" not in a and b"PANIC" not in a, f"{name}: {a[:300]!r}"


# ---- 4. cheap hostile odds and ends ----

@pytest.mark.exits_qemu
def test_script_that_is_not_a_regular_file_is_refused():
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "fifo.lua")
        os.mkfifo(fifo)
        unreadable = os.path.join(tmp, "unreadable.lua")
        with open(unreadable, "w") as f:
            f.write("qemu.on_exit(function() end)\n")
        os.chmod(unreadable, 0)
        for target in [tmp, fifo, "/dev/null", "/dev/zero", "/proc/self/mem", unreadable,
                       tmp + "/", tmp + "/nope.lua"]:
            r = user(["script=" + target], [guest("loop"), "1"], timeout=20)
            allowed = (0, 1) if target == unreadable else (1,)  # (root can read anything)
            assert_clean(r, f"script={target}", allowed=allowed)
            assert "qlua:" in r.err or r.status == 0, describe(r, f"script={target}")


@pytest.mark.parametrize("policy", ["fail", "warn"])
def test_on_exit_that_raises(policy):
    code = ("qemu.on_exit(function() error('exit boom') end)\n"
            "qemu.on_exit(function() error(setmetatable({}, {__tostring = function() "
            "error('tostring boom') end})) end)\n"
            "qemu.on_exit(function() error() end)\n"
            "qemu.on_exit(function() error(coroutine.create(print)) end)\n"
            "qemu.on_exit(function() qemu.print('last') end)\n")
    r = lua_run(code, extra=["onerror=" + policy])
    assert_clean(r, f"on_exit errors, onerror={policy}", allowed=(1,) if policy == "fail" else (0,))
    assert "qlua: error in on_exit callback" in r.err, describe(r, "the error was reported")
    if policy == "warn":
        assert r.err.count("callback disabled, onerror=warn") == 4, describe(r, "four warnings")
        assert "last" in r.log, describe(r, "later exit handlers still ran")


def test_error_objects_that_resist_description():
    # an error object whose __tostring raises or returns a table, in a vCPU callback (a __tostring
    # that tail-calls tostring on itself loops forever in plain LuaJIT too: not tested)
    for obj in ["setmetatable({}, {__tostring = function() error('again') end})",
                "setmetatable({}, {__tostring = function() return {} end})",
                "setmetatable({}, {__index = function(t, k) return t[k] end})",
                "string.rep('e', 4 * 1024 * 1024)"]:
        code = f"qemu.on_translate(function(tb) error({obj}) end)\n"
        r = lua_run(code)
        assert_clean(r, f"error({obj})", allowed=(1,))
        assert "qlua: error in on_translate callback" in r.err, describe(r, obj)


def test_stack_overflow_and_yield_in_callbacks():
    for body in ["local function f(x) return f(x + 1) + 1 end f(1)",
                 "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) "
                 "return t.x",
                 "coroutine.yield(1)"]:
        r = lua_run(f"qemu.on_translate(function(tb) {body} end)\n")
        assert_clean(r, body, allowed=(1,))
        assert "qlua: error in on_translate callback" in r.err, describe(r, body)


def test_stderr_and_stdout_closed():
    # QEMU (and qlua) with fd 2 (then fd 1) closed: errors are reported nowhere, but cleanly
    for fd in (2, 1):
        for code, status in [("qemu.on_exit(function() qemu.print('x') end)\n", 0),
                             ("qemu.on_translate(function(tb) error('nobody hears') end)\n", 1)]:
            r = lua_run(code, preexec_fn=lambda fd=fd: os.close(fd))
            assert r.status == status, describe(r, f"fd {fd} closed, status {status} expected")


def test_uninstall_from_on_exit_and_from_callbacks():
    for code in ["qemu.on_exit(function() qemu.uninstall() qemu.uninstall(1, 2) end)\n",
                 "qemu.on_translate(function(tb) tb:on_exec(function() qemu.uninstall() "
                 "qemu.uninstall() end) end)\n"
                 "qemu.on_exit(function() qemu.print('exit ran') end)\n",
                 "qemu.on_syscall(function() qemu.uninstall() end)\n"
                 "qemu.on_vcpu_exit(function() qemu.uninstall() end)\n"]:
        r = lua_run(code, [guest("loop"), "20"])
        assert_clean(r, code)
        assert "sum " in r.out, describe(r, "the guest ran on after uninstall")


def test_fuzzer_on_a_threaded_guest():
    r = user(["script=" + API, f"seed={SEED + 4}", "calls=400"], [guest("threads")], timeout=90)
    assert_clean(r, "API fuzzer on the threads guest")
    assert_summary(r, "API fuzzer on the threads guest", min_calls=2000)


# Known crashes: kept so that they fail until fixed.

def test_tally_whose_fields_a_script_overwrote():
    # a tally is a Lua table: under LuaJIT t:add passes t.ptr to C through the FFI unchecked
    for value in ["nil", "io.stdout", "qemu.counter()", "'x'", "0"]:
        code = ("local t = qemu.tally()\n"
                f"qemu.on_exit(function() rawset(t, 'ptr', {value}) "
                "qemu.print('add', pcall(t.add, t, 1)) end)\n")
        r = lua_run(code)
        assert_clean(r, f"tally with ptr = {value}")
        assert "add\t" in r.log, describe(r, "t:add returned or raised")


def test_core_events_fill_with_a_pointer_that_is_not_a_buffer():
    # core.events_fill(pool, ptr, n) decodes n records at ptr: it must refuse any pointer but the
    # batch being delivered (here core.tally_new's second value, or none, once a real tracer has
    # delivered its batches), and pools that are not tables
    code = ("local core = require 'qlua.core'\n"
            "local fill = core.events_fill\n"
            "local tr = qemu.tracer{ batch = 4, fn = function(events, n) end }\n"
            "qemu.on_translate(function(tb) tb:trace(tr) end)\n"
            "qemu.on_exit(function() local _, p = core.tally_new()\n"
            "  qemu.print('bogus', pcall(fill, {}, p, 2^40))\n"
            "  qemu.print('null', pcall(fill, {}, nil, 1))\n"
            "  qemu.print('notable', pcall(fill, 1, p, 1)) end)\n")
    r = lua_run(code)
    assert_clean(r, "core.events_fill on a bogus pointer")
    for what in ("bogus", "null", "notable"):
        assert f"{what}\tfalse" in r.log, describe(r, f"core.events_fill refused ({what})")
    assert "not the batch being delivered" in r.log, describe(r, "the error says what was wrong")


def test_tracer_events_read_out_of_range():
    # events[i] beyond 1..n: Lua 5.4's view answers nil, LuaJIT's FFI pointer reads anywhere
    code = ("local done = false\n"
            "local tr = qemu.tracer{ batch = 16, fn = function(events, n)\n"
            "  if done then return end\n"
            "  done = true\n"
            "  for _, i in ipairs { 0, n + 1, -2^28, 2^31 } do\n"
            "    qemu.print('event', i, pcall(function() return events[i] and events[i].addr end))\n"
            "  end\n"
            "end }\n"
            "qemu.on_translate(function(tb) tb:trace(tr) end)\n")
    r = lua_run(code)
    assert_clean(r, "tracer events out of range")
    assert r.log.count("event\t") == 4, describe(r, "every read returned or raised")


def test_finalizer_that_raises_while_qlua_pushes_arguments():
    # under LuaJIT an error in a __gc metamethod propagates from whatever allocation ran the GC
    # step: here the next one is qlua's own push of the tb handle, outside any protected call
    code = ("local function boom() error('gc boom') end\n"
            "local first = true\n"
            "qemu.on_translate(function(tb)\n"
            "  if not first then return end\n"
            "  first = false\n"
            "  collectgarbage('stop')\n"
            "  for i = 1, 2000 do local p = newproxy and newproxy(true) or setmetatable({}, {})\n"
            "    getmetatable(p).__gc = boom end\n"
            "  collectgarbage('restart')\n"
            "end)\n")
    r = lua_run(code)
    assert_clean(r, "a raising finalizer", allowed=(0, 1))  # (Lua 5.4 only warns)
    if r.status == 1:
        assert "qlua: error in" in r.err, describe(r, "the finalizer's error reported by qlua")


def test_a_map_a_finalizer_brings_back_after_collection_is_refused_not_read():
    # A finalizer that runs in the same collection as a tally's or an edge map's native object
    # can still reach it (Lua 5.4's weak keys, LuaJIT's finalizer order): the freed map must be
    # refused with a message, never read (it was: SIGSEGV under both Luas).
    code = ("local function finalizer(f)\n"
            "  if newproxy then local p = newproxy(true); getmetatable(p).__gc = f; return p end\n"
            "  return setmetatable({}, { __gc = f })\n"
            "end\n"
            "for order = 1, 2 do\n"
            "  do local t, e, p\n"
            "    local function fin() qemu.print('tally', pcall(function() t:add(1); return t:size() end))\n"
            "      qemu.print('edges', pcall(function() e:reset(); return #e:items() end)) end\n"
            "    if order == 1 then p = finalizer(fin); t, e = qemu.tally(), qemu.edges()\n"
            "    else t, e = qemu.tally(), qemu.edges(); p = finalizer(fin) end\n"
            "  end\n"
            "  collectgarbage(); collectgarbage()\n"
            "end\n"
            "qemu.print('survived')\n")
    r = lua_run(code)
    assert_clean(r, "maps reached from finalizers")
    assert "survived" in r.log, describe(r, "the script ran to its end")
    for line in r.log.splitlines():
        if line.startswith(("tally\tfalse", "edges\tfalse")):
            assert "used after the garbage collector took it" in line, describe(r, line)


def test_a_tracer_view_kept_past_its_batch_never_reads_a_freed_buffer():
    # Each thread's buffers go when it exits: a LuaJIT view kept past fn must read as empty (it
    # read the freed buffer and crashed QEMU), and a record kept (an FFI reference into the
    # buffer) must still point at memory qlua holds (arrays are kept for later threads, never
    # freed); Lua 5.4's records are Lua tables. Also the view's iterator with made-up starts.
    code = ("local saved, records, odd = {}, {}, {}\n"
            "local tr = qemu.tracer{ batch = 1048576, fn = function(ev, n)\n"
            "  saved[#saved + 1], records[#records + 1] = ev, ev[n]\n"
            "  local f, s = pairs(ev)\n"
            "  for _, start in ipairs { -1, -2^40, 0.5, n, 2^53, 'x' } do\n"
            "    local ok, k = pcall(f, s, start) -- (Lua 5.4's next refuses a key it lacks)\n"
            "    if ok and k ~= nil then odd[#odd + 1] = tostring(start) end\n"
            "  end\n"
            "end }\n"
            "qemu.on_translate(function(tb) tb:trace(tr) end)\n"
            "qemu.on_exit(function() local sum, kept = 0, 0\n"
            "  for _, v in ipairs(saved) do for i = 1, #v do sum = sum + v[i].addr; kept = kept + 1 end end\n"
            "  for _, e in ipairs(records) do sum = sum + e.addr + e.size end -- whatever they hold now\n"
            "  qemu.printf('kept %d views, %d events readable; odd starts: %s\\n', #saved, kept,"
            " table.concat(odd, ' ')) end)\n")
    r = lua_run(code, [guest("threads"), "20"], timeout=120)
    assert_clean(r, "views kept past their batch")
    m = re.search(r"kept (\d+) views, (\d+) events readable; odd starts: (.*)$", r.log, re.M)
    assert m and int(m.group(1)) > 8, describe(r, "batches delivered from several threads")
    assert m.group(3).strip() == "", describe(r, "the iterator gives nothing for a start outside 0..n-1")
    if "LuaJIT" in lua_run("qemu.print(qemu.info.lua)").log:
        assert m.group(2) == "0", describe(r, "a LuaJIT view reads as empty once its fn returned")


def test_a_relative_qlua_root_still_finds_modules_loaded_after_the_guest_changes_directory(
        tmp_path):
    # qemu.symbolize's module loads on first use, and scripts require modules in callbacks: with
    # a relative QLUA_ROOT (`QLUA_ROOT=. qemu-x86_64 ...` in a checkout) both must still resolve
    # once the guest has changed its directory (user mode: QEMU's own working directory)
    from qemu_run import PLUGIN, QEMU, SRC
    late = tmp_path / "late.lua"
    late.write_text('qemu.on_exit(function()\n  local json = require "qemu.json"\n'
                    '  qemu.printf("late: %s %s\\n", qemu.symbolize_format("libc.so.6", "main", 8),'
                    ' json.encode(json.array { 1 }))\nend)\n')
    os.symlink(SRC, tmp_path / "checkout")  # a relative path that "/" does not also reach
    env = dict(os.environ, QLUA_ROOT="checkout")
    p = subprocess.run([QEMU, "-U", "LD_PRELOAD", "-plugin", f"{PLUGIN},script={late}", "-d",
                        "plugin", "/bin/sh", "-c", "cd /"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "late: libc.so.6!main+0x8 [1]\n" in p.stderr, p
