"""LuaJIT compiles qlua's own hot loops (the build under Lua 5.4 skips these): a loop LuaJIT cannot
compile runs interpreted, and its FFI accesses then cost more than the C API they replace (the
queued-callback drain once ran at ~1100 ns per record for that reason, instead of ~10)."""
import os
import re
import tempfile

import pytest

from qemu_run import SRC, guest, run_lua

INIT = os.path.join(SRC, "lua", "qemu", "init.lua")

pytestmark = pytest.mark.user_host_independent  # the loop is qlua's, whatever the host

# Queued callbacks with and without data and a counter snapshot: every branch of the drain loop.
PROBE = """
if not jit then qemu.print("no jit") return end
require("jit.v").on("{log}")
local c = qemu.counter()
local n = 0
local function f(vcpu, data, count) n = n + 1 end
qemu.on_translate(function(tb)
  tb:count(c)
  tb:on_exec(f, { tb.vaddr }, { counter = c })
  tb:on_exec(f)
  tb:on_exec(f, tb.vaddr)
end)
qemu.on_exit(function() qemu.print("calls", n) end)
"""


def drain_loop_lines():
    """The line of the drain loop's `for` in lua/qemu/init.lua, and the last line of its body."""
    lines = open(INIT).read().splitlines()
    start = next(i for i, l in enumerate(lines, 1) if "core.queue_drainer(function" in l)
    loop = next(i for i in range(start, start + 5) if lines[i - 1].strip().startswith("for i ="))
    end = next(i for i in range(loop, loop + 30) if lines[i - 1].startswith("    end"))
    return loop, end


def test_luajit_compiles_the_queued_callback_drain_loop():
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "jit.log")
        r = run_lua(PROBE.replace("{log}", log), program=[guest("loop"), "200"])
        if "no jit" in r.log:
            pytest.skip("the Lua 5.4 build has no trace compiler")
        assert r.status == 0 and int(re.search(r"calls\t(\d+)", r.log).group(1)) > 1000, r
        traces = open(log).read()
    loop, end = drain_loop_lines()
    compiled = re.findall(rf"^\[TRACE\s+\d+ init\.lua:{loop} loop\]", traces, re.M)
    assert compiled, f"no trace of the drain loop (init.lua:{loop}):\n{traces}"
    # an abort names where the trace started ("init.lua:N -- NYI ...") and, for some reasons,
    # where it stopped ("... at init.lua:N"); a side trace that falls back to the interpreter is
    # as bad
    bad = [line for line in traces.splitlines()
           if (line.startswith("[TRACE ---") or "fallback to interpreter" in line)
           and any(loop <= int(n) <= end for n in re.findall(r"init\.lua:(\d+)", line))]
    assert not bad, "traces aborted inside the drain loop (init.lua:%d-%d):\n%s" % (
        loop, end, "\n".join(bad))
