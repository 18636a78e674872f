"""pytest hooks for the integration tests: the exits_qemu and user_host_independent markers, the
user-mode host (QLUA_USER_HOST, see qemu_run.py), and exit status 77 (meson's "skipped") when
the one test a run was asked for skipped."""
import os

import pytest

import qemu_run

SKIPPED = 77  # meson's exit status for a skipped test


def pytest_configure(config):
    if os.environ.get("QLUA_USER_HOST", "7.2") not in qemu_run.USER_HOSTS:
        raise pytest.UsageError(qemu_run.USER_HOST_PROBLEM)  # a typo must not skip the suite


# Cases in which QEMU refuses the plugin and leaves through exit(): with the ASan runtime preloaded
# into an uninstrumented QEMU, glibc's exit handlers deadlock (p11-kit's destructor), so the
# sanitizer build (QLUA_SANITIZED set) skips them; the LuaJIT and Lua 5.4 builds run them.
def pytest_runtest_setup(item):
    if item.get_closest_marker("exits_qemu") and os.environ.get("QLUA_SANITIZED"):
        pytest.skip("QEMU's exit() deadlocks with the preloaded ASan runtime")
    if qemu_run.USER_HOST_PROBLEM:
        pytest.skip(qemu_run.USER_HOST_PROBLEM)
    # on another user-mode host than the default, the tests that do not depend on it would only
    # repeat the default run (meson's qemu102 setup does not even start them)
    if item.get_closest_marker("user_host_independent") and qemu_run.USER_HOST != "7.2":
        pytest.skip(f"the same on every user-mode host: run with the default one, not with "
                    f"QLUA_USER_HOST={qemu_run.USER_HOST}")


_outcomes = {}


def pytest_runtest_logreport(report):
    # a test skips in setup (the marker) or in its call (pytest.skip); a failure anywhere counts
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped and _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = "skipped"
    else:
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session, exitstatus):
    # meson runs one test per pytest run: let it show a skipped one as SKIP, not as OK
    if session.testscollected == 1 and list(_outcomes.values()) == ["skipped"]:
        session.exitstatus = SKIPPED
