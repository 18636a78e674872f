#!/bin/sh
# Unpacks QEMU 10.0.2's qemu-system-x86 (plugin API v4) from bookworm-backports into a private
# folder (default: .qemu10), without adding the suite to the system's apt configuration: the
# archive address is read from the machine's own apt sources and used with a private list folder.
# Installs the bookworm libraries the binary needs. Prints the path of qemu-system-x86_64.
set -eu
dest=$(realpath -m "${1:-.qemu10}")
version="1:10.0.2+ds-2+deb13u1~bpo12+1"
bin="$dest/usr/bin/qemu-system-x86_64"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
run() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$uri" ] || { echo "fetch-qemu10: no Debian archive found in the apt configuration" >&2; exit 1; }
work=$(mktemp -d)
mkdir -p "$work/lists/partial" "$work/parts" "$dest"
printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" >"$work/parts/backports.sources"
opts="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$work/parts -o Dir::State::Lists=$work/lists"
apt-get $opts update -q >&2
(cd "$work" && apt-get $opts download -q "qemu-system-x86=$version" "qemu-system-common=$version" \
    "qemu-system-data=$version" >&2)
for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest"; done
rm -rf "$work"
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libaio1 libbpf1 \
    libcapstone4 libfdt1 libfuse3-3 libgmp10 libgnutls30 libibverbs1 libjpeg62-turbo libnuma1 \
    libpixman-1-0 libpmem1 libpng16-16 librdmacm1 libsasl2-2 libseccomp2 libslirp0 liburing2 \
    libvdeplug2 >&2
echo "$bin"
