"""Tallies fed natively at execution time (insn:tally_mem, tb:tally, insn:tally): every event
counted, in agreement with native counters; the vCPU sets; delivery before a thread's other Lua
callbacks; clear errors for bad arguments."""
import re

import pytest

from qemu_run import fields, guest, run_lua, system_lua

# Each fed tally against the native counter that counts the same events, in the same run.
AGREE = """
local T = {}
for _, k in ipairs { "tb", "insn", "mem", "r", "w", "page" } do T[k] = qemu.tally() end
local C = {}
for _, k in ipairs { "tb", "insn", "mem", "r", "w" } do C[k] = qemu.counter() end
local vaddrs = {}
qemu.on_translate(function(tb)
  tb:tally(T.tb, 7); tb:count(C.tb)
  for insn in tb:insns() do
    vaddrs[insn.vaddr] = true
    insn:tally(T.insn, insn.vaddr); insn:count(C.insn)
    insn:tally_mem(T.mem); insn:count_mem(C.mem)
    insn:tally_mem(T.r, { rw = "r" }); insn:count_mem(C.r, nil, { rw = "r" })
    insn:tally_mem(T.w, { rw = "w" }); insn:count_mem(C.w, nil, { rw = "w" })
    insn:tally_mem(T.page, { align = 4096 })
  end
end)
local function total(t)
  local n = 0
  for _, v in pairs(t:items()) do n = n + v end
  return n
end
qemu.on_exit(function()
  local out = {}
  for _, k in ipairs { "tb", "insn", "mem", "r", "w" } do
    out[#out + 1] = string.format("%s=%d/%d", k, total(T[k]), C[k]:sum())
  end
  out[#out + 1] = string.format("page=%d/%d", total(T.page), C.mem:sum())
  local odd, stray = 0, 0
  for key in pairs(T.page:items()) do if key % 4096 ~= 0 then odd = odd + 1 end end
  for key in pairs(T.insn:items()) do if not vaddrs[key] then stray = stray + 1 end end
  local keys7 = 0
  for key in pairs(T.tb:items()) do keys7 = keys7 + (key == 7 and 1 or 100) end
  local mask = 0
  for _, m in pairs(T.mem:vcpus()) do if m > mask then mask = m end end
  qemu.printf("fed: %s unaligned=%d stray=%d tbkeys=%d mask=%d\\n", table.concat(out, " "), odd,
    stray, keys7, mask)
end)
"""


def agreement(r):
    line = next((l for l in r.log.splitlines() if l.startswith("fed: ")), None)
    assert r.status == 0 and line, f"run\n{r}"
    pairs = dict(re.findall(r"(\w+)=(\d+/\d+)", line))
    for key, value in pairs.items():
        fed, counted = value.split("/")
        assert fed == counted and int(fed) > 0, f"{key}: tally {fed}, counter {counted}\n{r}"
    return fields(line, "fed")


def test_fed_tallies_count_what_native_counters_count():
    f = agreement(run_lua(AGREE, [guest("loop"), "200"]))
    assert f["unaligned"] == "0" and f["stray"] == "0" and f["tbkeys"] == "1", f
    assert f["mask"] == "1", f"one guest thread: vCPU 0 only\n{f}"


def test_fed_tallies_count_every_event_of_8_threads_and_note_their_vcpus():
    f = agreement(run_lua(AGREE, [guest("threads"), "200"]))
    assert int(f["mask"]) >= 3, f"several vCPUs' bits in a page's set\n{f}"


def test_fed_tallies_on_a_real_program():
    agreement(run_lua(AGREE, ["/usr/bin/sort", "/etc/services"]))


