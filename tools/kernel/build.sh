#!/usr/bin/env bash
# Build a test kernel with the iommufd selftest mock from Debian's linux-source package.
#
#   tools/kernel/build.sh PACKAGE/SUITE        e.g. linux-source-7.3/trixie-backports
#
# Prints the path of the cached bzImage as its last line. The image is cached under
# $cache/kernel-<version>-<config hash>/, so a second run returns at once.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${IOMMU_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-relay}"
spec="$1"
read -r pkg version srcdeb < <("$here/../debian-fetch.sh" "$spec" | tail -n 1)
series="${pkg#linux-source-}"              # 7.3
major="${series%%.*}"                      # 7
fragments=("$here/config.fragment")
[ -f "$here/config-$major.x.fragment" ] && fragments+=("$here/config-$major.x.fragment")
hash=$( (echo "$version"; cat "${fragments[@]}") | sha256sum | cut -c1-12)
out="$cache/kernel-$version-$hash"
if [ -f "$out/bzImage" ]; then
  echo "kernel: cached $out/bzImage ($pkg $version)" >&2
  echo "$out/bzImage"
  exit 0
fi
"$here/../require.sh" make:make gcc:gcc bc:bc bison:bison flex:flex xz:xz-utils cpio:cpio \
  /usr/include/libelf.h:libelf-dev /usr/include/openssl/ssl.h:libssl-dev
build="$cache/build/$pkg-$version"
if [ ! -f "$build/.unpacked" ]; then
  rm -rf "$build"; mkdir -p "$build"
  echo "kernel: unpacking $pkg $version" >&2
  tar -xaf "$srcdeb/usr/src/$pkg.tar.xz" -C "$build" --strip-components=1
  touch "$build/.unpacked"
fi
cd "$build"
make -s tinyconfig >&2
cat "${fragments[@]}" | grep -E '^CONFIG_' > .fragment
./scripts/kconfig/merge_config.sh -m .config .fragment >/dev/null
make -s olddefconfig >&2
missing=()
while read -r line; do grep -qx "$line" .config || missing+=("$line"); done < .fragment
if [ ${#missing[@]} -gt 0 ]; then
  echo "kernel: these options did not survive olddefconfig (a dependency is missing): ${missing[*]}" >&2
  exit 1
fi
echo "kernel: building $pkg $version bzImage ($(nproc) jobs; 6-9 minutes on 2 cores)" >&2
start=$(date +%s)
make -s -j"$(nproc)" bzImage >&2
mkdir -p "$out"
cp arch/x86/boot/bzImage "$out/bzImage.tmp" && mv "$out/bzImage.tmp" "$out/bzImage"
cp .config "$out/config"
echo "$pkg $version" > "$out/version"
echo "kernel: built in $(( $(date +%s) - start )) s" >&2
echo "$out/bzImage"
