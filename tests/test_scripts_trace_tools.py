"""Tests of scripts/drcov.lua, scripts/cflow.lua, scripts/stoptrigger.lua and scripts/bbv.lua.

Facts are checked against the oracle, against the guest's ELF file and symbols, against what the
guest prints, or against a plain Lua reference (a Lua callback on every instruction) loaded as a
second plugin in the same QEMU run, so both see the very same execution."""
import os
import re
import struct
import tempfile

import pytest

from qemu_run import (LOOPS, fields, guest, lua_file, qemu, qemu_scripts, symbol,
                      system_qemu)


def with_lua(text, fn):
    """Calls fn(path) with `text` in a temporary .lua file."""
    path = lua_file(text)
    try:
        return fn(path)
    finally:
        os.unlink(path)


def elf_layout(path):
    """(e_type, e_entry, lowest PT_LOAD address, page-aligned) of a little-endian ELF64 file."""
    with open(path, "rb") as f:
        data = f.read(65536)
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path}: not ELF64 LE"
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
    assert lines[:2] == ["DRCOV VERSION: 2", "DRCOV FLAVOR: drcov-64"], f"header\n{run}"
    m = re.fullmatch(r"Module Table: version 2, count (\d+)", lines[2])
    assert m is not None, f"module table line {lines[2]!r}\n{run}"
    count = int(m.group(1))
    assert lines[3] == "Columns: id, base, end, entry, path", f"columns line\n{run}"
    modules = []
    for i, line in enumerate(lines[4:-1]):
        mm = re.fullmatch(r"(\d+), 0x([0-9a-f]+), 0x([0-9a-f]+), 0x([0-9a-f]+), (.+)", line)
        assert mm is not None and int(mm.group(1)) == i, f"module line {line!r}\n{run}"
        modules.append({"id": i, "base": int(mm.group(2), 16), "end": int(mm.group(3), 16),
                        "entry": int(mm.group(4), 16), "path": mm.group(5)})
    assert len(modules) == count, f"{len(modules)} module lines, table says {count}\n{run}"
    m = re.fullmatch(r"BB Table: (\d+) bbs", lines[-1])
    assert m is not None, f"BB Table line\n{run}"
    nbbs = int(m.group(1))
    assert len(data) - pos == 8 * nbbs, f"{len(data) - pos} bytes of records for {nbbs} bbs\n{run}"
    records = [struct.unpack_from("<IHH", data, pos + 8 * i) for i in range(nbbs)]
    for off, size, mid in records:
        assert mid < count, f"record with module id {mid} of {count}\n{run}"
        mod = modules[mid]
        assert size > 0 and off + size <= mod["end"] - mod["base"], (
            f"record {off:#x}+{size} outside module {mid} ({mod['path']})\n{run}")
    assert len(set(records)) == len(records), f"a block recorded twice\n{run}"
    return modules, records


def drcov_run(program, extra=(), oracle=False):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cov.drcov")
        r = qemu(["script=drcov", "filename=" + out] + list(extra), program, oracle=oracle)
        assert r.status == 0, f"guest failed\n{r}"
        assert os.path.exists(out), f"no drcov file\n{r}"
        modules, records = parse_drcov(out, r)
        return r, modules, records


def test_drcov_static_guest_module_is_the_elf_image():
    prog = guest("loop")
    r, modules, records = drcov_run([prog, "3"])
    _, e_entry, low = elf_layout(prog)
    main = modules[0]
    assert main["path"] == os.path.realpath(prog), f"module 0 is the program\n{r}"
    assert main["base"] == low and main["entry"] == e_entry, f"base/entry {main}\n{r}"
    starts = {modules[i]["base"] + off for off, _, i in records}
    assert symbol(prog, "main") in starts, f"main's first block was not recorded\n{r}"
    assert all(i == 0 for _, _, i in records), f"a static program has one module\n{r}"


def test_drcov_dynamic_ls_has_every_library():
    r, modules, records = drcov_run(["/bin/ls", "-l", "/"])
    assert "bin" in r.out, f"ls output\n{r}"
    paths = [m["path"] for m in modules]
    ls = os.path.realpath("/bin/ls")
    assert paths[0] == ls, f"module 0 is {paths[0]}, not {ls}\n{r}"
    e_type, e_entry, low = elf_layout(ls)
    assert e_type == 3 and modules[0]["entry"] == modules[0]["base"] + e_entry - low, (
        f"a PIE program's entry is base + e_entry\n{r}")
    libc = [m for m in modules if os.path.basename(m["path"]).startswith("libc.so")]
    ld = [m for m in modules if os.path.basename(m["path"]).startswith("ld-linux")]
    assert len(libc) == 1 and len(ld) == 1, f"libc and ld.so expected in {paths}\n{r}"
    used = {i for _, _, i in records}
    assert {0, libc[0]["id"], ld[0]["id"]} <= used, f"blocks in ls, libc and ld.so expected\n{r}"
    for m in modules:
        assert m["base"] < m["end"], f"empty module {m}\n{r}"
    spans = sorted((m["base"], m["end"]) for m in modules)
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:])), f"modules overlap\n{r}"


