/*
 * iommu-relay's C shim: the only native code the library calls, through Deno.dlopen (ffi/native.ts).
 *
 * The shim is the sandbox boundary for a script holding only `--allow-ffi=<this library>`: such a script can
 * dlopen this file itself and call every exported function with any arguments, so each rule below is enforced
 * here, in C, and nothing in JavaScript can widen it (RELIABILITY.md, "What a script holding the shim can do"):
 *   - open: only /dev/iommu, /dev/kvm and /dev/vfio/devices/vfio<N>, each checked to be the character device
 *     sysfs names for it (no symlink anywhere in the path, st_rdev from lstat and again from fstat of the open fd);
 *   - ioctl: only on fds in the shim's table (opened here, returned by an ioctl made here, or handed in and checked
 *     with fstat), and only with the request numbers allowed for that fd's kind (iommufd and VFIO share type ';', so
 *     the list is per kind). The argument is copied into the shim and validated there: its size field must fit the
 *     caller's buffer, a user pointer in it may only be the shim's own store of the second buffer, and the length
 *     that pointer covers must fit that buffer; fd numbers inside it must be in the table;
 *   - read: fault-queue and vEVENTQ fds; write: fault-queue fds (page responses); poll and close: table fds;
 *   - mmap: the kvm_run page of a vCPU fd, at offset 0, with the size the kernel reported, or a range of a memfd of
 *     the table inside its size; undone only there;
 *   - memfds: created here (sealed against shrinking and growing), or received over an fd-passing socket; an fd is
 *     sent or received only when fstat, fstatfs and its /proc name show a memfd — anything else received is closed;
 *   - fd-passing sockets: Unix SOCK_SEQPACKET sockets bound or connected only by a plain name ending ".memfd.sock"
 *     inside the shim's own directory (/run/iommu-relay for root, else /tmp/iommu-relay-<uid>, 0700 and owned by
 *     the user, never through a link), where the name does not exist yet (bind) or is a socket (connect); no caller
 *     picks a directory; they carry one memfd per message with SCM_RIGHTS;
 *   - signals: one signal (SIGUSR1), to threads that registered themselves, or a deadline to the calling thread;
 *   - sysfs: fixed attributes of VFIO cdevs and three listings filtered by name pattern, never a caller's path.
 * A refusal returns -(RELAY_REFUSAL_BASE + EPERM/EACCES/EBADF), out of the range of kernel errnos, so native.ts
 * can tell "the shim refused" from "the kernel said EPERM" (the selftest's ACCESS_RW answers EPERM, for one).
 *
 * Conventions, so that TypeScript never has to read errno (a nonblocking FFI call runs on another thread,
 * where the caller's errno is stale):
 *   - every function returns its result (>= 0) or -errno;
 *   - no variadic functions (FFI cannot call them portably);
 *   - ioctl requests are uint32_t: every Linux request number fits in 32 bits;
 *   - buffers are passed as pointers the caller owns, with their length; the shim keeps no reference after it
 *     returns (except a mapped kvm_run window, recorded so that only it can be unmapped).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define RELAY_EXPORT __attribute__((visibility("default")))

/* Refusals are reported as -(RELAY_REFUSAL_BASE + errno): kernel errnos stay below 4096. */
#define RELAY_REFUSAL_BASE 4096
#define REFUSE(e) (-(RELAY_REFUSAL_BASE + (e)))

/* ABI version of this file; native.ts refuses a library whose version differs. */
RELAY_EXPORT int32_t relay_shim_version(void) { return 8; }

/* ------------------------------------------------------------------------------------------------ fd table */

enum relay_kind {
	KIND_NONE = 0,
	KIND_IOMMUFD,
	KIND_VFIO_CDEV,
	KIND_KVM,
	KIND_KVM_VM,
	KIND_KVM_VCPU,
	KIND_FAULT_QUEUE,
	KIND_VEVENTQ,
	KIND_TEST_ACCESS, /* the selftest's in-kernel access fd: closed, never used directly */
	KIND_MEMFD,       /* guest RAM by file: IOMMU_IOAS_MAP_FILE, mapped over a window, passed over a socket */
	KIND_FDPASS_LISTENER, /* a listening fd-passing socket: accept only */
	KIND_FDPASS_SOCKET,   /* a connected fd-passing socket: send and receive memfds */
};

/* fds above this are refused (and closed) rather than tracked: a relay holds a handful. */
#define RELAY_FD_LIMIT 65536
static uint8_t fd_kinds[RELAY_FD_LIMIT];

static int kind_of(int32_t fd)
{
	if (fd < 0 || fd >= RELAY_FD_LIMIT)
		return KIND_NONE;
	return __atomic_load_n(&fd_kinds[fd], __ATOMIC_ACQUIRE);
}

/* 0 if `fd` is in the table as `want`; else the refusal: EBADF for an fd the shim does not hold, EPERM for one of
 * another kind. */
static int32_t refuse_unless_kind(int32_t fd, int want)
{
	int kind = kind_of(fd);
	if (kind == KIND_NONE)
		return REFUSE(EBADF);
	return kind == want ? 0 : REFUSE(EPERM);
}

/* Record fd as `kind`; an fd number the table cannot hold is closed and refused. */
static int32_t track(int fd, int kind)
{
	if (fd >= RELAY_FD_LIMIT) {
		close(fd);
		return -EMFILE;
	}
	__atomic_store_n(&fd_kinds[fd], (uint8_t)kind, __ATOMIC_RELEASE);
	return fd;
}

/* ------------------------------------------------------------------------------------------ memfd seals */

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* Seals every memfd of the table carries, so that what the shim checked about it stays true: F_SEAL_SHRINK (no mapping
 * of it, in this process or an IOAS, can end up past its end: no SIGBUS, no pin failing later) and F_SEAL_SEAL (no
 * seal, F_SEAL_WRITE say, can be added after a writable IOAS_MAP_FILE was allowed). The shim's own memfds have them
 * from creation; a received one without them is refused — and only a real memfd can carry F_SEAL_SHRINK (another
 * tmpfs file answers F_SEAL_SEAL alone, an O_PATH fd answers EBADF). */
#define MEMFD_REQUIRED_SEALS (F_SEAL_SHRINK | F_SEAL_SEAL)

static int memfd_seals(int fd)
{
	return fcntl(fd, F_GET_SEALS);
}

static int memfd_sealed(int fd)
{
	int seals = memfd_seals(fd);
	return seals >= 0 && (seals & MEMFD_REQUIRED_SEALS) == MEMFD_REQUIRED_SEALS;
}

/* ---------------------------------------------------------------------------------------- device nodes */

/* Read a sysfs "MAJ:MIN\n" attribute into a dev_t; -errno or -EINVAL when it does not parse. */
static int read_dev_attr(const char *path, dev_t *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[32];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EINVAL;
	buf[n] = 0;
	unsigned maj, min;
	if (sscanf(buf, "%u:%u", &maj, &min) != 2)
		return -EINVAL;
	*out = makedev(maj, min);
	return 0;
}

/* A decimal instance number as the kernel prints it: no sign, no leading zero, at most 9 digits. */
static int parse_instance(const char *s, uint32_t *out)
{
	size_t len = strlen(s);
	if (len == 0 || len > 9 || (len > 1 && s[0] == '0'))
		return -1;
	uint32_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		n = n * 10 + (uint32_t)(s[i] - '0');
	}
	*out = n;
	return 0;
}

/* The kind a device path names and the sysfs attribute holding its device number; KIND_NONE for any other path.
 * The legacy VFIO nodes (/dev/vfio/vfio, /dev/vfio/<group>) are not opened: the library issues none of their
 * ioctls. */
static int node_kind(const char *path, char *dev_attr, size_t dev_attr_len)
{
	uint32_t n;
	if (!strcmp(path, "/dev/iommu")) {
		snprintf(dev_attr, dev_attr_len, "/sys/class/misc/iommu/dev");
		return KIND_IOMMUFD;
	}
	if (!strcmp(path, "/dev/kvm")) {
		snprintf(dev_attr, dev_attr_len, "/sys/class/misc/kvm/dev");
		return KIND_KVM;
	}
	static const char cdev_prefix[] = "/dev/vfio/devices/vfio";
	if (!strncmp(path, cdev_prefix, sizeof(cdev_prefix) - 1) && !parse_instance(path + sizeof(cdev_prefix) - 1, &n)) {
		snprintf(dev_attr, dev_attr_len, "/sys/class/vfio-dev/vfio%u/dev", n);
		return KIND_VFIO_CDEV;
	}
	return KIND_NONE;
}

