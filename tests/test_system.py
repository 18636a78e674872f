"""System mode: the bare-metal guest (tests/guests/bare/boot.S) on QEMU 7.2, 10.0.2 and 10.2."""
import re

import pytest

from qemu_run import LOOPS, expect_equal_counts, fields, script, system_lua, system_qemu

pytestmark = pytest.mark.user_host_independent  # system mode only

NEW_HOSTS = ["10.0", "10.2"]  # plugin API 4 and 5: scoreboards, registers, memory, time control


def system_counts(version, smp, extra=()):
    r = system_qemu(version, ["script=" + script("all_events.lua")] + list(extra), smp, oracle=True)
    assert r.status == 33, f"the guest exits through isa-debug-exit with status 33\n{r}"
    native, lua = fields(r.log, "native"), fields(r.log, "lua")
    expect_equal_counts(r, native, ["tbs", "insns", "reads", "writes"])
    expect_equal_counts(r, lua, ["tbs", "insns", "reads", "writes"])
    # QEMU 10's debug-exit shuts down asynchronously: the final hlt runs unless the shutdown wins
    # the race (seen under load), so 10.x allows one more instruction.
    allowed = [str(4 * LOOPS + 6)] + ([str(4 * LOOPS + 7)] if version != "7.2" else [])
    assert native["insns"] in allowed, f"expected {' or '.join(allowed)} instructions\n{r}"
    assert native["reads"] == native["writes"] == str(LOOPS), (
        f"expected {LOOPS} loads and stores\n{r}")
    assert lua["vcpus"] == str(smp), f"expected {smp} vCPU init events\n{r}"
    return native


def test_system_mode_7_2_counts_are_exact_with_1_and_4_vcpus():
    assert system_counts("7.2", 1)["mode"] == "inline", "one vCPU: inline adds"
    assert system_counts("7.2", 4)["mode"] == "percpu", "-smp 4: per-vCPU callbacks"


@pytest.mark.parametrize("version", NEW_HOSTS)
def test_system_mode_10_counts_are_exact_with_1_and_4_vcpus(version):
    # QEMU >= 9.0: inline adds into per-vCPU scoreboard entries; counters=callback still works.
    for smp in (1, 4):
        assert system_counts(version, smp)["mode"] == "scoreboard", f"{version}: scoreboards"
    assert system_counts(version, 2, ["counters=callback"])["mode"] == "percpu", "callback mode"


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


def test_system_mode_reports_vcpu_idle_and_resume_in_pairs():
    # -smp 2: the second vCPU (an x86 application processor) waits halted, so it goes idle.
    for version in ["7.2"] + NEW_HOSTS:
        r = system_lua(version, IDLE_PROBE, smp=2)
        counts = {int(v): (int(i), int(s)) for v, i, s in
                  re.findall(r"^vcpu (\d+) idle (\d+) resume (\d+)$", r.log, re.M)}
        assert r.status == 33 and "bad 0" in r.log, (
            f"{version}: idle/resume alternate per vCPU\n{r}")
        assert counts.get(1, (0, 0))[0] >= 1, f"{version}: the halted vCPU went idle\n{r}"
        assert all(i - s in (0, 1) for i, s in counts.values()), f"{version}: pairs\n{r}"


RESETS = """
local resets, n = 0, 0
qemu.on_flush(function() resets = resets + 1 end)
qemu.on_translate(function(tb)
  tb:on_exec(function() n = n + 1; if n % 40 == 0 then qemu.retranslate() end end, nil, { sync = true })
end)
qemu.on_exit(function() qemu.printf("resets %d\\n", resets) end)
"""


def test_idle_and_resume_stay_paired_through_resets_that_wake_halted_vcpus():
    # A reset unregisters qlua's callbacks and, updating each vCPU's event mask, wakes the halted
    # second vCPU while they are gone: QEMU reports that resume to nobody. qlua delivers a
    # transition missed that way before the next one (seen losing pairs in CI on QEMU 10.2).
    for version in ["7.2"] + NEW_HOSTS:
        r = system_lua(version, IDLE_PROBE + RESETS, ["watch=on"], smp=2)
        resets = re.search(r"^resets (\d+)$", r.log, re.M)
        assert r.status == 33 and resets and int(resets.group(1)) >= 10, (
            f"{version}: the guest ran under repeated qemu.retranslate()\n{r}")
        counts = {int(v): (int(i), int(s)) for v, i, s in
                  re.findall(r"^vcpu (\d+) idle (\d+) resume (\d+)$", r.log, re.M)}
        assert "bad 0" in r.log and counts.get(1, (0, 0))[0] >= 1, (
            f"{version}: idle/resume alternate per vCPU across resets\n{r}")
        assert all(i - s in (0, 1) for i, s in counts.values()), f"{version}: pairs\n{r}"


