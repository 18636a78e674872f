"""qemu.edges() fed by qemu.count_every("branch", e): every control-flow edge counted natively,
against a reference that follows each instruction in Lua; early exits; the order first taken;
vCPU sets; clear errors for bad arguments."""
import re

import pytest

from qemu_run import fields, guest, run_lua

# The script under test and, in the same run, a plain reference: a queued callback on every
# instruction remembers, per vCPU, the address after the last instruction started and the end of
# its block; a block start anywhere else is an edge (early when that instruction was not its
# block's last). Both print "kind from to count early", the reference in the order first taken.
BOTH = """
local e = qemu.edges()
qemu.count_every("branch", e)
local last, ref, order = {}, {}, {}
local function on_insn(vcpu, d)
  local p = last[vcpu]
  if d[1] and p and p[1] ~= d[2] then
    local key = string.format("%x %x", p[1], d[2])
    local r = ref[key]
    if not r then
      r = { 0, 0 }
      ref[key] = r
      order[#order + 1] = key
    end
    r[1] = r[1] + 1
    if p[1] ~= p[2] then r[2] = r[2] + 1 end
  end
  last[vcpu] = { d[3], d[4] }
end
qemu.on_vcpu_init(function(vcpu) last[vcpu] = nil end)
qemu.on_translate(function(tb)
  local n, tail = #tb, tb[#tb]
  local block_end = tail.vaddr + tail.size
  for insn in tb:insns() do
    insn:on_exec(on_insn, { insn.index == 1, insn.vaddr, insn.vaddr + insn.size, block_end })
  end
end)
qemu.on_exit(function()
  local items, masks = e:items(), 0
  for _, it in ipairs(items) do
    qemu.printf("got %x %x %d %d\\n", it.from, it.to, it.count, it.early)
    if it.vcpus > masks then masks = it.vcpus end
  end
  for _, key in ipairs(order) do qemu.printf("ref %s %d %d\\n", key, ref[key][1], ref[key][2]) end
  local first = items[1]
  local count, early = e:get(first.from, first.to)
  qemu.printf("edges: size=%d n=%d get=%s/%d none=%d mask=%d text=%s\\n", e:size(), #items,
    tostring(count == first.count), early, e:get(1, 2), masks, tostring(e):gsub(" ", "_"))
end)
"""


def edges_of(r, kind):
    out = []
    for line in r.log.splitlines():
        m = re.fullmatch(kind + r" ([0-9a-f]+) ([0-9a-f]+) (\d+) (\d+)", line)
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3)), int(m.group(4))))
    return out


def both(program):
    r = run_lua(BOTH, program)
    assert r.status == 0, f"run\n{r}"
    got, ref = edges_of(r, "got"), edges_of(r, "ref")
    assert len(ref) > 10, f"the reference saw edges\n{r}"
    assert sorted(got) == sorted(ref), (
        f"edges differ: only native {sorted(set(got) - set(ref))[:5]}, "
        f"only reference {sorted(set(ref) - set(got))[:5]}\n{r}")
    f = fields(r.log, "edges")
    assert (f["size"] == f["n"] == str(len(ref)) and f["get"].startswith("true/")
            and f["none"] == "0" and f["text"] == f"edges_({len(ref)})"), f"{f}\n{r}"
    return r, got, ref, f


def test_every_edge_is_counted_as_the_reference_counts_it_in_the_order_first_taken():
    r, got, ref, f = both([guest("loop"), "20"])
    assert got == ref, f"one thread: the order first taken is the reference's\n{r}"
    assert f["mask"] == "1", f"vCPU 0 only\n{r}"
    back = max(got, key=lambda e: e[2])
    assert back[2] == 20 * 4095 and back[1] < back[0] and back[3] == 0, (
        f"the loop's back edge, taken 4095 times a round: {back}\n{r}")


def test_early_exits_are_the_edges_out_of_the_faulting_load():
    r, got, ref, _ = both([guest("mapexec")])
    assert "faults 5" in r.out, f"guest\n{r}"
    early = [e for e in got if e[3]]
    assert len(early) == 1 and early[0][2] == early[0][3] == 5, (
        f"five faults, one edge: {early}\n{r}")


def test_edges_of_8_threads_are_each_counted_once_with_their_vcpus():
    r, got, _, f = both([guest("threads"), "30"])
    assert "threads 8 total" in r.out, f"guest\n{r}"
    back = max(got, key=lambda e: e[2])
    assert back[2] == 8 * 30 * 511, f"each thread's back edge, 511 times a round: {back}\n{r}"
    assert int(f["mask"]) >= 3, f"several vCPUs' bits on one edge\n{f}"


def test_edges_of_a_real_program():
    both(["/usr/bin/sort", "/etc/services"])


