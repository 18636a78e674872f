"""Counts against the oracle (loaded in the same run, so even multi-threaded runs compare
exactly): count.lua, every event kind, count_every, conditional callbacks and qemu.tally."""
import re

import pytest

from qemu_run import (QEMU_AARCH64, aarch64_guest, expect_equal_counts, fields, guest, qemu,
                      run_lua, script, system_qemu, user_host)


def test_count_matches_oracle():
    r = qemu(["script=count"], [guest("loop"), "100"], oracle=True)
    assert r.status == 0, f"guest failed\n{r}"
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    assert m is not None, f"no 'insns: N' line\n{r}"
    assert m.group(1) == fields(r.log, "oracle")["insns"], f"count.lua differs from oracle\n{r}"


def test_count_on_real_dynamic_program():
    r = qemu(["script=count"], ["/bin/ls", "-l", "/"], oracle=True)
    assert r.status == 0 and "bin" in r.out, f"ls failed\n{r}"
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    assert m and m.group(1) == fields(r.log, "oracle")["insns"], f"count.lua differs\n{r}"


def all_events(program, extra=(), binary=None):
    r = qemu(["script=" + script("all_events.lua")] + list(extra), program, oracle=True,
             binary=binary)
    assert r.status == 0, f"guest failed\n{r}"
    expect_equal_counts(r, fields(r.log, "native"), ["tbs", "insns", "reads", "writes"])
    lua = fields(r.log, "lua")
    keys = ["syscalls", "syscall_rets"]
    if "lua=off" not in extra:
        keys += ["tbs", "insns", "reads", "writes"]
    expect_equal_counts(r, lua, keys)
    return r


def expect_mode(r, host, threads):
    """The counter strategy the host's release implies (docs/counters.md): scoreboards where QEMU
    has them, else raw inline adds with one vCPU and per-vCPU callbacks once threads appeared."""
    want = host.counter_mode(threads)
    assert fields(r.log, "native")["mode"] == want, (
        f"{'8 threads' if threads else 'one thread'} on {host}: counters in {want} mode\n{r}")


def test_every_event_kind_matches_oracle_single_thread():
    r = all_events([guest("loop"), "100"])
    expect_mode(r, user_host(), threads=False)
    assert fields(r.log, "lua")["vcpus"] == "1", f"one vCPU expected\n{r}"


def test_every_event_kind_matches_oracle_with_8_threads():
    r = all_events([guest("threads")])
    assert "threads 8 total" in r.out, f"guest output missing\n{r}"
    expect_mode(r, user_host(), threads=True)
    assert int(fields(r.log, "lua")["vcpus"]) == 9, f"9 vCPUs (main + 8) expected\n{r}"
    assert int(fields(r.log, "lua")["indices"]) == 9, f"indices 0..8 expected\n{r}"


def test_native_counts_exact_with_8_threads_and_no_lua():
    # Without Lua callbacks serializing the threads, shared inline adds would lose counts; the
    # threads run in parallel on the per-vCPU callbacks (7.2) or scoreboard entries (10.2).
    expect_mode(all_events([guest("threads")], ["lua=off"]), user_host(), threads=True)


def test_aarch64_guest_counts_match_oracle():
    r = all_events([aarch64_guest("loop"), "20"], binary=QEMU_AARCH64)
    expect_mode(r, user_host(QEMU_AARCH64), threads=False)
    r = qemu(["script=count"], [aarch64_guest("loop"), "20"], oracle=True, binary=QEMU_AARCH64)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    assert m and m.group(1) == fields(r.log, "oracle")["insns"], f"count.lua on aarch64\n{r}"


def test_aarch64_guest_with_8_threads_matches_oracle():
    r = all_events([aarch64_guest("threads")], binary=QEMU_AARCH64)
    expect_mode(r, user_host(QEMU_AARCH64), threads=True)
    assert int(fields(r.log, "lua")["vcpus"]) == 9, f"9 vCPUs (main + 8) expected\n{r}"
    r = all_events([aarch64_guest("threads")], ["lua=off"], binary=QEMU_AARCH64)
    expect_mode(r, user_host(QEMU_AARCH64), threads=True)


