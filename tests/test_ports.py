"""Ports of what QEMU 10.2 added (scripts/traps.lua, scripts/patch.lua, scripts/ips.lua, and the
discontinuity check tests/scripts/discons.lua) against QEMU 10.2's own plugins (libtraps.so,
libpatch.so, libips.so, libdiscons.so): byte for byte in separate runs where the output is
deterministic, in the same run where it depends on timing. Guests: tests/guests/bare/traps.S
(exceptions and timer interrupts), patch.S (a function copied to RAM and called three times),
clock.S (the guest time a loop takes), and the Linux boot of linux_guest.py."""
import os
import re
import shutil
import tempfile
import time

import pytest

from qemu_run import (PLUGIN, QEMU_10_2_USER, QEMU_SYSTEM, _run, guest, machine_args,
                      qemu_10_2_plugin, script)

pytestmark = pytest.mark.user_host_independent

# tests/guests/bare/traps.S: BREAKS + UDS + DIVS + SWINTS exceptions, TICKS timer interrupts;
# QEMU 10.2 reports each x86 exception twice (an exception, then an interrupt at delivery)
EXCEPTIONS, TICKS = 3 + 2 + 1 + 4, 5
TRAPS_ROW_0 = f"   0, {TICKS + EXCEPTIONS:10d}, {EXCEPTIONS:10d},          0\n"
HEADER = "VCPU, interrupts, exceptions, hostcalls\n"
# tests/guests/bare/patch.S: status (sum << 1) | 1 of three calls of a function returning 1
UNPATCHED, PATCHED = 7, 11
RAM_TARGET, RAM_PATCH = "66b801005a5a", "66b802005a5a"  # movl $0x5a5a0001 -> $0x5a5a0002, %eax
ROM_TARGET, ROM_PATCH = "88d8", "b00c"  # mov %bl, %al -> mov $12, %al, in the BIOS ROM


