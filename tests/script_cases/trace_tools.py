# Tests of scripts/drcov.lua, scripts/cflow.lua, scripts/stoptrigger.lua and scripts/bbv.lua.
# Run inside tests/integration.py's namespace: case, refused_install, qemu, guest, fields, expect,
# lua_file, QEMU, PLUGIN, ORACLE, Skip, subprocess, tempfile, os and re come from there.
# Facts are checked against the oracle, against the guest's ELF file and symbols, against what the
# guest prints, or against a plain Lua reference (a Lua callback on every instruction) loaded as a
# second plugin in the same QEMU run, so both see the very same execution.

import shutil
import struct


def tt_run(scripts, program, oracle=False, timeout=300):
    """Runs QEMU once with one qlua plugin per entry of `scripts` (each a list of key=value; the
    second and later use copies of libqlua.so, as one copy runs one script), all logging to one
    plugin log. Returns Run."""
    with tempfile.TemporaryDirectory() as tmp:
        logfile = os.path.join(tmp, "plugin.log")
        cmd = [QEMU]
        if oracle:
            cmd += ["-plugin", ORACLE]
        for i, plugin_args in enumerate(scripts):
            lib = PLUGIN
            if i > 0:
                lib = os.path.join(tmp, f"libqlua{i}.so")
                shutil.copy(PLUGIN, lib)
            cmd += ["-plugin", ",".join([lib] + plugin_args)]
        cmd += ["-U", "LD_PRELOAD", "-d", "plugin", "-D", logfile] + program
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = open(logfile).read() if os.path.exists(logfile) else ""
        return Run(p.returncode, p.stdout, p.stderr, text)


def with_lua(text, fn):
    """Calls fn(path) with `text` in a temporary .lua file."""
    path = lua_file(text)
    try:
        return fn(path)
    finally:
        os.unlink(path)


def symbol(program, name):
    """The address of `name` in the (static, unstripped) guest, from nm."""
    out = subprocess.run(["nm", program], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"no symbol {name} in {program}")


