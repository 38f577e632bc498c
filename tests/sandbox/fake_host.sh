#!/bin/sh
# A fake relay host for tests, built in a private mount namespace (run as `unshare -m sh fake_host.sh CMD ARGS...`):
# tmpfs over /dev and /sys, with device nodes and sysfs attributes shaped as the kernel makes them. The "iommufd" and
# the VFIO cdevs are /dev/null underneath (char 1:3), so ioctls the shim lets through get the kernel's ENOTTY. The
# traps look right but are not: a symlink and a node of another number under cdev names, a device link out of sysfs.
set -eu
mount --make-rprivate /
mount -t tmpfs fake-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/iommu c 1 3
mknod -m 600 /dev/kvm c 10 232                     # the real KVM, to run a VM in here
mkdir -p /dev/vfio/devices /dev/outside-sysfs
mknod -m 666 /dev/vfio/devices/vfio0 c 1 3          # sysfs says 1:3: the real thing
mknod -m 666 /dev/vfio/devices/vfio1 c 1 5          # sysfs says 1:3: a different device under the right name
ln -s /dev/zero /dev/vfio/devices/vfio2              # a symlink under the right name
touch /dev/vfio/devices/not-a-cdev /dev/vfio/vfio /dev/vfio/7 /dev/vfio/12
mount -t tmpfs fake-sys /sys
mkdir -p /sys/class/misc/iommu /sys/class/misc/kvm /sys/class/iommu/dmar0 /sys/class/vfio-dev /sys/bus/pci/drivers/vfio-pci \
  /sys/kernel/iommu_groups/7 /sys/devices/virtual/iommu/dmar0
echo 1:3 > /sys/class/misc/iommu/dev
echo 10:232 > /sys/class/misc/kvm/dev
pci=/sys/devices/pci0000:00/0000:00:03.0
for n in 0 1 2; do
  mkdir -p "$pci/vfio-dev/vfio$n"
  echo 1:3 > "$pci/vfio-dev/vfio$n/dev"
  ln -s "../../devices/pci0000:00/0000:00:03.0/vfio-dev/vfio$n" "/sys/class/vfio-dev/vfio$n"
  ln -s ../../../0000:00:03.0 "$pci/vfio-dev/vfio$n/device"
done
mkdir -p /sys/devices/virtual/vfio-dev/vfio4
ln -s ../../devices/virtual/vfio-dev/vfio4 /sys/class/vfio-dev/vfio4
ln -s /dev/outside-sysfs /sys/devices/virtual/vfio-dev/vfio4/device # a device link out of /sys/devices
echo secret > /dev/outside-sysfs/vendor
ln -s ../../../bus/pci/drivers/vfio-pci "$pci/driver"
ln -s ../../../kernel/iommu_groups/7 "$pci/iommu_group"
ln -s ../../virtual/iommu/dmar0 "$pci/iommu"
echo 0x1234 > "$pci/vendor"
echo 0x11e8 > "$pci/device"
exec "$@"