def test_counters_callback_mode_matches_oracle():
    for program in ([guest("loop"), "30"], [guest("threads"), "100"]):
        r = all_events(program, ["counters=callback"])
        assert fields(r.log, "native")["mode"] == "percpu", (
            f"counters=callback not honoured on {user_host()}\n{r}")


def test_count_every_adds_native_counts_to_every_block_with_no_lua_at_translation():
    def check(r, what):
        e = fields(r.log, "every")
        expect_equal_counts(r, e, ["insns", "tbs", "reads", "writes"])
        assert int(e["mem"]) == int(e["reads"]) + int(e["writes"]), (
            f"{what}: mem = reads + writes\n{r}")
        # a block's instruction count at each execution: at least every started instruction
        assert int(e["block_insns"]) >= int(e["insns"]), f"{what}: block_insns\n{r}"
    for program in ([guest("loop"), "20"], [guest("threads"), "100"]):
        check(qemu(["script=" + script("every.lua"), "profile=on"], program, oracle=True), program[0])
    r = qemu(["script=" + script("every.lua"), "profile=on"], [guest("loop"), "20"], oracle=True)
    assert "on_translate" not in r.log, f"no Lua ran at translation\n{r}"
    for version in ("7.2", "10.2", "10.0"):
        check(system_qemu(version, ["script=" + script("every.lua")], smp=2, oracle=True), version)


@pytest.mark.exits_qemu
def test_count_every_refuses_unknown_kinds_and_misplaced_rw():
    for bad, msg in (("qemu.count_every('insns', qemu.counter())", "kind insns: expected one of"),
                     ("qemu.count_every('insn', {})", "expected a counter from qemu.counter()"),
                     ("qemu.count_every('block', qemu.counter(), { rw = 'r' })", 'only "mem" takes the option rw'),
                     ("qemu.count_every('mem', qemu.counter(), { rw = 'x' })", 'option rw=x: expected "r", "w", "rw"'),
                     ("qemu.count_every('mem', qemu.counter(), 'r')", "options must be a table")):
        r = run_lua(bad)
        assert r.status == 1 and msg in r.err, f"{bad}\n{r}"


def test_count_matches_oracle_with_8_threads():
    r = qemu(["script=count"], [guest("threads")], oracle=True)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    assert r.status == 0 and m and m.group(1) == fields(r.log, "oracle")["insns"], (
        f"count.lua differs under threads\n{r}")


def test_tally_counts_like_a_lua_table_and_the_oracle():
    for program in ([guest("loop"), "20"], [guest("threads"), "50"]):
        r = qemu(["script=" + script("tally.lua")], program, oracle=True)
        assert r.status == 0, f"guest\n{r}"
        t = fields(r.log, "tally")
        assert t["same"] == "true", f"tally and Lua table differ\n{r}"
        expect_equal_counts(r, t, ["reads", "writes", "tbs"])
        assert t["missing"] == "0" and t["after_reset"] == "0", f"get of an absent key; reset\n{r}"


def test_tally_refuses_keys_it_cannot_hold():
    bad = [("t:add(1.5)", "key"), ("t:add('x')", "key"), ("t:add(2^64)", "key")]
    if "LuaJIT" in run_lua("qemu.print(qemu.info.lua)").log:
        # Lua 5.4 reads a negative integer as its 64-bit pattern (docs/api.md, numbers)
        bad += [("t:add(-1)", "key"), ("t:add(1, -2)", "amount")]
    for expr, what in bad:
        r = run_lua(f"local t = qemu.tally()\nqemu.on_exit(function() {expr} end)")
        assert (r.status == 1 and (f"the {what} must be a whole number from 0 to 2^64-1" in r.err
                                   or "expected a non-negative integer" in r.err
                                   or "number expected, got string" in r.err)), f"{expr}\n{r}"
    gets = [("t:get('x')", "got 'x'"), ("t:get(1.5)", "got 1.5"), ("t:get(nil)", "got nil"),
            ("t:get(2^64)", "got 1.844674407")]
    if "LuaJIT" in run_lua("qemu.print(qemu.info.lua)").log:
        gets.append(("t:get(-1)", "got -1"))
    for expr, got in gets:
        r = run_lua(f"local t = qemu.tally()\nqemu.on_exit(function()\n{expr} end)")
        m = re.search(r"\.lua:3: tally:get: the key must be a whole number from 0 to 2\^64-1, "
                      r"(got .*)", r.err)
        assert r.status == 1 and m and m.group(1).startswith(got), f"{expr}: at the line\n{r}"
    r = run_lua("local t = qemu.tally()\nt:add(2^53); t:add(0, 3); t:add(7, 0)\n"
                "qemu.print(t:get(2^53), t:get(0), t:get(7), t:size(), tostring(t))")
    assert "1\t3\t0\t3\ttally (3 keys)" in r.log, f"edge keys\n{r}"


