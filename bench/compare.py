"""What a shipped script and QEMU's plugin of the same name must agree on, for bench/run.py.

Each comparer reads one run's output (the plugin log, the files the plugin wrote, the exit
status) into a canonical value, and says whether two such values agree. Canonical values keep
what both plugins promise alike and drop what the scripts' headers list as differences on purpose
(row order among equal counts, QEMU 7.2's 32-bit repeat addresses and 4-byte opcodes, hash-table
merges, the row QEMU leaves off the end of a ranked list, drcov's module table). On QEMU 10 the
guest's libraries and stack are mapped where the host's mmap puts them, and the plugin's own
allocations move that, so there addresses at 0x7f... are made alike ("masked")."""
import collections
import glob
import hashlib
import os
import re
import struct

ADDR_7F = re.compile(r"0x0*7f[0-9a-f]{10}\b")


class Run:
    """One QEMU run's results: exit status, plugin log text, the prefix of the files it wrote;
    host: "7.2" or "10.2"; qlua: whether qlua ran (else QEMU's plugin)."""

    def __init__(self, status, log, files, host, qlua):
        self.status, self.log, self.files, self.host, self.qlua = status, log, files, host, qlua

    def text(self):
        """The log with mmap-placed addresses masked on hosts that place them per run."""
        return self.log if self.host == "7.2" else ADDR_7F.sub("0x7f?", self.log)

    def lines(self):
        return [l for l in self.text().splitlines() if l]


def equal(a, b):
    return a == b


def ranked_same(a, b):
    """a, b: lists of (rank, key) rows of a list cut to its top N. Rows ranked equal to the last
    one shown may differ (which of the ties made the cut), and QEMU leaves off the last row of a
    short list: so rows ranked above the higher of the two lowest ranks must match."""
    if not a or not b:
        return not a and not b
    cut = max(min(r for r, _ in a), min(r for r, _ in b))
    above = lambda rows: collections.Counter(k for r, k in rows if r > cut)
    return above(a) == above(b)


def digest(lines):
    """A multiset of lines as a short value (execlog's can be millions)."""
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


# ---- canonical values, one function per output ----

def exact(run):
    return run.lines()


def line_set(run):
    """Table rows in any order (syscall: equal counts in hash-table order)."""
    return collections.Counter(run.lines())


def bb_totals(run):
    """bb's: N, insns: M of the whole run: 7.2 and qlua print one line, 10.x a line per vCPU and
    'Total: ...' last."""
    found = re.findall(r"bb's: (\d+), insns: (\d+)", run.log)
    return found[-1] if found else None


def insn_total(run):
    """'insns: N' (7.2 inline=on, qlua) or 'total insns: N' (10.x, callback mode)."""
    found = re.findall(r"insns: (\d+)\s*$", run.log, re.M)
    return found[-1] if found else None


def insn_callback(run):
    """Per-vCPU counts, total and repeat executions. QEMU 7.2 folds vCPU V into slot V % 8 and
    prints repeat addresses truncated to 32 bits; qlua prints each vCPU and the full address."""
    cpus, repeats, total = collections.Counter(), collections.Counter(), None
    for line in run.lines():
        m = re.match(r"cpu (\d+) insns: (\d+)$", line)
        if m:
            vcpu = int(m[1]) % 8 if run.host == "7.2" else int(m[1])
            cpus[vcpu] += int(m[2])
        elif line.startswith("total insns: "):
            total = int(line.split(": ")[1])
        else:
            m = re.match(r"detected repeat execution @ 0x([0-9a-f]+)$", line)
            if m:
                repeats[int(m[1], 16) & 0xffffffff] += 1
    return cpus, total, repeats


def hotblocks(run):
    """Rows ranked by ecount: (rank, (pc, icount, ecount), tcount). tcount is not compared (qlua
    translates every block again when a second guest thread starts)."""
    rows = []
    for line in run.lines():
        m = re.match(r"(0x[0-9a-f?]+), (\d+), (\d+), (\d+)$", line)
        if m:
            rows.append((int(m[4]), (m[1], int(m[3]), int(m[4])), int(m[2])))
    return rows


def hotblocks_same(c, q):
    """QEMU keys blocks by pc ^ icount, so two blocks can share an entry: the first one's pc,
    tcount 2 or more, the executions of both. Such rows of `c` (QEMU's, or any first run) are left
    out, with `q`'s rows of the same pc ^ icount (both blocks); the rest must agree as ranked rows
    do."""
    if not c or not q:
        return not c and not q
    def key(k):  # QEMU's entry: pc ^ icount; a masked pc ("0x7f?") keys by itself
        return (k[0], k[1]) if "?" in k[0] else int(k[0], 16) ^ k[1]
    merged = {key(k) for _, k, t in c if t > 1}
    keep = lambda rows: [(r, k) for r, k, _ in rows if key(k) not in merged]
    cut = max(min(r for r, _, _ in c), min(r for r, _, _ in q))
    above = lambda rows: collections.Counter(k for r, k in keep(rows) if r > cut)
    return above(c) == above(q)


