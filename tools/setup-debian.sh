#!/bin/sh
# Installs what qlua needs to build and test on Debian 12 (bookworm). Run as root (or with sudo).
set -eu
run() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
run apt-get update -q
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    build-essential pkg-config meson ninja-build python3 python3-pytest libglib2.0-dev \
    luajit libluajit-5.1-dev lua5.4 liblua5.4-dev lua-busted lua-filesystem lua-socket \
    qemu-user qemu-system-x86 binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross gdb
