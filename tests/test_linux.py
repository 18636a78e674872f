"""A whole operating system under qlua: the host's Debian kernel boots a busybox initramfs whose
init runs one command and powers off (tests/linux_guest.py, tests/guests/linux/). count.lua must
agree with the oracle on every QEMU and vCPU count, the report scripts must cope with a real
kernel, and neither a panic nor a hung guest may hang a test."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from linux_guest import (BUILDER, DEFAULT_OUTPUT, ICOUNT, MARKER, QEMU_SYSTEM, guest_files,
                         linux_qemu, powered_off)
from qemu_run import env_without_preload, expect_equal_counts, fields, lua_file
from test_scripts_hot import hotblocks, hotpages

pytestmark = pytest.mark.user_host_independent  # system mode only, each test naming its QEMU


def report_host():
    """The QEMU the report scripts boot on: 10.2 when present, else Debian's 7.2."""
    return "10.2" if os.path.exists(QEMU_SYSTEM["10.2"]) else "7.2"


def booted(run):
    """powered_off(), and init's default command printed the checksum the host computes."""
    powered_off(run)
    assert DEFAULT_OUTPUT + "\n" in run.out, f"the guest's sha256sum of 1..20000\n{run}"
    return run


# ---- count.lua against the oracle ----

@pytest.mark.parametrize("smp", [1, 2])
@pytest.mark.parametrize("version", ["7.2", "10.0", "10.2"])
def test_count_equals_the_oracle_over_a_linux_boot(version, smp, tmp_path):
    # one vCPU: inline adds (7.2) or scoreboards (10.x); two: per-vCPU callbacks on 7.2
    r = booted(linux_qemu(version, ["script=count"], tmp_path, smp=smp, oracle=True))
    m = re.search(r"^insns: (\d+)$", r.log, re.M)
    assert m, f"count.lua's line\n{r}"
    expect_equal_counts(r, {"insns": m.group(1)}, ["insns"])
    # firmware and init alone are a few dozen million; the kernel's boot is hundreds
    assert int(m.group(1)) > 200_000_000, f"a whole kernel boot was counted\n{r}"


# ---- the report scripts on a real kernel ----

# hotpages and hwprofile call Lua at each of the boot's ~200 million memory accesses: 100 and 40 s
# in the plain builds, more than 60 under ASan (225 and 67 s), so the sanitizer build skips them.
costly_under_asan = pytest.mark.skipif(bool(os.environ.get("QLUA_SANITIZED")), reason=(
    "Lua at every memory access of a Linux boot takes minutes under ASan"))

KERNEL_HALF = 0xffff800000000000  # x86_64 kernel addresses; below 4 GiB: firmware and busybox


def test_hotblocks_ranks_the_blocks_of_a_linux_boot(tmp_path):
    r = booted(linux_qemu(report_host(), ["script=hotblocks"], tmp_path, qemu_args=ICOUNT))
    n, rows = hotblocks(r)  # the header lines, 20 rows ranked by ecount
    assert n > 10_000 and len(rows) == 20, f"a kernel translates tens of thousands of blocks\n{r}"
    for pc, tcount, icount, ecount in rows:
        assert pc >= KERNEL_HALF or pc < 1 << 32, f"pc {pc:#x}: kernel, firmware or busybox\n{r}"
        assert tcount >= 1 and icount >= 1 and ecount > 10_000, f"a hot block's counts\n{r}"
    assert sum(pc >= KERNEL_HALF for pc, _, _, _ in rows) >= 10, f"the kernel's blocks lead\n{r}"


@costly_under_asan
def test_hotpages_ranks_the_physical_pages_of_a_linux_boot(tmp_path):
    r = booted(linux_qemu(report_host(), ["script=hotpages"], tmp_path, qemu_args=ICOUNT))
    rows = hotpages(r)  # the header line, at most 50 rows
    assert len(rows) == 50, f"a kernel touches more than 50 pages\n{r}"
    for addr, rcpus, reads, wcpus, writes in rows:
        assert addr % 4096 == 0 and addr < 256 << 20, f"a page of the 256 MiB of RAM\n{r}"
        assert rcpus in (0, 1) and wcpus in (0, 1), f"one vCPU: masks 0 or 1\n{r}"
        assert (rcpus == 1) == (reads > 0) and (wcpus == 1) == (writes > 0), f"masks\n{r}"
    totals = [reads + writes for _, _, reads, _, writes in rows]
    assert totals == sorted(totals, reverse=True) and totals[0] > 1_000_000, (
        f"ranked by accesses, the hottest page has millions\n{r}")


