"""qemu.symbolize in real QEMU (user mode 7.2, and one system-mode run): the main program's
symbols, a shared library's after relocation, unmapped addresses, hostile arguments, loaded
System.map and ELF tables, and the symbols= argument of callgraph, hotblocks, cache and execlog.
Facts come from the guests' ELF files (nm, readelf), not from qlua."""
import os
import re
import subprocess
import tempfile

import pytest

from qemu_run import env_without_preload, guest, qemu, run_lua, symbol, system_qemu

LIBC = "libc.so.6"


def tool(*args):
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          env=env_without_preload()).stdout


def elf_functions(path):
    """{name: {values}} of the function symbols of the ELF file at path (.symtab and .dynsym) and
    of its /usr/lib/debug/.build-id file if installed; version suffixes (@@GLIBC_2.34) dropped."""
    files = [path]
    m = re.search(r"Build ID: ([0-9a-f]+)", tool("readelf", "-n", path))
    if m:
        debug = f"/usr/lib/debug/.build-id/{m.group(1)[:2]}/{m.group(1)[2:]}.debug"
        if os.path.exists(debug):
            files.append(debug)
    out = {}
    for f in files:
        for line in tool("readelf", "-sW", f).splitlines():
            parts = line.split()
            if len(parts) >= 8 and parts[3] in ("FUNC", "IFUNC") and parts[6] != "UND":
                out.setdefault(parts[7].split("@")[0], set()).add(int(parts[1], 16))
    return out


def first_load_vaddr(path):
    for line in tool("readelf", "-lW", path).splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            return int(parts[2], 16)
    raise AssertionError(f"no PT_LOAD in {path}")


def folded(text):
    stacks = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) (\d+)$", line)
        if m:
            stacks[m.group(1)] = int(m.group(2))
    return stacks


# ---- qemu.symbolize ----

def test_the_main_program_s_main_symbolizes_as_main_plus_0():
    prog = guest("loop")
    main = symbol(prog, "main")
    r = run_lua(f"""
        local seen
        qemu.print("at load", qemu.symbolize({main}))
        qemu.on_translate(function(tb)
          if seen then return end
          seen = true
          qemu.print("main", qemu.symbolize({main}))
          qemu.print("main+5", qemu.symbolize({main} + 5))
          qemu.print("binary", qemu.binary().path)
          qemu.print("text", qemu.symbolize_format(qemu.symbolize({main} + 5)))
        end)
    """, [prog, "1"])
    assert r.status == 0, r
    lines = dict(l.split("\t", 1) for l in r.log.splitlines() if "\t" in l)
    assert lines["at load"] == "nil", f"while the script loads no guest is mapped yet\n{r}"
    module, name, offset = lines["main"].split("\t")
    assert os.path.basename(module) == "loop" and os.path.samefile(module, prog), r
    assert (name, offset) == ("main", "0"), r
    assert lines["main+5"].split("\t")[1:] == ["main", "5"], r
    assert lines["text"] == "loop!main+0x5", r


def test_a_libc_address_resolves_after_relocation():
    """/bin/true is PIE and dynamic: libc is mapped at run time by ld.so, at an address of its
    choosing. Blocks that ran in libc give libc.so.6 and a symbol whose file address plus the
    load bias (from QEMU's maps: the mapping of file offset 0 minus the first PT_LOAD's vaddr)
    is where the block lies, minus the offset qemu.symbolize gives."""
    r = run_lua("""
        local got, guest_base = 0
        qemu.on_translate(function(tb)
          if got >= 40 then return end
          guest_base = guest_base or tb[1].haddr - tb.vaddr
          local module, name, offset = qemu.symbolize(tb.vaddr)
          if module and module:match("/libc%.so%.6$") then
            got = got + 1
            local base
            for line in io.lines("/proc/self/maps") do
              local lo, off, path = line:match("^(%x+)%-%x+ %S+ (%x+) %S+ %S+%s+(/%S+)$")
              if path == module and tonumber(off, 16) == 0 then
                base = tonumber(lo, 16) - guest_base
                break
              end
            end
            qemu.printf("libc %s %x %s %s %x\\n", module, tb.vaddr, tostring(name),
              tostring(offset), base)
          end
        end)
    """, ["/bin/true"])
    assert r.status == 0, r
    rows = [l.split() for l in r.log.splitlines() if l.startswith("libc ")]
    assert len(rows) >= 10, f"blocks ran in libc\n{r}"
    path = rows[0][1]
    symbols = elf_functions(path)
    bias = int(rows[0][5], 16) - first_load_vaddr(path)
    named = 0
    for _, module, vaddr, name, offset, _ in rows:
        vaddr, offset = int(vaddr, 16), int(offset)
        assert os.path.basename(module) == LIBC, r
        if name == "nil":
            continue
        named += 1
        assert name in symbols, f"{name} is no function of {path}"
        assert vaddr - offset - bias in symbols[name], (
            f"{name}+{offset:#x} at {vaddr:#x}: the symbol's value + bias must be vaddr - offset")
        assert min(v + bias for v in symbols[name]) <= vaddr
    assert named >= len(rows) // 2, f"most libc blocks have a symbol\n{r}"


