"""A user's build and install, as a Debian package or a newcomer makes it: `meson setup
-Dtests=false` from the source tree, ninja, `meson install --destdir` (a package's staging) and
into a prefix of its own (to run what was installed). The installed launcher must find the
installed scripts with QLUA_ROOT unset, the manuals must render without warnings and cover every
shipped script's arguments, bash completion must complete commands and script names, and the
build must hold nothing of the tests. One test, because meson runs each test in a process of its
own and the build is most of the time (about 30 s on two cores)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from qemu_run import QEMU, SRC, env_without_preload

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("meson") and shutil.which("ninja") and shutil.which("man")),
        reason="needs meson, ninja and man (tools/setup-debian.sh --test installs them)"),
    pytest.mark.user_host_independent,  # the installation, checked once with one /bin/true run
]

MARKER = "installcheck"  # a script the test adds to the installed scripts/ folder only


def user_env():
    """The test's environment without what would point qlua elsewhere than the install: no
    QLUA_ROOT, no preloaded sanitizer runtime (this build is not sanitized)."""
    env = env_without_preload()
    env.pop("QLUA_ROOT", None)
    # man-db's seccomp sandbox is refused in some containers (the pages checked are our own); a
    # fixed width, so that what the pages render to does not depend on a terminal
    env.update(MAN_DISABLE_SECCOMP="1", MANWIDTH="80")
    return env


def sh(cmd, timeout=300, **kw):
    """Runs cmd; a failure shows its output, which is where meson and ninja say why."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=user_env(), **kw)
    assert p.returncode == 0, f"{' '.join(cmd)}: status {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def elf_files(folder):
    """Paths (relative to folder) of the ELF files a build made, objects and meson's own
    sanity-check programs left out: the programs and libraries it built."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "meson-private"]
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".o") or os.path.islink(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(os.path.relpath(path, folder))
    return sorted(found)


def installed(stage, prefix):
    """The files meson installed under stage (a --destdir), relative to the prefix."""
    top = stage + prefix
    return sorted(os.path.relpath(os.path.join(root, name), top)
                  for root, _, files in os.walk(top) for name in files)


def completions(completion_file, words, cwd):
    """COMPREPLY after the completion function runs on `words`, the last being the word under
    the cursor: the state bash sets up before calling it on a TAB."""
    program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
               '_qlua; printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(["bash", "-c", program, "bash", completion_file] + words,
                       capture_output=True, text=True, timeout=60, env=user_env(), cwd=cwd)
    assert p.returncode == 0 and p.stderr == "", f"completion of {words}: {p.stderr}"
    return sorted(w for w in p.stdout.split("\n") if w)


def roff_text(path):
    """A man page's source with the escapes that sit inside words removed (\\- for a hyphen,
    \\fB and the like for fonts, \\c), so that `name=` can be found in it as typed."""
    text = open(path).read().replace("\\-", "-").replace("\\c", "")
    return re.sub(r"\\f[BIRP]", "", text)


def test_a_users_build_installs_a_working_launcher_manuals_and_completion():
    shipped = sorted(n[:-4] for n in os.listdir(os.path.join(SRC, "scripts")) if n.endswith(".lua"))
    with tempfile.TemporaryDirectory(prefix="qlua-install-") as tmp:
        build, stage, prefix = (os.path.join(tmp, d) for d in ("build", "stage", "prefix"))
        sh(["meson", "setup", build, SRC, "--prefix", prefix, "-Dtests=false"])
        sh(["ninja", "-C", build], timeout=600)

        # nothing of the tests: no guests, no oracle, no aarch64 copies, no bench plugins
        assert elf_files(build) == ["libqlua.so"], (
            f"a -Dtests=false build makes the plugin only: {elf_files(build)}")
        assert not os.path.exists(os.path.join(build, "tests")), "no tests/ in the build"
        assert not os.path.exists(os.path.join(build, "bench")), "no bench/ in the build"
        tests = json.loads(sh(["meson", "introspect", "--tests", build]).stdout)
        assert tests == [], f"no tests registered: {[t['name'] for t in tests]}"

        # a package's staging: every piece under the prefix, in the folders Debian expects
        sh(["meson", "install", "-C", build, "--no-rebuild", "--destdir", stage])
        files = installed(stage, prefix)
        want = ["bin/qlua", "share/man/man1/qlua.1", "share/man/man7/qlua-scripts.7",
                "share/doc/qlua/LICENSE", "share/bash-completion/completions/qlua",
                "share/qlua/lua/qemu/init.lua"] + [f"share/qlua/scripts/{n}.lua" for n in shipped]
        missing = [f for f in want if f not in files]
        assert not missing, f"installed under {prefix}: {missing} missing from\n" + "\n".join(files)
        plugins = [f for f in files if f.endswith("/qlua/libqlua.so")]
        assert len(plugins) == 1 and plugins[0].startswith("lib"), f"the plugin in LIBDIR/qlua: {files}"
        assert not [f for f in files if "oracle" in f or "/tests/" in f], f"no test files: {files}"

        # the same into the prefix itself, where the launcher and the plugin expect their files
        sh(["meson", "install", "-C", build, "--no-rebuild"])
        scripts = os.path.join(prefix, "share", "qlua", "scripts")
        with open(os.path.join(scripts, MARKER + ".lua"), "w") as f:
            f.write('local qemu = require "qemu"\n'
                    f'qemu.script {{ name = "{MARKER}", description = "found in the installed '
                    'scripts folder", args = {} }\n'
                    'qemu.on_exit(function() qemu.print("installed script ran") end)\n')
        qlua = os.path.join(prefix, "bin", "qlua")
        out = sh([qlua, "list"], cwd=tmp).stdout
        for name in shipped:
            assert re.search(rf"^{re.escape(name)}\s+\S", out, re.M), (
                f"installed `qlua list` shows {name}:\n{out}")
        assert "cannot be inspected" not in out, f"every script inspected:\n{out}"
        assert re.search(rf"^{MARKER}\s+found in the installed scripts folder$", out, re.M), (
            f"`qlua list` reads DATADIR/qlua/scripts, not the source tree:\n{out}")
        if shutil.which(QEMU):
            # the installed plugin finds its Lua module and a script by name in DATADIR/qlua too
            r = sh([qlua, "run", MARKER, "--", "/bin/true"], cwd=tmp)
            assert "installed script ran" in r.stderr, f"the installed plugin ran it:\n{r.stderr}"

        # the manuals render without a warning, and the scripts page covers each argument
        for page in ("man1/qlua.1", "man7/qlua-scripts.7"):
            path = os.path.join(prefix, "share", "man", page)
            p = sh(["man", "--warnings", "-l", path])
            assert p.stderr == "" and "NAME" in p.stdout and "SEE ALSO" in p.stdout, (
                f"man -l {page}: warnings or no page\n{p.stderr}")
        with ThreadPoolExecutor(max_workers=4) as pool:  # help runs a sandboxed Lua each
            helps = list(pool.map(lambda n: sh([qlua, "help", n], cwd=tmp).stdout, shipped))
        page = roff_text(os.path.join(prefix, "share", "man", "man7", "qlua-scripts.7"))
        for name, text in zip(shipped, helps):
            section = page.partition(f"\n.SS {name}\n")[2].partition("\n.SS ")[0]
            assert section, f"qlua-scripts(7) has a section for {name}"
            for arg in re.findall(r"^  ([\w.-]+)=", text, re.M):
                assert f"{arg}=" in section, (
                    f"qlua-scripts(7) describes {name}'s argument {arg}= (qlua help {name}):\n{text}")

        # bash completion, from the installed file, with the installed script names
        completion = os.path.join(prefix, "share", "bash-completion", "completions", "qlua")
        assert "@ROOT@" not in open(completion).read(), "meson wrote the scripts folder in"
        empty = os.path.join(tmp, "cwd")  # no file here that a file completion could add
        os.mkdir(empty)
        assert completions(completion, ["qlua", "he"], empty) == ["help"]
        assert completions(completion, ["qlua", "help", "hot"], empty) == ["hotblocks", "hotpages"]
        assert completions(completion, ["qlua", "run", "installc"], empty) == [MARKER], (
            "script names come from the installed scripts folder")
        assert completions(completion, ["qlua", "run", "count", "onerror", "=", "w"], empty) == [
            "warn"], "the plugin's options' values"
        # a script's own arguments and values, from `qlua help` of the launcher being completed
        assert completions(completion, [qlua, "run", "hotblocks", "inl"], empty) == ["inline="]
        assert completions(completion, [qlua, "run", "hotblocks", "inline", "=", ""], empty) == [
            "off", "on"], "a bool's words"