def hotpages(run):
    """Rows ranked by reads + writes."""
    rows = []
    for line in run.lines():
        m = re.match(r"(0x[0-9a-f?]+), (0x[0-9a-f]+), (\d+), (0x[0-9a-f]+), (\d+)$", line)
        if m:
            rows.append((int(m[3]) + int(m[5]), m.groups()))
    return rows


def cache(run):
    """The per-core statistics lines exactly, and each ranked table (data, fetch, L2 misses)."""
    stats, tables = [], []
    for line in run.lines():
        if line.startswith("address,"):
            tables.append([])
        elif tables:
            m = re.match(r"(0x[0-9a-f?]+), (\d+), (.*)$", line)
            if m:
                tables[-1].append((int(m[2]), m.groups()))
        else:
            stats.append(line)
    return stats, tables


def cache_same(a, b):
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(
        ranked_same(x, y) for x, y in zip(a[1], b[1]))


def execlog(run):
    """Every logged line, in any order (vCPUs interleave). 7.2 reads 4 opcode bytes also for a
    shorter instruction (bytes past its end), qlua zero-extends as QEMU 9+ does: on 7.2 the opcode
    is left out. 7.2 also prints an empty line per vCPU index that logged nothing (dropped)."""
    lines = run.lines()
    if run.host == "7.2":
        lines = [re.sub(r"^(\d+, 0x[0-9a-f]+), 0x[0-9a-f]+, ", r"\1, ", l) for l in lines]
    return len(lines), digest(lines)


def drcov(run):
    """The set of blocks. QEMU's records are absolute addresses truncated to 32 bits in module 0
    (and repeat a block translated twice); qlua's are offsets in the module holding them: both
    become (address & 0xffffffff, size). On QEMU 10, where libraries move with the plugin's
    allocations, only the block count and the sizes are compared."""
    path = run.files + ".drcov"
    if not os.path.exists(path):
        return None
    data = open(path, "rb").read()
    at = data.index(b"BB Table: ")
    end = data.index(b"\n", at) + 1
    header, count = data[:at].decode(), int(data[at:end].split()[2])
    bases = {}
    for line in header.splitlines():
        m = re.match(r"\s*(\d+), (0x[0-9a-f]+), ", line)
        if m:
            bases[int(m[1])] = int(m[2], 16)
    blocks = set()
    for i in range(count):
        start, size, mod = struct.unpack_from("<IHH", data, end + 8 * i)
        base = bases.get(mod, 0) if run.qlua else 0
        blocks.add(((base + start) & 0xffffffff, size))
    if run.host == "7.2":
        return frozenset(blocks)
    return len(blocks), collections.Counter(size for _, size in blocks)


def bbv(run):
    """Per vCPU file, per interval line: the block counts, sorted (block ids are numbered in
    different orders: QEMU's hash table's, qlua's first translation)."""
    out = {}
    for path in sorted(glob.glob(glob.escape(run.files) + ".*.bb")):
        vcpu = path[len(run.files) + 1:-3]
        with open(path) as f:
            out[vcpu] = [sorted(int(c) for c in re.findall(r":\d+:(\d+)", l)) for l in f]
    return out


def cflow(run):
    """The listed nodes ranked by branches: (address, early exits, branches, destinations with
    counts). Left out: the 'collected N' line (QEMU makes a node of every instruction) and the
    node kind (for the same reason QEMU marks more instructions "sync fault")."""
    rows, node = [], None
    for line in run.lines():
        s = line.strip()
        if s.startswith("addr: "):
            node = [s.split()[1], 0, 0, []]
            rows.append(node)
        elif node and s.startswith("early exits "):
            node[1] = int(s.split()[2])
        elif node and s.startswith("branches "):
            node[2] = int(s.split()[1])
        elif node and s.startswith("to "):
            m = re.match(r"to (\S+) \((\d+)\)", s)
            node[3].append((m[1], int(m[2])))
    return [(n[2], (n[0], n[1], n[2], tuple(n[3]))) for n in rows]


def status_and_log(run):
    return run.status, run.lines()


# name -> (canonical value, agreement test)
ANON_REGION = re.compile(r"^anon[0-9a-f]+,")


def hwprofile(run):
    """The device lines (name, address, vCPU masks and counts), in any order: ties in the
    ranking are listed by address here, in hash order by QEMU. A region QEMU left unnamed is
    called "anon" and a host pointer, which differs from run to run: masked."""
    return collections.Counter(ANON_REGION.sub("anon?,", l) for l in run.lines()
                               if not l.startswith("Device, "))


COMPARERS = {
    "exact": (exact, equal),
    "line_set": (line_set, equal),
    "bb": (bb_totals, equal),
    "insn_total": (insn_total, equal),
    "insn_callback": (insn_callback, equal),
    "hotblocks": (hotblocks, hotblocks_same),
    "hotpages": (hotpages, ranked_same),
    "cache": (cache, cache_same),
    "execlog": (execlog, equal),
    "drcov": (drcov, equal),
    "bbv": (bbv, equal),
    "cflow": (cflow, ranked_same),
    "status": (status_and_log, equal),
    "hwprofile": (hwprofile, equal),
}
