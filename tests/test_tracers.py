"""Tracers (qemu.tracer): every event delivered, in order, before syscalls, forks and exit."""

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
