"""Tests of scripts/hwprofile.lua, scripts/lockstep.lua and scripts/callgraph.lua."""
import os
import re
import tempfile
import threading
import time

import pytest

from qemu_run import fields, guest, qemu, system_qemu


# ---- hwprofile: the io.bin bare-metal guest (tests/guests/bare/io.S) ----

IO_DEVICES = "apic-msi, 0x0, 1, 4, 1, 2\nioapic, 0x0, 1, 2, 1, 1\n"


def io_qemu(version, plugin_args, smp=1):
    """system_qemu() with the io.bin image, whose accesses reach the local APIC and the IOAPIC."""
    return system_qemu(version, plugin_args, smp, image="io.bin")


def hwprofile(version, extra=(), smp=1):
    r = io_qemu(version, ["script=hwprofile"] + list(extra), smp)
    assert r.status == 33, f"{version}: the guest exits through isa-debug-exit\n{r}"
    return r


@pytest.mark.user_host_independent  # system mode only
def test_hwprofile_counts_io_per_device_on_7_2_and_10_0():
    for version in ("7.2", "10.0"):
        r = hwprofile(version, smp=2)  # only the boot vCPU runs: masks stay 1
        assert r.log == "Device, Address, RCPUs, Reads,  WCPUs, Writes\n" + IO_DEVICES, (
            f"{version}: report (RAM accesses must not count)\n{r}")
        r = hwprofile(version, ["track=read"])
        assert r.log == "Device, Address, RCPUs, Reads\napic-msi, 0x0, 1, 4\nioapic, 0x0, 1, 2\n", (
            f"{version}: track=read\n{r}")
        r = hwprofile(version, ["track=write"])
        assert r.log == "Device, Address,  WCPUs, Writes\napic-msi, 0x0, 1, 2\nioapic, 0x0, 1, 1\n", (
            f"{version}: track=write\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_hwprofile_lists_accesses_by_address_and_by_source():
    for version in ("7.2", "10.0"):
        r = hwprofile(version, ["pattern=on"])
        assert (r.log == "apic-msi @ 0x0\n"
                         "  off:fee00020, 1, 1, 0, 0\n"
                         "  off:fee00030, 1, 3, 0, 0\n"
                         "  off:fee00080, 0, 0, 1, 2\n"
                         "ioapic @ 0x0\n"
                         "  off:fec00000, 0, 0, 1, 1\n"
                         "  off:fec00010, 1, 2, 0, 0\n"), f"{version}: pattern=on\n{r}"
        r = hwprofile(version, ["source=on"])
        lines = r.log.splitlines()
        # io.S: six APIC accesses then three IOAPIC ones, one instruction each, in the image at
        # 0xf0000: one line per instruction, addresses ascending
        assert lines[0] == "apic-msi @ 0x0" and lines[7] == "ioapic @ 0x0" and len(lines) == 11, (
            f"{version}: source=on layout\n{r}")
        pcs = [int(l.split(":")[1].split(",")[0], 16) for l in lines[1:7] + lines[8:]]
        assert pcs == sorted(pcs) and all(0xf0000 <= pc < 0x100000 for pc in pcs), (
            f"{version}: pcs ascending, inside the image\n{r}")
        counts = [l.split(", ", 1)[1] for l in lines[1:7] + lines[8:]]
        assert counts == ["1, 1, 0, 0"] * 4 + ["0, 0, 1, 1"] * 3 + ["1, 1, 0, 0"] * 2, (
            f"{version}: one access per instruction, in program order\n{r}")


@pytest.mark.user_host_independent  # system mode only
def test_hwprofile_match_reports_each_hit_of_the_named_devices_only():
    r = hwprofile("7.2", ["match=ioapic"])
    assert (r.log == "hwprofile: match @ offsetfec00000, previous hits\n"
                     "ioapic, 0x0, 0, 0, 0, 0\n"
                     "hwprofile: match @ offsetfec00010, previous hits\n"
                     "ioapic, 0x0, 0, 0, 1, 1\n"
                     "hwprofile: match @ offsetfec00010, previous hits\n"
                     "ioapic, 0x0, 1, 1, 1, 1\n"
                     "Device, Address, RCPUs, Reads,  WCPUs, Writes\n"
                     "ioapic, 0x0, 1, 2, 1, 1\n"), f"match=ioapic\n{r}"
    for names in (["match=ioapic,,apic-msi"], ["match=ioapic", "match=apic-msi"]):
        r = hwprofile("7.2", names)  # ",," is a comma inside a -plugin value
        assert r.log.endswith(IO_DEVICES) and r.log.count("hwprofile: match @") == 9, (
            f"two names\n{r}")


@pytest.mark.exits_qemu
def test_hwprofile_refuses_user_mode_and_conflicting_arguments():
    r = qemu(["script=hwprofile"], [guest("loop"), "1"])
    assert (r.status == 1 and "hwprofile.lua: plugin only useful for system emulation" in r.err
            and "qemu-system" in r.err), f"user mode must be refused, naming the requirement\n{r}"
    r = io_qemu("7.2", ["script=hwprofile", "pattern=on", "source=on"])
    assert r.status == 1 and "can only currently track either source or pattern." in r.err, (
        f"pattern and source together\n{r}")
    r = io_qemu("7.2", ["script=hwprofile", "track=rw"])
    assert r.status == 1 and "track=rw: expected one of read, write" in r.err, f"bad track\n{r}"


# ---- lockstep: two QEMUs over a unix socket ----

def lockstep_pair(program_a, program_b, extra=(), oracle=False):
    """Runs two qemu-x86_64 with lockstep.lua: A creates the socket, then B connects."""
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "lockstep.sock")
        runs = {}

        def run(side, program):
            runs[side] = qemu(["script=lockstep", "sockpath=" + sock] + list(extra), program,
                              oracle=oracle, timeout=120)

        a = threading.Thread(target=run, args=("a", program_a))
        a.start()
        deadline = time.time() + 60
        while not os.path.exists(sock) and a.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        if not os.path.exists(sock):
            a.join()
            r = runs.get("a")
            if r is not None and "needs LuaSocket" in r.err:
                pytest.skip("lua-socket is not installed (tools/setup-debian.sh installs it)")
            raise AssertionError(f"the first QEMU did not create the socket\n{r}")
        b = threading.Thread(target=run, args=("b", program_b))
        b.start()
        a.join()
        b.join()
        assert not os.path.exists(sock), "the creating side must delete the socket"
        return runs["a"], runs["b"]