ADD_PROBE = """local t = qemu.tally()
local function try(f) local ok, e = pcall(f); qemu.print(ok and "ok" or e) end
try(function() t:add("x") end)
try(function() t:add(1, "y") end)
try(function() t:add(1.5) end)
try(function() t:add(1, -1) end)
try(function() t:add(1, 0.5) end)
try(function() t:add() end)
try(function() t.add("x", 5) end)
try(function() t.add({}, 5) end)
try(function() t:add(2^64) end)
t:add(4096); t:add(4096, 2); t:add(8192.0, 3.0); t:add(0, 0); t:add(2^53)
qemu.printf("get %d %d %d %d size %d\\n", t:get(4096), t:get(8192), t:get(0), t:get(2^53), t:size())
"""


def test_tally_add_says_what_it_refuses_at_the_scripts_line_under_both_luas():
    # Under Lua 5.4 t:add is a C method (core.tally_adder), under LuaJIT an FFI call behind Lua
    # checks: the same messages, blamed on the line that called t:add.
    r = run_lua(ADD_PROBE)
    key = "tally:add: the key must be a whole number from 0 to 2^64-1, got "
    amount = "tally:add: the amount must be a whole number from 0 to 2^64-1, got "
    self_ = "tally:add: expected a tally from qemu.tally() as self, got {} (call it with a colon: t:add(...))"
    expected = [(3, key + "x"), (4, amount + "y"), (5, key + "1.5"), (6, amount + "-1"),
                (7, amount + "0.5"), (8, key + "nil"), (9, self_.format("string")),
                (10, self_.format("table")), (11, key + "1.844674407")]
    lines = [l for l in r.log.splitlines() if "tally:add" in l or l == "ok"]
    assert len(lines) == len(expected), f"one refusal per bad call\n{r}"
    for got, (line, message) in zip(lines, expected):
        assert f".lua:{line}: {message}" in got, f"line {line}: {message}\n{r}"
    assert "get 3 3 0 1 size 4" in r.log, f"what was added\n{r}"


def check_when(r, blocks=None):
    w = fields(r.log, "when")
    assert w["bad"] == "0" and int(w["hits"]) > 0, f"conditional callbacks fired wrongly\n{r}"
    if blocks is not None:
        assert int(w["hits"]) == blocks - 500, f"expected {blocks - 500} hits\n{r}"
    return w


def test_conditional_callbacks_fire_exactly_when_the_condition_holds():
    check_when(qemu(["script=" + script("when.lua")], [guest("loop"), "20"]))
    check_when(qemu(["script=" + script("when.lua"), "counters=callback"], [guest("loop"), "20"]))
    w = check_when(qemu(["script=" + script("when.lua"), "k=20"], [guest("threads")]))
    assert w["mode"] == user_host().counter_mode(threads=True), f"threads on {user_host()}"
    for version in ("7.2", "10.2", "10.0"):
        r = system_qemu(version, ["script=" + script("when.lua")], smp=1)
        w = check_when(r)
        assert int(w["hits"]) == int(w["blocks"]) - 500, f"{version}: hits = blocks - k\n{r}"


# ---- per-vCPU slots with 8 threads: scoreboard entries (QEMU >= 9.0) or per-vCPU callbacks ----

