"""Script output (the plugin log), script arguments and the profile=on report."""
import re

from qemu_run import fields, guest, qemu, run_lua, script


def test_output_goes_to_the_plugin_log_only():
    r = run_lua("qemu.print('hello', 42)\nqemu.on_exit(function() qemu.printf('bye %d\\n', 7) end)",
                log=False)
    assert r.status == 0 and "hello" not in r.out + r.err, f"output must need -d plugin\n{r}"
    r = run_lua("qemu.print('hello', 42)\nqemu.on_exit(function() qemu.printf('bye %d\\n', 7) end)")
    assert r.log == "hello\t42\nbye 7\n", f"log content\n{r}"


def test_large_output_is_never_lost():
    r = run_lua("qemu.on_exit(function() for i = 1, 200000 do qemu.printf('line %d\\n', i) end end)")
    lines = r.log.splitlines()
    assert len(lines) == 200000 and lines[-1] == "line 200000", f"{len(lines)} lines"


def test_output_is_not_duplicated_by_fork():
    r = run_lua("qemu.print('before fork')\n"
                "qemu.on_exit(function() qemu.print('exit report') end)", [guest("forks")])
    assert r.status == 0 and "child exited 0" in r.out, f"guest\n{r}"
    assert r.log.count("before fork") == 1, f"buffered output printed twice\n{r}"
    assert r.log.count("exit report") == 2, f"parent and child both report\n{r}"


def test_raw_and_declared_arguments():
    r = run_lua("for _, k in ipairs({'a', 'b'}) do qemu.print(k, qemu.args[k], type(qemu.args[k])) end",
                extra=["a=1", "b=on"])
    assert r.log == "a\t1\tstring\nb\ton\tstring\n", f"raw args are strings\n{r}"
    r = run_lua("local a = qemu.script{ name='t', args={ {name='n', type='int'}, {name='f', type='bool'},"
                " {name='d', type='int', default=5} } }\nqemu.print(a.n + 1, a.f, a.d, qemu.args.n)",
                extra=["n=0x10", "f=off"])
    assert r.log == "17\tfalse\t5\t16\n", f"typed args\n{r}"
    r = run_lua("local a = qemu.script{ name='t', args={ {name='m', multiple=true} } }\n"
                "qemu.print(#a.m, a.m[1], a.m[2])", extra=["m=x", "m=y,,z"])
    assert r.log == "2\tx\ty,z\n", f"repeatable argument\n{r}"


def test_profile_reports_where_lua_ran_and_warns_about_per_instruction_callbacks():
    r = qemu(["script=" + script("trace.lua"), "profile=on"], [guest("loop"), "5"], oracle=True)
    oracle = fields(r.log, "oracle")
    rows = {}
    for line in r.log.splitlines():
        m = re.match(r"^(\S+)\s+(\S+trace\.lua:\d+)\s+(\d+)\s+[\d.]+\s+\d+\s+(\S+)$", line)
        if m:
            rows[m.group(1)] = (int(m.group(3)), m.group(4))
    assert rows.get("insn:on_exec", (0,))[0] == int(oracle["insns"]), f"on_exec calls\n{r}"
    assert rows.get("on_syscall", (0,))[0] == int(oracle["syscalls"]), f"on_syscall calls\n{r}"
    assert (rows.get("tracer", (0, "0"))[1] ==
            str(int(oracle["tbs"]) + int(oracle["insns"]) + int(oracle["reads"]) + int(oracle["writes"]))), (
        f"tracer events delivered\n{r}")
    total = re.search(r"^qlua profile: Lua called (\d+) times", r.log, re.M)
    assert total and int(total.group(1)) == sum(c for c, _ in rows.values()), f"total calls\n{r}"
    q = re.search(r"^qlua profile: (\d+) of those calls were queued \(on_exec, on_mem\), delivered in (\d+) batches",
                  r.log, re.M)
    assert (q and int(q.group(1)) == int(oracle["insns"]) and
            int(oracle["insns"]) / 4096 <= int(q.group(2)) <= int(oracle["insns"])), (
        f"queued calls and their batches\n{r}")
    assert rows["insn:on_exec"][1] == oracle["insns"], f"queued events of the site\n{r}"
    assert (re.search(r"warning: insn:on_exec at \S+trace\.lua:\d+ put Lua on a per-instruction path",
                      r.log)), f"per-instruction warning\n{r}"
    r = qemu(["script=" + script("trace.lua"), "lua=off", "profile=on"], [guest("loop"), "5"])
    assert "qlua profile: Lua called" in r.log and "warning" not in r.log, (
        f"no warning without on_exec\n{r}")
    r = qemu(["script=" + script("trace.lua")], [guest("loop"), "5"])
    assert "qlua profile" not in r.log, f"no report unless profile=on\n{r}"
