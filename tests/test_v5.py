"""QEMU 10.1/10.2 (plugin API v5): scripts that change the guest (memory and register writes),
physical addresses, discontinuity events, and their refusal on hosts without them.
tests/guests/v5.c prints a variable and a computation a script can change."""
import os
import re
import subprocess

import pytest

from qemu_run import (PLUGIN, QEMU_10_2, QEMU_SYSTEM, USER_BINARIES, env_without_preload, guest,
                      qemu, run_lua, script, symbol, system_lua)

# Every test here names its QEMU (7.2, 10.2 user mode, or system mode): none runs again when the
# user-mode suite runs on another host (QLUA_USER_HOST).
pytestmark = pytest.mark.user_host_independent

QEMU_7_2 = USER_BINARIES["7.2"]["x86_64"]
QEMU_USER_10_2 = os.path.join(QEMU_10_2, "bin", "qemu-x86_64")


def user_10_2():
    if not os.path.exists(QEMU_USER_10_2):
        pytest.skip(f"QEMU 10.2 not found at {QEMU_10_2} (set QLUA_QEMU_10_2)")
    return QEMU_USER_10_2


def writes(mode, binary=None, **extra):
    program = guest("v5")
    args = [f"mode={mode}", f"secret={symbol(program, 'secret')}",
            f"report={symbol(program, 'report')}", f"fn={symbol(program, 'double_it')}"]
    args += [f"{k}={v}" for k, v in extra.items()]
    return qemu(["script=" + script("v5_writes.lua")] + args, [program],
                binary=binary or user_10_2())


def test_guest_runs_unchanged_without_writes():
    r = qemu(["script=" + script("v5_writes.lua"), "mode=queued", "secret=0", "report=0", "fn=0"],
             [guest("v5")], binary=user_10_2())
    assert r.status == 0 and "secret=42\ndouble=10\n" in r.out, r


def test_write_memory_rewrites_a_guest_variable_the_guest_then_prints():
    r = writes("memory", value=987654)
    assert r.status == 0, r
    assert "secret=987654\n" in r.out, f"the guest prints the value the script wrote\n{r}"
    assert "write: true" in r.log and "read back: true" in r.log, r


def test_write_reg_changes_a_guest_computation():
    r = writes("register", value=21)
    assert r.status == 0, r
    assert "double=42\n" in r.out, f"double_it(5) computed with the argument written: 21\n{r}"
    assert "rdi: 5 -> 21" in r.log, r


def test_write_reg_takes_negative_integers_in_twos_complement():
    r = writes("register", value=-4)
    assert r.status == 0 and "double=-8\n" in r.out, r


def test_write_memory_in_a_queued_callback_says_to_register_it_synchronous():
    r = writes("queued")
    assert ("queued write: qemu.write_memory() works only at the moment of a vCPU event, and this "
            "callback is queued") in r.log, r
    assert "{ sync = true }" in r.log and "secret=42\n" in r.out, r


def test_write_memory_in_on_translate_is_refused():
    r = writes("translate")
    assert "write in on_translate: qemu.write_memory() cannot run in on_translate" in r.log, r


def test_write_memory_to_an_unmapped_address_returns_nil_and_why():
    r = writes("unmapped")
    assert "unmapped: nil guest memory not writable at that address" in r.log, r


def test_write_reg_needs_a_callback_registered_with_regs_rw():
    for mode, label in (("noaccess", "write_reg without regs"),
                        ("readonly", "write_reg with regs=r")):
        r = writes(mode)
        assert r.status == 0 and "double=10\n" in r.out, r
        line = next((l for l in r.log.splitlines() if l.startswith(label + ":")), "")
        assert "qemu.write_reg: QEMU" in line and 'regs = \\"rw\\"' not in line, r
        assert 'regs = "rw"' in line, f"the error says how to get write access\n{r}"


def test_write_reg_refuses_a_wrong_width_an_unknown_name_and_a_value_too_wide():
    r = writes("width")
    assert "write_reg 3 bytes: qemu.write_reg: 'rdi' is 8 bytes wide, the string has 3" in r.log, r
    r = writes("name")
    assert ("write_reg nope: qemu.write_reg: no register 'nope' on this x86_64 vCPU "
            "(qemu.registers() lists them)") in r.log, r
    r = writes("wide")
    assert "write_reg eflags: qemu.write_reg: 0x10000000000 does not fit in 'eflags' (4 bytes)" \
        in r.log, r


REFUSALS = """
local function try(what, fn, ...)
  local ok, err = pcall(fn, ...)
  qemu.printf("%s: %s\\n", what, ok and "ok" or tostring(err))
end
qemu.printf("has: %s %s %s %s %s\\n", tostring(qemu.has("write_memory")),
  tostring(qemu.has("write_registers")), tostring(qemu.has("phys_memory")),
  tostring(qemu.has("translate")), tostring(qemu.has("discon")))
local done = false
qemu.on_translate(function(tb)
  if done then return end
  done = true
  local pc, bytes = tb.vaddr, tb[1].bytes -- writes back what is there
  tb:on_exec(function()
    try("write_memory", qemu.write_memory, pc, bytes)
    try("phys read", qemu.read_memory, 0, 4, { phys = true })
    try("phys write", qemu.write_memory, 0, "x", { phys = true })
    try("translate", qemu.translate, 0)
  end, nil, { sync = true })
  tb:on_exec(function() try("write_reg", qemu.write_reg, "rax", 1) end, nil, { regs = "r" })
end)
try("on_discon", qemu.on_discon, function() end)
"""


