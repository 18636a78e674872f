# Tests of scripts/hwprofile.lua, scripts/lockstep.lua and scripts/callgraph.lua (exec'd inside
# tests/integration.py: case, qemu, guest, fields, expect, system_qemu, QEMU_SYSTEM... are its).
import threading
import time

# ---- hwprofile: the io.bin bare-metal guest (tests/guests/bare/io.S) ----

IO_DEVICES = "apic-msi, 0x0, 1, 4, 1, 2\nioapic, 0x0, 1, 2, 1, 1\n"


def io_qemu(version, plugin_args, smp=1):
    """system_qemu() with the io.bin image, whose accesses reach the local APIC and the IOAPIC."""
    return system_qemu(version, plugin_args, smp, image="io.bin")


def hwprofile(version, extra=(), smp=1):
    r = io_qemu(version, ["script=hwprofile"] + list(extra), smp)
    expect(r.status == 33, f"{version}: the guest exits through isa-debug-exit", r)
    return r


@case
def hwprofile_counts_io_per_device_on_7_2_and_10_0():
    for version in ("7.2", "10.0"):
        r = hwprofile(version, smp=2)  # only the boot vCPU runs: masks stay 1
        expect(r.log == "Device, Address, RCPUs, Reads,  WCPUs, Writes\n" + IO_DEVICES,
               f"{version}: report (RAM accesses must not count)", r)
        r = hwprofile(version, ["track=read"])
        expect(r.log == "Device, Address, RCPUs, Reads\napic-msi, 0x0, 1, 4\nioapic, 0x0, 1, 2\n",
               f"{version}: track=read", r)
        r = hwprofile(version, ["track=write"])
        expect(r.log == "Device, Address,  WCPUs, Writes\napic-msi, 0x0, 1, 2\nioapic, 0x0, 1, 1\n",
               f"{version}: track=write", r)


@case
def hwprofile_lists_accesses_by_address_and_by_source():
    for version in ("7.2", "10.0"):
        r = hwprofile(version, ["pattern=on"])
        expect(r.log == "apic-msi @ 0x0\n"
                        "  off:fee00020, 1, 1, 0, 0\n"
                        "  off:fee00030, 1, 3, 0, 0\n"
                        "  off:fee00080, 0, 0, 1, 2\n"
                        "ioapic @ 0x0\n"
                        "  off:fec00000, 0, 0, 1, 1\n"
                        "  off:fec00010, 1, 2, 0, 0\n", f"{version}: pattern=on", r)
        r = hwprofile(version, ["source=on"])
        lines = r.log.splitlines()
        # io.S: six APIC accesses then three IOAPIC ones, one instruction each, in the image at
        # 0xf0000: one line per instruction, addresses ascending
        expect(lines[0] == "apic-msi @ 0x0" and lines[7] == "ioapic @ 0x0" and len(lines) == 11,
               f"{version}: source=on layout", r)
        pcs = [int(l.split(":")[1].split(",")[0], 16) for l in lines[1:7] + lines[8:]]
        expect(pcs == sorted(pcs) and all(0xf0000 <= pc < 0x100000 for pc in pcs),
               f"{version}: pcs ascending, inside the image", r)
        counts = [l.split(", ", 1)[1] for l in lines[1:7] + lines[8:]]
        expect(counts == ["1, 1, 0, 0"] * 4 + ["0, 0, 1, 1"] * 3 + ["1, 1, 0, 0"] * 2,
               f"{version}: one access per instruction, in program order", r)


@case
def hwprofile_match_reports_each_hit_of_the_named_devices_only():
    r = hwprofile("7.2", ["match=ioapic"])
    expect(r.log == "hwprofile: match @ offsetfec00000, previous hits\n"
                    "ioapic, 0x0, 0, 0, 0, 0\n"
                    "hwprofile: match @ offsetfec00010, previous hits\n"
                    "ioapic, 0x0, 0, 0, 1, 1\n"
                    "hwprofile: match @ offsetfec00010, previous hits\n"
                    "ioapic, 0x0, 1, 1, 1, 1\n"
                    "Device, Address, RCPUs, Reads,  WCPUs, Writes\n"
                    "ioapic, 0x0, 1, 2, 1, 1\n", "match=ioapic", r)
    for names in (["match=ioapic,,apic-msi"], ["match=ioapic", "match=apic-msi"]):
        r = hwprofile("7.2", names)  # ",," is a comma inside a -plugin value
        expect(r.log.endswith(IO_DEVICES) and r.log.count("hwprofile: match @") == 9, "two names", r)


