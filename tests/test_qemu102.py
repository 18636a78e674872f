"""One libqlua.so on every user-mode host: the same file, loaded by QEMU 7.2 and by QEMU 10.2, for
x86_64 and aarch64 guests (static, and dynamic through the cross libraries), reports each host's
plugin API and counter strategy and counts exactly what the oracle counts, with one thread and
with 8. These tests name their hosts themselves (qemu_run.USER_BINARIES), so they run once, in the
default run; the run with QLUA_USER_HOST=10.2 repeats the rest of the suite on 10.2."""
import os
import re
import subprocess
import tempfile

import pytest

from qemu_run import (USER_BINARIES, aarch64_guest, env_without_preload, expect_equal_counts,
                      fields, guest, qemu, run_lua, script, user_host)

pytestmark = pytest.mark.user_host_independent

HOSTS = [(release, arch) for release in USER_BINARIES for arch in ("x86_64", "aarch64")]

INFO = ("qemu.on_exit(function() qemu.printf('host: api=%d declared=%d mode=%s target=%s\\n',"
        " qemu.info.api.cur, qemu.info.api.declared, qemu.counter_mode(), qemu.info.target) end)")


def host_binary(release, arch):
    binary = USER_BINARIES[release][arch]
    if not os.path.exists(binary) and release == "10.2":
        pytest.skip(f"QEMU 10.2 not found at {binary} (set QLUA_QEMU_10_2)")
    return binary


def program(arch, name, *args):
    return [guest(name) if arch == "x86_64" else aarch64_guest(name)] + list(args)


@pytest.mark.parametrize("release,arch", HOSTS, ids=[f"{r}-{a}" for r, a in HOSTS])
def test_one_libqlua_so_counts_exactly_on_every_user_mode_host(release, arch):
    binary = host_binary(release, arch)
    host = user_host(binary)
    assert host.release == release, f"{binary} is QEMU {host.release}, not {release}"
    for guest_args, threads in ((program(arch, "loop", "20"), False),
                                (program(arch, "threads", "200"), True)):
        r = qemu(["script=" + script("all_events.lua"), "lua=off"], guest_args, oracle=True,
                 binary=binary)
        assert r.status == 0, f"{host}: {guest_args[0]}\n{r}"
        native = fields(r.log, "native")
        expect_equal_counts(r, native, ["tbs", "insns", "reads", "writes"])
        assert native["mode"] == host.counter_mode(threads), (
            f"{host}: {'8 threads' if threads else 'one thread'} in {native['mode']} mode\n{r}")
    r = run_lua(INFO, program(arch, "loop", "1"), binary=binary)
    assert fields(r.log, "host") == {"api": str(host.api), "declared": str(host.declared),
                                     "mode": host.counter_mode(False), "target": arch}, (
        f"what qlua reports on {host}\n{r}")


def test_dynamic_aarch64_guests_run_on_every_host():
    # a dynamically linked aarch64 program finds its loader and libc through QEMU_LD_PREFIX (what
    # -L sets): the loader's and libc's instructions count as exactly as the program's
    cc, prefix = "aarch64-linux-gnu-gcc", "/usr/aarch64-linux-gnu"
    if not os.path.exists(os.path.join(prefix, "lib", "ld-linux-aarch64.so.1")):
        pytest.skip(f"no aarch64 libraries in {prefix} (Debian's libc6-arm64-cross)")
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "loop-dynamic")
        try:
            subprocess.run([cc, "-O1", "-o", prog, os.path.join(os.path.dirname(__file__),
                            "guests", "loop.c")], check=True, capture_output=True,
                           env=env_without_preload())
        except FileNotFoundError:
            pytest.skip(f"no {cc}")
        probe = ("qemu.on_syscall(function() local b = qemu.binary()\n"
                 "  if b and not said then said = true; qemu.printf('binary: path=%s\\n', b.path) end\n"
                 "end)\n" + INFO)
        for release in USER_BINARIES:
            binary = host_binary(release, "aarch64")
            r = qemu(["script=count"], [prog, "2"], oracle=True, binary=binary,
                     env={"QEMU_LD_PREFIX": prefix})
            assert r.status == 0 and "round 0" in r.out, f"{release}: dynamic guest\n{r}"
            m = re.search(r"^insns: (\d+)$", r.log, re.M)
            assert m and m.group(1) == fields(r.log, "oracle")["insns"], (
                f"{release}: count.lua against the oracle\n{r}")
            r = run_lua(probe, [prog, "1"], binary=binary, env={"QEMU_LD_PREFIX": prefix})
            assert fields(r.log, "binary")["path"] == prog, f"{release}: qemu.binary()\n{r}"
            assert fields(r.log, "host")["target"] == "aarch64", f"{release}: target\n{r}"
