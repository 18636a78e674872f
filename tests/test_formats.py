"""Tests of format=json in the report scripts (hotblocks, hotpages, syscall, howvec, cache, insn)
and of syscall.lua's names=on.

Each script runs twice on the same deterministic single-thread guest, once with format=text and
once with format=json; the JSON is parsed with Python's json module and rendered back into the text
format here, which must give the text run's log byte for byte: so every row, its order and every
number agree (and the JSON holds all the text shows)."""
import json
import re

import pytest

from qemu_run import guest, qemu, stack_addresses_alike

LOOP = [guest("loop"), "3"]


def ok(args, program=LOOP):
    r = qemu(args, program)
    assert r.status == 0, f"{args}: QEMU failed\n{r}"
    return r


def report(run, name):
    """The one JSON object of the log (which must hold nothing else), checked to be `name`'s."""
    lines = run.log.splitlines()
    assert len(lines) == 1, f"expected one JSON line\n{run}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict) and obj.get("report") == name, f"not a {name} report\n{run}"
    return obj


def both(args, program=LOOP):
    """The text log and the parsed JSON report of `args` (script= first) on `program`."""
    text = ok(args + ["format=text"], program)
    alike = stack_addresses_alike  # the guest stack moves from run to run on some hosts
    assert alike(text.log) == alike(ok(args, program).log), "format=text is the default"
    name = args[0].split("=", 1)[1]
    return text.log, report(ok(args + ["format=json"], program), name)


def addr(text):
    assert re.fullmatch(r"0x[0-9a-f]{16}", text), f"address {text!r} is no 0x%016x string"
    return int(text, 16)


# ---- renderers: the text format from the JSON ----

def hotblocks_text(obj):
    out = f"collected {obj['entries']} entries in the hash table\n"
    if obj["entries"] > 0:
        out += "pc, tcount, icount, ecount\n"
    for r in obj["rows"]:
        out += f"0x{addr(r['pc']):016x}, {r['tcount']}, {r['icount']}, {r['ecount']}\n"
    return out


def hotpages_text(obj):
    out = "Addr, RCPUs, Reads, WCPUs, Writes\n"
    for r in obj["rows"]:
        out += (f"0x{addr(r['addr']):016x}, 0x{r['rcpus']:04x}, {r['reads']}, "
                f"0x{r['wcpus']:04x}, {r['writes']}\n")
    return out


def syscall_text(obj):
    out = "syscall no.  calls  errors\n"
    for r in obj["rows"]:
        out += "%-13d%-6d %d\n" % (r["num"], r["calls"], r["errors"])
    return out


def howvec_text(obj):
    out = "Instruction Classes:\n"
    for c in obj["classes"]:
        if c["counted"] == "class":
            out += "Class: %-24s\t(%d hits)\n" % (c["name"], c["hits"])
        else:
            out += "Class: %-24s\t%s\n" % (c["name"], {"individually": "counted individually",
                                                      "not counted": "not counted"}[c["counted"]])
    if obj["instructions"]:
        out += "Individual Instructions:\n"
    for i in obj["instructions"]:
        assert re.fullmatch(r"0x[0-9a-f]{8}", i["op"]), i
        out += "Instr: %-24s\t(%d hits)\t(op=%s/%s)\n" % (i["disas"], i["hits"], i["op"], i["class"])
    return out


def cache_text(obj):
    l2 = obj["l2_misses"] is not None

    def stats(row):
        s = "%-14d %-12d %9.4f%%  %-14d %-12d %9.4f%%" % (
            row["data_accesses"], row["data_misses"], row["dmiss_rate"],
            row["insn_accesses"], row["insn_misses"], row["imiss_rate"])
        if l2:
            s += "  %-12d %-11d %10.4f%%" % (row["l2_accesses"], row["l2_misses"],
                                              row["l2_miss_rate"])
        return s + "\n"

    out = ("core #, data accesses, data misses, dmiss rate, insn accesses, insn misses, "
           "imiss rate" + (", l2 accesses, l2 misses, l2 miss rate" if l2 else "") + "\n")
    for row in obj["cores"]:
        out += "%-8d" % row["core"] + stats(row)
    if obj["sum"] is not None:
        out += "%-8s" % "sum" + stats(obj["sum"])
    out += "\n"

    def top(rows, title):
        s = title
        for r in rows:
            sym = f" ({r['symbol']})" if r["symbol"] is not None else ""
            s += f"0x{addr(r['addr']):x}{sym}, {r['misses']}, {r['disas']}\n"
        return s

    out += top(obj["data_misses"], "address, data misses, instruction\n")
    out += top(obj["fetch_misses"], "\naddress, fetch misses, instruction\n")
    if l2:
        out += top(obj["l2_misses"], "\naddress, L2 misses, instruction\n")
    return out


def insn_line(obj):
    """One line of insn.lua's text output from one of its JSON lines (event or report)."""
    if obj.get("event") == "repeat":
        return f"detected repeat execution @ 0x{addr(obj['pc']):x}\n"
    if obj.get("event") == "match":
        return (f"0x{addr(obj['pc']):x}, '{obj['disas']}', {obj['hits']} hits, "
                f"{obj['match_hits']} match hits, \u0394+{obj['delta']} since last match, "
                f"{obj['avg']} avg insns/match\n")
    assert obj["report"] == "insn", obj
    if "sizes" in obj:
        return "".join(f"len {r['bytes']} bytes: {r['insns']} insns\n" for r in obj["sizes"])
    if "cpus" in obj:
        return "".join(f"cpu {r['cpu']} insns: {r['insns']}\n" for r in obj["cpus"]) + \
            f"total insns: {obj['total']}\n"
    return f"insns: {obj['insns']}\n"


