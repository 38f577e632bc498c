#!/usr/bin/env bash
# Fetch Debian packages with a private apt state and unpack them with dpkg -x, so the machine's own apt
# setup, package database and /usr/include stay untouched.
#
#   tools/debian-fetch.sh [--arch arm64] PACKAGE[/SUITE] ...
#
# Prints one line per package: "<package> <version> <unpacked folder>". Unpacked trees are cached under
# ${IOMMU_RELAY_CACHE:-$XDG_CACHE_HOME/iommu-relay}/deb/<package>_<version>/ and reused on later runs: each .deb is
# checked with `dpkg-deb --info` (apt has already checked its hash against the signed index), unpacked into a
# temporary folder and moved into place with the list of its files and sizes, which is checked before each later use
# (tools/kernel/cache.sh); a bad tree is deleted and fetched again.
#
# With --arch arm64 the packages come from bookworm's arm64 index (the arm64 test VM's userland and its UEFI
# firmware), through a second private apt state ($cache/apt-arm64) and into deb/<package>_<version>_arm64/.
set -euo pipefail
arch=amd64
if [ "${1:-}" = --arch ]; then arch="$2"; shift 2; fi
here=$(cd "$(dirname "$0")" && pwd)
. "$here/kernel/cache.sh"
cache="${IOMMU_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-relay}"
"$here/require.sh" apt-get:apt dpkg-deb:dpkg xz:xz-utils /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
case "$arch" in
  amd64)
    state="$cache/apt" suffix=
    sources="deb [signed-by=$keyring] http://deb.debian.org/debian trixie-backports main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-backports main"
    ;;
  arm64)
    state="$cache/apt-arm64" suffix=_arm64
    sources="deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian bookworm main"
    ;;
  *) echo "debian-fetch: unknown --arch $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$cache/deb"
printf '%s\n' "$sources" > "$state/sources.list"
opts=(-o "Dir::State::Lists=$state/lists" -o "Dir::Etc::SourceList=$state/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null" -o "Dir::Cache=$state/cache" -o "Dir::State::status=/dev/null"
  -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root" -q)
[ "$arch" = amd64 ] || opts+=(-o "APT::Architecture=$arch" -o "APT::Architectures=$arch")
# Refresh the private lists at most once a day.
stamp="$state/lists/.stamp"
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
  apt-get "${opts[@]}" update >&2
  touch "$stamp"
fi
for spec in "$@"; do
  pkg="${spec%%/*}"
  if [[ "$spec" == */* ]]; then
    suite="${spec#*/}"
    version=$(apt-cache "${opts[@]}" madison "$pkg" | awk -v s="$suite" '$0 ~ s {print $3; exit}')
  else
    version=$(apt-cache "${opts[@]}" madison "$pkg" | awk '{print $3; exit}')
  fi
  if [ -z "$version" ] && [[ "$pkg" =~ ^linux-source-([0-9]+)\.([0-9]+)$ ]]; then
    # That kernel series left the archive: take the newest linux-source-* at or above it, and say which.
    want=$((BASH_REMATCH[1] * 1000 + BASH_REMATCH[2]))
    newer=$(apt-cache "${opts[@]}" pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' |
      awk -F'[-.]' -v w="$want" '{ v = $3 * 1000 + $4; if (v >= w) print v, $0 }' | sort -n | tail -n 1 | cut -d' ' -f2)
    if [ -n "$newer" ]; then
      echo "debian-fetch: $pkg is gone from the archive; using $newer instead" >&2
      pkg="$newer"
      version=$(apt-cache "${opts[@]}" madison "$pkg" | awk '{print $3; exit}')
    fi
  fi
  if [ -z "$version" ]; then
    echo "debian-fetch: $spec is not in the archive" >&2
    exit 3
  fi
  dest="$cache/deb/${pkg}_${version}$suffix"
  if ! cache_ok "$dest" "package tree" "fetching it again"; then
    work=$(mktemp -d "$cache/deb/.tmp.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "debian-fetch: downloading $pkg $version" >&2
    (cd "$work" && apt-get "${opts[@]}" download "$pkg=$version" >&2)
    debs=("$work"/*.deb)
    if [ ${#debs[@]} -ne 1 ] || ! dpkg-deb --info "${debs[0]}" >/dev/null; then
      echo "debian-fetch: the download of $pkg $version is not a valid .deb" >&2
      exit 4
    fi
    dpkg-deb -x "${debs[0]}" "$work/tree"
    cache_commit "$work/tree" "$dest" "package tree"
    rm -rf "$work"
    trap - EXIT
  fi
  echo "$pkg $version $dest"
done
