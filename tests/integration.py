#!/usr/bin/env python3
"""Integration tests: run qlua scripts in real QEMU on guests the build made, and check them
against the oracle plugin (loaded in the same run, so even multi-threaded runs compare exactly)
or against facts derivable from the guest. Usage: integration.py CASE (meson runs one per test)."""
import os
import re
import subprocess
import sys
import tempfile

SRC = os.environ.get("QLUA_SRC", "")
PLUGIN = os.environ.get("QLUA_PLUGIN", "")
ORACLE = os.environ.get("QLUA_ORACLE", "")
GUESTS = os.environ.get("QLUA_GUESTS", "")
QEMU = os.environ.get("QEMU_X86_64", "qemu-x86_64")
QEMU_AARCH64 = os.environ.get("QEMU_AARCH64", "qemu-aarch64")

CASES = {}


class Skip(Exception):
    """A case that cannot run on this machine; meson shows it as skipped with the reason."""

# Cases in which QEMU refuses the plugin and leaves through exit(): with the ASan runtime preloaded
# into an uninstrumented QEMU, glibc's exit handlers deadlock (p11-kit's destructor), so the
# sanitizer build skips them; the LuaJIT and Lua 5.4 builds run them.
EXITS_QEMU = set()
SKIP = 77  # meson's "skipped" exit status


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def refused_install(fn):
    EXITS_QEMU.add(fn.__name__)
    return case(fn)


class Run:
    def __init__(self, status, out, err, log):
        self.status, self.out, self.err, self.log = status, out, err, log

    def __repr__(self):
        return f"status={self.status}\n--- stdout\n{self.out}\n--- stderr\n{self.err}\n--- log\n{self.log}"


def guest(name):
    return os.path.join(GUESTS, name)


def script(name):
    return os.path.join(SRC, "tests", "scripts", name)


