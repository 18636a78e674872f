"""How the Linux guest (make-guest.py beside this file) boots under qemu-system-x86_64: the kernel
command line and QEMU's options. Shared by tests/linux_guest.py and bench/run.py; plain Python
(no pytest), so the bench can import it."""
import os
import subprocess
import sys

BUILDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-guest.py")

# The kernel command line. Beyond the console on the serial port, quiet (no boot log: the output is
# what init prints) and panic=-1 (a panic reboots at once, and -no-reboot ends QEMU), each word
# makes the boot shorter or steadier, measured under TCG with Debian's 6.1 kernel (instructions
# from the kernel's entry to poweroff): cryptomgr.notests skips the crypto self-tests (their RSA
# vectors were 870 of 1520 million), rodata=off the W+X scan of the page tables (130 million);
# nokaslr puts the kernel at the same addresses every boot.
KERNEL_ARGS = ("console=ttyS0", "quiet", "panic=-1", "nokaslr", "cryptomgr.notests", "rodata=off")

# Guest time that follows the instructions (8 ns each), not the host's clock, for boots that a
# script slows down: otherwise the slower the run, the more timer ticks the kernel handles (a
# boot under hotpages.lua made 246 million memory accesses instead of 195). One vCPU at a time.
ICOUNT = ("-icount", "shift=3,sleep=off")


def build(outdir, env=None):
    """Builds the guest in outdir (nothing when it is up to date): (status, kernel, initrd,
    message). status 0: built; 3: a package is missing (message says which); else a failure."""
    p = subprocess.run([sys.executable, BUILDER, outdir], capture_output=True, text=True,
                       timeout=300, env=env)
    paths = p.stdout.split()
    if p.returncode == 0 and len(paths) == 2:
        return 0, paths[0], paths[1], ""
    return p.returncode or 1, None, None, p.stderr.strip()


def qemu_options(kernel, initrd, smp=1, kernel_args=(), command=None):
    """QEMU's options booting the guest on `smp` vCPUs, the serial port on stdout; init runs
    `command` (a shell line without double quotes; None: its default)."""
    append = list(KERNEL_ARGS) + list(kernel_args)
    if command is not None:
        assert '"' not in command, "the kernel command line cannot quote a double quote"
        append.append(f'qlua.run="{command}"')
    return ["-accel", "tcg", "-smp", str(smp), "-m", "256M", "-nodefaults", "-display", "none",
            "-monitor", "none", "-serial", "stdio", "-no-reboot", "-kernel", kernel, "-initrd",
            initrd, "-append", " ".join(append)]
