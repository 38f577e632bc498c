/*
 * iommu-relay's C shim: the only native code the library calls, through Deno.dlopen (ffi/native.ts).
 *
 * Conventions, so that TypeScript never has to read errno (a nonblocking FFI call runs on another thread,
 * where the caller's errno is stale):
 *   - every function returns its result (>= 0) or -errno;
 *   - no variadic functions (FFI cannot call them portably);
 *   - ioctl requests are uint32_t: every Linux request number fits in 32 bits, and passing it unsigned keeps
 *     numbers above 2^31 (powerpc/mips/sparc _IO, any _IOR) intact without a BigInt on the hot path;
 *   - buffers are passed as pointers the caller owns; the shim keeps no reference after it returns.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RELAY_EXPORT __attribute__((visibility("default")))

/* ABI version of this file; native.ts refuses a library whose version differs. */
RELAY_EXPORT int32_t relay_shim_version(void) { return 5; }

/* open(path, O_RDWR | O_CLOEXEC). path is NUL-terminated; path_len bounds the search for the NUL so a
 * buffer without one is refused (-EINVAL) instead of read past its end. */
RELAY_EXPORT int32_t relay_open(const char *path, uint32_t path_len)
{
	if (!path || path_len == 0 || !memchr(path, 0, path_len))
		return -EINVAL;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

RELAY_EXPORT int32_t relay_close(int32_t fd)
{
	return close(fd) < 0 ? -errno : 0;
}

RELAY_EXPORT int32_t relay_ioctl(int32_t fd, uint32_t request, void *arg)
{
	int r = ioctl(fd, (unsigned long)request, arg);
	return r < 0 ? -errno : r;
}

/* Store the address of `second` as a native u64 at arg[offset]; -EINVAL when that does not fit in arg_len bytes. */
static int32_t store_pointer(uint8_t *arg, uint32_t arg_len, uint32_t offset, void *second)
{
	if (!arg || (uint64_t)offset + sizeof(uint64_t) > arg_len)
		return -EINVAL;
	uint64_t address = (uint64_t)(uintptr_t)second;
	memcpy(arg + offset, &address, sizeof(address));
	return 0;
}

/* Store the address of `second` as a little-endian/native u64 at arg[offset], then ioctl(fd, request, arg).
 * This is how structs carrying a user pointer (data_uptr, user_va, uptr) are sent without taking an address in
 * JavaScript (Deno.UnsafePointer.of is refused under a path-scoped --allow-ffi). arg_len bounds the store. */
RELAY_EXPORT int32_t relay_ioctl_with_pointer(int32_t fd, uint32_t request, uint8_t *arg, uint32_t arg_len,
					      uint32_t offset, void *second)
{
	int32_t stored = store_pointer(arg, arg_len, offset, second);
	if (stored < 0)
		return stored;
	int r = ioctl(fd, (unsigned long)request, arg);
	return r < 0 ? -errno : r;
}

/* The in-process C baseline for benchmarks: the same ioctl n times, from inside the Deno process (so both
 * sides pay the same multi-threaded process costs). All n calls are made even when they fail (an error path
 * can be the ioctl under test); returns 0 if every call succeeded, else the last -errno. When
 * offset != UINT32_MAX the pointer is stored first, as relay_ioctl_with_pointer does. */
RELAY_EXPORT int32_t relay_ioctl_loop(int32_t fd, uint32_t request, uint8_t *arg, uint32_t arg_len,
				      uint32_t offset, void *second, uint32_t n)
{
	if (offset != UINT32_MAX) {
		int32_t stored = store_pointer(arg, arg_len, offset, second);
		if (stored < 0)
			return stored;
	}
	int32_t result = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (ioctl(fd, (unsigned long)request, arg) < 0)
			result = -errno;
	}
	return result;
}

