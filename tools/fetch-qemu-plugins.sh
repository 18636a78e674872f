#!/bin/sh
# Builds the example plugins of the installed QEMU (contrib/plugins/*.c and tests/plugin/*.c:
# libbb.so, libinsn.so, libmem.so, libhotblocks.so, libcache.so ...) into DIR (default:
# build-qemu-plugins), from Debian's `qemu` source package of the same version as qemu-user. They
# are what bench/run.py compares the shipped scripts with. Only the plugins are compiled (gcc
# -shared against the tree's qemu-plugin.h and glib), not QEMU. The source comes through
# `apt-get source` with a private sources file and private apt state: the archive address is read
# from the machine's own apt configuration and written only to a temporary folder, so neither the
# system's apt configuration nor its lists and caches change. A plugin already in DIR is not built
# again; with all of them there, nothing is downloaded. DIR/src keeps the plugins' sources (for
# reading their argument names). Prints DIR.
set -eu
dest=$(realpath -m "${1:-build-qemu-plugins}")
version=$(dpkg-query -W -f '${source:Version}' qemu-user 2>/dev/null) ||
    { echo "fetch-qemu-plugins: qemu-user is not installed (tools/setup-debian.sh)" >&2; exit 1; }
stamp="$dest/src/VERSION"
if ! mkdir -p "$dest" 2>/dev/null || [ ! -w "$dest" ]; then
    echo "fetch-qemu-plugins: cannot write to $dest" >&2
    exit 1
fi

# the sources are fetched once per version; a different qemu-user version fetches them again
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$version" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/get"
    # the machine's deb entries, as deb-src: same archives, suites and keys (security included:
    # a point release of qemu may be there only)
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed 's/^Types:.*/Types: deb-src/' "$f" >"$work/parts/$(basename "$f")"
    done
    if [ -f /etc/apt/sources.list ]; then
        awk '$1 == "deb" { $1 = "deb-src"; print }' /etc/apt/sources.list >"$work/parts/list.list"
    fi
    grep -qs 'deb-src' "$work"/parts/* ||
        { echo "fetch-qemu-plugins: no Debian archive found in the apt configuration" >&2; exit 1; }
    opts="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$work/parts
        -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache"
    # as root, apt fetches as _apt, which cannot write into a private mktemp folder
    [ "$(id -u)" != 0 ] || opts="$opts -o APT::Sandbox::User=root"
    # shellcheck disable=SC2086 # one word an option
    apt-get $opts update -q >&2
    # shellcheck disable=SC2086
    (cd "$work/get" && apt-get $opts source -q "qemu=$version" >&2)
    tree=$(find "$work/get" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -n 1)
    [ -n "$tree" ] ||
        { echo "fetch-qemu-plugins: apt-get source unpacked no qemu tree" >&2; exit 1; }
    rm -rf "$dest/src" "$dest"/lib*.so
    mkdir -p "$dest/src/contrib/plugins" "$dest/src/tests/plugin" "$dest/src/include"
    cp "$tree"/contrib/plugins/*.c "$dest/src/contrib/plugins/"
    # headers some QEMU versions keep beside the plugins (none in 7.2)
    for h in "$tree"/contrib/plugins/*.h; do
        [ ! -f "$h" ] || cp "$h" "$dest/src/contrib/plugins/"
    done
    cp "$tree"/tests/plugin/*.c "$dest/src/tests/plugin/"
    cp "$tree/include/qemu/qemu-plugin.h" "$dest/src/include/"
    echo "$version" >"$stamp"
fi

cflags="-O2 -g -fPIC -shared -I$dest/src/include -I$dest/src/contrib/plugins
    $(pkg-config --cflags glib-2.0)"
libs=$(pkg-config --libs glib-2.0)
failed=""
for c in "$dest"/src/contrib/plugins/*.c "$dest"/src/tests/plugin/*.c; do
    so="$dest/lib$(basename "$c" .c).so"
    [ -f "$so" ] && continue
    # shellcheck disable=SC2086 # one word a flag
    if gcc $cflags -o "$so.tmp" "$c" $libs >&2; then mv "$so.tmp" "$so"
    else failed="$failed $(basename "$c")"; fi
done
[ -z "$failed" ] || { echo "fetch-qemu-plugins: could not build:$failed" >&2; exit 1; }
echo "$dest"