def test_unmapped_addresses_give_nil_and_hostile_arguments_raise():
    r = run_lua("""
        local done
        local core = require "qlua.core"
        qemu.on_translate(function()
          if done then return end
          done = true
          qemu.print("zero", qemu.symbolize(0))
          qemu.print("page", qemu.symbolize(0x1000))
          qemu.print("high", qemu.symbolize(2^64 - 4096))
          local bad = { { "nil", nil }, { "x", "x" }, { "-1.5", -1.5 }, { "2^64", 2^64 },
            { "nan", 0/0 }, { "inf", 1/0 }, { "1.5", 1.5 }, { "table", {} } }
          if not math.type then bad[#bad + 1] = { "-1", -1 } end -- Lua 5.4: -1 is 2^64-1
          for _, b in ipairs(bad) do
            local ok, err = pcall(qemu.symbolize, b[2])
            qemu.print("bad", b[1], tostring(ok), err)
          end
          qemu.print("extra", pcall(qemu.symbolize, 1, 2))
          qemu.print("core", pcall(core.symbolize, "x"))
          qemu.print("core", pcall(core.symbolize, {}))
          qemu.print("core", pcall(core.symbolize_load, nil, nil))
          qemu.print("load", pcall(qemu.symbolize_load, "/nonexistent/System.map"))
          qemu.print("load", pcall(qemu.symbolize_load, "/"))
          qemu.print("load", pcall(qemu.symbolize_load, "/etc/hostname"))
          qemu.print("load", pcall(qemu.symbolize_load, 42))
          qemu.print("load", pcall(qemu.symbolize_load, "/etc/hostname", 7))
          qemu.print("alive", qemu.symbolize(0x1000))
        end)
    """)
    assert r.status == 0, f"no crash\n{r}"
    log = r.log
    for k in ("zero", "page", "high"):
        assert f"{k}\tnil\n" in log, r
    bad = [l for l in log.splitlines() if l.startswith("bad\t")]
    assert len(bad) >= 8 and all("\tfalse\t" in l and "qemu.symbolize: expected an address" in l
                                 for l in bad), r
    assert "extra\tfalse\t" in log and "takes one address" in log, r
    core = [l for l in log.splitlines() if l.startswith("core\t")]
    assert len(core) == 3 and all(l.startswith("core\tfalse\t") for l in core), r
    load = [l for l in log.splitlines() if l.startswith("load\t")]
    assert len(load) == 5 and all(l.startswith("load\tfalse\tqemu.symbolize_load: ") for l in load), r
    assert "cannot read /nonexistent/System.map: No such file or directory" in log, r
    assert "cannot read /: not a regular file" in log, r
    assert "no function symbols in /etc/hostname" in log, r
    assert "alive\tnil" in log, r


def test_a_loaded_system_map_and_elf_table_name_absolute_addresses():
    prog = guest("loop")
    main = symbol(prog, "main")
    with tempfile.TemporaryDirectory() as tmp:
        smap = os.path.join(tmp, "System.map")
        with open(smap, "w") as f:
            # addresses that are multiples of 2^11, exact as LuaJIT's doubles
            f.write("ffffffff81000000 T _text\n"
                    "ffffffff81000000 T startup_64\n"
                    "ffffffff81001000 t helper\n"
                    "ffffffff81002000 D some_data\n"
                    "ffffffff81003000 W weak_fn\n"
                    "not a line\n"
                    "ffffffff81010000 T _etext\n")
        r = run_lua(f"""
            qemu.print("n", qemu.symbolize_load("{smap}"))
            qemu.print("again", qemu.symbolize_load("{smap}"))
            qemu.print("elf", qemu.symbolize_load("{prog}", "kernel"))
            qemu.print("a", qemu.symbolize(0xffffffff81000000))
            qemu.print("b", qemu.symbolize(0xffffffff81002800))
            qemu.print("c", qemu.symbolize_format(qemu.symbolize(0xffffffff81003800)))
            qemu.print("d", qemu.symbolize(0xffffffff82000000))
            qemu.print("e", qemu.symbolize({main} + 3))
        """, [prog, "1"])
    assert r.status == 0, r
    lines = dict(l.split("\t", 1) for l in r.log.splitlines() if "\t" in l)
    assert lines["n"] == "4" and lines["again"] == "4", (
        f"text symbols only, one per address, read once\n{r}")
    assert int(lines["elf"]) > 100, r
    assert lines["a"] == "System.map\tstartup_64\t0", f"one name per address, no underscores first\n{r}"
    assert lines["b"] == "System.map\thelper\t6144", f"data symbols do not name code\n{r}"
    assert lines["c"] == "System.map!weak_fn+0x800", r
    assert lines["d"] == "nil", f"past the last listed address\n{r}"
    assert lines["e"] == "kernel\tmain\t3", f"an ELF table, at load time too\n{r}"