def test_drcov_follows_mmap_munmap_and_anonymous_code():
    prog = guest("mapexec")
    r, modules, records = drcov_run([prog, "/bin/true"])
    m = re.search(r"^file 0x([0-9a-f]+)$", r.out, re.M)
    j = re.search(r"^jit 42 at 0x([0-9a-f]+)$", r.out, re.M)
    assert m and j and "faults 5" in r.out, f"guest output\n{r}"
    file_addr, jit_addr = int(m.group(1), 16), int(j.group(1), 16)
    true = os.path.realpath("/bin/true")
    mapped = [x for x in modules if x["path"] == true]
    assert len(mapped) == 1, f"{true} (mapped PROT_EXEC, never run) missing\n{r}"
    _, e_entry, low = elf_layout(true)
    assert (mapped[0]["base"] == file_addr and mapped[0]["end"] == file_addr + 4096 and
            mapped[0]["entry"] == file_addr + e_entry - low), f"mapped file module {mapped[0]}\n{r}"
    assert not any(i == mapped[0]["id"] for _, _, i in records), f"no code ran in it\n{r}"
    jit = [(modules[i], off, size) for off, size, i in records
           if modules[i]["base"] + off == jit_addr]
    assert len(jit) == 1 and jit[0][0]["path"] == "[anon]" and jit[0][2] == 6, (
        f"the 6-byte JIT block in an [anon] module expected, got {jit}\n{r}")


@pytest.mark.exits_qemu
def test_drcov_unwritable_file_is_refused():
    r = qemu(["script=drcov", "filename=/nonexistent/dir/x.drcov"], [guest("loop"), "1"])
    assert r.status == 1 and "drcov.lua: cannot write filename=/nonexistent/dir/x.drcov" in r.err, (
        f"clear error at load\n{r}")


# ---- cflow ----

CFLOW_NODE = re.compile(r"^  addr: 0x([0-9a-f]+) (.*?): (.*) \((branch|sync fault)\)$")


def parse_cflow(text, run=None):
    """Parses cflow's report: (collected, [node dicts in printed order])."""
    lines = [l for l in text.splitlines() if not l.startswith(("oracle:", "ref:"))]
    m = re.fullmatch(r"collected (\d+) control flow nodes in the hash table", lines[0])
    assert m is not None, f"collected line\n{run}"
    nodes, i = [], 1
    while i < len(lines):
        n = CFLOW_NODE.match(lines[i])
        assert n is not None, f"node line {lines[i]!r}\n{run}"
        node = {"addr": int(n.group(1), 16), "symbol": n.group(2), "disas": n.group(3),
                "type": n.group(4), "early": 0, "dests": []}
        i += 1
        e = re.fullmatch(r"    early exits (\d+)", lines[i])
        if e:
            node["early"] = int(e.group(1))
            assert node["early"] > 0, f"early exits 0 must not be printed\n{run}"
            i += 1
        b = re.fullmatch(r"    branches (\d+)", lines[i])
        assert b is not None, f"branches line {lines[i]!r}\n{run}"
        node["branches"] = int(b.group(1))
        i += 1
        while i < len(lines) and lines[i].startswith("      to "):
            d = re.fullmatch(r"      to 0x([0-9a-f]+) \((\d+)\)", lines[i])
            assert d is not None, f"dest line {lines[i]!r}\n{run}"
            node["dests"].append((int(d.group(1), 16), int(d.group(2))))
            i += 1
        assert sum(c for _, c in node["dests"]) == node["branches"], f"dests add up\n{run}"
        nodes.append(node)
    assert len(nodes) <= 10, f"at most 10 nodes\n{run}"
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
        return qemu_scripts([["script=" + path], ["script=cflow", "sort=" + sort]], program)
    r = with_lua(CFLOW_REF, run)
    assert r.status == 0, f"run failed\n{r}"
    collected, nodes = parse_cflow(r.log, r)
    ref = re.search(r"^ref: collected (\d+)$", r.log, re.M)
    edges = {}
    for line in r.log.splitlines():
        m = re.fullmatch(r"ref: edge ([0-9a-f]+) ([0-9a-f]+) (\d+)", line)
        if m:
            edges.setdefault(int(m.group(1), 16), {})[int(m.group(2), 16)] = int(m.group(3))
    assert ref and collected == int(ref.group(1)), f"collected {collected} != reference\n{r}"
    key = {"hottest": lambda e: sum(e.values()), "exceptions": len, "early": lambda e: 0}[sort]
    ranked = sorted(edges, key=lambda a: (-key(edges[a]), a))[:10]
    assert [n["addr"] for n in nodes] == ranked, (
        f"nodes or their order differ from the reference\n{r}")
    for n in nodes:
        assert dict(n["dests"]) == edges[n["addr"]], f"node {n['addr']:#x}: dests differ\n{r}"
        assert n["early"] == 0 and n["type"] == "branch", f"no early exits in this guest\n{r}"
    return r, nodes