def refusal_lines(log):
    return dict(line.split(": ", 1) for line in log.splitlines() if ": " in line)


def test_qemu_7_2_refuses_every_v5_call_naming_the_feature_and_the_qemu_that_has_it():
    r = run_lua(REFUSALS, binary=QEMU_7_2)
    said = refusal_lines(r.log)
    assert said["has"] == "false false false false false", r
    for what, call, feature, since in [
            ("write_memory", "qemu.write_memory()", "write_memory", "QEMU 10.1"),
            ("phys read", "qemu.read_memory(paddr, len, { phys = true })", "phys_memory",
             "QEMU 10.1 in system mode"),
            ("phys write", "qemu.write_memory(paddr, bytes, { phys = true })", "phys_memory",
             "QEMU 10.1 in system mode"),
            ("translate", "qemu.translate()", "translate", "QEMU 10.1 in system mode"),
            ("write_reg", "qemu.write_reg()", "write_registers", "QEMU 10.1")]:
        assert said[what] == (f"{call} needs the '{feature}' feature, which this QEMU (plugin API "
                              f"1) lacks: it comes with {since}"), f"{what}\n{r}"
    assert "QEMU reports discontinuities" in said["on_discon"] and "not in user mode" in \
        said["on_discon"], r


def test_qemu_10_2_user_mode_has_writes_but_no_physical_addresses_or_discontinuities():
    r = run_lua(REFUSALS, binary=user_10_2())
    said = refusal_lines(r.log)
    assert said["has"] == "true true false false false", r
    assert said["write_memory"] == "ok", r
    assert "'phys_memory' feature, which this QEMU (plugin API 5) lacks: it comes with QEMU 10.1 " \
        "in system mode" in said["phys read"], r
    assert "'translate' feature" in said["translate"], r
    assert said["write_reg"].startswith("qemu.write_reg: QEMU refused to write 'rax' here"), r
    assert "not in user mode" in said["on_discon"], r


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_system_hosts_before_10_1_refuse_the_v5_calls(version):
    r = system_lua(version, REFUSALS)
    said = refusal_lines(r.log)
    assert said["has"] == "false false false false false", r
    api = "1" if version == "7.2" else "4"
    assert said["translate"] == (f"qemu.translate() needs the 'translate' feature, which this "
                                 f"QEMU (plugin API {api}) lacks: it comes with QEMU 10.1 in "
                                 f"system mode"), r
    assert said["on_discon"].endswith(f"qemu.on_discon() needs the 'discon' feature, which this "
                                      f"QEMU (plugin API {api}) lacks: it comes with QEMU 10.2 "
                                      f"in system mode"), r


# ---- the host's release, read from its executable (how a v7 host is told from a v6 one) ----

VERSION_PROBE = 'qemu.printf("release: %s api %d declared %d\\n", tostring(qemu.info.qemu), ' \
    'qemu.info.api.cur, qemu.info.api.declared)\n'


def release_of(binary):
    """X.Y.Z from `binary --version` (QEMU's own answer)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         env=env_without_preload()).stdout
    return re.search(r"version (\d+\.\d+\.\d+)", out).group(1)


def test_qemu_info_names_the_release_of_every_user_mode_host():
    hosts = [(QEMU_7_2, guest("loop"))]
    if os.path.exists(QEMU_USER_10_2):
        hosts.append((QEMU_USER_10_2, guest("loop")))
    for binary, program in hosts:
        r = run_lua(VERSION_PROBE, program=[program, "1"], binary=binary)
        assert f"release: {release_of(binary)} api " in r.log, f"{binary}\n{r}"


@pytest.mark.parametrize("version", ["7.2", "10.0", "10.2"])
def test_qemu_info_names_the_release_of_every_system_mode_host(version):
    r = system_lua(version, VERSION_PROBE)
    assert f"release: {release_of(QEMU_SYSTEM[version])} api " in r.log, r


LOADER = r"""
/* Stands in for a QEMU of another release: its text carries that release's --version line, and it
 * loads libqlua.so as QEMU's loader does, then prints the qemu_plugin_version the constructor set. */