def test_reset_forgets_the_edges_taken_before_it():
    r = run_lua("local e = qemu.edges()\n"
                "qemu.count_every('branch', e)\n"
                "local after\n"
                "qemu.on_syscall(function()\n"
                "  if not after then e:reset(); after = e:size() end\n"
                "end)\n"
                "qemu.on_exit(function()\n"
                "  qemu.printf('reset: after=%d end=%d\\n', after, e:size())\n"
                "end)",
                [guest("loop"), "5"])
    f = fields(r.log, "reset")
    assert r.status == 0 and f["after"] == "0" and int(f["end"]) > 5, f"{f}\n{r}"


LATE = """
local early, late, n = qemu.edges(), nil, 0
qemu.count_every("branch", early)
qemu.on_translate(function(tb)
  n = n + 1
  if n == AT then
    late = qemu.edges()
    qemu.count_every("branch", late)
  end
end)
qemu.on_exit(function()
  for _, it in ipairs(early:items()) do qemu.printf("early %x %x %d %d\\n", it.from, it.to, it.count, it.early) end
  for _, it in ipairs(late:items()) do qemu.printf("late %x %x %d %d\\n", it.from, it.to, it.count, it.early) end
end)
"""


@pytest.mark.parametrize("program", [[guest("loop"), "30"], [guest("threads")]], ids=["loop", "8_threads"])
def test_a_branch_rule_added_while_the_guest_runs_counts_only_true_edges(program):
    # Added at the 300th translation, the late rule has qlua retranslate everything and counts
    # from that reset on: each of its edges is one the rule made at load counted too, no more
    # often. (Without the retranslation, blocks translated before it would not move its
    # per-vCPU "last instruction", and it would join blocks that never follow each other.)
    r = run_lua(LATE.replace("AT", "300"), program)
    assert r.status == 0, f"run\n{r}"
    early = {(f, t): (n, e) for f, t, n, e in edges_of(r, "early")}
    late = edges_of(r, "late")
    assert len(late) > 10, f"the late rule counted the edges after the reset\n{r}"
    false = [(hex(f), hex(t)) for f, t, n, e in late if (f, t) not in early]
    assert not false, f"edges no full-run rule saw: {false[:5]}\n{r}"
    over = [(hex(f), hex(t)) for f, t, n, e in late if n > early[(f, t)][0]]
    assert not over, f"counted more often than by the rule made at load: {over[:5]}\n{r}"


HOSTILE = """
local e, t, c = qemu.edges(), qemu.tally(), qemu.counter()
local said = {}
local function try(...)
  local ok, err = pcall(...)
  said[#said + 1] = ok and "ok" or tostring(err)
end
try(qemu.count_every, "branch", c)
try(qemu.count_every, "branch", t)
try(qemu.count_every, "branch", nil)
try(qemu.count_every, "block", e)
try(qemu.count_every, "branch", e, { rw = "r" })
try(qemu.count_every, "branches", e)
try(e.items)
try(e.get, t, 1, 2)
try(e.get, e, 1.5, 2)
try(e.get, e, 1)
try(function() e.size = 3 end)
try(qemu.count_every, "branch", e, nil, "extra")
for _, s in ipairs(said) do qemu.print(s) end
qemu.printf("meta=%s\\n", tostring(getmetatable(e)))
"""


def test_bad_arguments_to_edges_say_what_is_accepted():
    r = run_lua(HOSTILE)
    lines = r.log.splitlines()
    expected = [
        'qemu.count_every: "branch" counts control-flow edges: expected edges from qemu.edges(), '
        'got a counter',
        'qemu.count_every: "branch" counts control-flow edges: expected edges from qemu.edges(), '
        'got a tally',
        'qemu.count_every: "branch" counts control-flow edges: expected edges from qemu.edges(), '
        'got nil',
        'qemu.count_every: edges from qemu.edges() count kind "branch" only, not "block"',
        'qemu.count_every: only "mem" takes options',
        "qemu.count_every: kind branches: expected one of",
        "edges expected, got no value (methods are called with a colon: edges:name(...))",
        "edges expected, got table",
        r"bad argument #2 .*(expected a non-negative integer|number has no integer representation)",
        r"bad argument #3 .*number expected, got no value",
        r"attempt to index .*(userdata|qlua.edges value)",
        "qemu.count_every(kind, c, opts) takes nothing after its options",
        "meta=qlua.edges",
    ]
    assert r.status == 0 and len(lines) == len(expected), f"run\n{r}"
    for line, want in zip(lines, expected):
        assert re.search(want, line) or want in line, f"{want!r} not in {line!r}\n{r}"


@pytest.mark.exits_qemu
def test_a_bad_branch_rule_is_blamed_on_the_scripts_line():
    r = run_lua("qemu.count_every('branch', qemu.counter())")
    assert r.status == 1 and re.search(r"\.lua:1: qemu.count_every: \"branch\" counts", r.err), (
        f"blamed on the script's line\n{r}")