@refused_install
def hwprofile_refuses_user_mode_and_conflicting_arguments():
    r = qemu(["script=hwprofile"], [guest("loop"), "1"])
    expect(r.status == 1 and "hwprofile.lua: plugin only useful for system emulation" in r.err
           and "qemu-system" in r.err, "user mode must be refused, naming the requirement", r)
    r = io_qemu("7.2", ["script=hwprofile", "pattern=on", "source=on"])
    expect(r.status == 1 and "can only currently track either source or pattern." in r.err,
           "pattern and source together", r)
    r = io_qemu("7.2", ["script=hwprofile", "track=rw"])
    expect(r.status == 1 and "track=rw: expected one of read, write" in r.err, "bad track", r)


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
                raise Skip("lua-socket is not installed (tools/setup-debian.sh installs it)")
            raise AssertionError(f"the first QEMU did not create the socket\n{r}")
        b = threading.Thread(target=run, args=("b", program_b))
        b.start()
        a.join()
        b.join()
        expect(not os.path.exists(sock), "the creating side must delete the socket")
        return runs["a"], runs["b"]


@case
def lockstep_identical_runs_agree_and_count_every_block():
    a, b = lockstep_pair([guest("loop"), "3"], [guest("loop"), "3"], oracle=True)
    approx = set()
    for side, r, ready in (("a", a, "setup_socket::ready"), ("b", b, "connect_socket::ready")):
        expect(r.status == 0 and "sum " in r.out, f"{side}: guest must finish", r)
        o = fields(r.log, "oracle")
        mine = re.sub(r"^oracle: .*\n", "", r.log, flags=re.M)
        m = re.fullmatch(rf"{ready}\nNo divergence :-\)\nExecuted {o['tbs']}/{o['tbs']} blocks\n"
                         r"Executed ~(\d+) instructions\n", mine)
        expect(m is not None, f"{side}: report, with the oracle's count of executed blocks", r)
        # "~": each block counts whole; the last one (exit_group) does not run to its end
        extra = int(m.group(1)) - int(o["insns"])
        expect(0 <= extra < 32, f"{side}: ~instructions {extra} away from the oracle's", r)
        approx.add(m.group(1))
    expect(len(approx) == 1, "both sides count the same instructions", b)


def divergence_lines(r):
    return re.findall(r"^@ 0x([0-9a-f]{16}) \((\d+)\) vs 0x([0-9a-f]{16}) \((\d+)\) "
                      r"\((\d+)/(\d+) since last\)$", r.log, re.M)


@case
def lockstep_different_arguments_diverge_and_give_up_on_both_sides():
    for verbose in ("on", "off"):
        a, b = lockstep_pair([guest("loop"), "3"], [guest("loop"), "4"], ["verbose=" + verbose])
        for side, r in (("a", a), ("b", b)):
            expect(r.status == 0 and "sum " in r.out, f"{side}: guest must finish", r)
            expect("Δ too high, we have diverged, previous insns\n" in r.log and
                   r.log.endswith("giving up\n") and "No divergence" not in r.log,
                   f"{side}: must give up", r)
            expect(len(re.findall(r"^  previously @ 0x[0-9a-f]{16}/\d+ \(\d+ insns\)$", r.log,
                                  re.M)) == 5, f"{side}: the last 5 blocks", r)
        da, db = divergence_lines(a), divergence_lines(b)
        # the first divergence is silent unless verbose; then two, one block apart, end it
        expect([d[4:] for d in da] == ([("1", "0")] if verbose == "on" else []) +
               [("2", "1"), ("3", "1")], f"verbose={verbose}: divergence lines", a)
        expect(db == [(d[2], d[3], d[0], d[1], d[4], d[5]) for d in da],
               "each side reports the other's view, mirrored", b)
        first = da[0]
        if verbose == "on":
            expect(first[0] != first[2] and first[1] == first[3],
                   "at the first divergence both ran the same instructions", a)


@case
def lockstep_side_that_runs_longer_stops_cleanly():
    # calls with "exit" leaves main at once: B finishes first, A carries on alone
    a, b = lockstep_pair([guest("calls"), "stay"], [guest("calls"), "exit"], ["verbose=on"])
    expect(a.status == 0 and a.out == "calls 722\n", "the longer run must finish normally", a)
    expect(a.log.endswith("the other side has finished\n"), "A: told that B finished", a)
    expect(b.status == 0 and re.search(r"^Divergences: [1-9]\d*\nExecuted (\d+)/\1 blocks\n"
                                       r"Executed ~\d+ instructions\n\Z", b.log, re.M),
           "B: the summary counts its divergences", b)


