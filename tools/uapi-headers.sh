#!/usr/bin/env bash
# The Linux 7.3 uAPI headers the golden check compiles against, without touching /usr/include:
# linux-libc-dev from trixie-backports (unpacked) and drivers/iommu/iommufd/iommufd_test.h from linux-source-7.3.
# Prints two lines: "include <dir>" (use with -I, and <dir>/<multiarch> for asm/) and "selftest <dir>"
# (holds iommufd_test.h), then "version <linux-libc-dev version>".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${IOMMU_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iommu-relay}"
read -r _ hdr_version hdr_dir < <("$here/debian-fetch.sh" linux-libc-dev/trixie-backports | tail -n 1)
read -r src_pkg src_version src_dir < <("$here/debian-fetch.sh" linux-source-7.3/trixie-backports | tail -n 1)
selftest="$cache/kernel-headers-$src_version"
if [ ! -f "$selftest/.complete" ]; then
  rm -rf "$selftest"
  mkdir -p "$selftest/tree"
  # One pass over the tarball: the selftest header and each architecture's ioctl encoding.
  tar -xaf "$src_dir/usr/src/$src_pkg.tar.xz" -C "$selftest/tree" --strip-components=1 \
    "$src_pkg/drivers/iommu/iommufd/iommufd_test.h" \
    "$src_pkg/include/uapi/asm-generic/ioctl.h" \
    "$src_pkg/arch/powerpc/include/uapi/asm/ioctl.h" \
    "$src_pkg/arch/mips/include/uapi/asm/ioctl.h" \
    "$src_pkg/arch/sparc/include/uapi/asm/ioctl.h"
  cp "$selftest/tree/drivers/iommu/iommufd/iommufd_test.h" "$selftest/"
  touch "$selftest/.complete"
fi
echo "include $hdr_dir/usr/include"
echo "selftest $selftest"
echo "tree $selftest/tree"
echo "version linux-libc-dev $hdr_version, $src_pkg $src_version"