def qemu(plugin_args, program, oracle=False, log=True, env=None, timeout=300, binary=None):
    """Runs QEMU with qlua (plugin_args: list of key=value) and optionally the oracle."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        cmd = [binary or QEMU]
        if oracle:
            cmd += ["-plugin", ORACLE]
        cmd += ["-plugin", ",".join([PLUGIN] + plugin_args)]
        cmd += ["-U", "LD_PRELOAD"]  # the sanitizer build preloads ASan into QEMU, not the guest
        if log:
            cmd += ["-d", "plugin", "-D", logfile]
        cmd += program
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})))
        text = open(logfile).read() if log and os.path.exists(logfile) else ""
        return Run(p.returncode, p.stdout, p.stderr, text)


def fields(text, prefix):
    """Parses 'prefix: a=1 b=2' into {'a': '1', 'b': '2'} (last such line)."""
    found = None
    for line in text.splitlines():
        if line.startswith(prefix + ":"):
            found = dict(kv.split("=", 1) for kv in line[len(prefix) + 1:].split())
    assert found is not None, f"no '{prefix}:' line in:\n{text}"
    return found


def expect(cond, what, run=None):
    if not cond:
        raise AssertionError(what + (f"\n{run}" if run is not None else ""))


def expect_equal_counts(run, mine, keys):
    oracle = fields(run.log, "oracle")
    for k in keys:
        expect(mine[k] == oracle[k], f"{k}: qlua {mine[k]} != oracle {oracle[k]}", run)
        expect(int(oracle[k]) > 0, f"{k}: oracle counted nothing", run)


# ---- counts against the oracle ----

@case
def count_matches_oracle():
    r = qemu(["script=count"], [guest("loop"), "100"], oracle=True)
    expect(r.status == 0, "guest failed", r)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    expect(m is not None, "no 'insns: N' line", r)
    expect(m.group(1) == fields(r.log, "oracle")["insns"], "count.lua differs from oracle", r)


@case
def count_on_real_dynamic_program():
    r = qemu(["script=count"], ["/bin/ls", "-l", "/"], oracle=True)
    expect(r.status == 0 and "bin" in r.out, "ls failed", r)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    expect(m and m.group(1) == fields(r.log, "oracle")["insns"], "count.lua differs", r)


def all_events(program, extra=(), binary=None):
    r = qemu(["script=" + script("all_events.lua")] + list(extra), program, oracle=True,
             binary=binary)
    expect(r.status == 0, "guest failed", r)
    expect_equal_counts(r, fields(r.log, "native"), ["tbs", "insns", "reads", "writes"])
    lua = fields(r.log, "lua")
    keys = ["syscalls", "syscall_rets"]
    if "lua=off" not in extra:
        keys += ["tbs", "insns", "reads", "writes"]
    expect_equal_counts(r, lua, keys)
    return r


@case
def every_event_kind_matches_oracle_single_thread():
    r = all_events([guest("loop"), "100"])
    expect(fields(r.log, "native")["mode"] == "inline", "single thread should use inline", r)
    expect(fields(r.log, "lua")["vcpus"] == "1", "one vCPU expected", r)


@case
def every_event_kind_matches_oracle_with_8_threads():
    r = all_events([guest("threads")])
    expect("threads 8 total" in r.out, "guest output missing", r)
    expect(fields(r.log, "native")["mode"] == "percpu", "8 threads must switch to percpu", r)
    expect(int(fields(r.log, "lua")["vcpus"]) == 9, "9 vCPUs (main + 8) expected", r)
    expect(int(fields(r.log, "lua")["indices"]) == 9, "indices 0..8 expected", r)


@case
def native_counts_exact_with_8_threads_and_no_lua():
    # Without Lua callbacks serializing the threads, shared inline adds would lose counts.
    all_events([guest("threads")], ["lua=off"])


def aarch64_guest(name):
    path = guest(name + "-aarch64")
    if not os.path.exists(path):
        raise Skip("no aarch64 guests: the build found no aarch64-linux-gnu-gcc")
    return path


@case
def aarch64_guest_counts_match_oracle():
    r = all_events([aarch64_guest("loop"), "20"], binary=QEMU_AARCH64)
    expect(fields(r.log, "native")["mode"] == "inline", "single thread should use inline", r)
    r = qemu(["script=count"], [aarch64_guest("loop"), "20"], oracle=True, binary=QEMU_AARCH64)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    expect(m and m.group(1) == fields(r.log, "oracle")["insns"], "count.lua on aarch64", r)


@case
def aarch64_guest_with_8_threads_matches_oracle():
    r = all_events([aarch64_guest("threads")], binary=QEMU_AARCH64)
    expect(fields(r.log, "native")["mode"] == "percpu", "8 threads must switch to percpu", r)


@case
def counters_callback_mode_matches_oracle():
    r = all_events([guest("loop"), "30"], ["counters=callback"])
    expect(fields(r.log, "native")["mode"] == "percpu", "counters=callback not honoured", r)


@case
def count_every_adds_native_counts_to_every_block_with_no_lua_at_translation():
    def check(r, what):
        e = fields(r.log, "every")
        expect_equal_counts(r, e, ["insns", "tbs", "reads", "writes"])
        expect(int(e["mem"]) == int(e["reads"]) + int(e["writes"]), f"{what}: mem = reads + writes", r)
        # a block's instruction count at each execution: at least every started instruction
        expect(int(e["block_insns"]) >= int(e["insns"]), f"{what}: block_insns", r)
    for program in ([guest("loop"), "20"], [guest("threads"), "100"]):
        check(qemu(["script=" + script("every.lua"), "profile=on"], program, oracle=True), program[0])
    r = qemu(["script=" + script("every.lua"), "profile=on"], [guest("loop"), "20"], oracle=True)
    expect("on_translate" not in r.log, "no Lua ran at translation", r)
    for version in ("7.2", "10.0"):
        check(system_qemu(version, ["script=" + script("every.lua")], smp=2, oracle=True), version)


@refused_install
def count_every_refuses_unknown_kinds_and_misplaced_rw():
    for bad, msg in (("qemu.count_every('insns', qemu.counter())", "kind insns: expected one of"),
                     ("qemu.count_every('insn', {})", "expected a counter from qemu.counter()"),
                     ("qemu.count_every('block', qemu.counter(), { rw = 'r' })", 'only "mem" takes the option rw'),
                     ("qemu.count_every('mem', qemu.counter(), { rw = 'x' })", 'option rw=x: expected "r", "w", "rw"'),
                     ("qemu.count_every('mem', qemu.counter(), 'r')", "options must be a table")):
        r = run_lua(bad)
        expect(r.status == 1 and msg in r.err, bad, r)


@case
def count_matches_oracle_with_8_threads():
    r = qemu(["script=count"], [guest("threads")], oracle=True)
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    expect(r.status == 0 and m and m.group(1) == fields(r.log, "oracle")["insns"],
           "count.lua differs under threads", r)


def traced(program, extra=(), binary=None):
    r = qemu(["script=" + script("trace.lua")] + list(extra), program, oracle=True, binary=binary)
    expect(r.status == 0, "guest failed", r)
    t = fields(r.log, "trace")
    expect_equal_counts(r, t, ["tbs", "insns", "reads", "writes", "syscalls"])
    expect(t["same_order"] == t["vcpus"], "tracer order differs from callback order", r)
    expect(t["in_step"] == t["syscalls"], "events not delivered before a syscall callback", r)
    return t


@case
def tracers_deliver_every_event_in_order_single_thread():
    for batch in ("1", "7", "4096"):
        traced([guest("loop"), "20"], ["batch=" + batch])


@case
def tracers_deliver_every_event_in_order_with_8_threads():
    for batch in ("7", "4096"):
        t = traced([guest("threads"), "100"], ["batch=" + batch])
        expect(t["vcpus"] == "9", "9 threads traced")


def queued(program, extra=()):
    r = qemu(["script=" + script("queued.lua")] + list(extra), program, oracle=True)
    expect(r.status == 0, "guest failed", r)
    q = fields(r.log, "queued")
    expect(q["insns"] == fields(r.log, "oracle")["insns"], "queued callbacks lost or added events", r)
    expect(q["native"] == q["insns"], "native counter disagrees", r)
    expect(q["same"] == q["vcpus"] and int(q["vcpus"]) > 0,
           "queued callbacks saw other counter values or another order than synchronous ones", r)
    return r, q


@case
def queued_callbacks_see_every_event_in_order_with_the_counter_of_the_moment():
    queued([guest("loop"), "20"])
    queued([guest("loop"), "20"], ["sync=false"])
    r, q = queued([guest("threads"), "100"])
    expect(q["vcpus"] == "9", "9 threads", r)
    queued([guest("forks")])


@case
def queued_callback_error_under_warn_costs_the_rest_of_its_batch_nothing():
    # the failing callback raises on its 1000th call, in the middle of a batch of other callbacks;
    # sync=false: full batches (LuaJIT's loop); sync=true: a few records at a time (one call each)
    for sync in ("sync=false", "sync=true"):
        r, q = queued([guest("loop"), "20"], ["fail=1000", "onerror=warn", sync])
        expect(q["failing_calls"] == "1000", f"{sync}: the failing callback ran again", r)
        expect(r.err.count("callback disabled, onerror=warn") == 1 and "queued failure" in r.err,
               f"{sync}: one warning naming the error", r)
        r = qemu(["script=" + script("queued.lua"), "fail=1000", sync], [guest("loop"), "20"])
        expect(r.status == 1 and re.search(r"error in insn:on_exec callback: \S*queued\.lua:\d+: queued failure", r.err)
               and "stack traceback:" in r.err, f"{sync}: fail policy: message, traceback, status 1", r)


@case
def a_threads_tracer_and_queued_callbacks_are_delivered_together():
    for program in ([guest("loop"), "20"], [guest("threads"), "100"]):
        r = qemu(["script=" + script("mixed.lua")], program)
        m = fields(r.log, "mixed")
        expect(r.status == 0 and int(m["checks"]) > 100, "ran", r)
        expect(m["behind"] == "0" and m["same"] == "true",
               "queued callbacks lagged a tracer of the same thread", r)


@case
def thread_buffers_go_with_their_threads():
    # every guest thread that runs a queued callback gets buffers; they must not outlive it
    if os.environ.get("QLUA_SANITIZED"):
        raise Skip("ASan holds freed memory in its quarantine: resident sizes say nothing here")
    def hwm(extra):
        path = lua_file("local n = 0\nqemu.on_translate(function(tb) tb:on_exec(function() n = n + 1 end) end)\n"
                        "qemu.on_exit(function() qemu.printf('hwm %s\\n', "
                        "io.open('/proc/self/status'):read('a'):match('VmHWM:%s*(%d+)')) end)")
        try:
            r = qemu(["script=" + path] + extra, [guest("churn"), "1500"])
        finally:
            os.unlink(path)
        expect(r.status == 0 and "churn 1500" in r.out, "guest", r)
        return int(re.search(r"^hwm (\d+)$", r.log, re.M).group(1))
    queued_kb, sync_kb = hwm([]), hwm(["exec=sync"])
    # buffers kept after their threads: about 25 KiB resident each, 38 MiB for 1500 threads
    expect(queued_kb - sync_kb < 10 * 1024, f"queued {queued_kb} KiB vs sync {sync_kb} KiB")


@case
def exec_sync_makes_every_callback_synchronous_with_the_same_results():
    r, _ = queued([guest("loop"), "20"], ["exec=sync"])
    traced([guest("loop"), "20"], ["exec=sync"])


@refused_install
def bad_exec_option_is_refused_with_the_accepted_values():
    r = qemu(["script=count", "exec=later"], [guest("loop"), "1"])
    expect(r.status == 1 and "exec=later" in r.err and "queued" in r.err and "sync" in r.err,
           "bad exec= names the accepted values", r)


@case
def queued_callbacks_refuse_to_read_counters_of_a_later_moment():
    r = run_lua("local c = qemu.counter()\n"
                "qemu.on_translate(function(tb) tb:count(c); tb:on_exec(function(v) return c:get(v) end) end)",
                [guest("loop"), "2"])
    expect(r.status == 1 and "counter:get() in a queued on_exec callback" in r.err
           and "{ counter = c }" in r.err and "{ sync = true }" in r.err, "the rule and both ways out", r)
    r = run_lua("qemu.on_translate(function(tb) tb:on_exec(print, nil, { snyc = true }) end)",
                [guest("loop"), "2"])
    expect(r.status == 1 and "unknown option 'snyc' (accepted: counter, regs, sync)" in r.err,
           "a misspelt option is named", r)


def records_run(rounds, limit):
    r = qemu(["script=" + script("records.lua"), "records=" + limit], [guest("smc"), str(rounds)],
             oracle=True)
    expect(r.status == 0 and f"smc {rounds} {rounds * (rounds - 1) // 2}" in r.out, "guest", r)
    m = {k: int(v) for k, v in fields(r.log, "records").items()}
    expect(m["insns"] == int(fields(r.log, "oracle")["insns"]), "callbacks lost across flushes", r)
    expect(m["translations"] > rounds, "the guest retranslates every round", r)
    return r, m


@case
def memory_stays_flat_under_endless_retranslation():
    small, large = 30000, 120000
    # control: without a limit, what qlua holds grows with the translations (the guest works)
    _, off_s = records_run(small, "off")
    _, off_l = records_run(large, "off")
    expect(off_l["limit_flushes"] == 0 and off_l["peak"] > 3 * off_s["peak"],
           f"records grow without a limit: {off_s['peak']} -> {off_l['peak']}")
    expect(off_l["lua"] - off_s["lua"] > 10 << 20, "Lua heap grows without a limit")
    # records=1M: qlua flushes translations whenever its records reach 1 MiB
    r_s, on_s = records_run(small, "1M")
    r_l, on_l = records_run(large, "1M")
    expect(on_l["limit"] == 1 << 20, "records=1M read", r_l)
    expect(on_l["limit_flushes"] >= 4 and on_l["flushes"] >= on_l["limit_flushes"],
           "flushes asked for", r_l)
    expect(on_s["peak"] <= 2 << 20 and on_l["peak"] <= 2 << 20, "records peak bounded", r_l)
    expect(on_l["lua"] - on_s["lua"] < 4 << 20 and on_l["lua"] < 8 << 20,
           f"Lua heap flat: {on_s['lua']} -> {on_l['lua']}", r_l)


@refused_install
def bad_records_option_is_refused_with_the_accepted_form():
    for bad in ("lots", "12X", "0", "-5M"):
        r = qemu(["script=count", "records=" + bad], [guest("loop"), "1"])
        expect(r.status == 1 and f"records={bad}: expected a size such as 64M" in r.err, bad, r)
    r = qemu(["script=count", "records=64K"], [guest("loop"), "1"])
    expect(r.status == 1 and "records=64K: at least 1M (or off)" in r.err, "too small a limit", r)


@case
def tally_counts_like_a_lua_table_and_the_oracle():
    for program in ([guest("loop"), "20"], [guest("threads"), "50"]):
        r = qemu(["script=" + script("tally.lua")], program, oracle=True)
        expect(r.status == 0, "guest", r)
        t = fields(r.log, "tally")
        expect(t["same"] == "true", "tally and Lua table differ", r)
        expect_equal_counts(r, t, ["reads", "writes", "tbs"])
        expect(t["missing"] == "0" and t["after_reset"] == "0", "get of an absent key; reset", r)


@case
def tally_refuses_keys_it_cannot_hold():
    bad = [("t:add(1.5)", "key"), ("t:add('x')", "key"), ("t:add(2^64)", "key")]
    if "LuaJIT" in run_lua("qemu.print(qemu.info.lua)").log:
        # Lua 5.4 reads a negative integer as its 64-bit pattern (docs/api.md, numbers)
        bad += [("t:add(-1)", "key"), ("t:add(1, -2)", "amount")]
    for expr, what in bad:
        r = run_lua(f"local t = qemu.tally()\nqemu.on_exit(function() {expr} end)")
        expect(r.status == 1 and (f"the {what} must be a whole number from 0 to 2^64-1" in r.err
                                  or "expected a non-negative integer" in r.err
                                  or "number expected, got string" in r.err), expr, r)
    r = run_lua("local t = qemu.tally()\nt:add(2^53); t:add(0, 3); t:add(7, 0)\n"
                "qemu.print(t:get(2^53), t:get(0), t:get(7), t:size(), tostring(t))")
    expect("1\t3\t0\t3\ttally (3 keys)" in r.log, "edge keys", r)


@case
def tracers_deliver_everything_before_fork_and_exit():
    r = run_lua("local n = 0\n"
                "local t = qemu.tracer{ batch = 1000000, fn = function(ev, k) n = n + k end }\n"
                "local c = qemu.counter()\n"
                "qemu.on_translate(function(tb) tb:trace(t); tb:count(c) end)\n"
                "qemu.on_exit(function() qemu.printf('%d %d\\n', n, c:sum()) end)", [guest("forks")])
    lines = r.log.split()
    expect(r.status == 0 and len(lines) == 4, "two exit reports expected", r)
    expect(lines[0] == lines[1] and lines[2] == lines[3], "tracer lost or duplicated events", r)


@case
def profile_reports_where_lua_ran_and_warns_about_per_instruction_callbacks():
    r = qemu(["script=" + script("trace.lua"), "profile=on"], [guest("loop"), "5"], oracle=True)
    oracle = fields(r.log, "oracle")
    rows = {}
    for line in r.log.splitlines():
        m = re.match(r"^(\S+)\s+(\S+trace\.lua:\d+)\s+(\d+)\s+[\d.]+\s+\d+\s+(\S+)$", line)
        if m:
            rows[m.group(1)] = (int(m.group(3)), m.group(4))
    expect(rows.get("insn:on_exec", (0,))[0] == int(oracle["insns"]), "on_exec calls", r)
    expect(rows.get("on_syscall", (0,))[0] == int(oracle["syscalls"]), "on_syscall calls", r)
    expect(rows.get("tracer", (0, "0"))[1] ==
           str(int(oracle["tbs"]) + int(oracle["insns"]) + int(oracle["reads"]) + int(oracle["writes"])),
           "tracer events delivered", r)
    total = re.search(r"^qlua profile: Lua called (\d+) times", r.log, re.M)
    expect(total and int(total.group(1)) == sum(c for c, _ in rows.values()), "total calls", r)
    q = re.search(r"^qlua profile: (\d+) of those calls were queued on_exec callbacks, delivered in (\d+) batches",
                  r.log, re.M)
    expect(q and int(q.group(1)) == int(oracle["insns"]) and
           int(oracle["insns"]) / 4096 <= int(q.group(2)) <= int(oracle["insns"]),
           "queued calls and their batches", r)
    expect(rows["insn:on_exec"][1] == oracle["insns"], "queued events of the site", r)
    expect(re.search(r"warning: insn:on_exec at \S+trace\.lua:\d+ put Lua on a per-instruction path",
                     r.log), "per-instruction warning", r)
    r = qemu(["script=" + script("trace.lua"), "lua=off", "profile=on"], [guest("loop"), "5"])
    expect("qlua profile: Lua called" in r.log and "warning" not in r.log, "no warning without on_exec", r)
    r = qemu(["script=" + script("trace.lua")], [guest("loop"), "5"])
    expect("qlua profile" not in r.log, "no report unless profile=on", r)


# ---- the qlua launcher ----

LAUNCHER = os.environ.get("QLUA_LAUNCHER", "")


def launcher(args, **kw):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    p = subprocess.run([sys.executable, LAUNCHER] + args, capture_output=True, text=True,
                       timeout=300, env=env, **kw)
    return Run(p.returncode, p.stdout, p.stderr, "")


@case
def launcher_run_shows_what_the_plugin_prints_and_passes_the_exit_status():
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    with tempfile.TemporaryDirectory() as tmp:
        direct = os.path.join(tmp, "direct.log")
        subprocess.run([QEMU, "-plugin", PLUGIN + ",script=count", "-d", "plugin", "-D", direct,
                        guest("loop"), "3"], check=True, env=env, capture_output=True)
        want = open(direct).read()
        via_file = os.path.join(tmp, "launcher.log")
        r = launcher(["run", "-o", via_file, "count", "--", guest("loop"), "3"])
        expect(r.status == 0 and "sum " in r.out, "guest output passes through", r)
        expect(open(via_file).read() == want, f"launcher output differs from the plugin's:\n{want}", r)
    r = launcher(["run", "count", "--", guest("loop"), "3"])
    expect(want.strip() in r.err, "script output on the terminal (stderr)", r)
    r = launcher(["run", "count", "--", "/bin/false"])
    expect(r.status == 1 and "insns: " in r.err, "exit status of the program", r)
    r = launcher(["run", script("all_events.lua"), "lua=off", "--", aarch64_guest("loop"), "2"])
    expect(r.status == 0 and "native: tbs=" in r.err, "qemu-aarch64 picked from the ELF header", r)


@case
def launcher_one_liners_and_arguments_with_commas():
    r = launcher(["-e", "qemu.on_exit(function() qemu.print('args', qemu.args.x, qemu.args.y) end)",
                  "x=1,2", "y=a,,b", "--", guest("loop"), "1"])
    expect(r.status == 0 and "args\t1,2\ta,,b" in r.err, "one-liner with escaped commas", r)
    r = launcher(["-e", "error('oops')", "--", guest("loop"), "1"])
    expect(r.status == 1 and "e.lua:1: oops" in r.err, "errors in one-liners", r)


@case
def launcher_lists_and_explains_the_scripts():
    r = launcher(["list"])
    expect(r.status == 0 and re.search(r"^count\s+total executed guest instructions", r.out, re.M),
           "list shows count and its description", r)
    r = launcher(["help", script("all_events.lua")])
    expect(r.status == 0 and "lua=bool (default true)  also count with Lua callbacks" in r.out, "help", r)
    r = launcher(["help", "nope"])
    expect(r.status == 2 and "nope: no such script" in r.err, "unknown script", r)
    r = launcher(["run", "count", guest("loop")])
    expect(r.status == 2 and "missing '--'" in r.err, "missing --", r)


@case
def launcher_runs_system_emulators():
    r = launcher(["run", "--system", script("all_events.lua"), "--", "-accel", "tcg", "-display",
                  "none", "-nodefaults", "-no-reboot", "-monitor", "none", "-serial", "none",
                  "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-bios", guest("boot.bin")])
    expect(r.status == 33 and f"reads={LOOPS} writes={LOOPS}" in r.err, "system mode via qlua", r)


@case
def repl_evaluates_lua_in_the_running_plugin():
    import socket
    import stat
    import time
    code = ("insns = qemu.counter()\n"
            "qemu.on_translate(function(tb) for i in tb:insns() do i:count(insns) end end)\n"
            "qemu.on_exit(function() qemu.printf('final %d\\n', insns:sum()) end)\n")
    path = lua_file(code)
    with tempfile.TemporaryDirectory() as tmp:
        sock, log = os.path.join(tmp, "repl.sock"), os.path.join(tmp, "plugin.log")
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        proc = subprocess.Popen([QEMU, "-plugin", f"{PLUGIN},script={path},repl={sock}", "-d", "plugin",
                                 "-D", log, guest("loop"), "100000"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.02)
            mode = stat.S_IMODE(os.stat(sock).st_mode)
            expect(stat.S_ISSOCK(os.stat(sock).st_mode) and mode == 0o600, f"socket mode {oct(mode)}")
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            f = c.makefile("rb")

            def ask(line):
                c.sendall(line.encode() + b"\n")
                out = b""
                while True:
                    answer = f.readline()
                    if answer in (b"\x04\n", b"\x05\n", b""):
                        return out.decode(), answer
                    out += answer

            first = "0"
            for _ in range(100):  # the guest may not have run a block yet
                first, _ = ask("insns:sum()")
                if int(first) > 0:
                    break
                time.sleep(0.02)
            time.sleep(0.3)
            second, _ = ask("insns:sum()")
            expect(0 < int(first) < int(second), f"counter should grow while the guest runs: {first} {second}")
            out, _ = ask("local t = nil; t.x = 1")
            expect("repl:1: attempt to index" in out, f"error answered: {out!r}")
            # a probe added from the prompt sees every block after a retranslation, and goes again
            ask("hits = 0; function probe(tb) hits = hits + 1 end; qemu.on_translate(probe); "
                "qemu.retranslate()")
            for _ in range(200):
                if int(ask("hits")[0]) > 0:
                    break
                time.sleep(0.02)
            expect(int(ask("hits")[0]) > 0, "the new probe saw retranslated blocks")
            expect(ask("qemu.off(probe)")[0] == "true\n", "probe removed")
            before = ask("hits")[0]
            ask("qemu.retranslate()")
            time.sleep(0.3)
            expect(ask("hits")[0] == before, "a removed probe runs no more")
            out, end = ask("for i = 1, 2 do")
            expect(end == b"\x05\n" and out == "", "incomplete chunk waits for more")
            ask("qemu.print('line', i)")
            out, end = ask("end")
            expect(end == b"\x04\n" and out == "line\t1\nline\t2\n", f"multi-line chunk: {out!r}")
            f.close()
            c.close()
            r = launcher(["attach", sock], input="insns:sum() > 0\nqemu.vcpus()\n")
            expect(r.out == "true\n1\n", "qlua attach with piped input", r)
            # uninstall from the prompt: carried out by a vCPU thread; the guest runs on
            r = launcher(["attach", sock], input="qemu.uninstall()\n")
            status = proc.wait(timeout=300)
            text = open(log).read()
            expect(status == 0 and len(re.findall(r"^final \d+$", text, re.M)) == 1 and
                   "line" not in text,
                   f"exit handlers ran once, the guest finished; REPL output stayed out of the log: "
                   f"{status} {text}")
            expect(not os.path.exists(sock), "socket removed")
        finally:
            proc.kill()
            os.unlink(path)


@case
def handlers_added_after_a_retranslation_are_registered_with_qemu():
    # on_syscall_ret loses its only handler, a retranslation re-registers what has handlers,
    # then a new on_syscall_ret handler must reach QEMU again.
    code = ("local n, late = 0, 0\n"
            "local function first() qemu.off(first) end\n"
            "qemu.on_syscall_ret(first)\n"
            "qemu.on_syscall(function()\n"
            "  n = n + 1\n"
            "  if n == 5 then qemu.retranslate() end\n"
            "  if n == 12 then qemu.on_syscall_ret(function() late = late + 1 end) end\n"
            "end)\n"
            "qemu.on_exit(function() qemu.printf('late %d syscalls %d\\n', late, n) end)\n")
    with tempfile.TemporaryDirectory() as tmp:
        r = run_lua(code, [guest("loop"), "2000"], extra=["repl=" + os.path.join(tmp, "s")])
    m = re.search(r"^late (\d+) syscalls (\d+)$", r.log, re.M)
    expect(r.status == 0 and m and int(m.group(1)) > 0, "the late handler ran", r)


@case
def watch_reloads_an_edited_script_while_the_guest_runs():
    import time
    version_a = ("qemu.persist.gen = (qemu.persist.gen or 0) + 1\n"
                 "local gen, translated = qemu.persist.gen, 0\n"
                 "qemu.on_translate(function(tb) translated = translated + 1 end)\n"
                 "qemu.on_exit(function() qemu.printf('gen %d translated %d version A\\n', gen, translated) end)\n")
    path = lua_file(version_a)
    with tempfile.TemporaryDirectory() as tmp:
        log, err = os.path.join(tmp, "plugin.log"), os.path.join(tmp, "stderr")
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        with open(err, "w") as errf:
            proc = subprocess.Popen([QEMU, "-plugin", f"{PLUGIN},script={path},watch=on", "-d", "plugin",
                                     "-D", log, guest("loop"), "400000"], stdout=subprocess.DEVNULL,
                                    stderr=errf, env=env)

        def wait_for(text):
            for _ in range(500):
                if text in open(err).read() or proc.poll() is not None:
                    break
                time.sleep(0.02)
            expect(text in open(err).read(), f"no '{text}' while the guest ran: {open(err).read()}")

        try:
            time.sleep(0.3)
            with open(path, "w") as f:  # a new version, written in place
                f.write(version_a.replace("version A", "version B"))
            wait_for("qlua: reloaded")
            with open(path, "a") as f:
                f.write("this is not Lua (\n")
            wait_for("failed; the previous version keeps running")
            status = proc.wait(timeout=300)
        finally:
            proc.kill()
            os.unlink(path)
        text = open(log).read()
        m = re.search(r"^gen (\d+) translated (\d+) version (\w)$", text, re.M)
        expect(status == 0 and m is not None, f"exit report: {status} {text}")
        expect(m.group(1) == "2" and m.group(3) == "B", "qemu.persist survived; version B reported")
        expect(int(m.group(2)) > 0, "blocks were translated again under version B")


# ---- the error policy ----

FAIL_WHERE = {
    # where: (program, event label in the message)
    "translate": ("loop", "on_translate"),
    "tb_exec": ("loop", "tb:on_exec"),
    "insn_exec": ("loop", "insn:on_exec"),
    "mem": ("loop", "insn:on_mem"),
    "syscall": ("loop", "on_syscall"),
    "syscall_ret": ("loop", "on_syscall_ret"),
    "vcpu_init": ("loop", "on_vcpu_init"),
    "vcpu_exit": ("threads", "on_vcpu_exit"),
    "exit": ("loop", "on_exit"),
}


def fail_run(where, extra=()):
    program, label = FAIL_WHERE[where]
    args = [guest(program)] + (["5"] if program == "loop" else [])
    return qemu(["script=" + script("fail_in.lua"), "where=" + where] + list(extra), args), label


@case
def runtime_error_in_each_callback_kind_stops_the_run():
    for where in FAIL_WHERE:
        r, label = fail_run(where)
        expect(r.status == 1, f"{where}: status {r.status}, expected 1", r)
        expect(re.search(rf"qlua: error in {re.escape(label)} callback: .*fail_in\.lua:\d+: boom in {where}",
                         r.err), f"{where}: message lacks event, file:line and text", r)
        expect("stack traceback:" in r.err, f"{where}: no traceback", r)


@case
def onerror_warn_disables_the_callback_and_the_guest_runs_on():
    for where in ["translate", "tb_exec", "insn_exec", "mem", "syscall", "vcpu_init", "exit"]:
        r, label = fail_run(where, ["onerror=warn"])
        expect(r.status == 0, f"{where}: guest should finish", r)
        expect("sum " in r.out, f"{where}: guest output missing", r)
        warnings = r.err.count("callback disabled, onerror=warn")
        expect(warnings == 1, f"{where}: {warnings} warnings, expected exactly 1", r)
        if where != "exit":
            expect("fail_in: errors=1" in r.log, f"{where}: callback ran again after its error", r)


@refused_install
def syntax_error_names_file_and_line():
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local qemu = require 'qemu'\n\nlocal x = = 1\n")
    try:
        r = qemu(["script=" + f.name], [guest("loop"), "1"])
    finally:
        os.unlink(f.name)
    expect(r.status == 1, "QEMU must refuse to start", r)
    expect(re.search(re.escape(os.path.basename(f.name)) + r":3:", r.err), "no file:line", r)
    expect("sum" not in r.out, "guest must not run", r)


@refused_install
def error_while_loading_stops_qemu():
    r = qemu(["script=" + script("fail_in.lua"), "where=top"], [guest("loop"), "1"])
    expect(r.status == 1 and "boom in top" in r.err and "fail_in.lua:" in r.err, "top-level error", r)
    expect("error while loading" in r.err and "sum" not in r.out, "guest must not run", r)


@case
def stale_handles_raise_a_lua_error():
    for handle, rule in [("tb", "tb used outside its on_translate callback"),
                         ("insn", "insn used outside its on_translate callback"),
                         ("access", "access used outside its on_mem callback")]:
        r = qemu(["script=" + script("stale.lua"), "handle=" + handle], [guest("loop"), "2"])
        expect(r.status == 1, f"{handle}: status {r.status}", r)
        expect(rule in r.err and "stale.lua:" in r.err, f"{handle}: message", r)
        expect("about to touch" in r.log, f"{handle}: output before the error was lost", r)


@refused_install
def unknown_argument_is_rejected_with_the_accepted_ones():
    r = qemu(["script=" + script("all_events.lua"), "lau=off"], [guest("loop"), "1"])
    expect(r.status == 1, "must refuse", r)
    expect("all_events.lua: unknown argument 'lau'; accepted: lua" in r.err, "message", r)
    r = qemu(["script=" + script("all_events.lua"), "lua=maybe"], [guest("loop"), "1"])
    expect(r.status == 1 and "lua=maybe: expected a boolean (on, off" in r.err, "bad bool", r)
    r = qemu(["script=count", "foo=1"], [guest("loop"), "1"])
    expect(r.status == 1 and "count.lua: unknown argument 'foo'; accepted: none" in r.err, "count", r)


@refused_install
def missing_script_and_bad_options_are_explained():
    r = qemu(["script=nope"], [guest("loop"), "1"])
    expect(r.status == 1 and "script=nope: no such file (tried nope, " in r.err, "missing", r)
    expect("scripts/nope.lua" in r.err, "should say where it looked", r)
    r = qemu([], [guest("loop"), "1"])
    expect(r.status == 1 and "no script given. Usage:" in r.err and "onerror=" in r.err, "usage", r)
    r = qemu(["script=count", "onerror=ignore"], [guest("loop"), "1"])
    expect(r.status == 1 and "onerror=ignore: expected one of fail, warn" in r.err, "onerror", r)
    r = qemu(["script=count", "profile=yes"], [guest("loop"), "1"])
    expect(r.status == 1 and "profile=yes: expected one of on, off" in r.err, "profile", r)


# ---- output, arguments, the module ----

def lua_file(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    f.write(text)
    f.close()
    return f.name


def run_lua(text, program=None, extra=(), **kw):
    path = lua_file(text)
    try:
        return qemu(["script=" + path] + list(extra), program or [guest("loop"), "3"], **kw)
    finally:
        os.unlink(path)


@case
def output_goes_to_the_plugin_log_only():
    r = run_lua("qemu.print('hello', 42)\nqemu.on_exit(function() qemu.printf('bye %d\\n', 7) end)",
                log=False)
    expect(r.status == 0 and "hello" not in r.out + r.err, "output must need -d plugin", r)
    r = run_lua("qemu.print('hello', 42)\nqemu.on_exit(function() qemu.printf('bye %d\\n', 7) end)")
    expect(r.log == "hello\t42\nbye 7\n", "log content", r)


@case
def large_output_is_never_lost():
    r = run_lua("qemu.on_exit(function() for i = 1, 200000 do qemu.printf('line %d\\n', i) end end)")
    lines = r.log.splitlines()
    expect(len(lines) == 200000 and lines[-1] == "line 200000", f"{len(lines)} lines", None)


@case
def output_is_not_duplicated_by_fork():
    r = run_lua("qemu.print('before fork')\n"
                "qemu.on_exit(function() qemu.print('exit report') end)", [guest("forks")])
    expect(r.status == 0 and "child exited 0" in r.out, "guest", r)
    expect(r.log.count("before fork") == 1, "buffered output printed twice", r)
    expect(r.log.count("exit report") == 2, "parent and child both report", r)


@case
def raw_and_declared_arguments():
    r = run_lua("for _, k in ipairs({'a', 'b'}) do qemu.print(k, qemu.args[k], type(qemu.args[k])) end",
                extra=["a=1", "b=on"])
    expect(r.log == "a\t1\tstring\nb\ton\tstring\n", "raw args are strings", r)
    r = run_lua("local a = qemu.script{ name='t', args={ {name='n', type='int'}, {name='f', type='bool'},"
                " {name='d', type='int', default=5} } }\nqemu.print(a.n + 1, a.f, a.d, qemu.args.n)",
                extra=["n=0x10", "f=off"])
    expect(r.log == "17\tfalse\t5\t16\n", "typed args", r)
    r = run_lua("local a = qemu.script{ name='t', args={ {name='m', multiple=true} } }\n"
                "qemu.print(#a.m, a.m[1], a.m[2])", extra=["m=x", "m=y,,z"])
    expect(r.log == "2\tx\ty,z\n", "repeatable argument", r)


@case
def info_and_features_describe_the_host():
    r = run_lua("local i = qemu.info\n"
                "qemu.print(i.target, i.mode, i.api.cur, i.api.declared, tostring(i.system))\n"
                "qemu.print(qemu.has('syscalls'), qemu.has('idle'), qemu.has('inline'))\n"
                "qemu.print(pcall(qemu.has, 'warp'))\n"
                "qemu.print(pcall(qemu.need, 'idle'))\n"
                "qemu.print(pcall(qemu.binary))\n"
                "qemu.on_syscall(function() local b = qemu.binary(); if b and not done then done = true;"
                " qemu.print(b.path, b.entry > 0, b.end_code > b.start_code) end end)")
    lines = r.log.splitlines()
    expect(lines[0] == "x86_64\tuser\t1\t1\tfalse", "info", r)
    expect(lines[1] == "true\tfalse\ttrue", "has", r)
    expect(lines[2].startswith("false\t") and "unknown feature 'warp'; known: " in lines[2], "unknown", r)
    expect("needs the 'idle' feature" in lines[3] and "system mode" in lines[3], "need", r)
    expect("not available while the script loads" in lines[4], "binary at load", r)
    expect(lines[5] == guest("loop") + "\ttrue\ttrue", "binary", r)


@case
def translation_handles_expose_instructions():
    # The loop guest is static and not stripped: main has a symbol, and its first block starts it.
    r = run_lua(
        "local seen = {}\n"
        "qemu.on_translate(function(tb)\n"
        "  local size = 0\n"
        "  for insn in tb:insns() do\n"
        "    size = size + insn.size\n"
        "    assert(#insn.bytes == insn.size, 'bytes length')\n"
        "    assert(type(insn.disas) == 'string' and #insn.disas > 0, 'disas')\n"
        "  end\n"
        "  assert(size == tb.size, 'tb.size is the sum of instruction sizes')\n"
        "  assert(tb[1].vaddr == tb.vaddr and tb[#tb].vaddr < tb.vaddr + tb.size and tb[#tb + 1] == nil)\n"
        "  local first = tb[1]\n"
        "  if first.symbol == 'main' and not seen.main then\n"
        "    seen.main = true\n"
        "    qemu.printf('main %s %d %s\\n', first.disas, first.index, tostring(first.haddr > 0))\n"
        "  end\n"
        "  for insn in tb:insns() do\n"
        "    if insn.disas == 'syscall ' and not seen.sys then\n"
        "      seen.sys = true\n"
        "      qemu.printf('syscall bytes %02x%02x\\n', insn.bytes:byte(1, 2))\n"
        "    end\n"
        "  end\n"
        "end)\n", extra=[])
    expect(r.status == 0, "script failed", r)
    expect(re.search(r"^main \S.* 1 true$", r.log, re.M), "main's first instruction", r)
    expect("syscall bytes 0f05" in r.log, "syscall encoding", r)


@case
def syscall_arguments_and_results_reach_lua():
    # The loop guest writes "round 0\n" (8 bytes) with write(1, ...): x86_64 syscall 1.
    r = run_lua("qemu.on_syscall(function(vcpu, num, fd, buf, len)\n"
                "  if num == 1 and fd == 1 then qemu.printf('write len=%d buf>0=%s\\n', len, tostring(buf > 0)) end end)\n"
                "qemu.on_syscall_ret(function(vcpu, num, ret)\n"
                "  if num == 1 then qemu.printf('write ret=%d\\n', ret) end end)")
    expect("write len=8 buf>0=true" in r.log and "write ret=8" in r.log, "syscall args", r)


@case
def lua_c_modules_load():
    r = run_lua("local lfs = require 'lfs'\nqemu.print(type(lfs.currentdir()))")
    expect(r.status == 0 and r.log == "string\n", "require 'lfs' failed", r)


@case
def uninstall_runs_exit_handlers_and_the_guest_finishes():
    r = run_lua("local n = 0\n"
                "qemu.on_translate(function(tb) n = n + 1; if n == 10 then qemu.uninstall() end end)\n"
                "qemu.on_exit(function() qemu.printf('translated %d\\n', n) end)",
                [guest("loop"), "3"])
    expect(r.status == 0 and "sum " in r.out, "guest must finish", r)
    m = re.search(r"^translated (\d+)$", r.log, re.M)
    expect(m and int(m.group(1)) >= 10, "exit handler output", r)


@refused_install
def uninstall_while_loading_is_refused():
    r = run_lua("qemu.uninstall()")
    expect(r.status == 1 and "cannot run while the script loads" in r.err, "uninstall at load", r)


@case
def counters_from_lua_and_per_vcpu_values():
    r = run_lua("local c = qemu.counter()\nc:add(5)\nc:add(2, 3)\n"
                "qemu.print(c:sum(), c:get(0), c:get(3), c:get(1))\nc:reset()\nqemu.print(c:sum())")
    expect(r.log == "7\t5\t2\t0\n0\n", "counter arithmetic", r)


@case
def handlers_of_one_event_run_in_order():
    r = run_lua("qemu.on_exit(function() qemu.print('first') end)\n"
                "qemu.on_exit(function() qemu.print('second') end)")
    expect(r.log == "first\nsecond\n", "order", r)


# ---- system mode: a bare-metal guest (tests/guests/bare/boot.S) on QEMU 7.2 and 10.0.2 ----

LOOPS = 1000  # boot.S: LOOPS iterations of store, load, dec, jnz
QEMU_SYSTEM = {
    "7.2": os.environ.get("QEMU_SYSTEM_72", "qemu-system-x86_64"),
    "10.0": os.environ.get("QEMU_SYSTEM_10",
                           os.path.join(SRC, ".qemu10", "usr", "bin", "qemu-system-x86_64")),
}


def system_qemu(version, plugin_args, smp=1, oracle=False, image="boot.bin"):
    binary = QEMU_SYSTEM[version]
    if version == "10.0" and not os.path.exists(binary):
        raise Skip(f"QEMU 10.0.2 not unpacked at {binary} (tools/fetch-qemu10.sh does it)")
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        cmd = [binary, "-accel", "tcg", "-smp", str(smp), "-display", "none", "-nodefaults",
               "-no-reboot", "-monitor", "none", "-serial", "none",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-bios", guest(image)]
        if version == "10.0":
            cmd += ["-L", os.path.join(os.path.dirname(binary), "..", "share", "qemu")]
        if oracle:
            cmd += ["-plugin", ORACLE]
        cmd += ["-plugin", ",".join([PLUGIN] + plugin_args), "-d", "plugin", "-D", logfile]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        text = open(logfile).read() if os.path.exists(logfile) else ""
        return Run(p.returncode, p.stdout, p.stderr, text)


def system_counts(version, smp, extra=()):
    r = system_qemu(version, ["script=" + script("all_events.lua")] + list(extra), smp, oracle=True)
    expect(r.status == 33, "the guest exits through isa-debug-exit with status 33", r)
    native, lua = fields(r.log, "native"), fields(r.log, "lua")
    expect_equal_counts(r, native, ["tbs", "insns", "reads", "writes"])
    expect_equal_counts(r, lua, ["tbs", "insns", "reads", "writes"])
    # QEMU 10's debug-exit shuts down asynchronously: the final hlt runs unless the shutdown wins
    # the race (seen under load), so 10.0 allows one more instruction.
    allowed = [str(4 * LOOPS + 6)] + ([str(4 * LOOPS + 7)] if version == "10.0" else [])
    expect(native["insns"] in allowed, f"expected {' or '.join(allowed)} instructions", r)
    expect(native["reads"] == native["writes"] == str(LOOPS), f"expected {LOOPS} loads and stores", r)
    expect(lua["vcpus"] == str(smp), f"expected {smp} vCPU init events", r)
    return native


@case
def system_mode_7_2_counts_are_exact_with_1_and_4_vcpus():
    expect(system_counts("7.2", 1)["mode"] == "inline", "one vCPU: inline adds")
    expect(system_counts("7.2", 4)["mode"] == "percpu", "-smp 4: per-vCPU callbacks")


@case
def system_mode_10_0_counts_are_exact_with_1_and_4_vcpus():
    # QEMU >= 9.0: inline adds into per-vCPU scoreboard entries; counters=callback still works.
    for smp in (1, 4):
        expect(system_counts("10.0", smp)["mode"] == "scoreboard", "API v4: scoreboards")
    expect(system_counts("10.0", 2, ["counters=callback"])["mode"] == "percpu", "callback mode")


def check_when(r, blocks=None):
    w = fields(r.log, "when")
    expect(w["bad"] == "0" and int(w["hits"]) > 0, "conditional callbacks fired wrongly", r)
    if blocks is not None:
        expect(int(w["hits"]) == blocks - 500, f"expected {blocks - 500} hits", r)
    return w


@case
def conditional_callbacks_fire_exactly_when_the_condition_holds():
    check_when(qemu(["script=" + script("when.lua")], [guest("loop"), "20"]))
    check_when(qemu(["script=" + script("when.lua"), "counters=callback"], [guest("loop"), "20"]))
    w = check_when(qemu(["script=" + script("when.lua"), "k=20"], [guest("threads")]))
    expect(w["mode"] == "percpu", "threads: per-vCPU")
    for version, blocks in (("7.2", 4 + LOOPS - 2), ("10.0", 4 + LOOPS - 1)):
        r = system_qemu(version, ["script=" + script("when.lua")], smp=1)
        w = check_when(r)
        expect(int(w["hits"]) == int(w["blocks"]) - 500, f"{version}: hits = blocks - k", r)


IDLE_PROBE = """
local idle, resume, bad = {}, {}, 0
qemu.on_vcpu_idle(function(v)
  if (idle[v] or 0) ~= (resume[v] or 0) then bad = bad + 1 end -- idle twice without a resume
  idle[v] = (idle[v] or 0) + 1
end)
qemu.on_vcpu_resume(function(v)
  resume[v] = (resume[v] or 0) + 1
  if resume[v] ~= idle[v] then bad = bad + 1 end -- a resume that followed no idle
end)
qemu.on_exit(function()
  for v = 0, 1 do qemu.printf("vcpu %d idle %d resume %d\\n", v, idle[v] or 0, resume[v] or 0) end
  qemu.printf("bad %d\\n", bad)
end)
"""


@case
def system_mode_reports_vcpu_idle_and_resume_in_pairs():
    # -smp 2: the second vCPU (an x86 application processor) waits halted, so it goes idle.
    for version in ("7.2", "10.0"):
        path = lua_file(IDLE_PROBE)
        try:
            r = system_qemu(version, ["script=" + path], smp=2)
        finally:
            os.unlink(path)
        counts = {int(v): (int(i), int(s)) for v, i, s in
                  re.findall(r"^vcpu (\d+) idle (\d+) resume (\d+)$", r.log, re.M)}
        expect(r.status == 33 and "bad 0" in r.log, f"{version}: idle/resume alternate per vCPU", r)
        expect(counts.get(1, (0, 0))[0] >= 1, f"{version}: the halted vCPU went idle", r)
        expect(all(i - s in (0, 1) for i, s in counts.values()), f"{version}: pairs", r)


@case
def registers_memory_and_access_values_on_qemu_10():
    r = system_qemu("10.0", ["script=" + script("regs.lua")])
    expect(r.status == 33, "run", r)
    expect(f"regs: n={LOOPS} sum={LOOPS * (LOOPS + 1) // 2} loads={LOOPS} matches={LOOPS} rip=true"
           in r.log, "ecx counts down from LOOPS; loads read back the stored values", r)
    path = lua_file("qemu.print(pcall(qemu.reg, 'rip'))\nqemu.print(pcall(qemu.read_memory, 0, 4))")
    try:
        r = system_qemu("10.0", ["script=" + path])
    finally:
        os.unlink(path)
    expect(r.log.count("works only inside a vCPU callback") == 2, "reads outside callbacks", r)
    path = lua_file("local said = 0\n"
                    "local function probe() if said == 0 then said = 1; qemu.print(pcall(qemu.read_memory, 0, 4)) end end\n"
                    "qemu.on_translate(function(tb) tb:on_exec(probe) end)")
    try:
        r = system_qemu("10.0", ["script=" + path])
    finally:
        os.unlink(path)
    expect("this on_exec callback is queued" in r.log and "{ sync = true }" in r.log,
           "a queued callback is told how to read memory of the moment", r)


TIME_PROBE = """
qemu.time_control()
local blocks, t = qemu.counter(), 0
local function tick() t = t + 1000; qemu.set_time(t) end
qemu.on_translate(function(tb) tb:count(blocks); tb:on_exec(tick, nil, { sync = true }) end)
qemu.on_exit(function() qemu.printf("time %d blocks %d\\n", t, blocks:sum()) end)
"""


@case
def time_control_lets_the_script_drive_the_guest_clock_on_qemu_10():
    path = lua_file(TIME_PROBE)
    try:
        r = system_qemu("10.0", ["script=" + path])
        m = re.search(r"^time (\d+) blocks (\d+)$", r.log, re.M)
        expect(r.status == 33 and m and int(m.group(1)) == 1000 * int(m.group(2)) > 0,
               "the guest ran with its clock moved by the script", r)
    finally:
        os.unlink(path)


@refused_install
def time_control_on_qemu_7_2_names_the_missing_feature():
    path = lua_file(TIME_PROBE)
    try:
        r = system_qemu("7.2", ["script=" + path])
    finally:
        os.unlink(path)
    expect(r.status == 1 and "needs the 'time_control' feature" in r.err and
           "QEMU 9.1 in system mode" in r.err, "clear error on 7.2", r)


@refused_install
def registers_on_qemu_7_2_name_the_missing_feature():
    r = system_qemu("7.2", ["script=" + script("regs.lua")])
    expect(r.status == 1 and "needs the 'registers' feature, which this QEMU (plugin API 1) lacks: "
           "it comes with QEMU 9.0" in r.err and "regs.lua:" in r.err, "clear error", r)


ACCESS_PROBE = """
local seen = 0
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:on_mem(function(vcpu, a, vaddr)
      if seen < 2 then
        seen = seen + 1
        qemu.printf("%s size=%d phys=0x%x io=%s device=%s vaddr=0x%x\\n", a.rw, a.size, a.phys,
          tostring(a.io), tostring(a.device), vaddr)
      end
    end)
  end
