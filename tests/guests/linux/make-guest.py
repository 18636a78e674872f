#!/usr/bin/env python3
"""Builds the Linux test guest in OUTDIR: the host's Debian kernel and an initramfs of a static
busybox whose /init (tests/guests/linux/init, beside this file) runs one command and powers off.

  make-guest.py OUTDIR [--kernel PATH] [--busybox PATH]

OUTDIR/initramfs.cpio.gz  gzip'd newc cpio: /init, /bin/busybox and a /bin link per applet,
                          /dev/console, /dev/null, /proc, /sys, /tmp (written by this script:
                          no cpio tool, no root for the device nodes)
OUTDIR/kernel             the kernel to give -kernel: the ELF kernel unpacked from the bzImage
                          (QEMU boots it through its PVH entry point, which skips the kernel's own
                          decompression: a quarter of the instructions of a boot, 4.5 of 6 billion
                          under TCG), or a link to the bzImage when it holds no PVH-bootable ELF
OUTDIR/inputs.json        what the two were made from; a run with the same inputs rebuilds nothing

The kernel defaults to the newest /boot/vmlinuz-*, busybox to /bin/busybox (Debian's
busybox-static; a dynamically linked busybox cannot run in an initramfs without libraries).
Prints the two paths, one per line (kernel first). On failure a message names what was wrong;
the exit status is 3 when a package is missing (no kernel, no busybox, a dynamically linked
busybox: the tests skip then), 1 for any other failure (OUTDIR not writable, a broken kernel
image), 2 for bad usage."""
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
INIT = os.path.join(HERE, "init")
INSTALL = "install linux-image-amd64 and busybox-static: tools/setup-debian.sh --test"


class Failure(Exception):
    status = 1


class Missing(Failure):
    """What the guest is made of is not installed (or not usable): exit status 3."""
    status = 3


# ---- inputs ----

def version_key(path):
    """Sort key of /boot/vmlinuz-VERSION: numbers compare as numbers (6.1.0-10 after 6.1.0-9)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path)]


def newest_kernel(boot="/boot"):
    try:
        names = [n for n in os.listdir(boot) if n.startswith("vmlinuz-")]
    except OSError:
        names = []
    if not names:
        raise Missing(f"no kernel in {boot} (no {boot}/vmlinuz-*): {INSTALL}, "
                      "or give --kernel PATH")
    return os.path.join(boot, max(names, key=version_key))


def read_input(path, what, hint):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise Missing(f"{what} {path}: not found: {hint}") from None
    except OSError as e:
        raise Failure(f"{what} {path}: cannot read it: {e.strerror}") from None


def elf_segments(data):
    """[(p_type, offset, filesz)] of a 64-bit little-endian ELF file, or None if it is not one."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    segments = []
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, at)
        segments.append((p_type, p_offset, p_filesz))
    return segments


PT_INTERP, PT_NOTE = 3, 4
EM_X86_64 = 62
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the note QEMU looks for to boot an ELF kernel through PVH


def check_busybox(path, data):
    segments = elf_segments(data)
    if segments is None or struct.unpack_from("<H", data, 0x12)[0] != EM_X86_64:
        raise Failure(f"busybox {path}: not an x86_64 ELF program (the guest is x86_64)")
    if any(t == PT_INTERP for t, _, _ in segments):
        raise Missing(f"busybox {path}: dynamically linked, and the initramfs has no libraries: "
                      "install busybox-static (tools/setup-debian.sh --test), or give --busybox "
                      "PATH of a static one")