@pytest.mark.parametrize("version", NEW_HOSTS)
def test_registers_memory_and_access_values_on_qemu_10(version):
    r = system_qemu(version, ["script=" + script("regs.lua")])
    assert r.status == 33, f"run\n{r}"
    assert (f"regs: n={LOOPS} sum={LOOPS * (LOOPS + 1) // 2} loads={LOOPS} matches={LOOPS} rip=true"
            in r.log), f"ecx counts down from LOOPS; loads read back the stored values\n{r}"
    assert "regs: queued values agree" in r.log, f"a queued on_mem's recorded values\n{r}"
    r = system_lua(version, "qemu.print(pcall(qemu.reg, 'rip'))\n"
                   "qemu.print(pcall(qemu.read_memory, 0, 4))")
    assert r.log.count("works only inside a vCPU callback") == 2, f"reads outside callbacks\n{r}"
    r = system_lua(version, "local said = 0\n"
                   "local function probe() if said == 0 then said = 1; qemu.print(pcall(qemu.read_memory, 0, 4)) end end\n"
                   "qemu.on_translate(function(tb) tb:on_exec(probe) end)")
    assert "this callback is queued" in r.log and "{ sync = true }" in r.log, (
        f"a queued callback is told how to read memory of the moment\n{r}")


TIME_PROBE = """
qemu.time_control()
local blocks, t = qemu.counter(), 0
local function tick() t = t + 1000; qemu.set_time(t) end
qemu.on_translate(function(tb) tb:count(blocks); tb:on_exec(tick, nil, { sync = true }) end)
qemu.on_exit(function() qemu.printf("time %d blocks %d\\n", t, blocks:sum()) end)
"""


@pytest.mark.parametrize("version", NEW_HOSTS)
def test_time_control_lets_the_script_drive_the_guest_clock_on_qemu_10(version):
    r = system_lua(version, TIME_PROBE)
    m = re.search(r"^time (\d+) blocks (\d+)$", r.log, re.M)
    assert r.status == 33 and m and int(m.group(1)) == 1000 * int(m.group(2)) > 0, (
        f"the guest ran with its clock moved by the script\n{r}")


@pytest.mark.exits_qemu
def test_time_control_on_qemu_7_2_names_the_missing_feature():
    r = system_lua("7.2", TIME_PROBE)
    assert (r.status == 1 and "needs the 'time_control' feature" in r.err and
            "QEMU 9.1 in system mode" in r.err), f"clear error on 7.2\n{r}"


@pytest.mark.exits_qemu
def test_registers_on_qemu_7_2_name_the_missing_feature():
    r = system_qemu("7.2", ["script=" + script("regs.lua")])
    assert (r.status == 1 and "needs the 'registers' feature, which this QEMU (plugin API 1) lacks: "
            "it comes with QEMU 9.0" in r.err and "regs.lua:" in r.err), f"clear error\n{r}"


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
    end, nil, OPTS)
  end
end)
qemu.print(qemu.info.mode, qemu.info.smp_vcpus, qemu.has("hwaddr"), qemu.has("syscalls"),
  pcall(qemu.on_syscall, print))
"""


@pytest.mark.parametrize("opts", ["{ phys = true }", "{ sync = true }"])
def test_system_mode_accesses_carry_physical_address_and_device(opts):
    """Queued (recorded at the access with { phys = true }) and synchronous alike."""
    for version in ["7.2"] + NEW_HOSTS:
        r = system_lua(version, ACCESS_PROBE.replace("OPTS", opts), smp=2)
        lines = r.log.splitlines()
        assert r.status == 33 and len(lines) == 3, f"{version}: run\n{r}"
        assert (lines[0].startswith("system\t2\ttrue\tfalse\tfalse\t") and
                "exist only in user mode" in lines[0]), f"{version}: info and has\n{r}"
        assert lines[1] == "w size=4 phys=0x1000 io=false device=RAM vaddr=0x1000", (
            f"{version}: store\n{r}")
        assert lines[2] == "r size=4 phys=0x1000 io=false device=RAM vaddr=0x1000", (
            f"{version}: load\n{r}")


@pytest.mark.exits_qemu
def test_a_queued_access_without_phys_names_the_option_that_records_it():
    r = system_lua("7.2", ACCESS_PROBE.replace("OPTS", "nil"), smp=1)
    assert r.status == 1 and ("access.phys: this on_mem callback is queued (delivered after the "
                              "access) and was registered without { phys = true }") in r.err, r
    assert "{ sync = true }" in r.err and ".lua:8: access.phys" in r.err, r


# insn:on_mem's io filter, in C: the boot guest's accesses all go to RAM, so io="skip" delivers
# every one of them (as many as a native counter counts) and io="only" none, queued or not.
IO_FILTER = """
local all = qemu.counter()
local n = { skip = 0, only = 0, skip_sync = 0, only_sync = 0 }
local function counter_of(name) return function() n[name] = n[name] + 1 end end
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:count_mem(all)
    insn:on_mem(counter_of("skip"), nil, { io = "skip" })
    insn:on_mem(counter_of("only"), nil, { io = "only", phys = true })
    insn:on_mem(counter_of("skip_sync"), nil, { io = "skip", sync = true })
    insn:on_mem(counter_of("only_sync"), nil, { io = "only", sync = true })
  end
end)
qemu.on_exit(function()
  qemu.printf("io: all=%d skip=%d only=%d skip_sync=%d only_sync=%d\\n", all:sum(), n.skip, n.only,
    n.skip_sync, n.only_sync)
end)
"""


@pytest.mark.parametrize("version", ["7.2", "10.2"])
def test_on_mem_io_filter_keeps_ram_accesses_out_of_io_only(version):
    r = system_lua(version, IO_FILTER)
    f = fields(r.log, "io")
    assert (int(f["all"]) == 2 * LOOPS and f["skip"] == f["skip_sync"] == f["all"]
            and f["only"] == f["only_sync"] == "0"), f"{f}\n{r}"