end)
qemu.print(qemu.info.mode, qemu.info.smp_vcpus, qemu.has("hwaddr"), qemu.has("syscalls"),
  pcall(qemu.on_syscall, print))
"""


@case
def system_mode_accesses_carry_physical_address_and_device():
    for version in ("7.2", "10.0"):
        path = lua_file(ACCESS_PROBE)
        try:
            r = system_qemu(version, ["script=" + path], smp=2)
        finally:
            os.unlink(path)
        lines = r.log.splitlines()
        expect(r.status == 33 and len(lines) == 3, f"{version}: run", r)
        expect(lines[0].startswith("system\t2\ttrue\tfalse\tfalse\t") and
               "exist only in user mode" in lines[0], f"{version}: info and has", r)
        expect(lines[1] == "w size=4 phys=0x1000 io=false device=RAM vaddr=0x1000", f"{version}: store", r)
        expect(lines[2] == "r size=4 phys=0x1000 io=false device=RAM vaddr=0x1000", f"{version}: load", r)


# Tests of the shipped scripts live one file per group in tests/script_cases/*.py. Each runs in a
# copy of this module's namespace, so it uses case(), qemu(), guest(), fields(), expect() directly,
# and names it defines can clash neither with these nor with another file's.
import glob as _glob
for _path in sorted(_glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "script_cases", "*.py"))):
    exec(compile(open(_path).read(), _path, "exec"), dict(globals()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(CASES))
        sys.exit(0)
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: integration.py CASE\ncases: " + " ".join(CASES))
        sys.exit(2)
    if sys.argv[1] in EXITS_QEMU and os.environ.get("QLUA_SANITIZED"):
        print("skipped: QEMU's exit() deadlocks with the preloaded ASan runtime")
        sys.exit(SKIP)
    try:
        CASES[sys.argv[1]]()
    except Skip as why:
        print(f"skipped: {why}")
        sys.exit(SKIP)
    print("ok")
