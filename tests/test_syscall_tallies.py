"""qemu.count_every("syscall" | "syscall_ret" | "syscall_error", t): syscalls counted natively by
number, against on_syscall / on_syscall_ret handlers in Lua in the same run; added while the guest
runs; clear errors for bad arguments and in system mode."""
import os
import re
import subprocess
import tempfile
import time

import pytest

from qemu_run import (communicate_or_stacks, env_without_preload, guest, lua_file, repl_ask,
                      repl_connect, qemu, run_lua, system_lua, user_command)

GETPPID, NOSYS = 110, 1000  # x86_64: getppid always succeeds; 1000 is no syscall (-ENOSYS)

# The tallies and a Lua reference of the same events; at exit, one line per kind:
# "kind keys mismatches", then each mismatch.
BOTH = """
local kinds = { "syscall", "syscall_ret", "syscall_error" }
local tallies, ref = {}, {}
for _, kind in ipairs(kinds) do
  tallies[kind] = qemu.tally()
  qemu.count_every(kind, tallies[kind])
  ref[kind] = {}
end
local function bump(t, num) t[num] = (t[num] or 0) + 1 end
qemu.on_syscall(function(vcpu, num) bump(ref.syscall, num) end)
qemu.on_syscall_ret(function(vcpu, num, ret)
  bump(ref.syscall_ret, num)
  if ret < 0 then bump(ref.syscall_error, num) end
end)
qemu.on_exit(function()
  for _, kind in ipairs(kinds) do
    local got, want, keys, bad = tallies[kind]:items(), ref[kind], 0, {}
    for num, n in pairs(want) do
      keys = keys + 1
      if got[num] ~= n then bad[#bad + 1] = string.format("%d: %s, not %d", num, tostring(got[num]), n) end
    end
    for num, n in pairs(got) do
      if want[num] == nil then bad[#bad + 1] = string.format("%d: %d, not none", num, n) end
    end
    qemu.printf("%s %d %d\\n", kind, keys, #bad)
    for _, b in ipairs(bad) do qemu.print("  " .. b) end
  end
end)
"""


