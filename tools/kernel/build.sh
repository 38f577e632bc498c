#!/usr/bin/env bash
# Build a test kernel with the iommufd selftest mock from Debian's linux-source package.
#
#   tools/kernel/build.sh [--cached-only] [--arch arm64] PACKAGE/SUITE        e.g. linux-source-7.3/trixie-backports
#
# Prints the path of the cached bzImage as its last line. The image is cached under
# $cache/kernel-<version>-<config hash>/, so a second run returns at once. A new image is copied to a temporary
# folder, checked (x86 boot signature 0x55AA at 510, "HdrS" at 0x202, a believable size) and only then moved into
# place; a cached one is checked the same way before it is used, and a bad one is deleted and built again.
# With --cached-only nothing is built: exit 4 if no good image is cached.
#
# With --arch arm64 the same source is cross-built (aarch64-linux-gnu-gcc) from config-arm64.fragment alone, in its
# own unpacked tree ($cache/build/<package>-<version>-arm64: the x86 tree is built in place, and kbuild refuses an
# out-of-tree build from a used tree), into $cache/kernel-arm64-<version>-<config hash>/Image, checked for the arm64
# Image header ("ARM\x64" at 0x38) instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cache.sh"
cache="${IOMMU_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-relay}"
cached_only=0
arch=x86
while [ $# -gt 1 ]; do
  case "$1" in
    --cached-only) cached_only=1; shift ;;
    --arch) arch="$2"; shift 2 ;;
    *) break ;;
  esac
done
spec="$1"
# A command substitution, not `< <(...)`, so a failed fetch stops the build.
fetched=$("$here/../debian-fetch.sh" "$spec")
read -r pkg version srcdeb <<<"${fetched##*$'\n'}"
series="${pkg#linux-source-}"              # 7.3
major="${series%%.*}"                      # 7
case "$arch" in
  x86)
    fragments=("$here/config.fragment")
    [ -f "$here/config-$major.x.fragment" ] && fragments+=("$here/config-$major.x.fragment")
    hash=$( (echo "$version"; cat "${fragments[@]}") | sha256sum | cut -c1-12)
    out="$cache/kernel-$version-$hash"
    image=bzImage target=bzImage built=arch/x86/boot/bzImage suffix= make_args=()
    image_problem() { bzimage_problem "$@"; }
    tools=(gcc:gcc)
    ;;
  arm64)
    fragments=("$here/config-arm64.fragment")
    hash=$( (echo "arm64 $version"; cat "${fragments[@]}") | sha256sum | cut -c1-12)
    out="$cache/kernel-arm64-$version-$hash"
    image=Image target=Image built=arch/arm64/boot/Image suffix=-arm64
    make_args=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
    image_problem() { arm64_image_problem "$@"; }
    tools=(gcc:gcc aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu)
    ;;
  *) echo "kernel: unknown --arch $arch (x86 or arm64)" >&2; exit 2 ;;
esac
if [ -e "$out" ]; then
  problem=$(image_problem "$out/$image")
  if [ -z "$problem" ]; then
    echo "kernel: cached $out/$image ($pkg $version)" >&2
    echo "$out/$image"
    exit 0
  fi
  echo "kernel: the cached $out/$image is bad ($problem); deleting it and building it again" >&2
  rm -rf "$out"
fi
if [ "$cached_only" = 1 ]; then
  echo "kernel: $pkg $version is not built yet" >&2
  exit 4
fi
"$here/../require.sh" make:make "${tools[@]}" bc:bc bison:bison flex:flex xz:xz-utils cpio:cpio \
  /usr/include/libelf.h:libelf-dev /usr/include/openssl/ssl.h:libssl-dev
build="$cache/build/$pkg-$version$suffix"
if [ ! -f "$build/.unpacked" ] || [ ! -f "$build/Makefile" ]; then
  rm -rf "$build" "$build.tmp"
  mkdir -p "$build.tmp"
  echo "kernel: unpacking $pkg $version" >&2
  tar -xaf "$srcdeb/usr/src/$pkg.tar.xz" -C "$build.tmp" --strip-components=1
  touch "$build.tmp/.unpacked"
  mv "$build.tmp" "$build"
fi
cd "$build"
make -s "${make_args[@]}" tinyconfig >&2
grep -hE '^CONFIG_' "${fragments[@]}" > .fragment
./scripts/kconfig/merge_config.sh -m .config .fragment >/dev/null
make -s "${make_args[@]}" olddefconfig >&2
missing=()
while read -r line; do grep -qx "$line" .config || missing+=("$line"); done < .fragment
if [ ${#missing[@]} -gt 0 ]; then
  echo "kernel: these options did not survive olddefconfig (a dependency is missing): ${missing[*]}" >&2
  exit 1
fi
echo "kernel: building $pkg $version $arch $image ($(nproc) jobs; 5-9 minutes on 2 cores)" >&2
start=$(date +%s)
make -s -j"$(nproc)" "${make_args[@]}" "$target" >&2
tmp=$(mktemp -d "$cache/.kernel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp "$built" "$tmp/$image"
cp .config "$tmp/config"
echo "$pkg $version" > "$tmp/version"
problem=$(image_problem "$tmp/$image")
if [ -n "$problem" ]; then
  echo "kernel: the $image just built is bad ($problem); not caching it" >&2
  exit 1
fi
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "kernel: built in $(( $(date +%s) - start )) s" >&2
echo "$out/$image"
