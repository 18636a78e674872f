#!/bin/sh
# Builds qlua twice (LuaJIT and Lua 5.4) plus a sanitizer build, runs every integration test in
# real QEMU on each (user mode on QEMU 7.2), the LuaJIT build's user-mode tests once more with user
# mode on QEMU 10.2, and the busted specs under both Lua implementations, then prints one line:
#   N passed, N failed, N skipped
# (skipped: meson's SKIP results, e.g. the system-mode tests without QEMU 10.0.2).
set -u
cd "$(dirname "$0")/.."
results=$(mktemp -d)
status=0

# The packages the tests need beyond a user's: .ci/run's plain tools/setup-debian.sh installs only
# what a user needs. Nothing is fetched when they are all installed.
tools/setup-debian.sh --test || echo "tools/setup-debian.sh --test failed: tests needing those packages will fail"

# QEMU 10.0.2 (plugin API v4) for the system-mode tests; they skip, saying why, without it.
tools/fetch-qemu10.sh .qemu10 >"$results/qemu10.log" 2>&1 || { echo "QEMU 10.0.2 unavailable:"; tail -n 3 "$results/qemu10.log"; }

# QEMU 10.2 (plugin API 5) beside the checkout, or where QLUA_QEMU_10_2 says (tests/qemu_run.py).
qemu102=${QLUA_QEMU_10_2:-$(dirname "$PWD")/shared/qemu-10.2}

count() { # meson's testlog JSON -> "passed failed skipped"
    python3 - "$1" <<'PY'
import json, sys
ok = bad = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skipped += 1
    else: bad += 1
print(ok, bad, skipped)
PY
}

failures() { # meson's testlog JSON, label -> each failed test's name and the end of its output
    python3 - "$1" "$2" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["result"] in ("OK", "EXPECTEDFAIL", "SKIP"):
        continue
    out = (r.get("stdout") or "").rstrip().splitlines()
    print(f"--- {sys.argv[2]}: {r['name']} ({r['result']}, {r.get('duration', 0):.1f} s); its output ends:")
    print("\n".join(out[-40:]))
PY
}

build() { # dir, meson options...
    dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dtests=true "$@" >"$results/$dir.setup.log" 2>&1 || { cat "$results/$dir.setup.log"; return 1; }
    elif grep -q '"name": "tests", "value": false' "$dir/meson-info/intro-buildoptions.json" 2>/dev/null; then
        # a user's build (-Dtests=false) in the same folder: it has no tests to run
        meson configure "$dir" -Dtests=true >"$results/$dir.setup.log" 2>&1 || { cat "$results/$dir.setup.log"; return 1; }
    fi
    ninja -C "$dir" >"$results/$dir.build.log" 2>&1 || { cat "$results/$dir.build.log"; return 1; }
}

for variant in "build" "build-lua54 -Dlua=lua54" "build-asan -Dsanitize=address,undefined"; do
    set -- $variant
    dir=$1
    echo "== $dir: build"
    if ! build "$@"; then
        echo "build $dir: FAILED"; echo "0 1 0" >"$results/$dir.count"; status=1; continue
    fi
    echo "== $dir: meson test"
    env_extra=""
    # the Linux boots (tests/linux_guest.py) once, in the LuaJIT build: CI stays under 25 minutes
    [ "$dir" = build ] || env_extra="QLUA_LINUX_BOOTS=0"
    if [ "$dir" = build-asan ]; then
        # QEMU is not built with ASan: preload the runtime so the plugin's instrumentation works.
        env_extra="$env_extra QLUA_SANITIZED=1 LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
    fi
    # busted's meson test (suite spec) is left out: the TAP runs below count each spec once
    env $env_extra meson test -C "$dir" --no-suite spec --num-processes 2 --print-errorlogs \
        >"$results/$dir.test.log" 2>&1 || status=1
    tail -n 12 "$results/$dir.test.log"
    count "$dir/meson-logs/testlog.json" >"$results/$dir.count"
    failures "$dir/meson-logs/testlog.json" "$dir" >>"$results/failures.txt"
    [ "$dir" = build ] || continue
    # The same libqlua.so with user mode on QEMU 10.2: meson's qemu102 setup leaves out the tests
    # marked user_host_independent (system mode, no QEMU). Once, with LuaJIT: the Lua 5.4 and
    # sanitizer builds would add 2 x 4 minutes to CI for the same host code.
    if [ ! -x "$qemu102/bin/qemu-x86_64" ]; then
        echo "QEMU 10.2 not found at $qemu102 (set QLUA_QEMU_10_2): user mode on 10.2 not tested"
        echo "0 0 1" >"$results/$dir-qemu102.count"
        continue
    fi
    echo "== $dir: meson test --setup qemu102 (user mode on QEMU 10.2)"
    QLUA_QEMU_10_2=$qemu102 meson test -C "$dir" --setup qemu102 --num-processes 2 --print-errorlogs \
        >"$results/$dir-qemu102.test.log" 2>&1 || status=1
    tail -n 12 "$results/$dir-qemu102.test.log"
    count "$dir/meson-logs/testlog-qemu102.json" >"$results/$dir-qemu102.count"
    failures "$dir/meson-logs/testlog-qemu102.json" "$dir on QEMU 10.2" >>"$results/failures.txt"
done

for lua in luajit lua5.4; do
    echo "== busted under $lua"
    $lua /usr/bin/busted -o TAP spec >"$results/busted-$lua.log" 2>&1 || status=1
    grep -E "^not ok" "$results/busted-$lua.log"
    ok=$(grep -c "^ok " "$results/busted-$lua.log")
    bad=$(grep -c "^not ok " "$results/busted-$lua.log")
    tail -n 1 "$results/busted-$lua.log"
    echo "$ok $bad 0" >"$results/busted-$lua.count"
done

# the benchmark's own machinery (bench/test_bench.py: its comparisons, goals, arithmetic; its real
# runs skip, saying why, without build/ or tools/fetch-qemu-plugins.sh's plugins)
echo "== bench/test_bench.py"
/usr/bin/python3 -m pytest -q -p no:cacheprovider -rs bench/test_bench.py --junitxml="$results/bench.xml" \
    >"$results/bench.log" 2>&1 || status=1
tail -n 3 "$results/bench.log"
python3 - "$results/bench.xml" >"$results/bench.count" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = root if root.tag == "testsuite" else root.find("testsuite")
tests, bad = int(s.get("tests")), int(s.get("failures")) + int(s.get("errors"))
skipped = int(s.get("skipped"))
print(tests - bad - skipped, bad, skipped)
PY
grep -q "^0 0 0$" "$results/bench.count" && { echo "bench/test_bench.py ran nothing"; echo "0 1 0" >"$results/bench.count"; }
if ! grep -q "^[0-9]* 0 " "$results/bench.count"; then
    { echo "--- bench/test_bench.py failed; its output ends:"; tail -n 40 "$results/bench.log"; } >>"$results/failures.txt"
fi

# what failed, last, where a CI log's tail shows it (the meson logs above are on the machine only)
if [ -s "$results/failures.txt" ]; then
    echo "== failures"
    cat "$results/failures.txt"
fi
cat "$results"/*.count | awk '{p += $1; f += $2; s += $3} END {printf "%d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0)}' || status=1
rm -rf "$results"
exit $status