@refused_install
def lockstep_needs_a_socket_path_and_user_mode():
    r = qemu(["script=lockstep"], [guest("loop"), "1"])
    expect(r.status == 1 and "lockstep.lua: argument 'sockpath' is required" in r.err, "sockpath", r)
    with tempfile.TemporaryDirectory() as tmp:
        r = system_qemu("7.2", ["script=lockstep", "sockpath=" + os.path.join(tmp, "s")])
        expect(r.status == 1 and "lockstep.lua: system emulation is not supported" in r.err,
               "system mode must be refused with the reason", r)
        expect(not os.listdir(tmp), "nothing created", r)
        stale = os.path.join(tmp, "stale")
        open(stale, "w").close()
        r = qemu(["script=lockstep", "sockpath=" + stale], [guest("loop"), "1"])
        expect(r.status == 1 and "lockstep.lua: failed to connect to " + stale in r.err,
               "a file that is no socket", r)


# ---- callgraph: tests/guests/calls.c ----

N, M, R, J = 10, 7, 5, 3  # calls.c


def folded(text):
    """Folded lines 'a;b;c 12' -> {path: weight}; other lines (oracle:, callgraph:) skipped."""
    stacks = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) (\d+)$", line)
        if m and not line.startswith(("oracle:", "callgraph:")):
            expect(m.group(1) not in stacks, f"stack listed twice: {line}")
            stacks[m.group(1)] = int(m.group(2))
    return stacks


def under_main(stacks):
    """The stacks below main, as 'main;...' (the frames above main belong to libc's start-up)."""
    out = {}
    for path, w in stacks.items():
        frames = path.split(";")
        if "main" in frames:
            out[";".join(frames[frames.index("main"):])] = w
    return out


@case
def callgraph_weights_add_up_to_every_executed_instruction():
    r = qemu(["script=callgraph"], [guest("calls")], oracle=True)
    expect(r.status == 0 and r.out == "calls 722\n", "guest", r)
    stacks = folded(r.log)
    expect(sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]),
           "the weights must add up to the oracle's instruction count", r)
    expect(all(p.startswith("_start;") or p == "_start" for p in stacks),
           "every stack starts at the entry symbol", r)
    m = under_main(stacks)
    expect(m.get("main;b", 0) > 0 and m.get("main;a;b") == N * M * m["main;b"],
           "b executes the same instructions at each of its N*M calls from a", r)
    for k in range(1, R + 2):
        expect(m.get("main" + ";rec" * k, 0) > 0, f"recursion depth {k}", r)
    expect("main" + ";rec" * (R + 2) not in m, "no deeper recursion than the guest makes", r)
    expect(m.get("main;catcher;leaf", 0) > 0, "after longjmp, leaf is called from catcher", r)
    expect(not any("thrower" in p and "leaf" in p for p in m),
           "frames abandoned by longjmp must not stay on the stack", r)


@case
def callgraph_counts_calls_per_stack():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "calls.folded")
        r = qemu(["script=callgraph", "weight=calls", "outfile=" + out], [guest("calls")])
        expect(r.status == 0, "guest", r)
        stacks = folded(open(out).read())
    summary = fields(r.log, "callgraph")
    expect(r.log.count("\n") == 1, "with outfile=, the log holds the summary only", r)
    expect(int(summary["weight"]) == sum(stacks.values()) == int(summary["calls"]),
           "every call is counted once", r)
    expect(summary["resyncs"] == str(J), "one resynchronisation per longjmp", r)
    m = under_main(stacks)
    want = {"main;a": N, "main;a;b": N * M, "main;b": 1, "main;catcher": J,
            "main;catcher;leaf": J}
    want.update({"main" + ";rec" * k: 1 for k in range(1, R + 2)})
    want.update({"main;catcher" + ";thrower" * k: J for k in range(1, 4)})
    for path, n in want.items():
        expect(m.get(path) == n, f"{path}: {m.get(path)} calls, expected {n}", r)


@case
def callgraph_max_depth_cuts_stacks_and_keeps_their_weight():
    r = qemu(["script=callgraph", "max_depth=4"], [guest("calls")], oracle=True)
    stacks = folded(r.log)
    expect(max(len(p.split(";")) for p in stacks) == 4, "stacks cut at 4 frames", r)
    expect(sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]), "weights kept", r)


@case
def callgraph_with_8_threads_adds_up_to_every_executed_instruction():
    r = qemu(["script=callgraph"], [guest("threads")], oracle=True)
    expect(r.status == 0 and "threads 8 total" in r.out, "guest", r)
    stacks = folded(r.log)
    expect(sum(stacks.values()) == int(fields(r.log, "oracle")["insns"]),
           "weights of all threads add up to the oracle's count", r)
    roots = {p.split(";")[0] for p in stacks}
    expect(len(roots) >= 2, "threads start their own stacks (at the clone code)", r)