def test_lockstep_identical_runs_agree_and_count_every_block():
    a, b = lockstep_pair([guest("loop"), "3"], [guest("loop"), "3"], oracle=True)
    approx = set()
    for side, r, ready in (("a", a, "setup_socket::ready"), ("b", b, "connect_socket::ready")):
        assert r.status == 0 and "sum " in r.out, f"{side}: guest must finish\n{r}"
        o = fields(r.log, "oracle")
        mine = re.sub(r"^oracle: .*\n", "", r.log, flags=re.M)
        m = re.fullmatch(rf"{ready}\nNo divergence :-\)\nExecuted {o['tbs']}/{o['tbs']} blocks\n"
                         r"Executed ~(\d+) instructions\n", mine)
        assert m is not None, f"{side}: report, with the oracle's count of executed blocks\n{r}"
        # "~": each block counts whole; the last one (exit_group) does not run to its end
        extra = int(m.group(1)) - int(o["insns"])
        assert 0 <= extra < 32, f"{side}: ~instructions {extra} away from the oracle's\n{r}"
        approx.add(m.group(1))
    assert len(approx) == 1, f"both sides count the same instructions\n{b}"


def divergence_lines(r):
    return re.findall(r"^@ 0x([0-9a-f]{16}) \((\d+)\) vs 0x([0-9a-f]{16}) \((\d+)\) "
                      r"\((\d+)/(\d+) since last\)$", r.log, re.M)


def test_lockstep_different_arguments_diverge_and_give_up_on_both_sides():
    for verbose in ("on", "off"):
        a, b = lockstep_pair([guest("loop"), "3"], [guest("loop"), "4"], ["verbose=" + verbose])
        for side, r in (("a", a), ("b", b)):
            assert r.status == 0 and "sum " in r.out, f"{side}: guest must finish\n{r}"
            assert ("Δ too high, we have diverged, previous insns\n" in r.log and
                    r.log.endswith("giving up\n") and "No divergence" not in r.log), (
                f"{side}: must give up\n{r}")
            assert (len(re.findall(r"^  previously @ 0x[0-9a-f]{16}/\d+ \(\d+ insns\)$", r.log,
                                   re.M)) == 5), f"{side}: the last 5 blocks\n{r}"
        da, db = divergence_lines(a), divergence_lines(b)
        # the first divergence is silent unless verbose; then two, one block apart, end it
        assert ([d[4:] for d in da] == ([("1", "0")] if verbose == "on" else []) +
                [("2", "1"), ("3", "1")]), f"verbose={verbose}: divergence lines\n{a}"
        assert db == [(d[2], d[3], d[0], d[1], d[4], d[5]) for d in da], (
            f"each side reports the other's view, mirrored\n{b}")
        first = da[0]
        if verbose == "on":
            assert first[0] != first[2] and first[1] == first[3], (
                f"at the first divergence both ran the same instructions\n{a}")


def test_lockstep_side_that_runs_longer_stops_cleanly():
    # calls with "exit" leaves main at once: B finishes first, A carries on alone
    a, b = lockstep_pair([guest("calls"), "stay"], [guest("calls"), "exit"], ["verbose=on"])
    assert a.status == 0 and a.out == "calls 722\n", f"the longer run must finish normally\n{a}"
    assert a.log.endswith("the other side has finished\n"), f"A: told that B finished\n{a}"
    assert (b.status == 0 and re.search(r"^Divergences: [1-9]\d*\nExecuted (\d+)/\1 blocks\n"
                                        r"Executed ~\d+ instructions\n\Z", b.log, re.M)), (
        f"B: the summary counts its divergences\n{b}")