# qemu.count_every with tallies: the same counts as the per-handle methods, with no Lua at
# translation time.
EVERY = """
local eb, ei, hb, hi = qemu.tally(), qemu.tally(), qemu.tally(), qemu.tally()
qemu.count_every("block", eb)
qemu.count_every("insn", ei)
-- Several mem rules share one callback per access (the first absorbs the others): each must still
-- count only its own kind, at its own alignment.
local MEM = { { rw = "w", align = 64 }, { rw = "r", align = 4096 }, { rw = "rw", align = 1 },
  { rw = "r", align = 8 } }
local em, hm = {}, {}
for i, opts in ipairs(MEM) do
  em[i], hm[i] = qemu.tally(), qemu.tally()
  qemu.count_every("mem", em[i], opts)
end
qemu.on_translate(function(tb)
  tb:tally(hb, tb.vaddr)
  for insn in tb:insns() do
    insn:tally(hi, insn.vaddr)
    for i, opts in ipairs(MEM) do insn:tally_mem(hm[i], opts) end
  end
end)
local function same(a, b)
  local n, x, y = 0, a:items(), b:items()
  for k, v in pairs(x) do if y[k] ~= v then return "differ at " .. k end; n = n + 1 end
  for k in pairs(y) do if x[k] == nil then return "differ at " .. k end end
  return n
end
qemu.on_exit(function()
  local mem = {}
  for i in ipairs(MEM) do mem[i] = string.format("mem%d=%s", i, same(em[i], hm[i])) end
  qemu.printf("every: block=%s insn=%s %s\\n", same(eb, hb), same(ei, hi), table.concat(mem, " "))
end)
"""


def test_count_every_with_a_tally_counts_what_the_methods_count():
    for program in ([guest("loop"), "50"], [guest("threads"), "50"]):
        r = run_lua(EVERY, program)
        f = fields(r.log, "every")
        assert r.status == 0 and len(f) == 6, f"{f}\n{r}"
        assert all(v.isdigit() and int(v) > 10 for v in f.values()), f"{f}\n{r}"


# Mem rules added while 8 threads run join the first one's list as its callbacks walk it: each
# counts from its start on (at most what the whole-run rule counts), none disturbs the first.
LATE_MEM = """
local first, whole = qemu.tally(), qemu.tally()
qemu.count_every("mem", first, { align = 4096 })
qemu.on_translate(function(tb)
  for insn in tb:insns() do insn:tally_mem(whole, { align = 4096 }) end
end)
local late, n = {}, 0
qemu.on_syscall(function()
  if n < 12 then
    n = n + 1
    late[n] = qemu.tally()
    qemu.count_every("mem", late[n], { rw = n % 2 == 0 and "r" or "rw" })
  end
end)
local function total(t)
  local s = 0
  for _, v in pairs(t:items()) do s = s + v end
  return s
end
qemu.on_exit(function()
  local over, counted = 0, 0
  for i = 1, n do
    local v = total(late[i])
    if v > total(whole) then over = over + 1 end
    if v > 0 then counted = counted + 1 end
  end
  qemu.printf("late: rules=%d counted=%d over=%d first=%d whole=%d\\n", n, counted, over,
    total(first), total(whole))
end)
"""


def test_mem_rules_added_while_threads_run_each_count_from_then_on():
    r = run_lua(LATE_MEM, [guest("threads"), "300"])
    f = fields(r.log, "late")
    assert r.status == 0 and f["rules"] == "12" and f["over"] == "0", f"{f}\n{r}"
    assert f["counted"] == "12" and f["first"] == f["whole"] != "0", f"{f}\n{r}"


# A synchronous callback sees every add its thread made before it.
IN_STEP = """
local t, c = qemu.tally(), qemu.counter()
local checks, off = 0, 0
local function check(vcpu)
  checks = checks + 1
  if t:get(1) ~= c:get(vcpu) then off = off + 1 end
end
qemu.on_translate(function(tb)
  tb:on_exec(check, nil, { sync = true })
  for insn in tb:insns() do insn:tally(t, 1); insn:count(c) end
end)
qemu.on_exit(function() qemu.printf("step: checks=%d off=%d\\n", checks, off) end)
"""


def test_a_synchronous_callback_sees_every_fed_add_before_it():
    r = run_lua(IN_STEP, [guest("loop"), "50"])
    f = fields(r.log, "step")
    assert r.status == 0 and int(f["checks"]) > 1000 and f["off"] == "0", f"{f}\n{r}"


def test_reset_forgets_what_was_fed_before_it():
    r = run_lua("local t, c = qemu.tally(), qemu.counter()\n"
                "local done = false\n"
                "qemu.on_translate(function(tb) tb:tally(t, 3); tb:count(c) end)\n"
                "qemu.on_syscall(function(vcpu) if not done then done = true; t:reset(); c:reset() end end)\n"
                "qemu.on_exit(function() qemu.printf('reset: fed=%d counted=%d\\n', t:get(3), c:sum()) end)",
                [guest("loop"), "20"])
    f = fields(r.log, "reset")
    assert r.status == 0 and f["fed"] == f["counted"], f"{f}\n{r}"


