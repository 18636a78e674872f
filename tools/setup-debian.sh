#!/bin/sh
# Installs what qlua needs on Debian 12 (bookworm). Run as root (or with sudo).
#   tools/setup-debian.sh          what a user needs to build, install and run qlua
#   tools/setup-debian.sh --test   also what the tests and the benchmarks need (tests/run-all.sh
#                                  runs this itself)
# Only missing packages are asked for: with everything installed it touches neither apt's lists
# nor the network, so run-all.sh can call it on every run.
set -eu
run() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# meson setup -Dtests=false && ninja && meson install, then `qlua run` on x86_64 and other
# user-mode guests; lua-system: the host clock of scripts/ips.lua under Lua 5.4
packages="build-essential pkg-config meson ninja-build python3 libglib2.0-dev libelf-dev
    luajit libluajit-5.1-dev lua5.4 liblua5.4-dev qemu-user lua-system"
case "${1-}" in
    "") ;;
    --test)
        # pytest (tests/test_*.py) and busted (spec/); lfs and LuaSocket, which scripts and tests
        # require; qemu-system-x86 for the system-mode tests; the aarch64 cross compiler for the
        # aarch64 guests; binutils for nm, ld and the bare-metal images; man-db and groff-base for
        # test_install's `man -l`; bzip2 for bench/run.py's workloads; linux-image-amd64 and
        # busybox-static for test_linux's guest, a Debian kernel booting a busybox initramfs
        # (tests/guests/linux/make-guest.py); uftrace to read what the uftrace port writes
        packages="$packages python3-pytest lua-busted lua-filesystem lua-socket qemu-system-x86
            binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross gdb man-db groff-base bzip2
            linux-image-amd64 busybox-static uftrace" ;;
    *)
        echo "usage: tools/setup-debian.sh [--test]" >&2
        exit 2 ;;
esac

missing=""
for p in $packages; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "setup-debian: every package is installed"
    exit 0
fi
run apt-get update -q
# shellcheck disable=SC2086 # one word a package
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
