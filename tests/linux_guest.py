"""A whole operating system as a system-mode workload: the host's Debian kernel booting a busybox
initramfs (tests/guests/linux/: make-guest.py builds it, init is its /init) whose init runs one
command, prints a marker line and powers off, under qemu-system-x86_64 with qlua.

The guest is built once per build tree, in GUESTS/linux-guest (QLUA_LINUX_GUEST names another
folder), and again only when the kernel, busybox or the recipe change. A boot that hangs is
killed after a timeout and fails its test; a kernel panic reboots, which -no-reboot turns into
QEMU's exit, so it ends the run at once (without the marker line)."""
import hashlib
import os
import subprocess
import sys

import pytest

from qemu_run import (GUESTS, QEMU_SYSTEM, SRC, Run, env_without_preload, system_binary,
                      system_plugins)

# how the guest boots, shared with bench/run.py (BUILDER and ICOUNT are for the tests)
sys.path.insert(0, os.path.join(SRC, "tests", "guests", "linux"))
from linux_boot import BUILDER, ICOUNT, build, qemu_options  # noqa: E402

GUEST_DIR = os.environ.get("QLUA_LINUX_GUEST") or os.path.join(GUESTS, "linux-guest")

MARKER = "qlua-guest: done status="  # init's last line before poweroff, then the command's status

# init's default command, `seq 1 20000 >/tmp/numbers && sha256sum /tmp/numbers`, prints this
DEFAULT_OUTPUT = (hashlib.sha256("".join(f"{i}\n" for i in range(1, 20001)).encode()).hexdigest()
                  + "  /tmp/numbers")

CRLF, LF = "\r\n", "\n"  # the serial port ends lines in CR LF

# seconds, below meson's 600 so that the test says what hung; the slowest boot, hotpages.lua's (Lua
# at each memory access), takes 140 s on an idle machine here and twice that on a busy one
TIMEOUT = 540


# QEMU boots the unpacked kernel (see make-guest.py) through its PVH entry, which needs the option
# ROM pvh.bin. QEMU 10.2's folder of firmware lacks it; the one of Debian's QEMU
# (qemu-system-data) serves, from a folder of its own given with -L ahead of QEMU's. (Without the
# ROM, QEMU prints an error and waits forever with a guest that never starts.)
DEBIAN_PVH = "/usr/share/qemu/pvh.bin"

_built = None


def guest_files():
    """(kernel, initrd) of the Linux guest, built if needed; skips the test when the host has no
    kernel or no static busybox, fails it when the build fails otherwise."""
    global _built
    if _built is None:
        status, kernel, initrd, message = build(GUEST_DIR, env_without_preload())
        if status == 3:  # a package is missing: the builder says which
            pytest.skip(message)
        assert status == 0, f"building the Linux guest failed:\n{message}"
        _built = (kernel, initrd)
    return _built


def firmware_args(binary, kernel):
    """The -L options QEMU at `binary` needs to boot `kernel`."""
    share = os.path.join(os.path.dirname(binary), "..", "share", "qemu")
    if binary == QEMU_SYSTEM["10.0"]:
        return ["-L", share]  # unpacked from Debian's package: its firmware is not where it looks
    if (binary == QEMU_SYSTEM["10.2"] and not os.path.islink(kernel) and
            not os.path.exists(os.path.join(share, "pvh.bin"))):
        if not os.path.exists(DEBIAN_PVH):
            pytest.skip(f"QEMU 10.2 has no pvh.bin to boot the kernel with, and {DEBIAN_PVH} is "
                        "missing: install qemu-system-x86 (tools/setup-debian.sh --test)")
        roms = os.path.join(GUEST_DIR, "roms")
        os.makedirs(roms, exist_ok=True)
        link = os.path.join(roms, "pvh.bin")
        if not os.path.lexists(link):
            try:
                os.symlink(DEBIAN_PVH, link)
            except FileExistsError:  # a test running beside this one made it
                pass
        return ["-L", roms]
    return []


def linux_command(version, plugin_args, logfile, smp=1, oracle=False, before=(), after=(),
                  command=None, kernel_args=(), qemu_args=()):
    """The qemu-system-x86_64 command line of QEMU `version` ("7.2", "10.0" or "10.2") booting the
    Linux guest on `smp` vCPUs with qlua (plugin_args: list of key=value), the oracle first if
    asked, and other plugins (-plugin values) before or after qlua. init runs `command` (a shell
    line without double quotes; None: its default) and prints to the serial port, which is
    QEMU's stdout. kernel_args are added to KERNEL_ARGS, qemu_args to QEMU's options."""
    if os.environ.get("QLUA_LINUX_BOOTS") == "0":
        # tests/run-all.sh boots Linux in the LuaJIT build only: a boot tests QEMU's system mode
        # and the scripts, the same in every build, and the boots are CI's longest tests
        pytest.skip("QLUA_LINUX_BOOTS=0: the Linux boots run in one build (tests/run-all.sh)")
    binary = system_binary(version)
    kernel, initrd = guest_files()
    cmd = [binary] + qemu_options(kernel, initrd, smp, kernel_args, command)
    cmd += firmware_args(binary, kernel) + list(qemu_args)
    return cmd + system_plugins(plugin_args, logfile, oracle, before, after)


def run_linux(cmd, logfile, timeout=TIMEOUT):
    """Runs a linux_command() line: a Run whose out is the serial console (lines end in \\n).
    A QEMU still running after `timeout` seconds is killed, and the test fails with what it
    printed."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"QEMU still ran after {timeout} s (the guest hung?) and was killed\n"
                    f"{Run(p.returncode, out.replace(CRLF, LF), err, read(logfile))}")
    return Run(p.returncode, out.replace(CRLF, LF), err, read(logfile))


def read(path):
    return open(path).read() if os.path.exists(path) else ""


def linux_qemu(version, plugin_args, tmp, smp=1, oracle=False, before=(), after=(),
               command=None, kernel_args=(), qemu_args=(), timeout=TIMEOUT):
    """Boots the Linux guest with qlua (see linux_command), the plugin log in the folder tmp."""
    logfile = os.path.join(tmp, "plugin.log")
    cmd = linux_command(version, plugin_args, logfile, smp, oracle, before, after, command,
                        kernel_args, qemu_args)
    return run_linux(cmd, logfile, timeout)


def powered_off(run, status=0):
    """Asserts that the guest ran its command to the end (the marker line with `status`) and
    powered off, which ends QEMU with exit status 0; returns the run."""
    assert run.status == 0 and f"{MARKER}{status}\n" in run.out, (
        f"the guest prints '{MARKER}{status}' and powers off\n{run}")
    return run