HOSTILE = """
local t = qemu.tally()
local said = {}
local function try(...)
  local ok, err = pcall(...)
  said[#said + 1] = ok and "ok" or tostring(err)
end
local once = false
qemu.on_translate(function(tb)
  if once then return end
  once = true
  local insn = tb[1]
  try(insn.tally_mem, insn, nil)
  try(insn.tally_mem, insn, {})
  try(insn.tally_mem, insn, setmetatable({}, { __metatable = "qlua.tally" }))
  try(insn.tally_mem, tb, t)
  try(insn.tally_mem, insn, t, { align = 3000 })
  try(insn.tally_mem, insn, t, { io = "maybe" })
  try(insn.tally_mem, insn, t, { rw = "x" })
  try(insn.tally_mem, insn, t, { sync = true })
  try(insn.tally_mem, insn, t, nil, "extra")
  try(tb.tally, tb, t, -1.0) -- a float: a Lua 5.4 integer is a u64 bit pattern
  try(tb.tally, tb, t, 1.5)
  try(tb.tally, tb, t, "1")
  try(tb.tally, tb, nil, 1)
  try(insn.tally, tb, t, 1)
  try(tb.tally, tb, t, 1, 2)
  for _, s in ipairs(said) do qemu.print(s) end
end)
"""


def test_bad_arguments_to_fed_tallies_say_what_is_accepted():
    r = run_lua(HOSTILE)
    lines = r.log.splitlines()
    assert r.status == 0 and len(lines) == 15, f"run\n{r}"
    expected = [
        "insn:tally_mem: expected a tally from qemu.tally(), got nil",
        "insn:tally_mem: expected a tally from qemu.tally(), got table",
        "insn:tally_mem: expected a tally from qemu.tally(), got table",
        "insn:tally_mem: expected a insn as self, got userdata",
        "insn:tally_mem: option align=3000: expected a power of two from 1 to 2^63",
        'insn:tally_mem: option io=maybe: expected "any", "only", "skip"',
        'insn:tally_mem: option rw=x: expected "r", "w", "rw"',
        "insn:tally_mem: unknown option 'sync' (accepted: align, io, phys, rw)",
        "insn:tally_mem(t, opts) takes nothing after its options",
        "tb:tally: the key must be a whole number from 0 to 2^64-1, got -1",
        "tb:tally: the key must be a whole number from 0 to 2^64-1, got 1.5",
        "tb:tally: the key must be a whole number from 0 to 2^64-1, got 1",
        "tb:tally: expected a tally from qemu.tally(), got nil",
        "insn:tally: expected a insn as self, got userdata",
        "tb:tally(t, key) takes two arguments (got a third: 2)",
    ]
    for line, want in zip(lines, expected):
        assert want in line, f"{want!r} not in {line!r}\n{r}"
    r = run_lua("local t = qemu.tally()\n"
                "qemu.on_translate(function(tb)\n"
                "  tb:tally(t, -5.5)\n"
                "end)")
    assert r.status == 1 and re.search(r"\.lua:3: tb:tally: the key must be a whole number", r.err), (
        f"blamed on the script's line\n{r}")


@pytest.mark.user_host_independent  # system mode
@pytest.mark.parametrize("version", ["7.2"])
def test_tally_mem_by_physical_page_in_system_mode(version):
    r = system_lua(version, """
local byphys, byvirt, io = qemu.tally(), qemu.tally(), qemu.tally()
qemu.on_translate(function(tb)
  for insn in tb:insns() do
    insn:tally_mem(byphys, { align = 4096, phys = true })
    insn:tally_mem(byvirt, { align = 4096 })
    insn:tally_mem(io, { io = "only" })
  end
end)
qemu.on_exit(function()
  qemu.printf("sys: page1000=%d virt1000=%d io=%d\\n", byphys:get(0x1000), byvirt:get(0x1000),
    io:size())
end)
""")
    f = fields(r.log, "sys")
    assert int(f["page1000"]) > 0 and f["page1000"] == f["virt1000"], f"identity-mapped\n{r}"
    assert f["io"] == "0", f"the boot guest touches no device through memory\n{r}"
