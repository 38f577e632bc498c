#!/usr/bin/env bash
# The Linux 7.3 uAPI headers the golden check compiles against, without touching /usr/include:
# linux-libc-dev from trixie-backports (unpacked) and drivers/iommu/iommufd/iommufd_test.h from linux-source-7.3.
# Prints two lines: "include <dir>" (use with -I, and <dir>/<multiarch> for asm/) and "selftest <dir>"
# (holds iommufd_test.h), then "version <linux-libc-dev version>".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/kernel/cache.sh"
cache="${IOMMU_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-relay}"
# (Command substitutions, not `< <(...)`, so a failed fetch stops this script.)
fetched=$("$here/debian-fetch.sh" linux-libc-dev/trixie-backports)
read -r _ hdr_version hdr_dir <<<"${fetched##*$'\n'}"
fetched=$("$here/debian-fetch.sh" linux-source-7.3/trixie-backports)
read -r src_pkg src_version src_dir <<<"${fetched##*$'\n'}"
selftest="$cache/kernel-headers-$src_version"
if ! cache_ok "$selftest" "header tree"; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.kernel-headers.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/tree"
  # One pass over the tarball: the selftest header and each architecture's ioctl encoding.
  tar -xaf "$src_dir/usr/src/$src_pkg.tar.xz" -C "$work/tree" --strip-components=1 \
    "$src_pkg/drivers/iommu/iommufd/iommufd_test.h" \
    "$src_pkg/include/uapi/asm-generic/ioctl.h" \
    "$src_pkg/arch/powerpc/include/uapi/asm/ioctl.h" \
    "$src_pkg/arch/mips/include/uapi/asm/ioctl.h" \
    "$src_pkg/arch/sparc/include/uapi/asm/ioctl.h"
  [ -s "$work/tree/drivers/iommu/iommufd/iommufd_test.h" ] || { echo "uapi-headers: no iommufd_test.h in $src_pkg" >&2; exit 1; }
  cp "$work/tree/drivers/iommu/iommufd/iommufd_test.h" "$work/"
  cache_commit "$work" "$selftest" "header tree"
  trap - EXIT
fi
echo "include $hdr_dir/usr/include"
echo "selftest $selftest"
echo "tree $selftest/tree"
echo "version linux-libc-dev $hdr_version, $src_pkg $src_version"
