"""What qlua promises however a run ends (docs/promises.md): the script's output reaches the log
(the guest's fatal signal, execve, SIGTERM, SIGINT, os.exit anywhere), qlua's own messages reach
the user when the guest closed its stderr, a Lua loop cannot make QEMU ignore SIGINT/SIGTERM, and
the REPL socket cannot be taken over or used to crash QEMU."""
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from qemu_run import (_run, communicate_or_stacks, env_without_preload, guest, lua_file, qemu,
                      qemu_10_2_plugin, repl_ask as ask, repl_connect as connect, run_lua,
                      system_command, user_command)

# A line every 20th translation, and one at exit: a guest running for a while prints steadily.
PRINTER = """
local n = 0
qemu.on_translate(function(tb)
  n = n + 1
  if n % 20 == 0 then qemu.printf("line %d\\n", n) end
end)
qemu.on_exit(function() qemu.print("exit handler ran") end)
"""


def lines(log):
    return [int(m) for m in re.findall(r"^line (\d+)$", log, re.M)]


def start(script_text, program, extra=(), log=None):
    """Starts QEMU with the script in the background; returns (process, log path, script)."""
    path = lua_file(script_text)
    log = log or tempfile.mktemp(suffix=".log")
    proc = subprocess.Popen(user_command([[f"script={path}"] + list(extra)], program, log),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_without_preload())
    return proc, log, path


def signalled(proc, path, sig, wait=1.0, timeout=30, first=None):
    """Lets the run go for `wait` seconds, calls first() if given, sends `sig`, waits for the end;
    returns (status, stdout, stderr) and removes the script."""
    try:
        time.sleep(wait)
        if first:
            first()
        proc.send_signal(sig)
        return finish(proc, timeout)
    finally:
        os.unlink(path)


def finish(proc, timeout=30):
    out, err = communicate_or_stacks(proc, timeout)
    return proc.returncode, out, err


def read(path):
    return open(path).read() if os.path.exists(path) else ""


# ---- output that survives ----

@pytest.mark.parametrize("mode, status", [("segv", -signal.SIGSEGV), ("exec", 0)])
def test_printed_lines_survive_the_guests_fatal_signal_and_execve(mode, status):
    r = run_lua(PRINTER, [guest("ends"), mode, "400"])
    assert r.status == status, f"{mode}\n{r}"
    got = lines(r.log)
    # every line was printed during the first translations, long before the end
    assert len(got) >= 5 and got == list(range(20, 20 * len(got) + 1, 20)), f"{mode}: {got}\n{r}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_printed_lines_survive_sigterm_and_sigint_sent_to_qemu(sig):
    proc, log, path = start(PRINTER, [guest("ends"), "spin"])
    before = []
    status, _, err = signalled(proc, path, sig, first=lambda: before.extend(lines(read(log))))
    text = read(log)
    assert status == -sig, f"the guest dies of the signal as without qlua: {status}\n{err}"
    assert len(lines(text)) >= 5, f"lines lost:\n{text}\n{err}"
    assert before == lines(text), "output written while the guest ran, before the signal"


def test_output_reaches_the_log_while_the_run_goes_on_and_within_the_bound_before_sigkill():
    proc, log, path = start(PRINTER, [guest("ends"), "spin"])
    try:
        time.sleep(1.0)  # translations (and lines) happen in the first few hundred ms
        seen = lines(read(log))
        proc.kill()
        finish(proc)
    finally:
        os.unlink(path)
    assert len(seen) >= 5, f"nothing visible while running: {seen}"


def test_lua_print_reaches_a_piped_stdout():
    r = run_lua("qemu.on_exit(function() print('from print') io.write('from io.write\\n') end)")
    assert r.status == 0 and "from print\nfrom io.write" in r.out, f"stdout is a pipe here\n{r}"


# ---- os.exit anywhere ----