@pytest.mark.exits_qemu
def test_lockstep_needs_a_socket_path_and_user_mode():
    r = qemu(["script=lockstep"], [guest("loop"), "1"])
    assert r.status == 1 and "lockstep.lua: argument 'sockpath' is required" in r.err, (
        f"sockpath\n{r}")
    with tempfile.TemporaryDirectory() as tmp:
        r = system_qemu("7.2", ["script=lockstep", "sockpath=" + os.path.join(tmp, "s")])
        assert r.status == 1 and "lockstep.lua: system emulation is not supported" in r.err, (
            f"system mode must be refused with the reason\n{r}")
        assert not os.listdir(tmp), f"nothing created\n{r}"
        stale = os.path.join(tmp, "stale")
        open(stale, "w").close()
        r = qemu(["script=lockstep", "sockpath=" + stale], [guest("loop"), "1"])
        assert r.status == 1 and "lockstep.lua: failed to connect to " + stale in r.err, (
            f"a file that is no socket\n{r}")


# ---- callgraph: tests/guests/calls.c ----

N, M, R, J = 10, 7, 5, 3  # calls.c


def folded(text):
    """Folded lines 'a;b;c 12' -> {path: weight}; other lines (oracle:, callgraph:) skipped.
    Frames are named MODULE!FUNCTION (symbols=on, the default; tests/test_symbols.py checks the
    names): these tests look at the functions, so the MODULE! part is dropped."""
    stacks = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) (\d+)$", line)
        if m and not line.startswith(("oracle:", "callgraph:")):
            path = ";".join(f.split("!", 1)[-1] for f in m.group(1).split(";"))
            assert path not in stacks, f"stack listed twice: {line}"
            stacks[path] = int(m.group(2))
    return stacks


def under_main(stacks):
    """The stacks below main, as 'main;...' (the frames above main belong to libc's start-up)."""
    out = {}
    for path, w in stacks.items():
        frames = path.split(";")
        if "main" in frames:
            out[";".join(frames[frames.index("main"):])] = w
    return out


def test_callgraph_weights_add_up_to_every_executed_instruction():
    r = qemu(["script=callgraph"], [guest("calls")], oracle=True)
    assert r.status == 0 and r.out == "calls 722\n", f"guest\n{r}"
    stacks = folded(r.log)
    assert sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]), (
        f"the weights must add up to the oracle's instruction count\n{r}")
    assert all(p.startswith("_start;") or p == "_start" for p in stacks), (
        f"every stack starts at the entry symbol\n{r}")
    m = under_main(stacks)
    assert m.get("main;b", 0) > 0 and m.get("main;a;b") == N * M * m["main;b"], (
        f"b executes the same instructions at each of its N*M calls from a\n{r}")
    for k in range(1, R + 2):
        assert m.get("main" + ";rec" * k, 0) > 0, f"recursion depth {k}\n{r}"
    assert "main" + ";rec" * (R + 2) not in m, f"no deeper recursion than the guest makes\n{r}"
    assert m.get("main;catcher;leaf", 0) > 0, f"after longjmp, leaf is called from catcher\n{r}"
    assert not any("thrower" in p and "leaf" in p for p in m), (
        f"frames abandoned by longjmp must not stay on the stack\n{r}")


def test_callgraph_counts_calls_per_stack():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "calls.folded")
        r = qemu(["script=callgraph", "weight=calls", "outfile=" + out], [guest("calls")])
        assert r.status == 0, f"guest\n{r}"
        stacks = folded(open(out).read())
    summary = fields(r.log, "callgraph")
    assert r.log.count("\n") == 1, f"with outfile=, the log holds the summary only\n{r}"
    assert int(summary["weight"]) == sum(stacks.values()) == int(summary["calls"]), (
        f"every call is counted once\n{r}")
    assert summary["resyncs"] == str(J), f"one resynchronisation per longjmp\n{r}"
    m = under_main(stacks)
    want = {"main;a": N, "main;a;b": N * M, "main;b": 1, "main;catcher": J,
            "main;catcher;leaf": J}
    want.update({"main" + ";rec" * k: 1 for k in range(1, R + 2)})
    want.update({"main;catcher" + ";thrower" * k: J for k in range(1, 4)})
    for path, n in want.items():
        assert m.get(path) == n, f"{path}: {m.get(path)} calls, expected {n}\n{r}"


def test_callgraph_max_depth_cuts_stacks_and_keeps_their_weight():
    r = qemu(["script=callgraph", "max_depth=4"], [guest("calls")], oracle=True)
    stacks = folded(r.log)
    assert max(len(p.split(";")) for p in stacks) == 4, f"stacks cut at 4 frames\n{r}"
    assert sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]), f"weights kept\n{r}"


def test_callgraph_with_8_threads_adds_up_to_every_executed_instruction():
    r = qemu(["script=callgraph"], [guest("threads")], oracle=True)
    assert r.status == 0 and "threads 8 total" in r.out, f"guest\n{r}"
    stacks = folded(r.log)
    assert sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]), (
        f"weights of all threads add up to the oracle's count\n{r}")
    roots = {p.split(";")[0] for p in stacks}
    assert len(roots) >= 2, f"threads start their own stacks (at the clone code)\n{r}"