# ---- the scripts ----

def test_callgraph_names_libc_and_ls_frames_of_ls():
    r = qemu(["script=callgraph"], ["/bin/ls", "-l", "/"])
    assert r.status == 0, r
    stacks = folded(r.log)
    frames = {f for p in stacks for f in p.split(";")}
    assert any(f == LIBC + "!__libc_start_main" for f in frames), (
        f"libc's start-up is named\n{sorted(frames)[:50]}")
    assert any(f.startswith(LIBC + "!") for f in frames) and any(
        re.match(r"^ls(!|\+0x)", f) for f in frames), sorted(frames)[:50]
    assert not any(re.match(r"^0x[0-9a-f]+$", f) for f in frames), (
        "frames in mapped files get module names, not raw addresses")
    mains = [p for p in stacks if LIBC + "!__libc_start_main;" in p]
    assert mains and all(p.split(";")[0].startswith("ld-linux-x86-64.so.2") for p in mains), (
        "the program starts in the dynamic loader")


def test_callgraph_symbols_off_keeps_qemu_s_names():
    r = qemu(["script=callgraph", "symbols=off"], [guest("calls")])
    assert r.status == 0, r
    stacks = folded(r.log)
    assert stacks and all(p.split(";")[0] == "_start" for p in stacks), r
    assert not any("!" in p for p in stacks), r
    on = folded(qemu(["script=callgraph"], [guest("calls")]).log)
    assert all(p.split(";")[0] == "calls!_start" for p in on), on
    assert any(p.endswith("calls!main;calls!a;calls!b") for p in on), on


def test_hotblocks_cache_execlog_stay_raw_by_default_and_name_with_symbols_on():
    prog = [guest("loop"), "1"]
    raw = qemu(["script=hotblocks"], prog)
    assert "!" not in raw.log and "pc, tcount, icount, ecount\n" in raw.log, raw
    hb = qemu(["script=hotblocks", "symbols=on"], prog)
    rows = [l for l in hb.log.splitlines() if l.startswith("0x")]
    assert "pc, tcount, icount, ecount, symbol\n" in hb.log and rows, hb
    assert all(re.match(r"^0x[0-9a-f]{16}, \d+, \d+, \d+, loop!\S+\+0x[0-9a-f]+$", l)
               for l in rows), hb
    c = qemu(["script=cache", "symbols=on", "limit=3"], prog)
    assert re.search(r"^0x[0-9a-f]+ \(loop!\S+\+0x[0-9a-f]+\), \d+, ", c.log, re.M), c
    c_raw = qemu(["script=cache", "limit=3"], prog)
    assert "loop!" not in c_raw.log, c_raw
    start = symbol(guest("loop"), "_start")
    e = qemu(["script=execlog", "symbols=on", f"afilter={start:x}"], prog)
    assert e.log.startswith(f"0, {start:#x} (loop!_start+0x0), "), e
    e_raw = qemu(["script=execlog", f"afilter={start:x}"], prog)
    assert e_raw.log.startswith(f"0, {start:#x}, "), e_raw


@pytest.mark.exits_qemu  # the script does not load: QEMU refuses it with exit()
def test_a_symfile_that_cannot_be_read_stops_the_script_cleanly():
    for name in ("hotblocks", "cache", "execlog", "callgraph"):
        r = qemu([f"script={name}", "symfile=/nonexistent/System.map"], [guest("loop"), "1"])
        assert r.status == 1 and "cannot read /nonexistent/System.map" in r.err, (name, r)


@pytest.mark.user_host_independent  # system mode only
def test_system_mode_names_come_from_a_symfile():
    with tempfile.TemporaryDirectory() as tmp:
        smap = os.path.join(tmp, "boot.map")
        with open(smap, "w") as f:
            f.write("00000000000f0000 T bios\n00000000000fffff T bios_end\n")
        r = system_qemu("7.2", ["script=hotblocks", "symfile=" + smap])
    rows = [l for l in r.log.splitlines() if l.startswith("0x")]
    assert rows and "pc, tcount, icount, ecount, symbol" in r.log, r
    assert any(l.endswith(tuple(f", boot.map!bios+0x{o:x}" for o in range(0x10000)))
               for l in rows), r