@pytest.mark.exits_qemu  # exit(), which deadlocks under the preloaded ASan runtime
def test_os_exit_in_an_on_exit_handler_keeps_output_and_lets_later_handlers_run():
    r = run_lua("qemu.print('printed before')\n"
                "qemu.on_exit(function() qemu.print('first'); os.exit(7); qemu.print('not reached') end)\n"
                "qemu.on_exit(function() qemu.print('second') end)")
    assert r.status == 7, f"os.exit's status\n{r}"
    assert r.log.splitlines() == ["printed before", "first", "second"], f"{r}"


@pytest.mark.exits_qemu  # exit(), which deadlocks under the preloaded ASan runtime
def test_os_exit_in_a_callback_runs_the_exit_handlers_even_under_pcall():
    r = run_lua("local n = 0\n"
                "qemu.on_translate(function() n = n + 1\n"
                "  if n == 10 then pcall(os.exit, 5); qemu.print('rest of the callback') end end)\n"
                "qemu.on_exit(function() qemu.print('exit handler', n) end)")
    assert r.status == 5 and r.log.splitlines() == ["rest of the callback", "exit handler\t10"], f"{r}"


@pytest.mark.exits_qemu  # exit(), which deadlocks under the preloaded ASan runtime
def test_os_exit_at_top_level_and_in_a_queued_callback():
    r = run_lua("qemu.on_exit(function() qemu.print('bye') end)\nos.exit(false)")
    assert r.status == 1 and r.log.strip() == "bye", f"{r}"
    r = run_lua("qemu.on_translate(function(tb) tb:on_exec(function() os.exit(4) end) end)\n"
                "qemu.on_exit(function() qemu.print('bye') end)", [guest("loop"), "20"])
    assert r.status == 4 and r.log.strip() == "bye", f"{r}"


# ---- qlua's own messages ----

def test_errors_are_reported_when_the_guest_closed_its_stderr():
    r = run_lua("qemu.on_exit(function() error('boom at exit') end)", [guest("ends"), "nofd2", "10"])
    assert r.status == 1 and "error in on_exit callback" in r.err and "boom at exit" in r.err, f"{r}"


# ---- Lua that does not return ----

LOOP_IN_TRANSLATE = """
local AT = tonumber(qemu.args.at or 30)
local n = 0
qemu.on_translate(function(tb)
  n = n + 1
  if n == AT then qemu.print("looping"); local x = 0; while true do x = x + 1 end end
end)
qemu.on_exit(function() qemu.print("exit handler ran") end)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_lua_loop_does_not_make_qemu_ignore_sigint_or_sigterm(sig):
    proc, log, path = start(LOOP_IN_TRANSLATE, [guest("loop"), "10"])
    t0 = []
    status, _, err = signalled(proc, path, sig, timeout=15, first=lambda: t0.append(time.monotonic()))
    took = time.monotonic() - t0[0]
    text = read(log)
    assert status == -sig, f"ends with the signal: {status}\n{err}"
    assert took < 5 and "looping" in text, f"{took:.1f} s\n{text}\n{err}"
    if "interrupted by" in err:  # Lua 5.4, and LuaJIT when the loop is not compiled
        assert re.search(r"interrupted by SIG(INT|TERM) at \S+\.lua:6", err), err
        assert "exit handler ran" in text, f"the exit handlers run after an interrupt\n{text}"
    else:  # a compiled LuaJIT loop never looks at the interrupt: ended after the bound
        assert "Lua did not stop within" in err, err


def test_a_loop_in_an_on_exit_handler_is_cut_short_by_sigint():
    proc, log, path = start("qemu.on_exit(function() qemu.print('in exit'); while true do end end)\n"
                            "qemu.on_exit(function() qemu.print('second handler') end)",
                            [guest("loop"), "2"])
    status, _, err = signalled(proc, path, signal.SIGINT, timeout=15)
    assert status == -signal.SIGINT and "in exit" in read(log), f"{status}\n{err}"


@pytest.mark.user_host_independent  # system mode only
def test_a_lua_loop_in_system_mode_on_qemu_10_ends_on_sigint():
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "plugin.log")
        path = lua_file(LOOP_IN_TRANSLATE)
        proc = subprocess.Popen(system_command("10.0", [f"script={path}", "at=2"], log),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env_without_preload())
        status, _, err = signalled(proc, path, signal.SIGINT, wait=1.5, timeout=15)
        assert status == -signal.SIGINT and "looping" in read(log), f"{status}\n{err}"


def test_signals_to_qlua_threads_do_not_crash_qemu():
    # watch= and repl= start qlua's own threads; a signal sent to the process must not land there
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "r.sock")
        proc, log, path = start(PRINTER, [guest("ends"), "spin"], ["watch=on", f"repl={sock}"])

        def winch():
            for _ in range(20):
                proc.send_signal(signal.SIGWINCH)  # ignored by default: must stay harmless
        status, _, err = signalled(proc, path, signal.SIGTERM, first=winch)
    assert status == -signal.SIGTERM, f"{status}\n{err}"


# ---- the REPL socket ----

@contextlib.contextmanager
def repl_session():
    """A run with repl= on a guest that lasts 4 s: yields (process, log path, socket path)."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "r.sock")
        proc, log, path = start("qemu.on_exit(function() qemu.print('exit handler ran') end)",
                                [guest("ends"), "exit", "4000"], [f"repl={sock}"])
        try:
            yield proc, log, sock
        finally:
            os.unlink(path)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.exits_qemu  # QEMU refuses the plugin: exit() deadlocks under ASan