def test_cflow_matches_a_per_instruction_reference():
    for sort in ("hottest", "exceptions", "early"):
        cflow_vs_reference([guest("loop"), "20"], sort)


def test_cflow_loop_back_edge_counts_follow_the_rounds():
    prog = guest("loop")
    for rounds in (7, 20):
        r = qemu(["script=cflow"], [prog, str(rounds)])
        assert r.status == 0, f"run\n{r}"
        _, nodes = parse_cflow(r.log, r)
        top = nodes[0]
        # the inner loop's back edge: taken 4095 times in each round of 4096 iterations
        assert top["symbol"] == "main" and top["type"] == "branch" and len(top["dests"]) == 1, (
            f"hottest node {top}\n{r}")
        dest, count = top["dests"][0]
        assert count == top["branches"] == rounds * 4095 and dest < top["addr"], (
            f"back edge taken {count}, expected {rounds * 4095}\n{r}")
        keys = [(-n["branches"], n["addr"]) for n in nodes]
        assert keys == sorted(keys), f"not ranked by branches, then address\n{r}"


def test_cflow_counts_early_exits_at_the_faulting_load():
    prog = guest("mapexec")
    r = qemu(["script=cflow", "sort=early"], [prog])
    assert r.status == 0 and "faults 5" in r.out, f"guest\n{r}"
    _, nodes = parse_cflow(r.log, r)
    top = nodes[0]
    assert (top["early"] == 5 and top["branches"] == 5 and top["type"] == "sync fault" and
            top["symbol"] == "main"), f"faulting load node {top}\n{r}"
    assert top["dests"] == [(symbol(prog, "on_segv"), 5)], f"each fault goes to on_segv\n{r}"
    assert all(n["early"] == 0 for n in nodes[1:]), f"one faulting instruction only\n{r}"


def test_cflow_with_8_threads_counts_every_back_edge():
    r = qemu(["script=cflow"], [guest("threads"), "100"])
    assert r.status == 0 and "threads 8 total" in r.out, f"guest\n{r}"
    _, nodes = parse_cflow(r.log, r)
    top = nodes[0]
    # threads.c: each of 8 threads runs rounds x 512 iterations; the back edge is taken 511 times
    assert top["branches"] == 8 * 100 * 511 and len(top["dests"]) == 1 and top["symbol"] == "work", (
        f"hottest node {top}\n{r}")


@pytest.mark.exits_qemu
def test_cflow_rejects_an_unknown_sort():
    r = qemu(["script=cflow", "sort=popular"], [guest("loop"), "1"])
    assert (r.status == 1 and "cflow.lua: sort=popular: expected one of hottest, early, exceptions"
            in r.err), f"message\n{r}"


# ---- stoptrigger ----
# A stop leaves through exit() (glibc's exit handlers run, as with QEMU's plugin), which deadlocks
# under the ASan build's preloaded runtime: these cases are skipped there (the exits_qemu marker
# says so).

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