# ---- the six scripts ----

def test_hotblocks_json_has_every_row_of_the_text():
    text, obj = both(["script=hotblocks"])
    assert obj["entries"] > 20 and len(obj["rows"]) == 20, obj
    assert all(isinstance(r[k], int) for r in obj["rows"] for k in ("tcount", "icount", "ecount"))
    assert hotblocks_text(obj) == text


def test_hotpages_json_has_every_row_of_the_text_in_each_order():
    for extra in ([], ["sortby=address"], ["sortby=writes"]):
        text, obj = both(["script=hotpages"] + extra)
        assert obj["rows"], f"{extra}: no pages"
        assert stack_addresses_alike(hotpages_text(obj)) == stack_addresses_alike(text), extra


def test_syscall_json_has_every_row_of_the_table_and_names_them():
    text, obj = both(["script=syscall"])
    assert obj["target"] == "x86_64" and syscall_text(obj) == text
    names = {r["num"]: r["name"] for r in obj["rows"]}
    assert names[1] == "write" and names[12] == "brk", names  # loop.c writes; libc's brk


def test_howvec_json_has_every_class_and_instruction_of_the_text():
    for extra in ([], ["verbose=on", "count=nop", "count=!mov"]):
        text, obj = both(["script=howvec"] + extra)
        assert howvec_text(obj) == text, extra
    assert obj["instructions"], "count=nop lists nops individually"
    assert any(c["counted"] == "not counted" for c in obj["classes"]), obj["classes"]


def test_cache_json_has_every_number_and_row_of_the_text():
    for extra in (["limit=8"], ["limit=5", "cores=2", "l2=on"]):
        text, obj = both(["script=cache"] + extra)
        assert len(obj["data_misses"]) == int(extra[0].split("=")[1]), extra
        assert cache_text(obj) == text, extra
    assert obj["sum"] is not None and len(obj["cores"]) == 2


def test_insn_json_has_every_line_of_the_text():
    cases = [(["script=insn"], [guest("repeats")]),
             (["script=insn", "inline=on"], LOOP),
             (["script=insn", "sizes=on"], LOOP),
             (["script=insn", "match=syscall"], LOOP)]
    for args, program in cases:
        text = ok(args, program).log
        r = ok(args + ["format=json"], program)
        objs = [json.loads(line) for line in r.log.splitlines()]
        assert sum(1 for o in objs if "report" in o) == 1 and "report" in objs[-1], (
            f"{args}: one report, last\n{r}")
        assert "".join(insn_line(o) for o in objs) == text, args
    assert any(o.get("event") == "match" for o in objs), "match=syscall matched nothing"


# ---- bad values ----

@pytest.mark.exits_qemu
@pytest.mark.parametrize("name", ["hotblocks", "hotpages", "syscall", "howvec", "cache", "insn"])
def test_an_unknown_format_is_refused_naming_the_accepted_ones(name):
    r = qemu([f"script={name}", "format=xml"], LOOP)
    assert r.status != 0, f"format=xml accepted\n{r}"
    assert "format=xml: expected one of text, json" in r.err, r


@pytest.mark.exits_qemu
def test_syscall_refuses_json_for_the_printed_events():
    r = qemu(["script=syscall", "print=on", "format=json"], LOOP)
    assert r.status != 0 and "format=json applies to the table (print=off)" in r.err, r


# ---- syscall names ----

def test_syscall_names_on_names_calls_at_fdcwd_and_errors():
    ls = ["/bin/ls", "/"]
    plain = ok(["script=syscall", "print=on"], ls).log.splitlines()
    named = ok(["script=syscall", "print=on", "names=on"], ls).log.splitlines()
    assert len(plain) == len(named), "one named line per plain line"
    # the same calls in the same order (return values such as set_tid_address's thread id may
    # differ from run to run); every error return carries its errno name
    for p, n in zip(plain, named):
        m = re.fullmatch(r"syscall #(\d+)( returned -> (-?\d+))?", p)
        assert m, p
        num, returns = m.group(1), m.group(2) is not None
        if not returns:
            assert re.fullmatch(rf"syscall #{num} \w+\((.+, ){{5}}.+\)", n), (p, n)
        else:
            r = re.fullmatch(rf"syscall #{num} \w+ returned -> (-?\d+)( \(E[A-Z0-9]+\))?", n)
            assert r, (p, n)
            assert (r.group(2) is not None) == (-4096 < int(r.group(1)) < 0), n
    log = "\n".join(named)
    assert re.search(r"^syscall #257 openat\(AT_FDCWD, 0x[0-9a-f]+, ", log, re.M), log
    assert re.search(r"^syscall #\d+ \w+ returned -> -2 \(ENOENT\)$", log, re.M), log
    assert "syscall #1 write returned ->" in log, "ls writes its listing"


def test_syscall_names_on_adds_a_name_column_to_the_table():
    plain = ok(["script=syscall"]).log.splitlines()
    named = ok(["script=syscall", "names=on"]).log.splitlines()
    assert named[0] == "syscall no.  calls  errors  name" and len(plain) == len(named)
    for p, n in zip(plain[1:], named[1:]):
        num, calls, errors = map(int, p.split())
        assert n.startswith("%-13d%-6d %-7d " % (num, calls, errors)), (p, n)
    assert any(n.endswith(" write") for n in named), named