/* Open a device node a relay needs, O_RDWR | O_CLOEXEC. path is NUL-terminated within path_len. Refused (EACCES):
 * any other path, a symlink anywhere in the path, or a node that is not the character device sysfs names for it.
 * A missing node is -ENOENT, as the kernel says it. */
RELAY_EXPORT int32_t relay_open(const char *path, uint32_t path_len)
{
	if (!path || path_len == 0 || path_len > PATH_MAX || !memchr(path, 0, path_len))
		return -EINVAL;
	char dev_attr[96];
	int kind = node_kind(path, dev_attr, sizeof(dev_attr));
	if (kind == KIND_NONE)
		return REFUSE(EACCES);
	struct stat st;
	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISCHR(st.st_mode))
		return REFUSE(EACCES); /* a symlink, a regular file, a directory */
	char real[PATH_MAX];
	if (!realpath(path, real))
		return -errno;
	if (strcmp(real, path))
		return REFUSE(EACCES); /* a directory on the way is a symlink */
	dev_t expected;
	if (read_dev_attr(dev_attr, &expected) < 0 || st.st_rdev != expected)
		return REFUSE(EACCES);
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		return -errno;
	/* What was opened, not what was looked at: the node may have been replaced in between. */
	if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != expected) {
		close(fd);
		return REFUSE(EACCES);
	}
	return track(fd, kind);
}

/* Take an fd the parent process opened (as QEMU takes -object iommufd,fd=N): tracked when fstat shows the iommufd,
 * KVM or a VFIO cdev character device; anything else is refused (EACCES) and left open. Returns the kind's number
 * (1 iommufd, 2 VFIO cdev, 3 KVM) or a refusal. An fd already in the table is refused (EBADF would hide a mix-up). */
RELAY_EXPORT int32_t relay_adopt_fd(int32_t fd)
{
	if (fd < 0 || fd >= RELAY_FD_LIMIT)
		return REFUSE(EBADF);
	if (kind_of(fd) != KIND_NONE)
		return REFUSE(EACCES);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	int flags = fcntl(fd, F_GETFL);
	if (!S_ISCHR(st.st_mode) || flags < 0 || (flags & O_ACCMODE) != O_RDWR)
		return REFUSE(EACCES);
	dev_t dev;
	int kind = KIND_NONE;
	if (read_dev_attr("/sys/class/misc/iommu/dev", &dev) == 0 && dev == st.st_rdev)
		kind = KIND_IOMMUFD;
	else if (read_dev_attr("/sys/class/misc/kvm/dev", &dev) == 0 && dev == st.st_rdev)
		kind = KIND_KVM;
	else {
		/* A VFIO cdev's number is dynamic: /sys/dev/char/M:m is a link to .../vfio-dev/vfio<N>. */
		char link[64], target[PATH_MAX];
		snprintf(link, sizeof(link), "/sys/dev/char/%u:%u", major(st.st_rdev), minor(st.st_rdev));
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		uint32_t instance;
		if (n > 0) {
			target[n] = 0;
			const char *base = strrchr(target, '/');
			if (base && base - target >= 9 && !memcmp(base - 9, "/vfio-dev", 9) && !strncmp(base + 1, "vfio", 4) &&
			    !parse_instance(base + 5, &instance))
				kind = KIND_VFIO_CDEV;
		}
	}
	if (kind == KIND_NONE)
		return REFUSE(EACCES);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	track(fd, kind);
	return kind;
}

static void slots_forget_vm(int32_t vm_fd);
static pthread_mutex_t kvm_slot_calls;

RELAY_EXPORT int32_t relay_close(int32_t fd)
{
	int kind = kind_of(fd);
	if (kind == KIND_NONE)
		return REFUSE(EBADF);
	if (kind == KIND_KVM_VM) {
		/* Not while a slot call checks or runs on it; the fd number may come back as another VM. */
		pthread_mutex_lock(&kvm_slot_calls);
		slots_forget_vm(fd);
		__atomic_store_n(&fd_kinds[fd], KIND_NONE, __ATOMIC_RELEASE);
		int r = close(fd) < 0 ? -errno : 0;
		pthread_mutex_unlock(&kvm_slot_calls);
		return r;
	}
	__atomic_store_n(&fd_kinds[fd], KIND_NONE, __ATOMIC_RELEASE);
	return close(fd) < 0 ? -errno : 0;
}

/* ------------------------------------------------------------------------------------------------- ioctls */

#define IOMMUFD_TYPE ';'
#define IOMMUFD_IO(nr) (((uint32_t)IOMMUFD_TYPE << 8) | (nr))
#define KVMIO 0xAE
#define KVM_IO(nr) (((uint32_t)KVMIO << 8) | (nr))
#define KVM_IOW(nr, size) ((1u << 30) | ((uint32_t)(size) << 16) | KVM_IO(nr))
#define KVM_IOR(nr, size) ((2u << 30) | ((uint32_t)(size) << 16) | KVM_IO(nr))
#define KVM_IOWR(nr, size) ((3u << 30) | ((uint32_t)(size) << 16) | KVM_IO(nr))

enum arg_shape {
	ARG_NONE,  /* no argument: the shim passes 0 whatever the caller gave */
	ARG_SIZED, /* u32 size (iommufd `size`, VFIO `argsz`) at offset 0: the kernel touches that many bytes */
	ARG_FIXED, /* _IOR/_IOW: the kernel touches _IOC_SIZE(request) bytes */
	ARG_COUNTED, /* KVM's flexible arrays (kvm_cpuid2): u32 count at offset 0, an 8-byte header, then count entries
		      * of len_a bytes, at most len_b of them; the kernel touches 8 + count * len_a bytes */
};

enum len_rule {
	LEN_NONE,
	LEN_U64,         /* the u64 at len_a */
	LEN_U32,         /* the u32 at len_a */
	LEN_U32_PRODUCT, /* u32 at len_a times u32 at len_b */
	LEN_U32_TIMES16, /* u32 at len_a times 16 (struct iommu_iova_range) */
	LEN_FIXED16,     /* 16 bytes (a VF token UUID) */
	LEN_BITMAP64,    /* a dirty bitmap in u64 words: one bit per page of the u64 length at len_a, the page being the
			  * lowest set bit of the u64 page size at len_b (what iova_bitmap uses); 0 for a zero size */
	LEN_KVM_SLOT,    /* KVM's dirty log of the slot whose number is the u32 at len_a: the size the shim recorded
			  * when that slot was registered on this VM fd; unknown slot: refused */
};

#define NO_OFFSET 0xffff

struct ioctl_rule {
	uint8_t kind;
	uint32_t request;
	uint8_t shape;
	uint16_t ptr_off; /* a user pointer field, or NO_OFFSET */
	uint8_t len;
	uint16_t len_a, len_b;
	uint16_t fd_in_off;  /* an fd number the kernel will use, which must be of kind fd_in_kind, or NO_OFFSET */
	uint16_t fd_out_off; /* an fd the kernel returns in the struct, or NO_OFFSET */
	uint8_t fd_out_kind; /* its kind; with fd_out_off NO_OFFSET, the kind of an fd returned as the result */
	const char *name;
	uint8_t fd_in_kind; /* the table kind the fd at fd_in_off must have */
};

/* Every ioctl lib/ and examples/ make (grep lib/kernel, lib/backend, examples/mini-vmm and tests/kernel for the
 * constants), per fd kind; nothing else. IOMMU_TEST_CMD is refined per op in test_cmd_rule. */
