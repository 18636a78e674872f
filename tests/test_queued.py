"""Queued on_exec callbacks: the same events, order and counter values as synchronous ones,
their buffers, exec=sync and the rules they enforce."""
import os
import re

import pytest

from qemu_run import fields, guest, lua_file, qemu, run_lua, script
from test_tracers import traced


def queued(program, extra=()):
    r = qemu(["script=" + script("queued.lua")] + list(extra), program, oracle=True)
    assert r.status == 0, f"guest failed\n{r}"
    q = fields(r.log, "queued")
    assert q["insns"] == fields(r.log, "oracle")["insns"], (
        f"queued callbacks lost or added events\n{r}")
    assert q["native"] == q["insns"], f"native counter disagrees\n{r}"
    assert q["same"] == q["vcpus"] and int(q["vcpus"]) > 0, (
        f"queued callbacks saw other counter values or another order than synchronous ones\n{r}")
    return r, q


def test_queued_callbacks_see_every_event_in_order_with_the_counter_of_the_moment():
    queued([guest("loop"), "20"])
    queued([guest("loop"), "20"], ["sync=false"])
    r, q = queued([guest("threads"), "400"])
    # user mode gives a thread that starts after another ended the index it left: 2 to 9 indices
    assert 2 <= int(q["vcpus"]) <= 9, f"several threads, each with its own vCPU\n{r}"
    queued([guest("forks")])


def test_queued_callback_error_under_warn_costs_the_rest_of_its_batch_nothing():
    # the failing callback raises on its 1000th call, in the middle of a batch of other callbacks;
    # sync=false: full batches (LuaJIT's loop); sync=true: a few records at a time (one call each)
    for sync in ("sync=false", "sync=true"):
        r, q = queued([guest("loop"), "20"], ["fail=1000", "onerror=warn", sync])
        assert q["failing_calls"] == "1000", f"{sync}: the failing callback ran again\n{r}"
        assert r.err.count("callback disabled, onerror=warn") == 1 and "queued failure" in r.err, (
            f"{sync}: one warning naming the error\n{r}")
        r = qemu(["script=" + script("queued.lua"), "fail=1000", sync], [guest("loop"), "20"])
        assert (r.status == 1 and re.search(r"error in insn:on_exec callback: \S*queued\.lua:\d+: queued failure", r.err)
                and "stack traceback:" in r.err), (
            f"{sync}: fail policy: message, traceback, status 1\n{r}")


def test_a_threads_tracer_and_queued_callbacks_are_delivered_together():
    for program in ([guest("loop"), "20"], [guest("threads"), "100"]):
        r = qemu(["script=" + script("mixed.lua")], program)
        m = fields(r.log, "mixed")
        assert r.status == 0 and int(m["checks"]) > 100, f"ran\n{r}"
        assert m["behind"] == "0" and m["same"] == "true", (
            f"queued callbacks lagged a tracer of the same thread\n{r}")


def test_thread_buffers_go_with_their_threads():
    # every guest thread that runs a queued callback gets buffers; they must not outlive it
    if os.environ.get("QLUA_SANITIZED"):
        pytest.skip("ASan holds freed memory in its quarantine: resident sizes say nothing here")
    def hwm(extra):
        path = lua_file("local n = 0\nqemu.on_translate(function(tb) tb:on_exec(function() n = n + 1 end) end)\n"
                        "qemu.on_exit(function() qemu.printf('hwm %s\\n', "
                        "io.open('/proc/self/status'):read('a'):match('VmHWM:%s*(%d+)')) end)")
        try:
            r = qemu(["script=" + path] + extra, [guest("churn"), "1500"])
        finally:
            os.unlink(path)
        assert r.status == 0 and "churn 1500" in r.out, f"guest\n{r}"
        return int(re.search(r"^hwm (\d+)$", r.log, re.M).group(1))
    queued_kb, sync_kb = hwm([]), hwm(["exec=sync"])
    # buffers kept after their threads: about 25 KiB resident each, 38 MiB for 1500 threads
    assert queued_kb - sync_kb < 10 * 1024, f"queued {queued_kb} KiB vs sync {sync_kb} KiB"