def test_an_empty_repl_path_is_refused_rather_than_an_abstract_socket():
    r = qemu(["script=count", "repl="], [guest("loop"), "1"])
    assert r.status == 1 and "repl=: expected the path of a socket" in r.err, f"{r}"


@pytest.mark.exits_qemu  # QEMU refuses the plugin: exit() deadlocks under ASan
def test_a_live_runs_socket_is_not_taken_over():
    with repl_session() as (first, log, sock):
        c = connect(sock)
        r = qemu(["script=count", f"repl={sock}"], [guest("loop"), "1"])
        assert r.status == 1 and "another process is listening" in r.err, f"{r}"
        assert ask(c, b"return 6*7\n") == b"42\n\x04\n", "the first run's REPL still answers"
        c.close()
        status, _, err = finish(first)
    assert status == 0, err


def test_a_repl_client_that_disconnects_mid_evaluation_does_not_kill_qemu():
    with repl_session() as (proc, log, sock):
        for _ in range(3):
            c = connect(sock)
            c.sendall(b"local t = os.clock(); while os.clock() - t < 0.3 do end; return ('x'):rep(1e6)\n")
            c.close()  # gone before the answer is written
        time.sleep(0.5)
        c = connect(sock)
        assert ask(c, b"return 1 + 1\n") == b"2\n\x04\n"
        c.close()
        status, _, err = finish(proc)
    assert status == 0 and "exit handler ran" in read(log), f"{status}\n{err}"


def test_a_long_repl_line_is_one_chunk():
    with repl_session() as (proc, log, sock):
        c = connect(sock)
        assert ask(c, b"return #'" + b"a" * 20000 + b"'\n") == b"20000\n\x04\n"
        assert ask(c, b"return 'next'\n") == b"next\n\x04\n", "in step after the long line"
        c.close()
        finish(proc)


@pytest.mark.exits_qemu  # exit(), which deadlocks under the preloaded ASan runtime
def test_os_exit_at_the_repl_runs_the_exit_handlers_into_the_log():
    with repl_session() as (proc, log, sock):
        c = connect(sock)
        c.sendall(b"os.exit(9)\n")
        status, _, err = finish(proc)
        c.close()
    assert status == 9 and "exit handler ran" in read(log), f"{status}\n{err}\n{read(log)}"


@pytest.mark.exits_qemu  # QEMU refuses the plugin: exit() deadlocks under ASan
def test_a_plugin_that_failed_to_start_runs_no_exit_handler():
    with tempfile.NamedTemporaryFile() as regular:
        r = qemu(["script=count", f"repl={regular.name}"], [guest("loop"), "1"])
    assert r.status == 1 and "exists and is not a socket" in r.err and "insns" not in r.log, f"{r}"