def elf_layout(path):
    """(e_type, e_entry, lowest PT_LOAD address, page-aligned) of a little-endian ELF64 file."""
    with open(path, "rb") as f:
        data = f.read(65536)
    expect(data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not ELF64 LE")
    e_type, _, _, e_entry, e_phoff = struct.unpack_from("<HHIQQ", data, 16)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    lows = []
    for i in range(e_phnum):
        p_type, _, _, p_vaddr = struct.unpack_from("<IIQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1:
            lows.append(p_vaddr & ~0xfff)
    return e_type, e_entry, min(lows)


# ---- drcov ----

def parse_drcov(path, run=None):
    """Parses a drcov file: ([module dicts], [(offset, size, id)]), checking the layout."""
    data = open(path, "rb").read()
    lines, pos = [], 0
    while True:
        nl = data.index(b"\n", pos)
        lines.append(data[pos:nl].decode())
        pos = nl + 1
        if lines[-1].startswith("BB Table: "):
            break
    expect(lines[:2] == ["DRCOV VERSION: 2", "DRCOV FLAVOR: drcov-64"], "header", run)
    m = re.fullmatch(r"Module Table: version 2, count (\d+)", lines[2])
    expect(m is not None, f"module table line {lines[2]!r}", run)
    count = int(m.group(1))
    expect(lines[3] == "Columns: id, base, end, entry, path", "columns line", run)
    modules = []
    for i, line in enumerate(lines[4:-1]):
        mm = re.fullmatch(r"(\d+), 0x([0-9a-f]+), 0x([0-9a-f]+), 0x([0-9a-f]+), (.+)", line)
        expect(mm is not None and int(mm.group(1)) == i, f"module line {line!r}", run)
        modules.append({"id": i, "base": int(mm.group(2), 16), "end": int(mm.group(3), 16),
                        "entry": int(mm.group(4), 16), "path": mm.group(5)})
    expect(len(modules) == count, f"{len(modules)} module lines, table says {count}", run)
    m = re.fullmatch(r"BB Table: (\d+) bbs", lines[-1])
    expect(m is not None, "BB Table line", run)
    nbbs = int(m.group(1))
    expect(len(data) - pos == 8 * nbbs, f"{len(data) - pos} bytes of records for {nbbs} bbs", run)
    records = [struct.unpack_from("<IHH", data, pos + 8 * i) for i in range(nbbs)]
    for off, size, mid in records:
        expect(mid < count, f"record with module id {mid} of {count}", run)
        mod = modules[mid]
        expect(size > 0 and off + size <= mod["end"] - mod["base"],
               f"record {off:#x}+{size} outside module {mid} ({mod['path']})", run)
    expect(len(set(records)) == len(records), "a block recorded twice", run)
    return modules, records


def drcov_run(program, extra=(), oracle=False):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cov.drcov")
        r = qemu(["script=drcov", "filename=" + out] + list(extra), program, oracle=oracle)
        expect(r.status == 0, "guest failed", r)
        expect(os.path.exists(out), "no drcov file", r)
        modules, records = parse_drcov(out, r)
        return r, modules, records


@case
def drcov_static_guest_module_is_the_elf_image():
    prog = guest("loop")
    r, modules, records = drcov_run([prog, "3"])
    _, e_entry, low = elf_layout(prog)
    main = modules[0]
    expect(main["path"] == os.path.realpath(prog), "module 0 is the program", r)
    expect(main["base"] == low and main["entry"] == e_entry, f"base/entry {main}", r)
    starts = {modules[i]["base"] + off for off, _, i in records}
    expect(symbol(prog, "main") in starts, "main's first block was not recorded", r)
    expect(all(i == 0 for _, _, i in records), "a static program has one module", r)


@case
def drcov_dynamic_ls_has_every_library():
    r, modules, records = drcov_run(["/bin/ls", "-l", "/"])
    expect("bin" in r.out, "ls output", r)
    paths = [m["path"] for m in modules]
    ls = os.path.realpath("/bin/ls")
    expect(paths[0] == ls, f"module 0 is {paths[0]}, not {ls}", r)
    e_type, e_entry, low = elf_layout(ls)
    expect(e_type == 3 and modules[0]["entry"] == modules[0]["base"] + e_entry - low,
           "a PIE program's entry is base + e_entry", r)
    libc = [m for m in modules if os.path.basename(m["path"]).startswith("libc.so")]
    ld = [m for m in modules if os.path.basename(m["path"]).startswith("ld-linux")]
    expect(len(libc) == 1 and len(ld) == 1, f"libc and ld.so expected in {paths}", r)
    used = {i for _, _, i in records}
    expect({0, libc[0]["id"], ld[0]["id"]} <= used, "blocks in ls, libc and ld.so expected", r)
    for m in modules:
        expect(m["base"] < m["end"], f"empty module {m}", r)
    spans = sorted((m["base"], m["end"]) for m in modules)
    expect(all(x[1] <= y[0] for x, y in zip(spans, spans[1:])), "modules overlap", r)


@case
def drcov_follows_mmap_munmap_and_anonymous_code():
    prog = guest("mapexec")
    r, modules, records = drcov_run([prog, "/bin/true"])
    m = re.search(r"^file 0x([0-9a-f]+)$", r.out, re.M)
    j = re.search(r"^jit 42 at 0x([0-9a-f]+)$", r.out, re.M)
    expect(m and j and "faults 5" in r.out, "guest output", r)
    file_addr, jit_addr = int(m.group(1), 16), int(j.group(1), 16)
    true = os.path.realpath("/bin/true")
    mapped = [x for x in modules if x["path"] == true]
    expect(len(mapped) == 1, f"{true} (mapped PROT_EXEC, never run) missing", r)
    _, e_entry, low = elf_layout(true)
    expect(mapped[0]["base"] == file_addr and mapped[0]["end"] == file_addr + 4096 and
           mapped[0]["entry"] == file_addr + e_entry - low, f"mapped file module {mapped[0]}", r)
    expect(not any(i == mapped[0]["id"] for _, _, i in records), "no code ran in it", r)
    jit = [(modules[i], off, size) for off, size, i in records
           if modules[i]["base"] + off == jit_addr]
    expect(len(jit) == 1 and jit[0][0]["path"] == "[anon]" and jit[0][2] == 6,
           f"the 6-byte JIT block in an [anon] module expected, got {jit}", r)


@refused_install
def drcov_unwritable_file_is_refused():
    r = qemu(["script=drcov", "filename=/nonexistent/dir/x.drcov"], [guest("loop"), "1"])
    expect(r.status == 1 and "drcov.lua: cannot write filename=/nonexistent/dir/x.drcov" in r.err,
           "clear error at load", r)


# ---- cflow ----

CFLOW_NODE = re.compile(r"^  addr: 0x([0-9a-f]+) (.*?): (.*) \((branch|sync fault)\)$")


def parse_cflow(text, run=None):
    """Parses cflow's report: (collected, [node dicts in printed order])."""
    lines = [l for l in text.splitlines() if not l.startswith(("oracle:", "ref:"))]
    m = re.fullmatch(r"collected (\d+) control flow nodes in the hash table", lines[0])
    expect(m is not None, "collected line", run)
    nodes, i = [], 1
    while i < len(lines):
        n = CFLOW_NODE.match(lines[i])
        expect(n is not None, f"node line {lines[i]!r}", run)
        node = {"addr": int(n.group(1), 16), "symbol": n.group(2), "disas": n.group(3),
                "type": n.group(4), "early": 0, "dests": []}
        i += 1
        e = re.fullmatch(r"    early exits (\d+)", lines[i])
        if e:
            node["early"] = int(e.group(1))
            expect(node["early"] > 0, "early exits 0 must not be printed", run)
            i += 1
        b = re.fullmatch(r"    branches (\d+)", lines[i])
        expect(b is not None, f"branches line {lines[i]!r}", run)
        node["branches"] = int(b.group(1))
        i += 1
        while i < len(lines) and lines[i].startswith("      to "):
            d = re.fullmatch(r"      to 0x([0-9a-f]+) \((\d+)\)", lines[i])
            expect(d is not None, f"dest line {lines[i]!r}", run)
            node["dests"].append((int(d.group(1), 16), int(d.group(2))))
            i += 1
        expect(sum(c for _, c in node["dests"]) == node["branches"], "dests add up", run)
        nodes.append(node)
    expect(len(nodes) <= 10, "at most 10 nodes", run)
    return int(m.group(1)), nodes


# A plain reference: a Lua callback on every instruction remembers the last one each vCPU started;
# at each block start that does not follow it, the edge last -> block start is counted. Nodes:
# last instructions of translated blocks, plus edge sources.
CFLOW_REF = r"""
local last, edges, nodes = {}, {}, {}
local function on_insn(vcpu, d)
  if d[3] then
    local p = last[vcpu]
    if p and p[2] ~= d[1] then
      nodes[p[1]] = true
      local e = edges[p[1]] or {}
      edges[p[1]] = e
      e[d[1]] = (e[d[1]] or 0) + 1
    end
  end
  last[vcpu] = d
end
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:on_exec(on_insn, { insn.vaddr, insn.vaddr + insn.size, insn.index == 1 })
    if insn.index == #tb then nodes[insn.vaddr] = true end
  end
end)
qemu.on_exit(function()
  local n = 0
  for _ in pairs(nodes) do n = n + 1 end
  qemu.printf("ref: collected %d\n", n)
  for from, e in pairs(edges) do
    for to, c in pairs(e) do qemu.printf("ref: edge %x %x %d\n", from, to, c) end
  end
end)
"""


def cflow_vs_reference(program, sort):
    def run(path):
        return tt_run([["script=" + path], ["script=cflow", "sort=" + sort]], program)
    r = with_lua(CFLOW_REF, run)
    expect(r.status == 0, "run failed", r)
    collected, nodes = parse_cflow(r.log, r)
    ref = re.search(r"^ref: collected (\d+)$", r.log, re.M)
    edges = {}
    for line in r.log.splitlines():
        m = re.fullmatch(r"ref: edge ([0-9a-f]+) ([0-9a-f]+) (\d+)", line)
        if m:
            edges.setdefault(int(m.group(1), 16), {})[int(m.group(2), 16)] = int(m.group(3))
    expect(ref and collected == int(ref.group(1)), f"collected {collected} != reference", r)
    key = {"hottest": lambda e: sum(e.values()), "exceptions": len, "early": lambda e: 0}[sort]
    ranked = sorted(edges, key=lambda a: (-key(edges[a]), a))[:10]
    expect([n["addr"] for n in nodes] == ranked, "nodes or their order differ from the reference", r)
    for n in nodes:
        expect(dict(n["dests"]) == edges[n["addr"]], f"node {n['addr']:#x}: dests differ", r)
        expect(n["early"] == 0 and n["type"] == "branch", "no early exits in this guest", r)
    return r, nodes


@case
def cflow_matches_a_per_instruction_reference():
    for sort in ("hottest", "exceptions", "early"):
        cflow_vs_reference([guest("loop"), "20"], sort)


@case
def cflow_loop_back_edge_counts_follow_the_rounds():
    prog = guest("loop")
    for rounds in (7, 20):
        r = qemu(["script=cflow"], [prog, str(rounds)])
        expect(r.status == 0, "run", r)
        _, nodes = parse_cflow(r.log, r)
        top = nodes[0]
        # the inner loop's back edge: taken 4095 times in each round of 4096 iterations
        expect(top["symbol"] == "main" and top["type"] == "branch" and len(top["dests"]) == 1,
               f"hottest node {top}", r)
        dest, count = top["dests"][0]
        expect(count == top["branches"] == rounds * 4095 and dest < top["addr"],
               f"back edge taken {count}, expected {rounds * 4095}", r)
        keys = [(-n["branches"], n["addr"]) for n in nodes]
        expect(keys == sorted(keys), "not ranked by branches, then address", r)


@case
def cflow_counts_early_exits_at_the_faulting_load():
    prog = guest("mapexec")
    r = qemu(["script=cflow", "sort=early"], [prog])
    expect(r.status == 0 and "faults 5" in r.out, "guest", r)
    _, nodes = parse_cflow(r.log, r)
    top = nodes[0]
    expect(top["early"] == 5 and top["branches"] == 5 and top["type"] == "sync fault" and
           top["symbol"] == "main", f"faulting load node {top}", r)
    expect(top["dests"] == [(symbol(prog, "on_segv"), 5)], "each fault goes to on_segv", r)
    expect(all(n["early"] == 0 for n in nodes[1:]), "one faulting instruction only", r)


@case
def cflow_with_8_threads_counts_every_back_edge():
    r = qemu(["script=cflow"], [guest("threads"), "100"])
    expect(r.status == 0 and "threads 8 total" in r.out, "guest", r)
    _, nodes = parse_cflow(r.log, r)
    top = nodes[0]
    # threads.c: each of 8 threads runs rounds x 512 iterations; the back edge is taken 511 times
    expect(top["branches"] == 8 * 100 * 511 and len(top["dests"]) == 1 and top["symbol"] == "work",
           f"hottest node {top}", r)


@refused_install
def cflow_rejects_an_unknown_sort():
    r = qemu(["script=cflow", "sort=popular"], [guest("loop"), "1"])
    expect(r.status == 1 and "cflow.lua: sort=popular: expected one of hottest, early, exceptions"
           in r.err, "message", r)


# ---- stoptrigger ----
# A stop leaves through exit() (glibc's exit handlers run, as with QEMU's plugin), which deadlocks
# under the ASan build's preloaded runtime: these cases are skipped there (refused_install marks
# exactly such cases).

STOP_REF = r"""
local n, target = 0, tonumber(qemu.args.target)
local function on_insn(vcpu, pc)
  n = n + 1
  if n == target then qemu.printf("ref: pc=0x%x\n", pc); qemu.flush() end
end
qemu.on_translate(function(tb)
  for insn in tb:insns() do insn:on_exec(on_insn, insn.vaddr) end
end)
"""


@refused_install
def stoptrigger_icount_stops_after_exactly_n_instructions():
    n = 250000
    prog = guest("loop")
    full = qemu(["script=count"], [prog, "20"])
    total = int(re.search(r"^insns: (\d+)$", full.log, re.M).group(1))
    expect(total > n, "the guest must run more than N instructions", full)
    # the reference, loaded after stoptrigger: QEMU 7.2 runs the instruction callbacks of the
    # plugin loaded last first, so the reference sees instruction N+1 before the stop
    r = with_lua(STOP_REF, lambda path: tt_run(
        [["script=stoptrigger", f"icount={n}:7"], ["script=" + path, f"target={n + 1}"]],
        [prog, "20"], oracle=True))
    expect(r.status == 7, f"exit status {r.status}, expected 7", r)
    ref = fields(r.log, "ref")
    expect(f"icount reached at {ref['pc']}, exiting\n" in r.log, "message or pc", r)
    expect(fields(r.log, "oracle")["insns"] == str(n), "the oracle saw exactly N instructions", r)
    expect("sum " not in r.out, "the guest must not finish", r)
    r = qemu(["script=stoptrigger", "icount=0x10"], [prog, "20"])
    expect(r.status == 0 and re.fullmatch(r"icount reached at 0x[0-9a-f]+, exiting\n", r.log),
           "hex N, default status 0", r)


@refused_install
def stoptrigger_addr_stops_before_main_runs():
    prog = guest("loop")
    main = symbol(prog, "main")
    for arg, status in ((f"addr={main:#x}:9", 9), (f"addr={main}", 0),
                        (f"addr=0x10:3+{main:#x}:4", 4)):
        r = qemu(["script=stoptrigger", arg], [prog, "20"])
        expect(r.status == status and r.log == f"{main:#x} reached, exiting\n", arg, r)
        expect("round" not in r.out, "main must not have run", r)
    r = qemu(["script=stoptrigger", f"icount=100000000:5", f"addr={main:#x}:6"], [prog, "20"])
    expect(r.status == 6, "the first trigger wins", r)


@refused_install
def stoptrigger_with_8_threads_exits_with_the_code():
    r = qemu(["script=stoptrigger", "icount=300000:4"], [guest("threads")], oracle=True)
    expect(r.status == 4 and re.search(r"^icount reached at 0x[0-9a-f]+, exiting$", r.log, re.M),
           "status and message", r)
    expect(int(fields(r.log, "oracle")["insns"]) >= 300000, "oracle ran at its exit", r)


@refused_install
def stoptrigger_arguments_are_checked():
    for args, msg in ((["icount=0"], "icount: '0' must be a positive integer"),
                      (["icount=12abc"], "icount: '12abc' is not a number"),
                      (["addr=main"], "addr: 'main' is not a number"),
                      (["icount=5:300"], "icount: exit code '300' must be a number from 0 to 255"),
                      ([], "'icount' or 'addr' argument missing")):
        r = qemu(["script=stoptrigger"] + args, [guest("loop"), "1"])
        expect(r.status == 1 and "stoptrigger.lua: " + msg in r.err, f"{args}: message", r)


# ---- bbv ----

def read_bbv(path, run=None):
    """The lines of a .bb file as lists of (id, count)."""
    text = open(path).read()
    expect(text == "" or text.endswith("\n"), "last line unterminated", run)
    out = []
    for line in text.splitlines():
        expect(re.fullmatch(r"T(:\d+:\d+ )+", line) is not None, f"bad line {line[:80]!r}", run)
        pairs = [(int(a), int(b)) for a, b in re.findall(r":(\d+):(\d+) ", line)]
        ids = [a for a, _ in pairs]
        expect(ids == sorted(set(ids)) and all(c > 0 for _, c in pairs), "ids/counts", run)
        out.append(pairs)
    return out


# Reference: the block-weighted instruction count bbv uses (a block's instruction count each time
# it starts). On QEMU 7.2 it can exceed the instructions executed, because 7.2 lists an x86
# instruction it dropped at a page crossing as the last one of its block (fixed in QEMU 8.0).
BBV_REF = r"""
local c = qemu.counter()
qemu.on_translate(function(tb) tb:count(c, #tb) end)
qemu.on_exit(function() qemu.printf("ref: weighted=%d\n", c:sum()) end)
"""


def bbv_run(program, interval, ref=True):
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "out")
        scripts = [["script=bbv", f"interval={interval}", "outfile=" + prefix]]
        if ref:
            r = with_lua(BBV_REF, lambda path: tt_run(scripts + [["script=" + path]], program,
                                                      oracle=True))
        else:
            r = tt_run(scripts, program, oracle=True)
        expect(r.status == 0, "run failed", r)
        files = {}
        for name in os.listdir(tmp):
            m = re.fullmatch(r"out\.(\d+)\.bb", name)
            expect(m is not None, f"unexpected file {name}", r)
            files[int(m.group(1))] = read_bbv(os.path.join(tmp, name), r)
        return r, files


@case
def bbv_interval_1_writes_every_block_execution():
    r, files = bbv_run([guest("loop"), "1"], 1)
    lines = files[0]
    oracle = fields(r.log, "oracle")
    weighted = int(fields(r.log, "ref")["weighted"])
    expect(len(lines) == int(oracle["tbs"]), f"{len(lines)} lines != oracle tbs", r)
    expect(all(len(l) == 1 for l in lines), "one block per line", r)
    expect(sum(c for l in lines for _, c in l) == weighted, "counts add up to the weighted total", r)
    expect(0 <= weighted - int(oracle["insns"]) < 20, "weighted ~ oracle insns", r)


@case
def bbv_intervals_split_the_run():
    interval = 10000
    r, files = bbv_run([guest("loop"), "20"], interval)
    lines = files[0]
    weighted = int(fields(r.log, "ref")["weighted"])
    expect(len(files) == 1, "one vCPU, one file", r)
    expect(len(lines) == weighted // interval, f"{len(lines)} lines for {weighted} insns", r)
    total = 0
    for k, line in enumerate(lines, 1):
        total += sum(c for _, c in line)
        # an interval ends with the block that completes it: less than one block (< 512) over
        expect(k * interval <= total < k * interval + 512, f"line {k}: cumulative {total}", r)
    expect(total <= weighted, "more counted than ran", r)


@case
def bbv_one_file_per_vcpu_with_8_threads():
    interval = 50000
    r, files = bbv_run([guest("threads"), "100"], interval)
    # vCPU 0 is the main thread; the workers get 1..8, or fewer indices when QEMU reuses those of
    # threads that have ended
    expect(len(files) >= 2 and sorted(files) == list(range(len(files))), f"files {sorted(files)}", r)
    weighted = int(fields(r.log, "ref")["weighted"])
    lines = sum(len(l) for l in files.values())
    total = sum(c for l in files.values() for line in l for _, c in line)
    # each file has floor(its instructions / interval) lines, leaving less than one interval (plus
    # one block) unwritten; the workers run about 8 x 470000 instructions, so ~70 lines in all
    expect(weighted // interval - len(files) <= lines <= weighted // interval and lines > 50,
           f"{lines} intervals for {weighted} instructions in {len(files)} files", r)
    expect(lines * interval <= total <= weighted, "counts vs intervals", r)
    expect(weighted - total < len(files) * (interval + 512), "unwritten tails too large", r)


@refused_install
def bbv_needs_outfile():
    r = qemu(["script=bbv"], [guest("loop"), "1"])
    expect(r.status == 1 and "bbv.lua: argument 'outfile' is required" in r.err, "message", r)


# ---- system mode: the bare-metal guest (tests/guests/bare/boot.S, LOOPS iterations of 4
# instructions at 0xf000a..0xf0016, entered from the reset vector at 0xfffffff0) ----

@case
def trace_tools_in_system_mode_on_7_2_and_10_0():
    for version in ("7.2", "10.0"):
        r = system_qemu(version, ["script=cflow"])
        expect(r.status == 33, f"{version}: cflow run", r)
        _, nodes = parse_cflow(r.log, r)
        expect(nodes[0]["addr"] == 0xf0016 and nodes[0]["dests"] == [(0xf000a, LOOPS - 1)],
               f"{version}: the loop's back edge, taken LOOPS - 1 times", r)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "sys.drcov")
            r = system_qemu(version, ["script=drcov", "filename=" + out])
            expect(r.status == 33, f"{version}: drcov run", r)
            modules, records = parse_drcov(out, r)
            starts = {modules[i]["base"] + off for off, _, i in records}
            expect([m["path"] for m in modules] == ["[system]"] and
                   {0xfffffff0, 0xf0000, 0xf000a} <= starts, f"{version}: {modules} {starts}", r)
            prefix = os.path.join(tmp, "sys")
            r = system_qemu(version, ["script=bbv", "interval=100", "outfile=" + prefix])
            lines = read_bbv(prefix + ".0.bb", r)
            expect(len(lines) == (4 * LOOPS + 6) // 100, f"{version}: {len(lines)} intervals", r)


@refused_install
def stoptrigger_in_system_mode():
    for version in ("7.2", "10.0"):
        # instruction 101: the reset jump, 3 set-up instructions, 24 loops of 4, then the 25th
        # loop's first instruction
        r = system_qemu(version, ["script=stoptrigger", "icount=100:5"])
        expect(r.status == 5 and r.log == "icount reached at 0xf000a, exiting\n", version, r)
        r = system_qemu(version, ["script=stoptrigger", "addr=0xf0016:6"])
        expect(r.status == 6 and r.log == "0xf0016 reached, exiting\n", version, r)