SLOTS = """
local qemu = require "qemu"
local blocks, insns, preset, mixed = qemu.counter(), qemu.counter(), qemu.counter(), qemu.counter()
preset:add(1000)   -- vCPU 0, before QEMU has created it
preset:set(7, 5)   -- vCPU 5: the guest's fifth thread, long before it exists
local lua_blocks = {}
local function on_block(vcpu)
  lua_blocks[vcpu] = (lua_blocks[vcpu] or 0) + 1
  mixed:add(2, vcpu)  -- Lua's add into the running vCPU's slot, between its native adds
end
qemu.on_translate(function(tb)
  tb:on_exec(on_block, nil, { sync = true })
  tb:count(blocks)
  tb:count(preset)
  tb:count(mixed)
  for insn in tb:insns() do insn:count(insns) end
end)
qemu.on_exit(function()
  local per, bad, busy = blocks:values(), {}, 0
  local function expect(what, v, got, want)
    if got ~= want then bad[#bad + 1] = string.format("%s%d:%d/%d", what, v, got, want) end
  end
  for v = 0, #per do
    expect("lua", v, lua_blocks[v] or 0, per[v])
    expect("mixed", v, mixed:get(v), 3 * per[v])
    expect("preset", v, preset:get(v), per[v] + (v == 0 and 1000 or v == 5 and 7 or 0))
    if v > 0 and per[v] > 0 then busy = busy + 1 end
  end
  qemu.printf("slots: mode=%s vcpus=%d slots=%d tbs=%d insns=%d busy=%d bad=%s\\n",
    qemu.counter_mode(), qemu.vcpus(), #per + 1, blocks:sum(), insns:sum(), busy,
    #bad > 0 and table.concat(bad, ",") or "none")
end)
"""


def test_counter_slots_of_8_threads_hold_each_vcpus_own_count():
    # Each slot equals that vCPU's block executions as Lua counted them, values added from Lua
    # (at load for vCPUs not created yet, from a vCPU's own callback) are kept beside the native
    # adds, and the slots add up to the oracle's totals: on 7.2 in per-vCPU callbacks after the
    # switch, on 10.2 in QEMU's scoreboard entries.
    host = user_host()
    for extra in ([], ["counters=callback"]):
        r = run_lua(SLOTS, [guest("threads"), "100"], extra, oracle=True)
        assert r.status == 0 and "threads 8 total" in r.out, f"{extra}: guest\n{r}"
        s = fields(r.log, "slots")
        want = "percpu" if extra else host.counter_mode(threads=True)
        assert s["mode"] == want, f"{extra} on {host}: {want} mode\n{r}"
        assert s["bad"] == "none", f"{extra}: slots that differ (what, vCPU: got/want)\n{r}"
        assert s["vcpus"] == s["slots"] == "9" and s["busy"] == "8", (
            f"{extra}: main and 8 worker vCPUs, each counting\n{r}")
        expect_equal_counts(r, s, ["tbs", "insns"])


def test_native_counts_stay_exact_while_threads_come_and_go():
    # churn.c: 300 threads one after another, so user mode reuses vCPU indices (and QEMU's
    # scoreboard entries, on 10.2) again and again: no count is lost or counted twice.
    r = run_lua("local insns, tbs = qemu.counter(), qemu.counter()\n"
                "qemu.count_every('insn', insns)\nqemu.count_every('block', tbs)\n"
                "qemu.on_exit(function() qemu.printf('churn: mode=%s vcpus=%d tbs=%d insns=%d\\n',"
                " qemu.counter_mode(), qemu.vcpus(), tbs:sum(), insns:sum()) end)",
                [guest("churn"), "300"], oracle=True)
    assert r.status == 0 and "churn 300 " in r.out, f"guest\n{r}"
    c = fields(r.log, "churn")
    assert c["mode"] == user_host().counter_mode(threads=True), f"mode on {user_host()}\n{r}"
    assert 2 <= int(c["vcpus"]) < 300, f"indices reused: {c['vcpus']} for 301 threads\n{r}"
    expect_equal_counts(r, c, ["tbs", "insns"])