#include <dlfcn.h>
#include <stdio.h>
#ifdef SYSTEM_FORM
const char version_text[] = "QEMU emulator version " RELEASE " (a test stand-in)";
#else
const char version_text[] = "qemu-x86_64 version " RELEASE " (a test stand-in)";
#endif
int main(int argc, char **argv)
{
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("dlopen: %s\n", dlerror()); return 1; }
    int *v = dlsym(h, "qemu_plugin_version");
    printf("declared %d (%s)\n", v ? *v : -1, version_text);
    return argc > 2;
}
"""


# form: how the stand-in carries the line: user mode's, system mode's, or user mode's linked
# without -z separate-code (read-only data in the code's segment, which qlua scans only after the
# read-only ones have not held it)
@pytest.mark.parametrize("release,declared,refused,form", [
    ("7.2.22", 1, False, "user"), ("11.0.0", 1, False, "user"), ("11.1.0", 6, True, "user"),
    ("12.0.1", 6, True, "user"), ("11.1.0", 6, True, "system"), ("11.1.0", 6, True, "old link"),
    ("11.0.0", 1, False, "old link")])
def test_a_host_whose_callbacks_changed_shape_is_refused_before_the_loader_reads_the_version(
        tmp_path, release, declared, refused, form):
    # The stand-in exports no qemu_plugin_scoreboard_new, so below 11.1 the probe says 1.
    src = tmp_path / "loader.c"
    src.write_text(LOADER)
    exe = tmp_path / "loader"
    flags = {"user": [], "system": ["-DSYSTEM_FORM"], "old link": ["-Wl,-z,noseparate-code"]}[form]
    subprocess.run(["cc", f'-DRELEASE="{release}"', *flags, "-o", str(exe), str(src), "-ldl"],
                   check=True, env=env_without_preload())
    if form == "old link":  # the line must then be in an executable segment, or this proves nothing
        segments = subprocess.run(["readelf", "-lW", str(exe)], capture_output=True,
                                  text=True).stdout
        loads = [l.split() for l in segments.splitlines() if l.split()[:1] == ["LOAD"]]
        assert loads and not any(l[6:-1] == ["R"] for l in loads), segments
    # (the sanitizer build's LD_PRELOAD stays: the stand-in plays QEMU, into which ASan is preloaded)
    p = subprocess.run([str(exe), PLUGIN], capture_output=True, text=True)
    assert f"declared {declared} " in p.stdout, p
    message = (f"qlua: QEMU {release} passes different arguments to plugin callbacks (plugin API "
               f"7); this libqlua.so speaks plugin API 1 to 6 (QEMU 7.2 to 11.0)")
    assert (message in p.stderr) == refused, p


# ---- system mode on QEMU 10.2: a Linux boot ----

@pytest.mark.parametrize("smp", [1, 2])
def test_linux_boot_physical_reads_agree_and_discontinuities_match_libtraps(tmp_path, smp):
    from linux_guest import linux_qemu, powered_off
    from qemu_run import qemu_10_2_plugin
    traps = qemu_10_2_plugin("traps")
    r = powered_off(linux_qemu("10.2", ["script=" + script("v5_linux.lua")], str(tmp_path),
                               smp=smp, after=[traps]))
    m = re.search(r"phys: checks (\d+) agree (\d+) differ (\d+) untranslated (\d+) exact (\d+) "
                  r"lua (.*)", r.log)
    assert m, r
    checks, agree, differ, untranslated, exact = map(int, m.groups()[:5])
    assert checks == 500 and agree > 1000 and differ == 0 and untranslated == 0, (
        f"a kernel block's bytes read by virtual and by physical address are the same\n{r}")
    if m.group(6).startswith("Lua 5.4"):  # exact 64-bit addresses: the very bytes translated
        assert exact > 0.99 * agree, r
    mine = {int(v): (int(i), int(e), int(h)) for v, i, e, h in re.findall(
        r"^discon: vcpu (\d+) interrupts (\d+) exceptions (\d+) hostcalls (\d+)$", r.log, re.M)}
    # libtraps: "VCPU, interrupts, exceptions, hostcalls" then one "V, I, E, H" line per vCPU
    theirs = {int(v): (int(i), int(e), int(h)) for v, i, e, h in re.findall(
        r"^\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)$", r.log, re.M)}
    assert len(mine) == smp and mine == theirs, f"qlua {mine} != libtraps {theirs}\n{r}"
    assert all(i > 0 and e > 0 for i, e, _ in mine.values()), r


THREADED_READS = """
local reads, same, writes = 0, 0, 0
qemu.on_translate(function(tb)
  local pc, bytes = tb.vaddr, tb[1].bytes
  tb:on_exec(function()
    reads = reads + 1
    if qemu.read_memory(pc, #bytes) == bytes then same = same + 1 end
    if reads %% 97 == 0 and qemu.write_memory(pc, bytes) then writes = writes + 1 end
  end, nil, { sync = true })
end)
qemu.on_exit(function() qemu.printf("reads %%d same %%d writes %%d\\n", reads, same, writes) end)
"""


def test_reads_and_writes_in_a_threaded_guest_do_not_deadlock_against_translation():
    # QEMU's vaddr reads take its mmap_lock, which a translating thread holds while it waits for
    # qlua's lock: with 8 guest threads translating while others read, this hung every time.
    r = run_lua(THREADED_READS % (), program=[guest("threads"), "200"], binary=user_10_2(),
                timeout=120)
    m = re.search(r"reads (\d+) same (\d+) writes (\d+)", r.log)
    assert r.status == 0 and m, r
    reads, same, writes = map(int, m.groups())
    assert reads > 10000 and same == reads and writes == reads // 97, r