/* The C baseline for a pair of calls (shadow mode's IOAS map then unmap): ioctl(a) then ioctl(b), n times; a's
 * pointer is patched first as in relay_ioctl_loop. Returns 0 if every call succeeded, else the last -errno. */
RELAY_EXPORT int32_t relay_ioctl_pair_loop(int32_t fd, uint32_t request_a, uint8_t *arg_a, uint32_t arg_a_len,
					   uint32_t offset, void *second, uint32_t request_b, void *arg_b, uint32_t n)
{
	int32_t result = store_pointer(arg_a, arg_a_len, offset, second);
	if (result < 0)
		return result;
	for (uint32_t i = 0; i < n; i++) {
		if (ioctl(fd, (unsigned long)request_a, arg_a) < 0)
			result = -errno;
		if (ioctl(fd, (unsigned long)request_b, arg_b) < 0)
			result = -errno;
	}
	return result;
}

/* read/write of fixed-size records (fault queue, vEVENTQ). Return bytes or -errno. */
RELAY_EXPORT int32_t relay_read(int32_t fd, void *buf, uint32_t len)
{
	ssize_t r = read(fd, buf, len);
	return r < 0 ? -errno : (int32_t)r;
}

RELAY_EXPORT int32_t relay_write(int32_t fd, const void *buf, uint32_t len)
{
	ssize_t r = write(fd, buf, len);
	return r < 0 ? -errno : (int32_t)r;
}

/* poll one fd: returns revents (0 on timeout) or -errno. EINTR is returned, not retried: the caller decides. */
RELAY_EXPORT int32_t relay_poll(int32_t fd, int32_t events, int32_t timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = (short)events };
	int r = poll(&p, 1, timeout_ms);
	if (r < 0)
		return -errno;
	return r == 0 ? 0 : p.revents;
}

/* Test hook: write the address of `p` into out[0..8). Lets a test check what relay_ioctl_with_pointer stored
 * without Deno.UnsafePointer (which a scoped --allow-ffi refuses). */
RELAY_EXPORT int32_t relay_test_address_of(void *p, uint8_t *out)
{
	uint64_t address = (uint64_t)(uintptr_t)p;
	memcpy(out, &address, sizeof(address));
	return 0;
}

/* Bytes to skip from p to reach the next multiple of align (a power of two): lets TypeScript carve a
 * page-aligned window out of an ArrayBuffer without taking its address. Returns -EINVAL for a bad align. */
RELAY_EXPORT int32_t relay_align_offset(void *p, uint32_t align)
{
	if (align == 0 || (align & (align - 1)) || align > (1u << 30))
		return -EINVAL;
	uintptr_t a = (uintptr_t)p;
	return (int32_t)((align - (a & (align - 1))) & (align - 1));
}

/* Test hook: store `request` as the shim received it, to show requests above 2^31 cross FFI intact. */
RELAY_EXPORT int32_t relay_test_echo_request(uint32_t request, uint8_t *out)
{
	memcpy(out, &request, sizeof(request));
	return 0;
}

/* Pure FFI crossing cost, no syscall. */
RELAY_EXPORT int32_t relay_nop(int32_t fd, uint32_t request, void *arg)
{
	(void)request;
	(void)arg;
	return fd;
}

/* Map `len` bytes of `fd` at page offset `offset_pages` over a page-aligned window of a caller's buffer
 * (MAP_SHARED | MAP_FIXED). This is how a VMM sees the kvm_run page as a Uint8Array without taking a pointer in
 * JavaScript: the window is carved out of an ArrayBuffer with relay_align_offset. Undo with relay_unmap_fixed
 * before the buffer is freed. */
RELAY_EXPORT int32_t relay_map_fixed(void *window, uint32_t len, int32_t fd, uint32_t offset_pages)
{
	if (!window || ((uintptr_t)window & 4095) || len == 0 || (len & 4095))
		return -EINVAL;
	void *p = mmap(window, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (off_t)offset_pages * 4096);
	return p == MAP_FAILED ? -errno : 0;
}