# ---- messages that say what was wrong ----

@pytest.mark.exits_qemu  # QEMU refuses the plugin: exit() deadlocks under ASan
def test_script_naming_a_directory_or_fifo_says_what_it_is():
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "f")
        os.mkfifo(fifo)
        for path, what in ((tmp, "is a directory"), (fifo, "is a FIFO")):
            r = qemu([f"script={path}"], [guest("loop"), "1"])
            assert r.status == 1 and f"script={path}: {what}, not a Lua file" in r.err, f"{r}"


def test_errors_without_a_position_say_where_the_callback_came_from():
    r = run_lua("local co = coroutine.wrap(function() end)\nco()\n"
                "qemu.on_translate(function(tb) tb:on_exec(co, nil, { sync = true }) end)")
    assert r.status == 1 and "cannot resume dead coroutine (the callback was registered at " in r.err, f"{r}"
    r = run_lua("qemu.on_translate(function(tb)\n"
                "  error(setmetatable({}, { __tostring = function() error('nested') end }))\nend)")
    assert r.status == 1 and "whose __tostring failed" in r.err and ".lua:2" in r.err, f"{r}"


def test_handles_refuse_what_they_would_truncate_and_cannot_be_forged():
    r = run_lua("local c = qemu.counter()\nlocal t = qemu.tally()\n"
                "qemu.print(pcall(c.add, c, 1, 0.5))\n"
                "qemu.print(pcall(t.add, 'x', 5))\n"
                "qemu.print(getmetatable(c), getmetatable(t))\n"
                "qemu.on_translate(function(tb) qemu.print(pcall(function() return tb[1.5] end)); qemu.uninstall() end)\n"
                "qemu.print(pcall(function() local i = qemu.tally() ; return getmetatable(i).__index end))")
    out = r.log.splitlines()
    assert r.status == 0 and out[0].startswith("false") and (
        "vCPU index" in out[0] or "no integer representation" in out[0]), f"{r}"
    assert out[1].startswith("false\ttally:add: expected a tally from qemu.tally() as self"), f"{r}"
    assert out[2] == "qlua.counter\tqlua.tally", f"{r}"
    assert out[3] == "true\tnil", f"the metatable's name reaches no methods table\n{r}"
    assert "tb[i]: expected a whole instruction index" in out[4], f"{r}"


def test_zero_bytes_in_output_are_dropped_and_nothing_after_them_is_lost():
    r = run_lua("qemu.write('a\\0b\\0\\0c\\n')\nqemu.on_exit(function() qemu.print('after') end)")
    assert r.status == 0 and r.log == "abc\nafter\n", f"{r}"


def test_a_wrong_option_value_is_named_with_what_is_expected():
    r = run_lua("qemu.on_translate(function(tb) tb:on_exec(print, nil, { counter = tb }) end)")
    assert r.status == 1 and "tb:on_exec: option counter=tb" in r.err and (
        "expected a counter from qemu.counter()" in r.err), f"{r}"


@pytest.mark.user_host_independent  # system mode only
def test_count_reads_the_same_moment_as_qemus_own_libinsn():
    # QEMU 10's debug-exit shuts down asynchronously: the final hlt is counted in some runs and
    # not in others, for QEMU's plugin as for qlua. Loaded together (in either order, so either
    # reads first), both must see the same count in every run.
    libinsn = qemu_10_2_plugin("insn")
    counts = set()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "plugin.log")
        for i in range(8):
            order = {"before": [libinsn]} if i % 2 else {"after": [libinsn]}
            r = _run(system_command("10.2", ["script=count"], log, **order), log, 60)
            mine = re.search(r"^insns: (\d+)$", r.log, re.M)
            theirs = re.search(r"^total insns: (\d+)$", r.log, re.M)
            assert r.status == 33 and mine and theirs, f"{r}"
            assert mine.group(1) == theirs.group(1), f"run {i}: qlua and libinsn differ\n{r}"
            counts.add(mine.group(1))
    assert counts <= {"4006", "4007"}, counts