# QEMU 10.2 reports no memory-mapped I/O to plugins: every access, the local APIC's and the
# IOAPIC's included, comes with is_io false and the device "RAM" (its own libhwprofile.so prints
# only the header as well), so hwprofile boots on Debian's 7.2, where the kernel's APIC and IOAPIC
# accesses show.
@costly_under_asan
def test_hwprofile_lists_the_devices_a_linux_boot_programs(tmp_path):
    r = booted(linux_qemu("7.2", ["script=hwprofile"], tmp_path, qemu_args=ICOUNT))
    lines = r.log.splitlines()
    assert lines[0] == "Device, Address, RCPUs, Reads,  WCPUs, Writes", f"header\n{r}"
    devices = {}
    for line in lines[1:]:
        m = re.fullmatch(r"(\S+), 0x([0-9a-f]+), ([0-9a-f]+), (\d+), ([0-9a-f]+), (\d+)", line)
        assert m, f"malformed device line {line!r}\n{r}"
        devices[m.group(1)] = (int(m.group(3), 16), int(m.group(4)), int(m.group(5), 16),
                               int(m.group(6)))
    assert "ioapic" in devices and "apic-msi" in devices, f"the kernel programs both APICs\n{r}"
    for name, (rcpus, reads, wcpus, writes) in devices.items():
        assert reads + writes > 0 and rcpus in (0, 1) and wcpus in (0, 1), f"{name}\n{r}"
    totals = [reads + writes for _, reads, _, writes in devices.values()]
    assert totals == sorted(totals, reverse=True), f"devices ranked by accesses\n{r}"


# insn:on_mem(fn, nil, { io = "only" }) delivers the boot's device accesses and nothing else:
# C leaves out the ~200 million RAM accesses, so the boot runs no Lua for them. Checked against
# a natively fed tally of the same accesses (insn:tally_mem's io="only") in the same run.
IO_ONLY = """
local t = qemu.tally()
local n, not_io, ram = 0, 0, 0
local function on_io(vcpu, access)
  n = n + 1
  if not access.io then not_io = not_io + 1 end
  if access.device == "RAM" then ram = ram + 1 end
end
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:on_mem(on_io, nil, { io = "only", phys = true })
    -- keys rounded down to 2^62 (device accesses are counted by virtual address, which
    -- LuaJIT's numbers hold inexactly in the kernel's half): the counts add up to the total
    insn:tally_mem(t, { io = "only", align = 2^62 })
  end
end)
qemu.on_exit(function()
  local fed = 0
  for _, c in pairs(t:items()) do fed = fed + c end
  qemu.printf("io: n=%d fed=%d not_io=%d ram=%d\\n", n, fed, not_io, ram)
end)
"""


def test_on_mem_io_only_delivers_the_device_accesses_of_a_linux_boot(tmp_path):
    path = lua_file(IO_ONLY)
    try:
        r = booted(linux_qemu("7.2", ["script=" + path], tmp_path, qemu_args=ICOUNT))
    finally:
        os.unlink(path)
    f = fields(r.log, "io")
    assert (int(f["n"]) > 100 and f["n"] == f["fed"] and f["not_io"] == "0" and f["ram"] == "0"), (
        f"{f}\n{r}")


# ---- the guest itself, and what must not hang ----

def test_init_runs_the_command_from_the_kernel_command_line(tmp_path):
    command = "echo guest says hi; grep -c ^processor /proc/cpuinfo; false"
    r = powered_off(linux_qemu("7.2", ["script=count"], tmp_path, command=command, smp=2),
                    status=1)  # the command's status: false's
    assert "guest says hi\n2\n" in r.out and DEFAULT_OUTPUT not in r.out, (
        f"the given command ran instead of the default, on 2 vCPUs\n{r}")
    assert re.search(r"^insns: \d+$", r.log, re.M), f"count.lua reported at poweroff\n{r}"


