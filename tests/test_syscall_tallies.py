"""qemu.count_every("syscall" | "syscall_ret" | "syscall_error", t): syscalls counted natively by
number, against on_syscall / on_syscall_ret handlers in Lua in the same run; added while the guest
runs; clear errors for bad arguments and in system mode."""
import re

import pytest

from qemu_run import guest, run_lua, system_lua

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
for i = 1, 17 do try(qemu.count_every, "syscall", qemu.tally()) end
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
        'qemu.count_every: only "mem" takes options',
        "qemu.count_every: kind syscalls: expected one of",
    ] + ["accepted"] * 16 + ["qemu.count_every: at most 16 tallies count syscalls"]
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