def image(name):
    """A bare-metal image of tests/guests/bare/ from the build; skips when it was not built."""
    path = guest(name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not built (tests/meson.build assembles tests/guests/bare/*.S)")
    return path


def run_plugins(plugins, image_name, version="10.2", smp=1, timeout=120):
    """Boots a bare-metal image on QEMU `version` with the -plugin values given, nothing else."""
    binary = shutil.which(QEMU_SYSTEM[version])
    if not binary:
        pytest.skip(f"QEMU {version} not found at {binary}")
    cmd = [binary, "-smp", str(smp)] + machine_args(image(image_name))
    if version == "10.0":
        cmd += ["-L", os.path.join(os.path.dirname(binary), "..", "share", "qemu")]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "plugin.log")
        for p in plugins:
            cmd += ["-plugin", p]
        return _run(cmd + ["-d", "plugin", "-D", log], log, timeout)


def qlua(name, *args):
    """The -plugin value running scripts/NAME.lua (or a tests/scripts path) with key=values."""
    return ",".join([PLUGIN, "script=" + name] + list(args))


def c_plugin(name, *args):
    return ",".join([qemu_10_2_plugin(name)] + list(args))


# ---- traps.lua ----

@pytest.mark.parametrize("smp", [1, 2])
def test_traps_prints_what_libtraps_prints_for_exceptions_and_timer_interrupts(smp):
    mine = run_plugins([qlua("traps")], "traps.bin", smp=smp)
    theirs = run_plugins([c_plugin("traps")], "traps.bin", smp=smp)
    assert mine.status == theirs.status == 33, f"the guest checks its own counts\n{mine}\n{theirs}"
    assert mine.log == theirs.log, f"byte for byte\n--- qlua\n{mine.log}--- libtraps\n{theirs.log}"
    rows = [HEADER, TRAPS_ROW_0] + ["   1,          0,          0,          0\n"] * (smp - 1)
    assert mine.log == "".join(rows), f"{EXCEPTIONS} exceptions, {TICKS} ticks on vCPU 0\n{mine}"


def test_traps_and_libtraps_in_one_run_agree():
    r = run_plugins([qlua("traps"), c_plugin("traps")], "traps.bin", smp=2)
    tables = re.findall(r"^VCPU, interrupts.*\n(?:^ +\d+,.*\n)+", r.log, re.M)
    assert r.status == 33 and len(tables) == 2 and tables[0] == tables[1], f"{r}"


def test_traps_in_user_mode_says_qemu_reports_nothing_there_and_prints_zeros():
    if not os.path.exists(QEMU_10_2_USER):
        pytest.skip(f"QEMU 10.2 not found at {QEMU_10_2_USER}")
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "plugin.log")
        runs = [_run([QEMU_10_2_USER, "-plugin", p, "-d", "plugin", "-D", log, guest("loop"), "3"],
                     log, 60) for p in (qlua("traps"), c_plugin("traps"))]
    mine, theirs = runs
    assert mine.status == theirs.status == 0, f"{mine}\n{theirs}"
    note = "Note: interrupts are only reported in system emulation mode."
    # the one difference: qlua ends the note with a newline, QEMU runs it into the header
    assert theirs.log.startswith(note + "VCPU"), f"{theirs}"
    assert mine.log == theirs.log.replace(note, note + "\n"), f"{mine}\n{theirs}"
    zeros = "   0,          0,          0,          0\n"
    assert mine.log == note + "\n" + HEADER + zeros, f"{mine}"


@pytest.mark.exits_qemu
@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_traps_refuses_a_qemu_without_discontinuity_events_naming_the_feature(version):
    r = run_plugins([qlua("traps")], "traps.bin", version=version)
    assert r.status == 1 and "traps.lua needs the 'discon' feature" in r.err and (
        "QEMU 10.2" in r.err), f"{version}\n{r}"


@pytest.mark.exits_qemu
def test_traps_refuses_arguments():
    r = run_plugins([qlua("traps", "verbose=on")], "traps.bin")
    assert r.status == 1, f"{r}"
    assert "traps.lua: unknown argument 'verbose'; accepted: none" in r.err, f"{r}"


# ---- patch.lua ----

PATCH_CASES = [
    # (target, patch, use_hwaddr, the guest's exit status)
    (RAM_TARGET, RAM_PATCH, "true", PATCHED),    # RAM: written, translated again, returns 2
    (RAM_TARGET, RAM_PATCH, "false", PATCHED),
    (ROM_TARGET, ROM_PATCH, "true", UNPATCHED),  # ROM: QEMU refuses the physical write (4)
    (ROM_TARGET, ROM_PATCH, "false", UNPATCHED), # ROM: the debug write lands, the old code runs
    ("0f0b", "9090", "true", UNPATCHED),         # no ud2 in the guest: nothing to patch
]


@pytest.mark.parametrize("target,patch,hwaddr,status", PATCH_CASES)
def test_patch_writes_and_says_what_libpatch_does(target, patch, hwaddr, status):
    args = [f"target={target}", f"patch={patch}", f"use_hwaddr={hwaddr}"]
    mine = run_plugins([qlua("patch", *args)], "patch.bin")
    theirs = run_plugins([c_plugin("patch", *args)], "patch.bin")
    assert mine.status == theirs.status == status, f"{mine}\n{theirs}"
    assert mine.log == theirs.log, f"byte for byte\n--- qlua\n{mine.log}--- libpatch\n{theirs.log}"


def test_patch_messages_are_the_expected_ones():
    r = run_plugins([qlua("patch", f"target={RAM_TARGET}", f"patch={RAM_PATCH}")], "patch.bin")
    assert r.log == "patching: @0x2000\nReading memory...\nSuccess!\n", f"once, at 0x2000\n{r}"
    r = run_plugins([qlua("patch", f"target={ROM_TARGET}", f"patch={ROM_PATCH}")], "patch.bin")
    assert r.log == "patching: @0xf0029\nFailed to write memory: 4\n", f"ROM: invalid address\n{r}"
    r = run_plugins([qlua("patch", f"target={RAM_TARGET}", f"patch={RAM_PATCH}",
                          "use_hwaddr=off")], "patch.bin")
    assert r.log == ("patching: @0x2000 hw: @0x2000\nWriting memory (vaddr)...\n"
                     "Reading memory (vaddr)...\nSuccess!\n"), f"{r}"


PATCH_HOSTILE = [
    (["target=abc", "patch=abc"], "target=abc: an odd number of hex digits (3)"),
    (["target=9z", "patch=90"], "target=9z: 'z' at position 2 is not a hex digit (0-9, a-f, A-F)"),
    (["target=90", "patch=0x"], "patch=0x: 'x' at position 2 is not a hex digit"),
    (["target=", "patch=90"], "target=: no bytes; expected two hex digits per byte, e.g. "
                              "target=66b801005a5a"),
    (["target=9090", "patch=90"], "target= is 2 bytes (9090) and patch= is 1 (90): they must be "
                                  "the same length"),
    (["patch=90"], "patch.lua: argument 'target' is required"),
    (["target=90"], "patch.lua: argument 'patch' is required"),
    (["target=90", "patch=90", "use_hwaddr=maybe"],
     "use_hwaddr=maybe: expected a boolean (on, off, yes, no, true, false, y, n)"),
    (["target=90", "patch=90", "addr=5"],
     "patch.lua: unknown argument 'addr'; accepted: target, patch, use_hwaddr"),
]


@pytest.mark.exits_qemu
@pytest.mark.parametrize("args,message", PATCH_HOSTILE)
def test_patch_refuses_bad_arguments_saying_what_it_takes(args, message):
    r = run_plugins([qlua("patch", *args)], "patch.bin")
    assert r.status == 1 and message in r.err, f"{message}\n{r}"


@pytest.mark.exits_qemu
@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_patch_refuses_a_qemu_without_physical_writes_naming_the_feature(version):
    r = run_plugins([qlua("patch", "target=90", "patch=90")], "patch.bin", version=version)
    assert r.status == 1 and "patch.lua needs the 'translate' feature" in r.err and (
        "QEMU 10.1" in r.err), f"{version}\n{r}"


# ---- ips.lua ----

# tests/guests/bare/clock.S runs CLOCK_INSNS instructions and exits with status (units << 1) | 1,
# units = the guest time they took (read from the HPET) in CLOCK_UNIT seconds
CLOCK_INSNS, CLOCK_UNIT = 2 * 100000, 0.020


def guest_time(plugins, version="10.2"):
    """Boots clock.bin with the plugins: the guest time its loop took, in seconds, and the run."""
    r = run_plugins(plugins, "clock.bin", version=version)
    assert r.status % 2 == 1 and r.status > 0, f"the guest exits through isa-debug-exit\n{r}"
    return (r.status >> 1) * CLOCK_UNIT, r


@pytest.mark.parametrize("version", ["10.2", "10.0"])
def test_ips_runs_the_guest_at_the_rate_it_is_given(version):
    # At ips=N the guest's clock advances 1/N s per instruction it runs, whatever the host's
    # speed: the loop of 200000 instructions takes 2 s of guest time at 100k, 0.4 s at 500k, as
    # the guest measures with its HPET (unpaced it takes a few ms). The guest time set is that of
    # the quanta completed (each ips/10 instructions), so a run reads up to one quantum less.
    unpaced, r = guest_time([], version=version)
    assert unpaced < 0.1, f"the loop alone takes a few ms\n{r}"
    for rate, ips in (("100k", 100000), ("500k", 500000)):
        seconds, r = guest_time([qlua("ips", f"ips={rate}")], version=version)
        expected, quantum = CLOCK_INSNS / ips, 0.1
        assert expected - quantum - 0.05 <= seconds <= expected * 1.2 + 0.05, (
            f"ips={rate}: {seconds:.2f} s of guest time, expected {expected:.2f} s\n{r}")


def test_ips_gives_the_guest_the_time_libips_gives_it():
    for rate in ("100k", "500k"):
        mine, r = guest_time([qlua("ips", f"ips={rate}")])
        theirs, c = guest_time([c_plugin("ips", f"ips={rate}")])
        assert abs(mine - theirs) <= 0.15 * theirs + 0.1, (
            f"ips={rate}: qlua {mine:.2f} s, libips {theirs:.2f} s\n{r}\n{c}")


def test_ips_makes_the_run_last_at_least_its_guest_time():
    start = time.monotonic()
    seconds, r = guest_time([qlua("ips", "ips=100k")])
    wall = time.monotonic() - start
    assert wall >= seconds >= 1.5, f"{seconds:.2f} s of guest time in {wall:.2f} s\n{r}"


IPS_HOSTILE = [
    ("ips=0", "ips.lua: ips=0: expected at least 10 instructions per second (the guest clock "
              "moves every ips/10 instructions)"),
    ("ips=9", "ips.lua: ips=9: expected at least 10 instructions per second"),
    ("ips=-5", "ips.lua: ips=-5: expected a whole number of instructions per second, optionally "
               "with k, m or g (x1000, x1000000, x1000000000)"),
    ("ips=1.5m", "ips.lua: ips=1.5m: expected a whole number of instructions per second"),
    ("ips=", "ips.lua: ips=: expected a whole number of instructions per second"),
    ("ips=10x", "ips.lua: ips=10x: unknown suffix 'x' (k, m, g)"),
    ("rate=5", "ips.lua: unknown argument 'rate'; accepted: ips"),
]


@pytest.mark.exits_qemu
@pytest.mark.parametrize("arg,message", IPS_HOSTILE)
def test_ips_refuses_bad_rates_saying_what_it_takes(arg, message):
    r = run_plugins([qlua("ips", arg)], "clock.bin")
    assert r.status == 1 and message in r.err, f"{message}\n{r}"


@pytest.mark.exits_qemu
def test_ips_refuses_qemu_7_2_naming_the_feature():
    r = run_plugins([qlua("ips", "ips=1m")], "clock.bin", version="7.2")
    assert r.status == 1 and "ips.lua needs the 'time_control' feature" in r.err and (
        "QEMU 9.1 in system mode" in r.err), f"{r}"


@pytest.mark.exits_qemu
def test_ips_refuses_when_another_plugin_controls_time():
    r = run_plugins([c_plugin("ips"), qlua("ips", "ips=1m")], "clock.bin")
    assert r.status == 1 and "another plugin already controls time" in r.err, f"{r}"


# ---- the discontinuity check (tests/scripts/discons.lua) ----

REPORT = re.compile(r"^Discon \w+ PC mismatch on VCPU \d+\n(?:^\w[\w ]*: +\S+\n){4}", re.M)


def test_discons_check_finds_what_libdiscons_finds_in_the_same_run():
    # QEMU 10.2 reports the #DE of traps.S's div from the start of the div's block, not from the
    # div: libdiscons reports it (twice: as the source of the exception, and of the interrupt
    # that follows it without an instruction between); the Lua check must report the same.
    with tempfile.TemporaryDirectory() as tmp:
        mine = os.path.join(tmp, "mine.txt")
        r = run_plugins([qlua(script("discons.lua"), "abort=off", "out=" + mine),
                         c_plugin("discons", "abort=off")], "traps.bin", smp=2)
        reports = open(mine).read()
    summary = re.search(r"^discons: events=(\d+) insns=(\d+) mismatches=(\d+)$", r.log, re.M)
    assert r.status == 33 and summary, f"{r}"
    events, insns, mismatches = map(int, summary.groups())
    assert events == 2 * EXCEPTIONS + TICKS and insns > 0, f"{r}"
    assert "".join(REPORT.findall(r.log)) == r.log[:summary.start()], f"only reports\n{r}"
    assert reports == r.log[:summary.start()], f"--- qlua\n{reports}--- libdiscons\n{r.log}"
    assert len(REPORT.findall(reports)) == mismatches == 2, f"{reports}"
    assert "Event type:    exception" in reports and "Event type:    interrupt" in reports


def test_discons_check_stops_at_the_first_mismatch_as_libdiscons_aborts():
    mine = run_plugins([qlua(script("discons.lua"))], "traps.bin")
    theirs = run_plugins([c_plugin("discons")], "traps.bin")
    assert mine.status == 1 and theirs.status != 0, f"{mine}\n{theirs}"
    first = REPORT.search(theirs.err)
    assert first and first.group(0) in mine.err, f"the same first report\n{mine}\n{theirs}"


def test_discons_check_sees_nothing_on_a_guest_without_traps():
    r = run_plugins([qlua(script("discons.lua"))], "boot.bin")
    assert r.status == 33 and re.search(r"^discons: events=0 insns=\d+ mismatches=0$", r.log,
                                        re.M), f"{r}"


# ---- traps.lua on a Linux boot ----

def test_traps_counts_what_libtraps_counts_on_a_linux_boot_in_the_same_run():
    # timer and inter-processor interrupts, page faults and the like: timing-dependent counts, so
    # both plugins watch one boot
    from linux_guest import linux_qemu, powered_off
    with tempfile.TemporaryDirectory() as tmp:
        r = powered_off(linux_qemu("10.2", ["script=traps"], tmp, smp=2,
                                   after=[c_plugin("traps")]))
    tables = re.findall(r"^VCPU, interrupts.*\n(?:^ +\d+,.*\n)+", r.log, re.M)
    assert len(tables) == 2 and tables[0] == tables[1], f"qlua's table, then libtraps'\n{r.log}"
    rows = [[int(x) for x in line.split(",")] for line in tables[0].splitlines()[1:]]
    assert [row[0] for row in rows] == [0, 1], f"a row per vCPU\n{r.log}"
    assert all(row[1] > 0 and row[2] > 0 for row in rows), f"both vCPUs take both\n{r.log}"


def plugin_lua():
    """The Lua the plugin under test embeds (qemu.info.lua), from a run of the bare guest."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.lua")
        with open(probe, "w") as f:
            f.write("qemu.print(qemu.info.lua)\n")
        r = run_plugins([qlua(probe)], "boot.bin")
    assert r.status == 33, f"{r}"
    return r.log.strip()


ADDRESSES = re.compile(r"^(?:Expected|Encountered|Executed Last): +([0-9a-f]+)$", re.M)


def below_2_53(reports):
    """The reports whose addresses are all below 2^53, which LuaJIT's numbers hold exactly."""
    return [r for r in reports if all(int(a, 16) < 2 ** 53 for a in ADDRESSES.findall(r))]


def per_vcpu(reports):
    """{vCPU: its reports in order}."""
    out = {}
    for r in reports:
        out.setdefault(int(re.search(r"on VCPU (\d+)", r).group(1)), []).append(r)
    return out


def test_discons_check_finds_what_libdiscons_finds_on_a_linux_boot():
    # On QEMU 10.2 a fault raised inside a block (page faults of busybox and of the kernel)
    # comes with from_pc at the start of its block: both checks report each such event (and the
    # interrupt of its delivery). Under LuaJIT, kernel addresses (0xffff...) are doubles that
    # lose their low bits, so two of them can compare equal: the reports compared are those whose
    # addresses are all below 2^53 (user space), where the Lua check is exact. About a minute.
    if plugin_lua().startswith("Lua 5"):
        pytest.skip("under Lua 5.4 a tracer builds a table per event: the boot's 600 million "
                    "instructions take several minutes")
    from linux_guest import linux_qemu, powered_off
    with tempfile.TemporaryDirectory() as tmp:
        mine = os.path.join(tmp, "mine.txt")
        r = powered_off(linux_qemu("10.2", ["script=" + script("discons.lua"), "abort=off",
                                            "out=" + mine], tmp, smp=2,
                                   after=[c_plugin("discons", "abort=off")], timeout=600))
        reports = REPORT.findall(open(mine).read())
    summary = re.search(r"^discons: events=(\d+) insns=(\d+) mismatches=(\d+)$", r.log, re.M)
    assert summary and int(summary.group(1)) > 1000, f"{r.log[-2000:]}"
    theirs = REPORT.findall(r.log)
    assert len(reports) == int(summary.group(3)) and len(theirs) >= len(below_2_53(theirs)) > 0
    # each vCPU's reports in its order: with two vCPU threads, qlua's tracer batches of one
    # thread may be written before or after the other's, where libdiscons prints at once
    assert per_vcpu(below_2_53(reports)) == per_vcpu(below_2_53(theirs)), (
        f"qlua: {len(reports)} reports, libdiscons: {len(theirs)}")