@pytest.mark.exits_qemu
def test_stoptrigger_icount_stops_after_exactly_n_instructions():
    n = 250000
    prog = guest("loop")
    full = qemu(["script=count"], [prog, "20"])
    total = int(re.search(r"^insns: (\d+)$", full.log, re.M).group(1))
    assert total > n, f"the guest must run more than N instructions\n{full}"
    # the reference, loaded after stoptrigger: QEMU 7.2 runs the instruction callbacks of the
    # plugin loaded last first, so the reference sees instruction N+1 before the stop
    r = with_lua(STOP_REF, lambda path: qemu_scripts(
        [["script=stoptrigger", f"icount={n}:7"], ["script=" + path, f"target={n + 1}"]],
        [prog, "20"], oracle=True))
    assert r.status == 7, f"exit status {r.status}, expected 7\n{r}"
    ref = fields(r.log, "ref")
    assert f"icount reached at {ref['pc']}, exiting\n" in r.log, f"message or pc\n{r}"
    assert fields(r.log, "oracle")["insns"] == str(n), f"the oracle saw exactly N instructions\n{r}"
    assert "sum " not in r.out, f"the guest must not finish\n{r}"
    r = qemu(["script=stoptrigger", "icount=0x10"], [prog, "20"])
    assert r.status == 0 and re.fullmatch(r"icount reached at 0x[0-9a-f]+, exiting\n", r.log), (
        f"hex N, default status 0\n{r}")


@pytest.mark.exits_qemu
def test_stoptrigger_addr_stops_before_main_runs():
    prog = guest("loop")
    main = symbol(prog, "main")
    for arg, status in ((f"addr={main:#x}:9", 9), (f"addr={main}", 0),
                        (f"addr=0x10:3+{main:#x}:4", 4)):
        r = qemu(["script=stoptrigger", arg], [prog, "20"])
        assert r.status == status and r.log == f"{main:#x} reached, exiting\n", f"{arg}\n{r}"
        assert "round" not in r.out, f"main must not have run\n{r}"
    r = qemu(["script=stoptrigger", "icount=100000000:5", f"addr={main:#x}:6"], [prog, "20"])
    assert r.status == 6, f"the first trigger wins\n{r}"


@pytest.mark.exits_qemu
def test_stoptrigger_with_8_threads_exits_with_the_code():
    r = qemu(["script=stoptrigger", "icount=300000:4"], [guest("threads")], oracle=True)
    assert r.status == 4 and re.search(r"^icount reached at 0x[0-9a-f]+, exiting$", r.log, re.M), (
        f"status and message\n{r}")
    assert int(fields(r.log, "oracle")["insns"]) >= 300000, f"oracle ran at its exit\n{r}"


@pytest.mark.exits_qemu
def test_stoptrigger_arguments_are_checked():
    for args, msg in ((["icount=0"], "icount: '0' must be a positive integer"),
                      (["icount=12abc"], "icount: '12abc' is not a number"),
                      (["addr=main"], "addr: 'main' is not a number"),
                      (["icount=5:300"], "icount: exit code '300' must be a number from 0 to 255"),
                      ([], "'icount' or 'addr' argument missing")):
        r = qemu(["script=stoptrigger"] + args, [guest("loop"), "1"])
        assert r.status == 1 and "stoptrigger.lua: " + msg in r.err, f"{args}: message\n{r}"


# ---- bbv ----

def read_bbv(path, run=None):
    """The lines of a .bb file as lists of (id, count)."""
    text = open(path).read()
    assert text == "" or text.endswith("\n"), f"last line unterminated\n{run}"
    out = []
    for line in text.splitlines():
        assert re.fullmatch(r"T(:\d+:\d+ )+", line) is not None, f"bad line {line[:80]!r}\n{run}"
        pairs = [(int(a), int(b)) for a, b in re.findall(r":(\d+):(\d+) ", line)]
        ids = [a for a, _ in pairs]
        assert ids == sorted(set(ids)) and all(c > 0 for _, c in pairs), f"ids/counts\n{run}"
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
            r = with_lua(BBV_REF, lambda path: qemu_scripts(scripts + [["script=" + path]], program,
                                                      oracle=True))
        else:
            r = qemu_scripts(scripts, program, oracle=True)
        assert r.status == 0, f"run failed\n{r}"
        files = {}
        for name in os.listdir(tmp):
            m = re.fullmatch(r"out\.(\d+)\.bb", name)
            assert m is not None, f"unexpected file {name}\n{r}"
            files[int(m.group(1))] = read_bbv(os.path.join(tmp, name), r)
        return r, files


def test_bbv_interval_1_writes_every_block_execution():
    r, files = bbv_run([guest("loop"), "1"], 1)
    lines = files[0]
    oracle = fields(r.log, "oracle")
    weighted = int(fields(r.log, "ref")["weighted"])
    assert len(lines) == int(oracle["tbs"]), f"{len(lines)} lines != oracle tbs\n{r}"
    assert all(len(l) == 1 for l in lines), f"one block per line\n{r}"
    assert sum(c for l in lines for _, c in l) == weighted, (
        f"counts add up to the weighted total\n{r}")
    assert 0 <= weighted - int(oracle["insns"]) < 20, f"weighted ~ oracle insns\n{r}"


