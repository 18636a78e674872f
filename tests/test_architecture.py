"""The shim's structure as docs/architecture.md states it: a header per file, no catch-all header,
an acyclic include graph whose edges point down the layers, and every lua_pcall in gate.c."""
import os
import re

import pytest

pytestmark = pytest.mark.user_host_independent  # reads the source, runs no QEMU

SHIM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shim")
LAYERS = {  # lower number: lower layer; a file may include only its own layer's or lower ones
    "base": 0, "host": 0, "value": 0, "handle": 0, "output": 0, "quiesce": 0, "gate": 1, "arena": 2,
    "tb": 3, "insn": 3, "mem": 3, "counter": 3, "tally": 3, "vcpu": 3, "symbols": 3,
    "buffer": 4, "exec": 5, "events": 6,
    "profile": 7, "repl": 7, "reload": 7, "signals": 7,
    "plugin": 8,
}


def sources():
    return sorted(f for f in os.listdir(SHIM) if f.endswith((".c", ".h")))


def includes(name):
    text = open(os.path.join(SHIM, name)).read()
    return [i[:-2] for i in re.findall(r'#include "([a-z_]+\.h)"', text)
            if os.path.exists(os.path.join(SHIM, i))]


def code(name):
    """The file without comments and string literals (so prose mentioning a call does not count)."""
    text = open(os.path.join(SHIM, name)).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def test_every_shim_file_is_in_a_layer():
    stems = {f[:-2] for f in sources()}
    assert stems == set(LAYERS), f"files and layers differ: {stems ^ set(LAYERS)}"


def test_every_c_file_but_plugin_has_its_own_header():
    for f in sources():
        if f.endswith(".c") and f != "plugin.c":
            assert os.path.exists(os.path.join(SHIM, f[:-2] + ".h")), f"{f} has no header"


def test_no_file_includes_a_catch_all_header():
    assert not os.path.exists(os.path.join(SHIM, "internal.h"))
    for f in sources():
        assert "internal" not in includes(f), f


def test_includes_point_down_the_layers():
    for f in sources():
        me = f[:-2]
        for dep in includes(f):
            if dep != me:
                assert LAYERS[dep] <= LAYERS[me], f"{f} includes {dep}.h, a higher layer"


def test_the_include_graph_is_acyclic():
    graph = {f[:-2]: set(includes(f)) - {f[:-2]} for f in sources() if f.endswith(".c")}
    for f in sources():
        if f.endswith(".h"):
            graph.setdefault(f[:-2], set()).update(set(includes(f)) - {f[:-2]})
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"
    for node in graph:
        if node not in state:
            visit(node, [node])


def test_a_header_declares_only_its_own_files_functions():
    defined = {}
    for f in sources():
        if f.endswith(".c"):
            for name in re.findall(r"^[a-zA-Z_][\w \*]*?\b(qlua_\w+)\s*\([^;]*?\)\s*\{", code(f), re.M):
                defined[name] = f[:-2]
    for f in sources():
        if f.endswith(".h"):
            for name in re.findall(r"\b(qlua_\w+)\s*\(", code(f)):
                owner = defined.get(name)
                if owner is not None:
                    assert owner == f[:-2], f"{f} declares {name}, which {owner}.c defines"


@pytest.mark.parametrize("call", ["lua_pcall", "lua_call"])
def test_lua_is_entered_only_through_the_gate(call):
    for f in sources():
        if f != "gate.c":
            assert not re.search(rf"\b{call}\s*\(", code(f)), f"{f} calls {call}"