def has_pvh_note(elf):
    for p_type, offset, size in elf_segments(elf) or []:
        if p_type != PT_NOTE:
            continue
        at, end = offset, offset + size
        while at + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def unpack_kernel(path, image):
    """The PVH-bootable ELF kernel inside the bzImage `image`, or None and why not."""
    if image[0x202:0x206] != b"HdrS":
        raise Failure(f"kernel {path}: not a Linux bzImage (no 'HdrS' boot header)")
    protocol, = struct.unpack_from("<H", image, 0x206)
    if protocol < 0x208:
        return None, f"boot protocol {protocol >> 8}.{protocol & 0xff} has no payload field"
    setup_sects = image[0x1f1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    payload = image[(setup_sects + 1) * 512 + offset:][:length]
    try:
        if payload.startswith(b"\xfd7zXZ\0"):
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        else:
            return None, ("payload compressed with a method this script does not unpack "
                          f"(magic {payload[:4].hex()})")
    except (lzma.LZMAError, zlib.error) as e:
        raise Failure(f"kernel {path}: its payload does not decompress: {e}") from None
    if not has_pvh_note(elf):
        return None, "the kernel has no PVH entry point (CONFIG_PVH)"
    return elf, None


# ---- the initramfs ----

def newc(entries):
    """A newc cpio archive of entries (name, mode, data, (rdev major, minor)), owned by root,
    dated 0: the same inputs give the same bytes."""
    out = bytearray()
    trailer = ("TRAILER!!!", 0, b"", (0, 0))
    for ino, (name, mode, data, (major, minor)) in enumerate(entries + [trailer]):
        encoded = name.encode() + b"\0"
        fields = (ino + 1 if name != "TRAILER!!!" else 0, mode, 0, 0, 1, 0, len(data), 0, 0,
                  major, minor, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def applets(busybox):
    try:
        p = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise Failure(f"busybox {busybox}: cannot run it to list its applets: "
                      f"{e.strerror}") from None
    names = p.stdout.split()
    if p.returncode != 0 or "sh" not in names or "poweroff" not in names:
        raise Failure(f"busybox {busybox}: `--list` did not name the applets sh and poweroff")
    return sorted(n for n in names if n != "busybox" and "/" not in n)


def initramfs(busybox, binary, init):
    DIR, FILE, LINK, CHR = 0o040755, 0o100755, 0o120777, 0o020000
    entries = [(d, DIR, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys", "tmp")]
    entries += [("dev/console", CHR | 0o600, b"", (5, 1)), ("dev/null", CHR | 0o666, b"", (1, 3)),
                ("init", FILE, init, (0, 0)),
                ("bin/busybox", FILE, binary, (0, 0))]
    entries += [("bin/" + n, LINK, b"busybox", (0, 0)) for n in applets(busybox)]
    return gzip.compress(newc(entries), compresslevel=9, mtime=0)


# ---- writing ----

def replace(outdir, name, data=None, link=None):
    """Writes outdir/name as a whole (a new file renamed into place), so a reader sees either the
    old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=outdir, prefix="." + name + ".")
    try:
        if link is None:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        else:
            os.close(fd)
            os.unlink(tmp)
            os.symlink(link, tmp)
        os.replace(tmp, os.path.join(outdir, name))
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def stamp(path):
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def build(outdir, kernel, busybox):
    kernel = kernel or newest_kernel()
    try:
        with open(INIT, "rb") as f:
            init = f.read()
    except OSError as e:
        raise Failure(f"{INIT}: cannot read the init script: {e.strerror}") from None
    with open(os.path.abspath(__file__), "rb") as f:
        recipe = hashlib.sha256(f.read() + init).hexdigest()
    binary = read_input(busybox, "busybox", INSTALL + ", or give --busybox PATH")
    image = read_input(kernel, "kernel", INSTALL + ", or give --kernel PATH")
    inputs = {"recipe": recipe, "kernel": stamp(kernel), "busybox": stamp(busybox)}
    try:
        os.makedirs(outdir, exist_ok=True)
        lock = open(os.path.join(outdir, ".lock"), "w")
    except OSError as e:
        raise Failure(f"cannot write the guest to {outdir}: {e.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # tests running side by side build it once
        paths = [os.path.join(outdir, n) for n in ("kernel", "initramfs.cpio.gz")]
        try:
            with open(os.path.join(outdir, "inputs.json")) as f:
                current = json.load(f) == inputs and all(os.path.exists(p) for p in paths)
        except (OSError, ValueError):
            current = False
        if current:
            print(f"make-guest: {outdir} is up to date", file=sys.stderr)
            return paths
        check_busybox(busybox, binary)
        elf, why_not = unpack_kernel(kernel, image)
        try:
            replace(outdir, "initramfs.cpio.gz", initramfs(busybox, binary, init))
            if elf is None:
                print(f"make-guest: booting the compressed {kernel} ({why_not}): slower",
                      file=sys.stderr)
                replace(outdir, "kernel", link=os.path.abspath(kernel))
            else:
                replace(outdir, "kernel", elf)
            replace(outdir, "inputs.json", json.dumps(inputs, indent=1).encode() + b"\n")
        except OSError as e:
            raise Failure(f"cannot write the guest to {outdir}: {e.strerror}") from None
        print(f"make-guest: built {outdir} from {kernel} and {busybox}", file=sys.stderr)
        return paths


def main(argv):
    options = {"--kernel": None, "--busybox": "/bin/busybox"}
    outdir = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in options and i + 1 < len(argv):
            options[a] = argv[i + 1]
            i += 2
            continue
        if a in options or a.startswith("-") or outdir is not None:
            print("usage: make-guest.py OUTDIR [--kernel PATH] [--busybox PATH]", file=sys.stderr)
            return 2
        outdir = a
        i += 1
    if outdir is None:
        print("usage: make-guest.py OUTDIR [--kernel PATH] [--busybox PATH]", file=sys.stderr)
        return 2
    try:
        for path in build(outdir, options["--kernel"], options["--busybox"]):
            print(path)
    except Failure as e:
        print(f"make-guest: {e}", file=sys.stderr)
        return e.status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