def test_counts_stay_exact_with_more_vcpus_alive_at_once_than_a_counter_holds_in_itself():
    # crowd.c: 100 threads alive at once, so vCPUs 0..100 run together, past the 64 whose slots
    # live in the counter itself (shim/counter.c's near chunks; on QEMU 7.2 the per-vCPU
    # callback's path that makes a chunk, on 10.2 scoreboards that QEMU grows)
    r = qemu(["script=" + script("all_events.lua"), "lua=off"], [guest("crowd"), "100"],
             oracle=True)
    assert r.status == 0 and "crowd 100 " in r.out, f"guest\n{r}"
    native = fields(r.log, "native")
    assert native["mode"] == user_host().counter_mode(threads=True), f"{user_host()}\n{r}"
    expect_equal_counts(r, native, ["tbs", "insns", "reads", "writes"])
    # each vCPU's own count: insn.lua's callback mode prints one line per vCPU that ran
    r = qemu(["script=insn"], [guest("crowd"), "100"], oracle=True)
    assert r.status == 0, f"insn.lua\n{r}"
    cpus = {int(v): int(n) for v, n in re.findall(r"^cpu (\d+) insns: (\d+)$", r.log, re.M)}
    total = re.search(r"^total insns: (\d+)$", r.log, re.M)
    assert len(cpus) == 101 and max(cpus) >= 100 and all(cpus.values()), (
        f"a line for the main thread and each of 100 workers\n{r}")
    assert total and sum(cpus.values()) == int(total.group(1)), f"the lines add up\n{r}"
    expect_equal_counts(r, {"insns": total.group(1)}, ["insns"])


# Counters made one after the other share cache lines (shim/counter.c: the chunks of 8 counters
# are interleaved), and blocks of 1024 chunks: a counter per block, over 8 threads, must keep its
# own count through adds, sets and resets of its neighbours.
NEIGHBOURS = """
local per_block, block_insns, tbs = {}, qemu.counter(), qemu.counter()
qemu.count_every("block_insns", block_insns)
qemu.count_every("block", tbs)
qemu.on_translate(function(tb)
  local c = qemu.counter()
  per_block[#per_block + 1] = c
  tb:count(c, #tb)
end)
qemu.on_exit(function()
  local sum, before = 0, {}
  for i, c in ipairs(per_block) do before[i] = c:sum(); sum = sum + before[i] end
  local bad = 0
  for i = 1, #per_block, 2 do per_block[i]:reset() end
  for i = 2, #per_block, 4 do per_block[i]:set(7, 0) end
  for i, c in ipairs(per_block) do
    if i % 2 == 1 and c:sum() ~= 0 then bad = bad + 1 end
    if i % 4 == 2 and c:get(0) ~= 7 then bad = bad + 1 end
    if i % 4 == 0 and c:sum() ~= before[i] then bad = bad + 1 end
  end
  qemu.printf("neighbours: counters=%d bad=%d tbs=%d block_insns=%d summed=%d\\n", #per_block,
    bad, tbs:sum(), block_insns:sum(), sum)
end)
"""


def test_counters_made_together_keep_their_own_counts():
    r = run_lua(NEIGHBOURS, [guest("threads"), "100"], oracle=True)
    assert r.status == 0 and "threads 8 total" in r.out, f"guest\n{r}"
    n = fields(r.log, "neighbours")
    assert int(n["counters"]) > 1024, f"more counters than one block of chunks holds\n{r}"
    assert n["bad"] == "0", f"a reset or set reached another counter's slots\n{r}"
    assert n["summed"] == n["block_insns"], f"the per-block counters do not add up\n{r}"
    expect_equal_counts(r, n, ["tbs"])