static const struct ioctl_rule RULES[] = {
	/* iommufd (/dev/iommu): struct sizes and offsets from include/uapi/linux/iommufd.h */
	{ KIND_IOMMUFD, IOMMUFD_IO(0x80), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_DESTROY", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x81), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_IOAS_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x84), ARG_SIZED, 16, LEN_U32_TIMES16, 8, 0, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_IOAS_IOVA_RANGES", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x85), ARG_SIZED, 16, LEN_U64, 24, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_IOAS_MAP", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x86), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_IOAS_UNMAP", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x87), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_OPTION", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x89), ARG_SIZED, 32, LEN_U32, 28, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_HWPT_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8a), ARG_SIZED, 16, LEN_U32, 12, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_GET_HW_INFO", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8b), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_HWPT_SET_DIRTY_TRACKING", 0 },
	/* struct iommu_hwpt_get_dirty_bitmap: iova 16, length 24, page_size 32, data 40 */
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8c), ARG_SIZED, 40, LEN_BITMAP64, 24, 32, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_HWPT_GET_DIRTY_BITMAP", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8d), ARG_SIZED, 8, LEN_U32_PRODUCT, 20, 24, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_HWPT_INVALIDATE", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8e), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, 12, KIND_FAULT_QUEUE,
	  "IOMMU_FAULT_QUEUE_ALLOC", 0 },
	/* struct iommu_ioas_map_file: the fd at 12 must be a memfd of the table */
	{ KIND_IOMMUFD, IOMMUFD_IO(0x8f), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, 12, NO_OFFSET, 0, "IOMMU_IOAS_MAP_FILE",
	  KIND_MEMFD },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x90), ARG_SIZED, 32, LEN_U32, 24, 0, NO_OFFSET, NO_OFFSET, 0, "IOMMU_VIOMMU_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x91), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_VDEVICE_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x93), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, 24, KIND_VEVENTQ,
	  "IOMMU_VEVENTQ_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0x94), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_HW_QUEUE_ALLOC", 0 },
	{ KIND_IOMMUFD, IOMMUFD_IO(0xa0), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "IOMMU_TEST_CMD", 0 },
	/* VFIO device cdev (/dev/vfio/devices/vfioN): include/uapi/linux/vfio.h, VFIO_BASE 100 */
	{ KIND_VFIO_CDEV, IOMMUFD_IO(118), ARG_SIZED, 16, LEN_FIXED16, 0, 0, 8, NO_OFFSET, 0, "VFIO_DEVICE_BIND_IOMMUFD",
	  KIND_IOMMUFD },
	{ KIND_VFIO_CDEV, IOMMUFD_IO(119), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "VFIO_DEVICE_ATTACH_IOMMUFD_PT", 0 },
	{ KIND_VFIO_CDEV, IOMMUFD_IO(120), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "VFIO_DEVICE_DETACH_IOMMUFD_PT", 0 },
	/* struct vfio_device_info {argsz, flags, num_regions, num_irqs, cap_offset, pad}: the kernel writes the
	 * capability chain only within argsz */
	{ KIND_VFIO_CDEV, IOMMUFD_IO(107), ARG_SIZED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "VFIO_DEVICE_GET_INFO", 0 },
	/* no argument: FLR or another reset method of the device (EINVAL when it has none) */
	{ KIND_VFIO_CDEV, IOMMUFD_IO(111), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "VFIO_DEVICE_RESET", 0 },
	/* /dev/kvm */
	{ KIND_KVM, KVM_IO(0x00), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_GET_API_VERSION", 0 },
	{ KIND_KVM, KVM_IO(0x01), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, KIND_KVM_VM, "KVM_CREATE_VM", 0 },
	{ KIND_KVM, KVM_IO(0x03), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_CHECK_EXTENSION", 0 },
	{ KIND_KVM, KVM_IO(0x04), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_GET_VCPU_MMAP_SIZE", 0 },
	/* the Linux-guest VMM (examples/linux-vmm): struct kvm_cpuid2 {nent, padding, entries[nent] of 40 bytes};
	 * KVM_MAX_CPUID_ENTRIES is 256 */
	{ KIND_KVM, KVM_IOWR(0x05, 8), ARG_COUNTED, NO_OFFSET, LEN_NONE, 40, 256, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_GET_SUPPORTED_CPUID", 0 },
	/* a VM fd */
	{ KIND_KVM_VM, KVM_IO(0x03), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_CHECK_EXTENSION", 0 },
	{ KIND_KVM_VM, KVM_IO(0x41), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, KIND_KVM_VCPU,
	  "KVM_CREATE_VCPU", 0 },
	{ KIND_KVM_VM, KVM_IOW(0x46, 32), ARG_FIXED, 24, LEN_U64, 16, 0, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_SET_USER_MEMORY_REGION", 0 },
	/* struct kvm_dirty_log {slot, padding, bitmap pointer at 8}: the bitmap is as long as the shim recorded for the
	 * slot (KVM writes ALIGN(npages, 64) / 8 bytes) */
	{ KIND_KVM_VM, KVM_IOW(0x42, 16), ARG_FIXED, 8, LEN_KVM_SLOT, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_GET_DIRTY_LOG", 0 },
	/* the Linux-guest VMM: in-kernel PIC + IOAPIC + LAPICs, the in-kernel PIT (struct kvm_pit_config, 64 bytes),
	 * a GSI level (struct kvm_irq_level, 8 bytes) and an MSI (struct kvm_msi, 32 bytes) */
	{ KIND_KVM_VM, KVM_IO(0x60), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_CREATE_IRQCHIP", 0 },
	{ KIND_KVM_VM, KVM_IOW(0x61, 8), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_IRQ_LINE", 0 },
	{ KIND_KVM_VM, KVM_IOW(0x77, 64), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_CREATE_PIT2", 0 },
	{ KIND_KVM_VM, KVM_IOW(0xa5, 32), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_SIGNAL_MSI", 0 },
	/* a vCPU fd */
	{ KIND_KVM_VCPU, KVM_IO(0x80), ARG_NONE, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_RUN", 0 },
	{ KIND_KVM_VCPU, KVM_IOR(0x81, 144), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_GET_REGS", 0 },
	{ KIND_KVM_VCPU, KVM_IOW(0x82, 144), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0, "KVM_SET_REGS", 0 },
	{ KIND_KVM_VCPU, KVM_IOR(0x83, 312), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_GET_SREGS", 0 },
	{ KIND_KVM_VCPU, KVM_IOW(0x84, 312), ARG_FIXED, NO_OFFSET, LEN_NONE, 0, 0, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_SET_SREGS", 0 },
	/* the Linux-guest VMM: the vCPU's CPUID (struct kvm_cpuid2, as KVM_GET_SUPPORTED_CPUID) */
	{ KIND_KVM_VCPU, KVM_IOW(0x90, 8), ARG_COUNTED, NO_OFFSET, LEN_NONE, 40, 256, NO_OFFSET, NO_OFFSET, 0,
	  "KVM_SET_CPUID2", 0 },
};

/* IOMMU_TEST_CMD ops the library makes (lib/kernel/selftest.ts, lib/kernel/features.ts): struct iommu_test_cmd
 * is {size, op, id, __reserved, union at 16}; MD_CHECK_MAP and ACCESS_RW carry {iova, length, uptr} in the union,
 * CREATE_ACCESS returns an fd at its start; DIRTY reads a bitmap of {iova 24, length 32, page_size 40} at uptr 48.
 * Any other op (ACCESS_PAGES pins user memory, SET_TEMP_MEMORY_LIMIT, ...) is refused. */
static int test_cmd_rule(uint32_t op, struct ioctl_rule *r)
{
	switch (op) {
	case 3: /* IOMMU_TEST_OP_MD_CHECK_MAP */
	case 8: /* IOMMU_TEST_OP_ACCESS_RW */
		r->ptr_off = 32;
		r->len = LEN_U64;
		r->len_a = 24;
		return 0;
	case 13: /* IOMMU_TEST_OP_DIRTY: the kernel reads DIV_ROUND_UP(length / page_size, 8) bytes, within u64 words */
		r->ptr_off = 48;
		r->len = LEN_BITMAP64;
		r->len_a = 32;
		r->len_b = 40;
		return 0;
	case 5: /* IOMMU_TEST_OP_CREATE_ACCESS */
		r->fd_out_off = 16;
		r->fd_out_kind = KIND_TEST_ACCESS;
		return 0;
	case 2:  /* MOCK_DOMAIN */
	case 10: /* MOCK_DOMAIN_REPLACE */
	case 12: /* MOCK_DOMAIN_FLAGS */
	case 14: /* MD_CHECK_IOTLB */
	case 15: /* TRIGGER_IOPF */
	case 16: /* DEV_CHECK_CACHE */
	case 17: /* TRIGGER_VEVENT */
	case 18: /* PASID_ATTACH */
	case 19: /* PASID_REPLACE */
	case 20: /* PASID_DETACH */
	case 21: /* PASID_CHECK_HWPT */
		return 0;
	default:
		return -1;
	}
}

static const struct ioctl_rule *find_rule(int kind, uint32_t request)
{
	for (size_t i = 0; i < sizeof(RULES) / sizeof(RULES[0]); i++)
		if (RULES[i].kind == kind && RULES[i].request == request)
			return &RULES[i];
	return NULL;
}

/* Test hook: whether fd kind `kind` (enum relay_kind) may issue `request` (the allow-list, no syscall). 1 or 0. */
RELAY_EXPORT int32_t relay_policy_allows(int32_t kind, uint32_t request)
{
	return find_rule(kind, request) != NULL;
}

/* The largest argument of the list fits: a kvm_cpuid2 of 256 entries (8 + 256 * 40 bytes); a bigger one is refused. */
#define ARG_MAX (8 + 256 * 40)

/* An ioctl call, validated: the argument copied into `local`, the rule refined for the argument's content. */
struct checked {
	struct ioctl_rule rule;
	uint8_t local[ARG_MAX];
	uint32_t bytes; /* of local the kernel may touch; copied back to the caller afterwards */
};

static uint32_t get_u32(const uint8_t *p, uint32_t off)
{
	uint32_t v;
	memcpy(&v, p + off, sizeof(v));
	return v;
}

static uint64_t get_u64(const uint8_t *p, uint32_t off)
{
	uint64_t v;
	memcpy(&v, p + off, sizeof(v));
	return v;
}

/* Bytes of a bitmap of u64 words covering `length` bytes at one bit per page, the page being the lowest set bit of
 * `page_size` (iova_bitmap's pgshift): never less than the kernel touches. UINT64_MAX (refused) when absurd. */
static uint64_t bitmap64_bytes(uint64_t length, uint64_t page_size)
{
	if (page_size == 0 || length == 0)
		return 0; /* refused by the kernel before any bitmap is touched */
	unsigned shift = (unsigned)__builtin_ctzll(page_size);
	uint64_t bits = (length >> shift) + ((length & ((1ull << shift) - 1)) != 0);
	if (bits > (1ull << 40))
		return UINT64_MAX;
	return ((bits + 63) / 64) * 8;
}

/* KVM memory slots registered through the shim, per VM fd: how long each slot's dirty log is. */
#define MAX_SLOTS 256
static struct {
	int32_t vm_fd; /* -1: free */
	uint32_t slot;
	uint64_t bitmap_bytes;
} slots[MAX_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static int slots_ready;

static void slots_init_locked(void)
{
	if (slots_ready)
		return;
	for (int i = 0; i < MAX_SLOTS; i++)
		slots[i].vm_fd = -1;
	slots_ready = 1;
}

/* Record (or, for size 0, forget) slot `slot` of VM `vm_fd` after KVM accepted it. */
static void slot_record(int32_t vm_fd, uint32_t slot, uint64_t memory_size)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t npages = memory_size / (uint64_t)(page > 0 ? page : 4096);
	pthread_mutex_lock(&slots_lock);
	slots_init_locked();
	int free_at = -1;
	for (int i = 0; i < MAX_SLOTS; i++) {
		if (slots[i].vm_fd == vm_fd && slots[i].slot == slot) {
			slots[i].vm_fd = -1;
			if (free_at < 0)
				free_at = i;
		} else if (slots[i].vm_fd == -1 && free_at < 0)
			free_at = i;
	}
	if (memory_size && free_at >= 0) {
		slots[free_at].vm_fd = vm_fd;
		slots[free_at].slot = slot;
		slots[free_at].bitmap_bytes = ((npages + 63) / 64) * 8;
	}
	pthread_mutex_unlock(&slots_lock);
}

static int slot_bitmap_bytes(int32_t vm_fd, uint32_t slot, uint64_t *out)
{
	int found = -1;
	pthread_mutex_lock(&slots_lock);
	slots_init_locked();
	for (int i = 0; i < MAX_SLOTS; i++) {
		if (slots[i].vm_fd == vm_fd && slots[i].slot == slot) {
			*out = slots[i].bitmap_bytes;
			found = 0;
			break;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	return found;
}

static void slots_forget_vm(int32_t vm_fd)
{
	pthread_mutex_lock(&slots_lock);
	slots_init_locked();
	for (int i = 0; i < MAX_SLOTS; i++)
		if (slots[i].vm_fd == vm_fd)
			slots[i].vm_fd = -1;
	pthread_mutex_unlock(&slots_lock);
}

#define IOMMU_IOAS_MAP_WRITEABLE (1u << 1)
#define IOMMU_IOAS_MAP_READABLE (1u << 2)

/* IOMMU_IOAS_MAP_FILE of a memfd of the table (struct iommu_ioas_map_file: flags 4, fd 12, start 16, length 24):
 * the kernel pins the file's pages without asking how the fd was opened or how the file is sealed, and pins them only
 * once a domain is attached — so the shim asks. The range must lie inside the file (sealed against shrinking: it
 * stays inside); a writable mapping needs an fd opened read-write of a file not sealed against writes (a peer may
 * have sent a read-only fd, or a write-sealed memfd, to have a device write what it promised nobody would); a
 * readable one an fd that is not write-only. A struct too short to hold the range is the kernel's EINVAL. */
static int32_t check_map_file(const uint8_t *local, uint32_t bytes)
{
	if (bytes < 40)
		return 0;
	int fd = (int)get_u32(local, 12);
	uint32_t flags = get_u32(local, 4);
	uint64_t start = get_u64(local, 16), length = get_u64(local, 24);
	struct stat st;
	int access = fcntl(fd, F_GETFL), seals = memfd_seals(fd);
	if (fstat(fd, &st) < 0 || access < 0 || seals < 0 || (seals & MEMFD_REQUIRED_SEALS) != MEMFD_REQUIRED_SEALS)
		return REFUSE(EPERM);
	if (length > (uint64_t)st.st_size || start > (uint64_t)st.st_size - length)
		return REFUSE(EPERM);
	access &= O_ACCMODE;
	if ((flags & IOMMU_IOAS_MAP_READABLE) && access == O_WRONLY)
		return REFUSE(EPERM);
	if ((flags & IOMMU_IOAS_MAP_WRITEABLE) && (access != O_RDWR || (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))))
		return REFUSE(EPERM);
	return 0;
}

/* Validate (fd, request, arg) against the table and the rules, copying the argument into c->local so that what the
 * kernel sees cannot change after it was checked (another thread may be writing the caller's buffer). `second`
 * (second_len bytes) is what a pointer field may point at; pointer_offset is where the caller wants it, or
 * UINT32_MAX for none. */
static int32_t check_call(struct checked *c, int32_t fd, uint32_t request, const uint8_t *arg, uint32_t arg_len,
			  uint32_t pointer_offset, const void *second, uint32_t second_len)
{
	int kind = kind_of(fd);
	if (kind == KIND_NONE)
		return REFUSE(EBADF);
	const struct ioctl_rule *rule = find_rule(kind, request);
	if (!rule)
		return REFUSE(EPERM);
	c->rule = *rule;
	c->bytes = 0;
	if (rule->shape == ARG_NONE)
		return pointer_offset == UINT32_MAX ? 0 : REFUSE(EPERM);
	if (!arg)
		return REFUSE(EPERM);
	if (rule->shape == ARG_FIXED) {
		c->bytes = (request >> 16) & 0x3fff;
	} else if (rule->shape == ARG_COUNTED) {
		if (arg_len < 8)
			return REFUSE(EPERM);
		uint32_t count;
		memcpy(&count, arg, 4);
		if (count > rule->len_b)
			return REFUSE(EPERM);
		c->bytes = 8 + count * rule->len_a;
	} else {
		if (arg_len < 4)
			return REFUSE(EPERM);
		memcpy(&c->bytes, arg, 4);
	}
	if (c->bytes > arg_len || c->bytes > ARG_MAX || c->bytes < 8)
		return REFUSE(EPERM);
	memcpy(c->local, arg, c->bytes);
	if (request == IOMMUFD_IO(0xa0) && test_cmd_rule(get_u32(c->local, 4), &c->rule) < 0)
		return REFUSE(EPERM);
	const struct ioctl_rule *r = &c->rule;
	if (r->fd_in_off != NO_OFFSET) {
		if ((uint32_t)r->fd_in_off + 4 > c->bytes ||
		    kind_of((int32_t)get_u32(c->local, r->fd_in_off)) != r->fd_in_kind)
			return REFUSE(EPERM);
	}
	if (request == IOMMUFD_IO(0x8f)) {
		int32_t ok = check_map_file(c->local, c->bytes);
		if (ok < 0)
			return ok;
	}
	if (r->fd_out_off != NO_OFFSET && (uint32_t)r->fd_out_off + 4 > c->bytes)
		return REFUSE(EPERM);
	/* A pointer field the caller wrote itself would let the kernel read or write anywhere: it must be 0, or the
	 * shim's own store of `second`, covering no more than second_len bytes. */
	int has_ptr = r->ptr_off != NO_OFFSET && (uint32_t)r->ptr_off + 8 <= c->bytes;
	if (pointer_offset == UINT32_MAX) {
		if (has_ptr && get_u64(c->local, r->ptr_off) != 0)
			return REFUSE(EPERM);
		return 0;
	}
	if (!has_ptr || pointer_offset != r->ptr_off)
		return REFUSE(EPERM);
	uint64_t need = 0;
	switch (r->len) {
	case LEN_U64:
		need = (uint32_t)r->len_a + 8 <= c->bytes ? get_u64(c->local, r->len_a) : 0;
		break;
	case LEN_U32:
		need = (uint32_t)r->len_a + 4 <= c->bytes ? get_u32(c->local, r->len_a) : 0;
		break;
	case LEN_U32_PRODUCT:
		need = (uint32_t)r->len_b + 4 <= c->bytes
			       ? (uint64_t)get_u32(c->local, r->len_a) * get_u32(c->local, r->len_b)
			       : 0;
		break;
	case LEN_U32_TIMES16:
		need = (uint64_t)get_u32(c->local, r->len_a) * 16;
		break;
	case LEN_FIXED16:
		need = 16;
		break;
	case LEN_BITMAP64:
		need = bitmap64_bytes(get_u64(c->local, r->len_a), get_u64(c->local, r->len_b));
		break;
	case LEN_KVM_SLOT:
		if (slot_bitmap_bytes(fd, get_u32(c->local, r->len_a), &need) < 0)
			return REFUSE(EPERM);
		break;
	}
	/* An empty buffer crosses FFI as NULL: fine when the kernel reads nothing through it (the zero-entry probe). */
	if (need > second_len || (!second && need != 0))
		return REFUSE(EPERM);
	uint64_t address = (uint64_t)(uintptr_t)second;
	memcpy(c->local + r->ptr_off, &address, sizeof(address));
	return 0;
}

/* KVM memory slots are changed, and their dirty logs read, under one lock held from the check to the end of the
 * ioctl: a log's length is checked against the slot as the shim recorded it, and another thread (a nonblocking FFI
 * call, a Worker) deleting the slot and registering it bigger between that check and KVM_GET_DIRTY_LOG would have
 * KVM write the longer log past the caller's buffer. Keyed on the request numbers, whatever the fd's kind: a KVM
 * request on another kind is refused by the rules anyway. Closing a VM fd takes it too (its slots are forgotten). */
static pthread_mutex_t kvm_slot_calls = PTHREAD_MUTEX_INITIALIZER;

static int slot_call(uint32_t request)
{
	return request == KVM_IOW(0x46, 32) /* KVM_SET_USER_MEMORY_REGION */ ||
	       request == KVM_IOW(0x42, 16) /* KVM_GET_DIRTY_LOG */;
}

static uint32_t vcpu_mmap_size; /* KVM_GET_VCPU_MMAP_SIZE, asked by the shim when a VM is created */

/* After a successful call: a KVM memory slot KVM accepted (or deleted) is recorded, whichever entry point made it, so
 * the length of its dirty log never goes stale. */
static void record_slot_change(const struct checked *c, int32_t fd)
{
	if (c->rule.kind == KIND_KVM_VM && c->rule.request == KVM_IOW(0x46, 32))
		slot_record(fd, get_u32(c->local, 0), get_u64(c->local, 16));
}

/* The ioctl itself, on the validated copy; results are copied back (without the pointer the shim stored, so no
 * address reaches JavaScript) and returned fds entered in the table. */
static int32_t do_call(struct checked *c, int32_t fd, uint8_t *arg)
{
	const struct ioctl_rule *r = &c->rule;
	int result = ioctl(fd, (unsigned long)r->request, r->shape == ARG_NONE ? NULL : (void *)c->local);
	int32_t out = result < 0 ? -errno : result;
	if (result >= 0)
		record_slot_change(c, fd);
	if (c->bytes) {
		if (r->ptr_off != NO_OFFSET && (uint32_t)r->ptr_off + 8 <= c->bytes)
			memcpy(c->local + r->ptr_off, arg + r->ptr_off, 8);
		memcpy(arg, c->local, c->bytes);
	}
	if (result < 0 || !r->fd_out_kind)
		return out;
	if (r->fd_out_off != NO_OFFSET) {
		int32_t returned = (int32_t)get_u32(c->local, r->fd_out_off);
		if (returned >= 0 && track(returned, r->fd_out_kind) < 0)
			return -EMFILE;
		return out;
	}
	if (r->fd_out_kind == KIND_KVM_VM && !__atomic_load_n(&vcpu_mmap_size, __ATOMIC_ACQUIRE)) {
		int size = ioctl(fd, (unsigned long)KVM_IO(0x04), NULL);
		if (size > 0)
			__atomic_store_n(&vcpu_mmap_size, (uint32_t)size, __ATOMIC_RELEASE);
	}
	return track(result, r->fd_out_kind);
}

/* ioctl(fd, request, arg) under the rules above; arg_len is the caller's buffer length. */
RELAY_EXPORT int32_t relay_ioctl(int32_t fd, uint32_t request, uint8_t *arg, uint32_t arg_len)
{
	struct checked c;
	int locked = slot_call(request);
	if (locked)
		pthread_mutex_lock(&kvm_slot_calls);
	int32_t ok = check_call(&c, fd, request, arg, arg_len, UINT32_MAX, NULL, 0);
	int32_t result = ok < 0 ? ok : do_call(&c, fd, arg);
	if (locked)
		pthread_mutex_unlock(&kvm_slot_calls);
	return result;
}

/* The shim stores the address of `second` at arg[offset] (in its copy of arg), then ioctl: how structs carrying a
 * user pointer (data_uptr, user_va, uptr) are sent. offset must be the request's pointer field and the length the
 * struct gives for it must fit second_len. The caller's arg never sees the address. */
RELAY_EXPORT int32_t relay_ioctl_with_pointer(int32_t fd, uint32_t request, uint8_t *arg, uint32_t arg_len,
					      uint32_t offset, void *second, uint32_t second_len)
{
	struct checked c;
	if (offset == UINT32_MAX)
		return -EINVAL;
	int locked = slot_call(request);
	if (locked)
		pthread_mutex_lock(&kvm_slot_calls);
	int32_t ok = check_call(&c, fd, request, arg, arg_len, offset, second, second_len);
	int32_t result = ok < 0 ? ok : do_call(&c, fd, arg);
	if (locked)
		pthread_mutex_unlock(&kvm_slot_calls);
	return result;
}

/* The in-process C baseline for benchmarks: the same (validated) ioctl n times, from inside the Deno process. All
 * n calls are made even when they fail; returns 0 if every call succeeded, else the last -errno. offset is
 * UINT32_MAX for no pointer. Requests that return an fd are refused (n of them would leak). */
RELAY_EXPORT int32_t relay_ioctl_loop(int32_t fd, uint32_t request, uint8_t *arg, uint32_t arg_len,
				      uint32_t offset, void *second, uint32_t second_len, uint32_t n)
{
	struct checked c;
	int locked = slot_call(request);
	if (locked)
		pthread_mutex_lock(&kvm_slot_calls);
	int32_t result = check_call(&c, fd, request, arg, arg_len, offset, second, second_len);
	if (result >= 0 && c.rule.fd_out_kind)
		result = REFUSE(EPERM);
	if (result >= 0) {
		void *a = c.rule.shape == ARG_NONE ? NULL : (void *)c.local;
		for (uint32_t i = 0; i < n; i++) {
			if (ioctl(fd, (unsigned long)request, a) < 0)
				result = -errno;
			else
				record_slot_change(&c, fd); /* a slot made or deleted here is recorded as by relay_ioctl */
		}
	}
	if (locked)
		pthread_mutex_unlock(&kvm_slot_calls);
	return result;
}

/* The C baseline for a pair of calls (shadow mode's IOAS map then unmap): ioctl(a) then ioctl(b), n times, each
 * validated as relay_ioctl_with_pointer / relay_ioctl would. 0 if every call succeeded, else the last -errno. */
RELAY_EXPORT int32_t relay_ioctl_pair_loop(int32_t fd, uint32_t request_a, uint8_t *arg_a, uint32_t arg_a_len,
					   uint32_t offset, void *second, uint32_t second_len, uint32_t request_b,
					   uint8_t *arg_b, uint32_t arg_b_len, uint32_t n)
{
	struct checked a, b;
	int locked = slot_call(request_a) || slot_call(request_b);
	if (locked)
		pthread_mutex_lock(&kvm_slot_calls);
	int32_t result = check_call(&a, fd, request_a, arg_a, arg_a_len, offset, second, second_len);
	if (result >= 0)
		result = check_call(&b, fd, request_b, arg_b, arg_b_len, UINT32_MAX, NULL, 0);
	if (result >= 0 && (a.rule.fd_out_kind || b.rule.fd_out_kind))
		result = REFUSE(EPERM);
	if (result >= 0) {
		for (uint32_t i = 0; i < n; i++) {
			if (ioctl(fd, (unsigned long)request_a, a.rule.shape == ARG_NONE ? NULL : (void *)a.local) < 0)
				result = -errno;
			else
				record_slot_change(&a, fd);
			if (ioctl(fd, (unsigned long)request_b, b.rule.shape == ARG_NONE ? NULL : (void *)b.local) < 0)
				result = -errno;
			else
				record_slot_change(&b, fd);
		}
	}
	if (locked)
		pthread_mutex_unlock(&kvm_slot_calls);
	return result;
}

/* --------------------------------------------------------------------------------------- read, write, poll */

/* read of fixed-size records: fault-queue and vEVENTQ fds only. Bytes or -errno. */
RELAY_EXPORT int32_t relay_read(int32_t fd, void *buf, uint32_t len)
{
	int kind = kind_of(fd);
	if (kind == KIND_NONE)
		return REFUSE(EBADF);
	if (kind != KIND_FAULT_QUEUE && kind != KIND_VEVENTQ)
		return REFUSE(EPERM);
	ssize_t r = read(fd, buf, len);
	return r < 0 ? -errno : (int32_t)r;
}

/* write of page responses: fault-queue fds only. Bytes or -errno. */
RELAY_EXPORT int32_t relay_write(int32_t fd, const void *buf, uint32_t len)
{
	int32_t not_mine = refuse_unless_kind(fd, KIND_FAULT_QUEUE);
	if (not_mine < 0)
		return not_mine;
	ssize_t r = write(fd, buf, len);
	return r < 0 ? -errno : (int32_t)r;
}

/* poll one table fd: returns revents (0 on timeout) or -errno. EINTR is returned, not retried: the caller decides.
 * fd -1 polls nothing (the kernel ignores it): an interruptible sleep, touching no fd. */
RELAY_EXPORT int32_t relay_poll(int32_t fd, int32_t events, int32_t timeout_ms)
{
	if (fd != -1 && kind_of(fd) == KIND_NONE)
		return REFUSE(EBADF);
	struct pollfd p = { .fd = fd, .events = (short)events };
	int r = poll(&p, 1, timeout_ms);
	if (r < 0)
		return -errno;
	return r == 0 ? 0 : p.revents;
}

/* ---------------------------------------------------------------------------------------- memory helpers */

/* Bytes to skip from p to reach the next multiple of align (a power of two up to 2 MiB): lets TypeScript carve an
 * aligned window out of an ArrayBuffer without taking its address. Capped so it reveals no more of an address than
 * a 2 MiB page offset. -EINVAL for a bad align. */
RELAY_EXPORT int32_t relay_align_offset(void *p, uint32_t align)
{
	if (align == 0 || (align & (align - 1)) || align > (1u << 21))
		return -EINVAL;
	uintptr_t a = (uintptr_t)p;
	return (int32_t)((align - (a & (align - 1))) & (align - 1));
}

/* Test hook: `request` as the shim received it (the i32 result is its bit pattern), to show requests above 2^31
 * cross FFI intact. */
RELAY_EXPORT int32_t relay_test_echo_request(uint32_t request)
{
	return (int32_t)request;
}

/* Pure FFI crossing cost, no syscall. */
RELAY_EXPORT int32_t relay_nop(int32_t fd, uint32_t request, void *arg)
{
	(void)request;
	(void)arg;
	return fd;
}

/* The kvm_run windows mapped, so that relay_unmap_fixed can only undo one of them. */
#define MAX_WINDOWS 256
static struct {
	uintptr_t address;
	uint32_t len;
} windows[MAX_WINDOWS];
static pthread_mutex_t windows_lock = PTHREAD_MUTEX_INITIALIZER;

/* Map a vCPU fd's kvm_run (offset 0, the size KVM_GET_VCPU_MMAP_SIZE reported), or `len` bytes of a memfd from page
 * `offset_pages` (inside the file's size), over a page-aligned window of a caller's buffer (MAP_SHARED | MAP_FIXED):
 * how a VMM sees kvm_run, or guest RAM held in a memfd, as a Uint8Array without a pointer in JavaScript. Undo with
 * relay_unmap_fixed before the buffer is freed. */
RELAY_EXPORT int32_t relay_map_fixed(void *window, uint32_t len, int32_t fd, uint32_t offset_pages)
{
	int kind = kind_of(fd);
	if (kind == KIND_NONE)
		return REFUSE(EBADF);
	if (kind == KIND_MEMFD) {
		struct stat st;
		if (fstat(fd, &st) < 0)
			return -errno;
		uint64_t end = (uint64_t)offset_pages * 4096 + len;
		if (len == 0 || (len & 4095) || end > (uint64_t)st.st_size)
			return REFUSE(EPERM);
	} else {
		uint32_t size = __atomic_load_n(&vcpu_mmap_size, __ATOMIC_ACQUIRE);
		if (kind != KIND_KVM_VCPU || offset_pages != 0 || size == 0 || len != size)
			return REFUSE(EPERM);
	}
	if (!window || ((uintptr_t)window & 4095))
		return -EINVAL;
	pthread_mutex_lock(&windows_lock);
	int slot = -1;
	for (int i = 0; i < MAX_WINDOWS; i++) {
		if (windows[i].address == (uintptr_t)window) {
			slot = -2; /* already a window: map over it again only after unmapping */
			break;
		}
		if (slot == -1 && windows[i].address == 0)
			slot = i;
	}
	int32_t result;
	if (slot < 0)
		result = slot == -2 ? REFUSE(EPERM) : -ENOMEM;
	else {
		void *p = mmap(window, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (off_t)offset_pages * 4096);
		if (p == MAP_FAILED)
			result = -errno;
		else {
			windows[slot].address = (uintptr_t)window;
			windows[slot].len = len;
			result = 0;
		}
	}
	pthread_mutex_unlock(&windows_lock);
	return result;
}

/* Put private zeroed memory back over a window relay_map_fixed mapped (exactly that window), so the buffer's
 * allocator gets back ordinary memory and the vCPU's mapping reference is dropped. */
RELAY_EXPORT int32_t relay_unmap_fixed(void *window, uint32_t len)
{
	int32_t result = REFUSE(EPERM);
	pthread_mutex_lock(&windows_lock);
	for (int i = 0; i < MAX_WINDOWS; i++) {
		if (window && windows[i].address == (uintptr_t)window && windows[i].len == len) {
			void *p = mmap(window, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			result = p == MAP_FAILED ? -errno : 0;
			if (result == 0)
				windows[i].address = 0;
			break;
		}
	}
	pthread_mutex_unlock(&windows_lock);
	return result;
}

/* ------------------------------------------------------------------------------------------- memfds, fd passing */

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* Whether fd is a memfd: an unlinked regular file on tmpfs or hugetlbfs whose name the kernel gave as "memfd:...".
 * Used on every memfd the shim sends or receives, so a socket never carries (nor the table records) another file. */
static int is_memfd(int fd)
{
	struct stat st;
	struct statfs sf;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0)
		return 0;
	if (fstatfs(fd, &sf) < 0 || ((unsigned long)sf.f_type != TMPFS_MAGIC && (unsigned long)sf.f_type != HUGETLBFS_MAGIC))
		return 0;
	char link[64], target[128];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 7)
		return 0;
	target[n] = 0;
	return !strncmp(target, "/memfd:", 7);
}

/* A memfd of `size` bytes (a multiple of 4096, at most 1 TiB) for guest RAM, sealed so its size never changes
 * (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL): whoever maps it, here or after it was passed, can trust its length.
 * name is NUL-terminated within name_len (at most 64 bytes). Returns the fd (kind memfd) or -errno. */
RELAY_EXPORT int32_t relay_memfd_create(const char *name, uint32_t name_len, uint64_t size)
{
	if (!name || name_len == 0 || name_len > 64 || !memchr(name, 0, name_len))
		return -EINVAL;
	if (size == 0 || (size & 4095) || size > (1ull << 40))
		return -EINVAL;
	int fd = (int)syscall(SYS_memfd_create, name, 0x0001u /* MFD_CLOEXEC */ | 0x0002u /* MFD_ALLOW_SEALING */);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return track(fd, KIND_MEMFD);
}

/* Bytes of a memfd of the table, or -errno / a refusal. */
RELAY_EXPORT int64_t relay_memfd_size(int32_t fd)
{
	int32_t not_mine = refuse_unless_kind(fd, KIND_MEMFD);
	if (not_mine < 0)
		return not_mine;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_size;
}

/* The one directory fd-passing sockets live in, so that no caller chooses where a socket file is made or which file a
 * connect reaches: /run/iommu-relay for root, else /tmp/iommu-relay-<uid>. Made 0700 on first use; used only while
 * it is a directory (lstat: never through a link) owned by this user with no group or other access. Its length or
 * -errno / a refusal. */
static int32_t fdpass_dir(char *out, size_t cap)
{
	uid_t uid = geteuid();
	int n = uid == 0 ? snprintf(out, cap, "/run/iommu-relay") : snprintf(out, cap, "/tmp/iommu-relay-%u", (unsigned)uid);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	if (mkdir(out, 0700) < 0 && errno != EEXIST)
		return -errno;
	struct stat st;
	if (lstat(out, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != uid || (st.st_mode & 077))
		return REFUSE(EACCES);
	return n;
}

/* Where the fd-passing sockets live (see fdpass_dir): the path's length, written with its NUL into `out`. */
RELAY_EXPORT int32_t relay_fdpass_dir(char *out, uint32_t out_len)
{
	char dir[64];
	int32_t n = fdpass_dir(dir, sizeof(dir));
	if (n < 0)
		return n;
	if (!out || out_len < (uint32_t)n + 1)
		return -ENOSPC;
	memcpy(out, dir, (size_t)n + 1);
	return n;
}

/* An fd-passing socket's address: a name (letters, digits, '.', '_', '-'; not starting with '.'; at most 64 bytes)
 * ending ".memfd.sock", inside fdpass_dir. 0 or a refusal. */
static int32_t fdpass_address(const char *name, uint32_t name_len, struct sockaddr_un *addr)
{
	static const char suffix[] = ".memfd.sock";
	if (!name || name_len == 0 || !memchr(name, 0, name_len))
		return -EINVAL;
	size_t len = strlen(name);
	if (len <= sizeof(suffix) - 1 || len > 64 || name[0] == '.' ||
	    strcmp(name + len - (sizeof(suffix) - 1), suffix))
		return REFUSE(EACCES);
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return REFUSE(EACCES);
	}
	char dir[64];
	int32_t n = fdpass_dir(dir, sizeof(dir));
	if (n < 0)
		return n;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if ((size_t)n + 1 + len + 1 > sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memcpy(addr->sun_path, dir, (size_t)n);
	addr->sun_path[n] = '/';
	memcpy(addr->sun_path + n + 1, name, len + 1);
	return 0;
}

/* Listen for fd-passing connections at socket `name` of the fd-passing directory (a new socket file: bind refuses an existing one, EADDRINUSE), mode
 * 0600 (the owner changes it if others must connect). Nonblocking; poll it, then relay_fdpass_accept. */
RELAY_EXPORT int32_t relay_fdpass_listen(const char *name, uint32_t name_len)
{
	struct sockaddr_un addr;
	int32_t ok = fdpass_address(name, name_len, &addr);
	if (ok < 0)
		return ok;
	/* A socket file left by a listener that is gone (nobody accepts on it: ECONNREFUSED) is removed, so a restarted
	 * broker can listen again; a live one is EADDRINUSE, and anything but a socket stays and fails the bind. */
	struct stat st;
	if (lstat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return -errno;
		int stale = connect(probe, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno == ECONNREFUSED;
		close(probe);
		if (stale)
			unlink(addr.sun_path);
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return track(fd, KIND_FDPASS_LISTENER);
}

/* Connect to fd-passing socket `name` of the fd-passing directory (it must already be a socket; connect refuses
 * anything else). */
RELAY_EXPORT int32_t relay_fdpass_connect(const char *name, uint32_t name_len)
{
	struct sockaddr_un addr;
	int32_t ok = fdpass_address(name, name_len, &addr);
	if (ok < 0)
		return ok;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return track(fd, KIND_FDPASS_SOCKET);
}

/* Accept one connection on a listening fd-passing socket: its fd (nonblocking) or -EAGAIN. */
RELAY_EXPORT int32_t relay_fdpass_accept(int32_t listener)
{
	int32_t not_mine = refuse_unless_kind(listener, KIND_FDPASS_LISTENER);
	if (not_mine < 0)
		return not_mine;
	int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return -errno;
	return track(fd, KIND_FDPASS_SOCKET);
}

#define FDPASS_PAYLOAD_MAX 256

/* Send memfd `memfd` (of the table, and still a memfd) with `payload` (up to 256 bytes) as one message. Bytes sent
 * or -errno. */
RELAY_EXPORT int32_t relay_fdpass_send(int32_t sock, int32_t memfd, const uint8_t *payload, uint32_t payload_len)
{
	int kind = kind_of(sock), mkind = kind_of(memfd);
	if (kind == KIND_NONE || mkind == KIND_NONE)
		return REFUSE(EBADF);
	if (kind != KIND_FDPASS_SOCKET || mkind != KIND_MEMFD || !is_memfd(memfd) || !memfd_sealed(memfd))
		return REFUSE(EPERM);
	if (payload_len > FDPASS_PAYLOAD_MAX || (payload_len && !payload))
		return -EINVAL;
	uint8_t empty = 0;
	struct iovec iov = { .iov_base = payload_len ? (void *)payload : &empty, .iov_len = payload_len ? payload_len : 1 };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	memset(&control, 0, sizeof(control));
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &memfd, sizeof(int));
	ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	return n < 0 ? -errno : (int32_t)(payload_len ? n : 0);
}

/* Receive one message: its memfd enters the table (kind memfd) and is returned; out gets the payload length (u32)
 * then the payload (out_len must be at least 4 + 256). A message without exactly one fd, or whose fd is not a memfd
 * sealed against shrinking with its seals final (MEMFD_REQUIRED_SEALS), is consumed, every fd it carried is closed,
 * and the answer is a refusal (EACCES). -EAGAIN when nothing is there,
 * -EPIPE when the peer closed. */
RELAY_EXPORT int32_t relay_fdpass_recv(int32_t sock, uint8_t *out, uint32_t out_len)
{
	int32_t not_mine = refuse_unless_kind(sock, KIND_FDPASS_SOCKET);
	if (not_mine < 0)
		return not_mine;
	if (!out || out_len < 4 + FDPASS_PAYLOAD_MAX)
		return -EINVAL;
	uint8_t payload[FDPASS_PAYLOAD_MAX + 1];
	struct iovec iov = { .iov_base = payload, .iov_len = sizeof(payload) };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(8 * sizeof(int))];
	} control;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	int fds[8], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count && nfds < 8; i++)
			memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	if (n == 0 && nfds == 0)
		return -EPIPE;
	int refused = nfds != 1 || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) || !is_memfd(fds[0]) || !memfd_sealed(fds[0]) ||
		      fds[0] >= RELAY_FD_LIMIT || kind_of(fds[0]) != KIND_NONE;
	if (refused) {
		for (int i = 0; i < nfds; i++)
			if (fds[i] >= RELAY_FD_LIMIT || kind_of(fds[i]) == KIND_NONE)
				close(fds[i]);
		return REFUSE(EACCES);
	}
	uint32_t len = (uint32_t)n;
	memcpy(out, &len, 4);
	memcpy(out + 4, payload, len);
	return track(fds[0], KIND_MEMFD);
}

/* ---------------------------------------------------------------------------------------------- signals */

/* The one signal the shim sends. SIGUSR1: not SIGTERM/SIGINT (a caller could otherwise disarm its own shutdown),
 * and not a signal the runtime uses. */
#define RELAY_KICK_SIGNAL SIGUSR1

static void relay_kick_handler(int signo)
{
	(void)signo;
}

/* Install the shim's no-op handler for its kick signal without SA_RESTART, so the signal makes a blocking KVM_RUN
 * return -EINTR in the thread it is sent to. Idempotent; the kick and the deadline call it themselves. */
RELAY_EXPORT int32_t relay_kick_setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = relay_kick_handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(RELAY_KICK_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}

#define MAX_KICK_TARGETS 256
static pid_t kick_targets[MAX_KICK_TARGETS];
static pthread_mutex_t kick_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t kick_key;
static pthread_once_t kick_key_once = PTHREAD_ONCE_INIT;

/* A registered thread leaves the table when it exits: its id may be reused by a thread that never asked. */
static void kick_unregister(void *tid_as_pointer)
{
	pid_t tid = (pid_t)(uintptr_t)tid_as_pointer;
	pthread_mutex_lock(&kick_lock);
	for (int i = 0; i < MAX_KICK_TARGETS; i++)
		if (kick_targets[i] == tid)
			kick_targets[i] = 0;
	pthread_mutex_unlock(&kick_lock);
}

static void kick_key_create(void)
{
	pthread_key_create(&kick_key, kick_unregister);
}

/* Register the calling thread as a kick target (a vCPU thread); returns its thread id for relay_kick. */
RELAY_EXPORT int32_t relay_kick_register(void)
{
	int32_t installed = relay_kick_setup();
	if (installed < 0)
		return installed;
	pthread_once(&kick_key_once, kick_key_create);
	pid_t tid = (pid_t)syscall(SYS_gettid);
	if (pthread_getspecific(kick_key))
		return tid;
	int32_t result = -ENOSPC;
	pthread_mutex_lock(&kick_lock);
	for (int i = 0; i < MAX_KICK_TARGETS; i++) {
		if (kick_targets[i] == 0) {
			kick_targets[i] = tid;
			result = tid;
			break;
		}
	}
	pthread_mutex_unlock(&kick_lock);
	if (result > 0)
		pthread_setspecific(kick_key, (void *)(uintptr_t)tid);
	return result;
}

/* Send the kick signal to registered thread `tid` of this process: a blocking KVM_RUN there returns -EINTR. */
RELAY_EXPORT int32_t relay_kick(int32_t tid)
{
	int registered = 0;
	pthread_mutex_lock(&kick_lock);
	for (int i = 0; i < MAX_KICK_TARGETS && tid > 0; i++)
		if (kick_targets[i] == tid)
			registered = 1;
	pthread_mutex_unlock(&kick_lock);
	if (!registered)
		return REFUSE(EPERM);
	return syscall(SYS_tgkill, getpid(), tid, RELAY_KICK_SIGNAL) < 0 ? -errno : 0;
}

/* A deadline for the calling thread: after `ms` milliseconds it is sent the kick signal, then again every `every_ms`
 * (0: once) — a blocking call such as KVM_RUN then returns -EINTR; the repeats catch a thread that was between two
 * calls when one arrived. For a thread that no other thread is there to kick. `ms` 0 disarms. One deadline per
 * process: arming replaces the previous one. */
static timer_t relay_deadline;
static int relay_deadline_set;

RELAY_EXPORT int32_t relay_deadline_timer(uint32_t ms, uint32_t every_ms)
{
	if (relay_deadline_set) {
		timer_delete(relay_deadline);
		relay_deadline_set = 0;
	}
	if (ms == 0)
		return 0;
	int32_t installed = relay_kick_setup();
	if (installed < 0)
		return installed;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = RELAY_KICK_SIGNAL;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	if (timer_create(CLOCK_MONOTONIC, &sev, &relay_deadline) < 0)
		return -errno;
	relay_deadline_set = 1;
	struct itimerspec at;
	memset(&at, 0, sizeof(at));
	at.it_value.tv_sec = ms / 1000;
	at.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	at.it_interval.tv_sec = every_ms / 1000;
	at.it_interval.tv_nsec = (long)(every_ms % 1000) * 1000000L;
	if (timer_settime(relay_deadline, 0, &at, NULL) < 0) {
		int e = errno;
		timer_delete(relay_deadline);
		relay_deadline_set = 0;
		return -e;
	}
	return 0;
}

/* ----------------------------------------------------------------------------------------- host discovery */

/* Host discovery (lib/kernel/sysfs.ts, the CLI's `info`): fixed places, names filtered by pattern, never a path
 * from the caller. Deno's own file APIs would want -A for /sys and /dev. */

enum relay_listing {
	LIST_VFIO_CDEVS = 0,  /* /dev/vfio/devices: vfio<N> */
	LIST_VFIO_GROUPS = 1, /* /dev/vfio: <N> */
	LIST_IOMMUS = 2,      /* /sys/class/iommu: the IOMMU instances (dmar0, smmu3.0x...) */
};

/* A name sysfs gives an IOMMU instance: letters, digits, '.', '_', ':', '-'. */
static int plain_name(const char *s)
{
	if (!*s || *s == '.')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
		      *s == '_' || *s == ':' || *s == '-'))
			return 0;
	return 1;
}

/* The names of one listing, each followed by a NUL; bytes used, -errno (-ENOENT when the folder is missing),
 * -ENOBUFS when out is too small, -EINVAL for an unknown listing. */
RELAY_EXPORT int32_t relay_host_list(uint32_t which, char *out, uint32_t out_len)
{
	const char *dir;
	switch (which) {
	case LIST_VFIO_CDEVS:
		dir = "/dev/vfio/devices";
		break;
	case LIST_VFIO_GROUPS:
		dir = "/dev/vfio";
		break;
	case LIST_IOMMUS:
		dir = "/sys/class/iommu";
		break;
	default:
		return -EINVAL;
	}
	if (!out)
		return -EINVAL;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	uint32_t used = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint32_t n;
		int match = which == LIST_VFIO_CDEVS	? !strncmp(e->d_name, "vfio", 4) && !parse_instance(e->d_name + 4, &n)
			    : which == LIST_VFIO_GROUPS ? !parse_instance(e->d_name, &n)
							: plain_name(e->d_name);
		if (!match)
			continue;
		size_t len = strlen(e->d_name) + 1;
		if (used + len > out_len) {
			closedir(d);
			return -ENOBUFS;
		}
		memcpy(out + used, e->d_name, len);
		used += (uint32_t)len;
	}
	closedir(d);
	return (int32_t)used;
}

/* Whether /dev/iommu is a character device: 1, 0 when absent or something else, or -errno. */
RELAY_EXPORT int32_t relay_host_has_iommufd(void)
{
	struct stat st;
	if (lstat("/dev/iommu", &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISCHR(st.st_mode) ? 1 : 0;
}

enum relay_cdev_attr {
	CDEV_PCI = 0,         /* the PCI function (basename of the device link) */
	CDEV_DRIVER = 1,      /* basename of device/driver */
	CDEV_IOMMU_GROUP = 2, /* basename of device/iommu_group */
	CDEV_IOMMU = 3,       /* basename of device/iommu */
	CDEV_VENDOR = 4,      /* device/vendor */
	CDEV_DEVICE = 5,      /* device/device */
};

/* The last component of symlink `path`'s target into out: bytes written or -errno (-ENAMETOOLONG: out too small). */
static int32_t link_basename(const char *path, char *out, uint32_t out_len)
{
	char target[PATH_MAX];
	ssize_t len = readlink(path, target, sizeof(target) - 1);
	if (len < 0)
		return -errno;
	target[len] = 0;
	const char *base = strrchr(target, '/');
	base = base ? base + 1 : target;
	size_t bl = strlen(base);
	if (bl > out_len)
		return -ENAMETOOLONG;
	memcpy(out, base, bl);
	return (int32_t)bl;
}

/* One attribute of VFIO cdev vfio<cdev> as text in out (links: the last component of the target only): bytes
 * written, -errno as sysfs answers (-ENOENT: no such attribute), -ENAMETOOLONG/-EFBIG when out is too small, or
 * a refusal (EACCES) when the device folder resolves outside /sys/devices. */
RELAY_EXPORT int32_t relay_cdev_attr(uint32_t cdev, uint32_t attr, char *out, uint32_t out_len)
{
	static const char *const NAMES[] = { NULL, "driver", "iommu_group", "iommu", "vendor", "device" };
	if (attr > CDEV_DEVICE || !out || out_len == 0 || cdev > 999999999)
		return -EINVAL;
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "/sys/class/vfio-dev/vfio%u/device", cdev);
	if (attr == CDEV_PCI) {
		return link_basename(path, out, out_len);
	}
	/* The device folder is a kernel link into /sys/devices; anything else is not sysfs's. */
	char real[PATH_MAX];
	if (!realpath(path, real))
		return -errno;
	if (strncmp(real, "/sys/devices/", 13))
		return REFUSE(EACCES);
	n = snprintf(path, sizeof(path), "%s/%s", real, NAMES[attr]);
	if (n < 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	if (attr <= CDEV_IOMMU) {
		return link_basename(path, out, out_len);
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return REFUSE(EACCES);
	}
	ssize_t got = read(fd, out, out_len);
	int e = errno;
	char extra;
	ssize_t more = got == (ssize_t)out_len ? read(fd, &extra, 1) : 0;
	close(fd);
	if (got < 0)
		return -e;
	return more > 0 ? -EFBIG : (int32_t)got;
}