def test_exec_sync_makes_every_callback_synchronous_with_the_same_results():
    r, _ = queued([guest("loop"), "20"], ["exec=sync"])
    traced([guest("loop"), "20"], ["exec=sync"])


@pytest.mark.exits_qemu
def test_bad_exec_option_is_refused_with_the_accepted_values():
    r = qemu(["script=count", "exec=later"], [guest("loop"), "1"])
    assert r.status == 1 and "exec=later" in r.err and "queued" in r.err and "sync" in r.err, (
        f"bad exec= names the accepted values\n{r}")


def test_queued_callbacks_refuse_to_read_counters_of_a_later_moment():
    r = run_lua("local c = qemu.counter()\n"
                "qemu.on_translate(function(tb) tb:count(c); tb:on_exec(function(v) return c:get(v) end) end)",
                [guest("loop"), "2"])
    assert (r.status == 1 and "counter:get() in a queued callback (on_exec, on_mem)" in r.err
            and "{ counter = c }" in r.err and "{ sync = true }" in r.err), (
        f"the rule and both ways out\n{r}")
    r = run_lua("qemu.on_translate(function(tb) tb:on_exec(print, nil, { snyc = true }) end)",
                [guest("loop"), "2"])
    assert r.status == 1 and "unknown option 'snyc' (accepted: counter, regs, sync)" in r.err, (
        f"a misspelt option is named\n{r}")


# tb:on_repeat against the same detection written in Lua (a queued tb:on_exec with the counter's
# value, the way scripts/insn.lua did it before), in one run, on the guest made of repeats.
REPEAT = """
local c = qemu.counter()
local native, lua = {}, {}
local prev_block, prev_count, last_pc = {}, {}, {}
local function in_lua(vcpu, block, count)
  local prev = prev_block[vcpu]
  if prev then
    local ran = prev[count - prev_count[vcpu]]
    if ran then last_pc[vcpu] = ran end
  end
  if last_pc[vcpu] == block[1] then lua[block[1]] = (lua[block[1]] or 0) + 1 end
  prev_block[vcpu], prev_count[vcpu] = block, count
end
local function found(vcpu, pc) native[pc] = (native[pc] or 0) + 1 end
qemu.on_translate(function(tb)
  local block = {}
  tb:on_repeat(found, tb.vaddr, { counter = c })
  tb:on_exec(in_lua, block, { counter = c })
  for insn in tb:insns() do block[#block + 1] = insn.vaddr; insn:count(c) end
end)
qemu.on_exit(function()
  local n, same = 0, true
  for pc, k in pairs(lua) do n = n + k; same = same and native[pc] == k end
  for pc in pairs(native) do same = same and lua[pc] ~= nil end
  qemu.printf("repeat: found=%d same=%s\\n", n, tostring(same))
end)
"""


def test_on_repeat_finds_what_the_lua_detection_finds():
    for program in ([guest("repeats"), "7"], [guest("threads"), "20"], ["/usr/bin/sort", "/etc/services"]):
        r = run_lua(REPEAT, program)
        f = fields(r.log, "repeat")
        assert r.status == 0 and f["same"] == "true", f"{program}\n{r}"
        if "repeats" in program[0]:
            assert int(f["found"]) > 300, f"the guest's loops repeat\n{r}"


def test_on_repeat_needs_a_counter_and_says_how_to_make_one():
    r = run_lua("qemu.on_translate(function(tb)\n  tb:on_repeat(print)\nend)")
    assert r.status == 1 and re.search(r"\.lua:2: tb:on_repeat needs \{ counter = c \}, a counter of "
                                       r"the instructions that start", r.err), r