def test_a_kernel_panic_ends_the_run_at_once(tmp_path):
    # no init to start: the kernel panics, panic=-1 reboots, -no-reboot ends QEMU
    start = time.monotonic()
    r = linux_qemu("7.2", ["script=count"], tmp_path, kernel_args=["rdinit=/none", "init=/none"],
                   timeout=120)
    assert r.status == 0 and "Kernel panic" in r.out and MARKER not in r.out, (
        f"the panic is on the console, and init never ran\n{r}")
    assert re.search(r"^insns: \d+$", r.log, re.M), f"count.lua reported at the reset\n{r}"
    assert time.monotonic() - start < 100, "the reboot after the panic ended QEMU"


def test_a_guest_that_never_powers_off_is_killed_after_the_timeout(tmp_path):
    # killed at 10 s whether the boot has reached the sleep by then or not
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"QEMU still ran after 10 s \(the guest hung"):
        linux_qemu("7.2", ["script=count"], tmp_path, command="sleep 100000", timeout=10)
    assert time.monotonic() - start < 25, "killed at the timeout"


# ---- the builder ----

def make_guest(*args):
    return subprocess.run([sys.executable, BUILDER] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=300, env=env_without_preload())


def test_make_guest_rebuilds_only_when_an_input_changes(tmp_path):
    kernel, initrd = guest_files()  # also skips without a kernel or busybox
    busybox = tmp_path / "busybox"
    shutil.copy("/bin/busybox", busybox)
    out = tmp_path / "guest"
    first = make_guest(out, "--busybox", busybox)
    assert first.returncode == 0 and "built" in first.stderr, f"first build\n{first.stderr}"
    assert first.stdout.split() == [str(out / "kernel"), str(out / "initramfs.cpio.gz")]
    assert os.path.getsize(out / "kernel") == os.path.getsize(kernel), "the same unpacked kernel"
    before = os.stat(out / "initramfs.cpio.gz").st_mtime_ns
    again = make_guest(out, "--busybox", busybox)
    assert again.returncode == 0 and "is up to date" in again.stderr, f"no change\n{again.stderr}"
    assert os.stat(out / "initramfs.cpio.gz").st_mtime_ns == before, "nothing rewritten"
    os.utime(busybox, ns=(before + 10**9, before + 10**9))  # a new busybox (its date, here)
    third = make_guest(out, "--busybox", busybox)
    assert third.returncode == 0 and "built" in third.stderr, f"rebuilt\n{third.stderr}"
    with open(out / "initramfs.cpio.gz", "rb") as f, open(initrd, "rb") as g:
        assert f.read() == g.read(), "the same inputs give the same initramfs, byte for byte"
    shutil.rmtree(out)  # 66 MB of kernel that pytest would keep for three sessions


def test_make_guest_names_what_is_missing_or_wrong(tmp_path):
    r = make_guest(tmp_path / "g", "--busybox", tmp_path / "nothing")
    assert r.returncode == 3 and f"busybox {tmp_path}/nothing: not found: install " \
        "linux-image-amd64 and busybox-static: tools/setup-debian.sh --test" in r.stderr, r.stderr
    r = make_guest(tmp_path / "g", "--kernel", tmp_path / "vmlinuz")
    assert r.returncode == 3 and f"kernel {tmp_path}/vmlinuz: not found" in r.stderr, r.stderr
    if not os.path.exists("/bin/busybox"):
        pytest.skip("no /bin/busybox: install busybox-static (tools/setup-debian.sh --test)")
    r = make_guest(tmp_path / "g", "--busybox", "/bin/ls")
    assert r.returncode == 3 and "busybox /bin/ls: dynamically linked" in r.stderr, r.stderr
    r = make_guest(tmp_path / "g", "--kernel", "/bin/busybox")
    assert (r.returncode == 1 and "kernel /bin/busybox: not a Linux bzImage" in r.stderr), r.stderr
    (tmp_path / "file").write_text("")
    r = make_guest(tmp_path / "file" / "g")
    if r.returncode == 3:
        pytest.skip(r.stderr.strip())  # no kernel installed
    assert (r.returncode == 1 and f"cannot write the guest to {tmp_path}/file/g: Not a directory"
            in r.stderr), r.stderr
    for args in ([], ["a", "b"], ["a", "--kernel"], ["a", "--bogus", "x"]):
        r = make_guest(*args)
        assert r.returncode == 2 and "usage: make-guest.py OUTDIR" in r.stderr, (args, r.stderr)