def counts(r):
    """{kind: (keys, mismatches)} from BOTH's lines."""
    out = {}
    for line in r.log.splitlines():
        m = re.match(r"^(syscall\w*) (\d+) (\d+)$", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


@pytest.mark.parametrize("program", [["/bin/ls", "-l", "/", "/nonexistent"], [guest("threads")]],
                         ids=["ls", "8_threads"])
def test_syscall_tallies_count_what_the_handlers_see(program):
    r = run_lua(BOTH, program)
    got = counts(r)
    assert r.status in (0, 2) and set(got) == {"syscall", "syscall_ret", "syscall_error"}, f"{r}"
    for kind, (keys, bad) in got.items():
        assert bad == 0, f"{kind}: tally and handlers disagree\n{r}"
    assert got["syscall"][0] >= 10 and got["syscall_error"][0] >= 1, (
        f"a real program makes many kinds of syscall, and ls of a missing file fails some\n{r}")


def test_a_syscall_tally_added_while_the_guest_runs_counts_from_then_on():
    # Added in the 20th syscall's handler, after qlua fed that call: the call tally counts the
    # later calls. No Lua handler wants returns, so the error tally has QEMU report them from
    # then on (registered after the handler returns); ls of a missing file fails later.
    r = run_lua("""
local late, n = nil, 0
qemu.on_syscall(function(vcpu, num)
  n = n + 1
  if n == 20 then
    late = { calls = qemu.tally(), errors = qemu.tally() }
    qemu.count_every("syscall", late.calls)
    qemu.count_every("syscall_error", late.errors)
  end
end)
qemu.on_exit(function()
  local calls, errors = 0, 0
  for _, c in pairs(late.calls:items()) do calls = calls + c end
  for _, c in pairs(late.errors:items()) do errors = errors + c end
  qemu.printf("total %d tallied %d errors %d\\n", n, calls, errors)
end)
""", ["/bin/ls", "/", "/nonexistent"])
    m = re.search(r"total (\d+) tallied (\d+) errors (\d+)", r.log)
    assert m, f"{r}"
    total, tallied, errors = map(int, m.groups())
    assert total > 40 and tallied == total - 20, f"the late tally counts each later call once\n{r}"
    assert errors >= 1, f"the failed stat of /nonexistent is tallied\n{r}"


def test_syscall_py_lists_negative_and_invalid_numbers_with_their_own_counts():
    # syscall(-1), syscall(-2), syscall(-4096): each a row of its own with its calls and errors
    # (under LuaJIT too: the tally's keys are signed syscall numbers)
    r = qemu(["script=syscall"],
             [guest("sysnums"), "1", "2", "0", "-1", "-2", "-4096", str(NOSYS), str(GETPPID)])
    rows = {}
    for line in r.log.splitlines()[1:]:
        m = re.fullmatch(r"(-?\d+) +(\d+) +(\d+)", line)
        assert m, f"malformed row {line!r}\n{r}"
        rows[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    for num in (-1, -2, -4096, NOSYS):
        assert rows.get(num) == (2, 2), f"syscall {num}: 2 calls, 2 errors\n{r}"
    assert rows.get(GETPPID) == (2, 0), f"getppid: 2 calls, no error\n{r}"


COUNTED = """
local calls, rets, errors = qemu.tally(), qemu.tally(), qemu.tally()
qemu.count_every("syscall", calls)
qemu.count_every("syscall_ret", rets)
qemu.count_every("syscall_error", errors)
local n, resets = 0, 0
qemu.on_translate(function()
  n = n + 1
  if n % 5 == 0 and resets < 3000 then resets = resets + 1; qemu.retranslate() end
end)
qemu.on_exit(function()
  qemu.printf("counted %d %d %d %d resets %d\\n", calls:get(GETPPID), rets:get(GETPPID),
    calls:get(NOSYS), errors:get(NOSYS), resets)
end)
""".replace("GETPPID", str(GETPPID)).replace("NOSYS", str(NOSYS))


def test_syscall_tallies_are_exact_while_qemu_flushes_code_under_threads_in_syscalls():
    # A flush folds every thread's feed while other threads are inside syscall callbacks, which
    # QEMU's exclusive section does not stop: not one add may be lost or counted twice. 3000
    # resets: QEMU frees its records of our callbacks in each while those threads dispatch
    # syscalls (shim/quiesce.c); without the wait before the frees, counts are lost in one run of
    # two and QEMU crashes now and then (rcu_read_unlock's assertion, a SIGSEGV).
    with tempfile.TemporaryDirectory() as tmp:
        r = run_lua(COUNTED, [guest("sysnums"), "8", "400000", "0", str(GETPPID), str(NOSYS)],
                    extra=["repl=" + os.path.join(tmp, "s")])  # repl=: qemu.retranslate() works
    m = re.search(r"counted (\d+) (\d+) (\d+) (\d+) resets (\d+)", r.log)
    assert r.status == 0 and m, f"{r}"
    *got, resets = map(int, m.groups())
    assert got == [3200000] * 4 and resets > 1000, f"8 x 400000 of each, through {resets} resets\n{r}"


def test_a_reload_loses_no_syscall_of_a_tally_both_versions_count():
    version = ("qemu.persist.calls = qemu.persist.calls or qemu.tally()\n"
               "qemu.count_every('syscall', qemu.persist.calls)\n"
               "qemu.on_exit(function() qemu.printf('calls %d\\n', qemu.persist.calls:get(GETPPID)) end)\n"
               ).replace("GETPPID", str(GETPPID))
    path = lua_file(version)
    with tempfile.TemporaryDirectory() as tmp:
        log, errpath = os.path.join(tmp, "plugin.log"), os.path.join(tmp, "stderr")
        with open(errpath, "w") as errf:
            proc = subprocess.Popen(user_command([[f"script={path}", "watch=on"]],
                                                 [guest("sysnums"), "4", "5000000", "0", str(GETPPID)], log),
                                    stdout=subprocess.DEVNULL, stderr=errf, env=env_without_preload())
        try:
            # Edits until three reloads while the threads make their syscalls: an edit made before
            # QEMU's start (slow under load or ASan) reloads nothing, so each waits for its reload.
            edits = 0
            while proc.poll() is None and open(errpath).read().count("reloaded") < 3:
                seen = open(errpath).read().count("reloaded")
                with open(path, "a") as f:
                    f.write(f"-- edit {edits}\n")
                edits += 1
                for _ in range(25):
                    if proc.poll() is not None or open(errpath).read().count("reloaded") > seen:
                        break
                    time.sleep(0.02)
            communicate_or_stacks(proc, 120)
        finally:
            proc.kill()
            os.unlink(path)
        text = open(log).read() if os.path.exists(log) else ""
        err = open(errpath).read()
    assert proc.returncode == 0 and err.count("reloaded") >= 2, f"{proc.returncode}\n{err}\n{text}"
    assert re.search(r"^calls 20000000$", text, re.M), f"4 x 5000000 getppid, reloads or not\n{text}\n{err}"


def test_the_repl_reads_and_resets_what_blocked_threads_added():
    # The workers have made their calls and wait, blocked, with their adds in their own feeds;
    # the REPL's reads must see them, and a reset forget them.
    code = ("calls = qemu.tally()\nqemu.count_every('syscall', calls)\n"
            "qemu.on_exit(function() qemu.printf('at exit %d\\n', calls:get(GETPPID)) end)\n"
            ).replace("GETPPID", str(GETPPID))
    path = lua_file(code)
    with tempfile.TemporaryDirectory() as tmp:
        sock, log = os.path.join(tmp, "r.sock"), os.path.join(tmp, "plugin.log")
        proc = subprocess.Popen(user_command([[f"script={path}", f"repl={sock}"]],
                                             [guest("sysnums"), "4", "1000", "3000", str(GETPPID)], log),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env_without_preload())
        try:
            c = repl_connect(sock)
            time.sleep(1.0)  # the 4000 calls are long made; the main thread sleeps
            before = repl_ask(c, b"return calls:get(%d)\n" % GETPPID)
            after = repl_ask(c, b"calls:reset(); return calls:get(%d)\n" % GETPPID)
            c.close()
            _, err = communicate_or_stacks(proc, 60)
        finally:
            os.unlink(path)
        text = open(log).read() if os.path.exists(log) else ""
    assert before == b"4000\n\x04\n", f"the REPL saw {before!r}\n{err}"
    assert after == b"0\n\x04\n" and "at exit 0" in text, f"{after!r}\n{text}\n{err}"


HOSTILE = """
local said = {}
local function try(...)
  local ok, err = pcall(...)
  said[#said + 1] = ok and "accepted" or tostring(err):gsub("^[^:]*:%d+: ", "")
end
try(qemu.count_every, "syscall", qemu.counter())
try(qemu.count_every, "syscall_ret", nil)
try(qemu.count_every, "syscall_error", qemu.edges())
try(qemu.count_every, "syscall", qemu.tally(), { rw = "r" })
try(qemu.count_every, "syscalls", qemu.tally())
local twice = qemu.tally()
try(qemu.count_every, "syscall_ret", twice, {})
try(qemu.count_every, "syscall_ret", twice)
for i = 1, 16 do try(qemu.count_every, "syscall", qemu.tally()) end
for _, s in ipairs(said) do qemu.print(s) end
"""


def test_bad_syscall_tally_arguments_say_what_is_accepted():
    r = run_lua(HOSTILE, [guest("loop"), "1"])
    lines = r.log.splitlines()
    expected = [
        'qemu.count_every: kind "syscall" counts by syscall number: expected a tally from '
        'qemu.tally(), got a counter',
        'qemu.count_every: kind "syscall_ret" counts by syscall number: expected a tally from '
        'qemu.tally(), got nil',
        'qemu.count_every: edges from qemu.edges() count kind "branch" only, not "syscall_error"',
        'qemu.count_every: kind "syscall" takes no options (only "mem" does)',
        "qemu.count_every: kind syscalls: expected one of",
        "accepted",
        'qemu.count_every: this tally already counts kind "syscall_ret" (each event would be '
        'counted twice)',
    ] + ["accepted"] * 15 + [
        "qemu.count_every: a script counts syscalls into at most 16 (tally, kind) pairs"]
    assert r.status == 0 and len(lines) == len(expected), f"run\n{r}"
    for line, want in zip(lines, expected):
        assert want in line, f"{want!r} not in {line!r}\n{r}"


@pytest.mark.user_host_independent  # system mode only
def test_syscall_tallies_are_refused_in_system_mode_with_what_to_check():
    r = system_lua("7.2", """
local ok, err = pcall(qemu.count_every, "syscall", qemu.tally())
qemu.print(tostring(ok) .. " " .. tostring(err))
""")
    assert "false" in r.log and "syscall events exist only in user mode" in r.log and (
        'qemu.has("syscalls")' in r.log), f"{r}"
