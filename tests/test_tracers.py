"""Tracers (qemu.tracer): every event delivered, in order, before syscalls, forks and exit."""

import re

from qemu_run import expect_equal_counts, fields, guest, qemu, run_lua, script


def traced(program, extra=(), binary=None):
    r = qemu(["script=" + script("trace.lua")] + list(extra), program, oracle=True, binary=binary)
    assert r.status == 0, f"guest failed\n{r}"
    t = fields(r.log, "trace")
    expect_equal_counts(r, t, ["tbs", "insns", "reads", "writes", "syscalls"])
    assert t["same_order"] == t["vcpus"], f"tracer order differs from callback order\n{r}"
    assert t["in_step"] == t["syscalls"], f"events not delivered before a syscall callback\n{r}"
    return t


def test_tracers_deliver_every_event_in_order_single_thread():
    for batch in ("1", "7", "4096"):
        traced([guest("loop"), "20"], ["batch=" + batch])


def test_tracers_deliver_every_event_in_order_with_8_threads():
    for batch in ("7", "4096"):
        t = traced([guest("threads"), "400"], ["batch=" + batch])
        # a thread started after another ended reuses its vCPU index: 2 to 9 indices
        assert 2 <= int(t["vcpus"]) <= 9, "several threads traced"


def test_tracers_deliver_everything_before_fork_and_exit():
    r = run_lua("local n = 0\n"
                "local t = qemu.tracer{ batch = 1000000, fn = function(ev, k) n = n + k end }\n"
                "local c = qemu.counter()\n"
                "qemu.on_translate(function(tb) tb:trace(t); tb:count(c) end)\n"
                "qemu.on_exit(function() qemu.printf('%d %d\\n', n, c:sum()) end)", [guest("forks")])
    lines = r.log.split()
    assert r.status == 0 and len(lines) == 4, f"two exit reports expected\n{r}"
    assert lines[0] == lines[1] and lines[2] == lines[3], f"tracer lost or duplicated events\n{r}"


def test_tracer_views_hold_exactly_each_batch_even_when_a_script_writes_into_them():
    # Batches end early at each syscall, so n varies; under Lua 5.4 the records' tables are
    # reused from batch to batch (LuaJIT: the buffer), so each delivery must show its own n
    # events and nothing else at any key, whatever the script tried on the previous ones: writes
    # (refused under both Luas), metatables on the view or on records.
    r = run_lua("local bad, batches, seen, pcs, mt, refused = 0, 0, {}, qemu.counter()\n"
                "local t = qemu.tracer{ batch = 64, fn = function(ev, n)\n"
                "  batches = batches + 1\n"
                "  if #ev ~= n or ev[n + 1] ~= nil or ev[0] ~= nil or ev[-1] ~= nil or ev[2^31] ~= nil\n"
                "    or ev.x ~= nil then bad = bad + 1 end\n"
                "  local k = 0; for i in ipairs(ev) do k = i end; if k ~= n and ev[1] then bad = bad + 1 end\n"
                "  for i = 1, n do local e = ev[i]\n"
                "    if type(e.addr) ~= 'number' or e.kind ~= qemu.EVENT.tb or e.size < 1 then\n"
                "      bad = bad + 1 end\n"
                "    if type(getmetatable(e)) == 'table' then bad = bad + 1 end\n"
                "    seen[#seen + 1] = e.addr\n"
                "    pcall(function() e.addr = 'junk'; e.extra = true end)\n"
                "    pcall(setmetatable, e, { __index = function() return 'stale' end })\n"
                "  end\n"
                "  if batches == 1 then mt = getmetatable(ev) end -- LuaJIT: the view's own\n"
                "  if getmetatable(ev) ~= mt then bad = bad + 1 end\n"
                "  for _, key in ipairs { n + 1, 0, -1, 2^31, 'x', 'n', 'p' } do\n"
                "    local ok, err = pcall(function() ev[key] = 0 end) -- (0: n and p take a number)\n"
                "    if ok then bad = bad + 1 elseif key == 0 then refused = err end\n"
                "  end\n"
                "  pcall(setmetatable, ev, { __index = function() return { addr = 0 } end })\n"
                "end }\n"
                "qemu.on_translate(function(tb) tb:trace(t); tb:count(pcs) end)\n"
                "qemu.on_exit(function() qemu.printf('views %d %d %d %d\\n', bad, batches, #seen,"
                " pcs:sum()); qemu.print(refused) end)", [guest("loop"), "20"])
    assert r.status == 0, f"guest failed\n{r}"
    v = [int(x) for x in r.log.split("views")[1].split()[:4]]
    bad, batches, events, native = v
    assert bad == 0, f"a view showed a wrong length, a stale event or a written field\n{r}"
    assert events == native and batches > events // 64, f"events lost or not batched\n{r}"
    assert re.search(r"\.lua:\d+: events\[0\] = \.\.\.: a tracer's events are read-only \(the "
                     r"batch's records are reused\); copy what you keep", r.log), (
        f"a write into events says why it is refused, at the script's line, under both Luas\n{r}")