# qemu.read_counters: a counter per block, read all at once, gives what each counter's get gives
# (mid-run from a synchronous callback, and at exit for every vCPU), across the scoreboards that
# counters share on QEMU >= 9 (64 to one) and with a value added from Lua before any vCPU existed.
READ_ALL = """
local per_block, by_vaddr = {}, {}
local early = qemu.counter()
early:add(5)
per_block[1] = early
local insns = qemu.counter()
local checks, off = 0, 0
local function check(vcpu)
  checks = checks + 1
  local got = qemu.read_counters(per_block, vcpu)
  for i = 1, #per_block do
    if got[i] ~= per_block[i]:get(vcpu) then off = off + 1 end
  end
end
qemu.on_translate(function(tb)
  local c = by_vaddr[tb.vaddr]
  if not c then
    c = qemu.counter()
    by_vaddr[tb.vaddr] = c
    per_block[#per_block + 1] = c
  end
  tb:when(insns, ">=", 20000, check)
  tb:count(c, #tb)
  tb:count(early)
  tb:count(insns, #tb)
end)
qemu.on_exit(function()
  local into, exits = { 1, 2, 3, [100000] = 7 }, 0
  for vcpu = 0, qemu.vcpus() - 1 do
    local got = qemu.read_counters(per_block, vcpu, into)
    assert(got == into)
    for i = 1, #per_block do
      if got[i] ~= per_block[i]:get(vcpu) then off = off + 1 end
    end
    exits = exits + got[1]
  end
  qemu.printf("read: counters=%d checks=%d off=%d early=%s kept=%d\\n", #per_block, checks, off,
    tostring(exits == early:sum()), into[100000])
end)
"""


def test_read_counters_reads_what_each_counter_holds():
    for program in ([guest("loop"), "20"], [guest("threads"), "20"]):
        r = run_lua(READ_ALL, program)
        f = fields(r.log, "read")
        assert (r.status == 0 and int(f["counters"]) > 200 and int(f["checks"]) > 100
                and f["off"] == "0" and f["early"] == "true" and f["kept"] == "7"), f"{f}\n{r}"


def test_read_counters_refuses_what_is_not_a_list_of_counters():
    r = run_lua("""
local c = qemu.counter()
local said = {}
local function try(...)
  local ok, err = pcall(...)
  said[#said + 1] = ok and "ok" or tostring(err)
end
try(qemu.read_counters, c, 0)
try(qemu.read_counters, { c, c, 7 }, 0)
try(qemu.read_counters, { c, qemu.tally() }, 0)
try(qemu.read_counters, { c }, -1)
try(qemu.read_counters, { c }, 1.5)
try(qemu.read_counters, { c }, "0")
try(qemu.read_counters, { c }, 0, "into")
try(qemu.read_counters, { c }, 0, {}, "extra")
try(qemu.read_counters, {}, 0)
qemu.on_translate(function(tb)
  tb:on_exec(function(vcpu)
    if #said == 9 then try(qemu.read_counters, { c }, vcpu) end
  end)
end)
qemu.on_exit(function() for _, s in ipairs(said) do qemu.print(s) end end)
""")
    expected = [
        "qemu.read_counters: expected a list of counters from qemu.counter(), got userdata",
        "qemu.read_counters: list[3] is number, expected a counter from qemu.counter()",
        "qemu.read_counters: list[2] is table, expected a counter from qemu.counter()",
        "qemu.read_counters: vcpu -1: expected a vCPU index, a whole number from 0 to 65535",
        "qemu.read_counters: vcpu 1.5: expected a vCPU index",
        "qemu.read_counters: vcpu 0: expected a vCPU index",
        "qemu.read_counters: into: expected a table to fill, got string",
        "qemu.read_counters(list, vcpu [, into]) takes three arguments (got a fourth: extra)",
        "ok",
        "qemu.read_counters() in a queued callback (on_exec, on_mem) would see the counters as "
        "of the batch's delivery, not of the event: read them from a synchronous callback",
    ]
    lines = r.log.splitlines()
    assert r.status == 0 and len(lines) == len(expected), f"run\n{r}"
    for line, want in zip(lines, expected):
        assert want in line, f"{want!r} not in {line!r}\n{r}"


@pytest.mark.exits_qemu
def test_read_counters_blames_the_scripts_line():
    r = run_lua("qemu.read_counters({ 1 }, 0)")
    assert r.status == 1 and re.search(r"\.lua:1: qemu.read_counters: list\[1\] is number", r.err), (
        f"blamed on the script's line\n{r}")