/* Put private zeroed memory back over a window relay_map_fixed used, so the buffer's allocator gets back
 * ordinary memory (and the fd's mapping reference is dropped). */
RELAY_EXPORT int32_t relay_unmap_fixed(void *window, uint32_t len)
{
	if (!window || ((uintptr_t)window & 4095) || len == 0 || (len & 4095))
		return -EINVAL;
	void *p = mmap(window, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	return p == MAP_FAILED ? -errno : 0;
}

static void relay_kick_handler(int signo)
{
	(void)signo;
}

/* Install a no-op handler for `signo` without SA_RESTART, so the signal makes a blocking KVM_RUN return
 * -EINTR in the thread it is sent to (relay_kick). */
RELAY_EXPORT int32_t relay_kick_setup(int32_t signo)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = relay_kick_handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

/* The calling thread's id, for relay_kick from another thread. */
RELAY_EXPORT int32_t relay_gettid(void)
{
	return (int32_t)syscall(SYS_gettid);
}

/* Send `signo` to thread `tid` of this process. */
RELAY_EXPORT int32_t relay_kick(int32_t tid, int32_t signo)
{
	return syscall(SYS_tgkill, getpid(), tid, signo) < 0 ? -errno : 0;
}

/* A deadline for the calling thread: after `ms` milliseconds it is sent `signo`, then again every `every_ms` (0: once)
 * — with relay_kick_setup's handler a blocking call such as KVM_RUN then returns -EINTR; the repeats catch a thread
 * that was between two calls when one arrived. For a thread that no other thread is there to kick. `ms` 0 disarms.
 * One deadline per process: arming replaces the previous one. */
static timer_t relay_deadline;
static int relay_deadline_set;

RELAY_EXPORT int32_t relay_deadline_timer(int32_t signo, uint32_t ms, uint32_t every_ms)
{
	if (relay_deadline_set) {
		timer_delete(relay_deadline);
		relay_deadline_set = 0;
	}
	if (ms == 0)
		return 0;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = signo;
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

/* Small read-only helpers for sysfs and /dev listings: Deno's own file APIs want -A for /sys and /dev, while the
 * CLI should need only what it reads. Paths are NUL-terminated within path_len, as for relay_open. */

/* readlink(path) into out; returns the length, or -ENAMETOOLONG when out is too small. */
RELAY_EXPORT int32_t relay_readlink(const char *path, uint32_t path_len, char *out, uint32_t out_len)
{
	if (!path || path_len == 0 || !memchr(path, 0, path_len) || !out || out_len == 0)
		return -EINVAL;
	ssize_t n = readlink(path, out, out_len);
	if (n < 0)
		return -errno;
	return (uint32_t)n == out_len ? -ENAMETOOLONG : (int32_t)n;
}

/* The first out_len bytes of a (small) file; returns the bytes read, or -EFBIG if the file has more. */
RELAY_EXPORT int32_t relay_read_file(const char *path, uint32_t path_len, char *out, uint32_t out_len)
{
	if (!path || path_len == 0 || !memchr(path, 0, path_len) || !out || out_len == 0)
		return -EINVAL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint32_t got = 0;
	for (;;) {
		ssize_t n = read(fd, out + got, out_len - got);
		if (n < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		got += (uint32_t)n;
		if (got == out_len) {
			char extra;
			n = read(fd, &extra, 1);
			close(fd);
			return n > 0 ? -EFBIG : (int32_t)got;
		}
	}
	close(fd);
	return (int32_t)got;
}

/* The names in a directory (without . and ..), each followed by a NUL; returns the bytes used, or -ENOBUFS. */
RELAY_EXPORT int32_t relay_list_dir(const char *path, uint32_t path_len, char *out, uint32_t out_len)
{
	if (!path || path_len == 0 || !memchr(path, 0, path_len) || !out)
		return -EINVAL;
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	uint32_t used = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
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