def test_bbv_intervals_split_the_run():
    interval = 10000
    r, files = bbv_run([guest("loop"), "20"], interval)
    lines = files[0]
    weighted = int(fields(r.log, "ref")["weighted"])
    assert len(files) == 1, f"one vCPU, one file\n{r}"
    assert len(lines) == weighted // interval, f"{len(lines)} lines for {weighted} insns\n{r}"
    total = 0
    for k, line in enumerate(lines, 1):
        total += sum(c for _, c in line)
        # an interval ends with the block that completes it: less than one block (< 512) over
        assert k * interval <= total < k * interval + 512, f"line {k}: cumulative {total}\n{r}"
    assert total <= weighted, f"more counted than ran\n{r}"


def test_bbv_one_file_per_vcpu_with_8_threads():
    interval = 50000
    r, files = bbv_run([guest("threads"), "100"], interval)
    # vCPU 0 is the main thread; the workers get 1..8, or fewer indices when QEMU reuses those of
    # threads that have ended
    assert len(files) >= 2 and sorted(files) == list(range(len(files))), (
        f"files {sorted(files)}\n{r}")
    weighted = int(fields(r.log, "ref")["weighted"])
    lines = sum(len(l) for l in files.values())
    total = sum(c for l in files.values() for line in l for _, c in line)
    # each file has floor(its instructions / interval) lines, leaving less than one interval (plus
    # one block) unwritten; the workers run about 8 x 470000 instructions, so ~70 lines in all
    assert weighted // interval - len(files) <= lines <= weighted // interval and lines > 50, (
        f"{lines} intervals for {weighted} instructions in {len(files)} files\n{r}")
    assert lines * interval <= total <= weighted, f"counts vs intervals\n{r}"
    assert weighted - total < len(files) * (interval + 512), f"unwritten tails too large\n{r}"


@pytest.mark.exits_qemu
def test_bbv_needs_outfile():
    r = qemu(["script=bbv"], [guest("loop"), "1"])
    assert r.status == 1 and "bbv.lua: argument 'outfile' is required" in r.err, f"message\n{r}"


# ---- system mode: the bare-metal guest (tests/guests/bare/boot.S, LOOPS iterations of 4
# instructions at 0xf000a..0xf0016, entered from the reset vector at 0xfffffff0) ----

@pytest.mark.user_host_independent  # system mode only
def test_trace_tools_in_system_mode_on_7_2_and_10_0():
    for version in ("7.2", "10.0"):
        r = system_qemu(version, ["script=cflow"])
        assert r.status == 33, f"{version}: cflow run\n{r}"
        _, nodes = parse_cflow(r.log, r)
        assert nodes[0]["addr"] == 0xf0016 and nodes[0]["dests"] == [(0xf000a, LOOPS - 1)], (
            f"{version}: the loop's back edge, taken LOOPS - 1 times\n{r}")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "sys.drcov")
            r = system_qemu(version, ["script=drcov", "filename=" + out])
            assert r.status == 33, f"{version}: drcov run\n{r}"
            modules, records = parse_drcov(out, r)
            starts = {modules[i]["base"] + off for off, _, i in records}
            assert ([m["path"] for m in modules] == ["[system]"] and
                    {0xfffffff0, 0xf0000, 0xf000a} <= starts), f"{version}: {modules} {starts}\n{r}"
            prefix = os.path.join(tmp, "sys")
            r = system_qemu(version, ["script=bbv", "interval=100", "outfile=" + prefix])
            lines = read_bbv(prefix + ".0.bb", r)
            assert len(lines) == (4 * LOOPS + 6) // 100, f"{version}: {len(lines)} intervals\n{r}"


@pytest.mark.exits_qemu
@pytest.mark.user_host_independent  # system mode only
def test_stoptrigger_in_system_mode():
    for version in ("7.2", "10.0"):
        # instruction 101: the reset jump, 3 set-up instructions, 24 loops of 4, then the 25th
        # loop's first instruction
        r = system_qemu(version, ["script=stoptrigger", "icount=100:5"])
        assert r.status == 5 and r.log == "icount reached at 0xf000a, exiting\n", f"{version}\n{r}"
        r = system_qemu(version, ["script=stoptrigger", "addr=0xf0016:6"])
        assert r.status == 6 and r.log == "0xf0016 reached, exiting\n", f"{version}\n{r}"
