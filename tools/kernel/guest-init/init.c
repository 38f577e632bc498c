/*
 * /init of the Linux guest the Deno VMM boots (examples/linux-vmm). It does real I/O through the guest's one
 * device, a virtio-blk disk whose DMA goes through the emulated VT-d, checks every byte, prints one result line and
 * ends through the VMM's exit port.
 *
 * The VMM fills the disk with a known pattern (disk_word below, the same formula in examples/linux-vmm), so reads
 * can be checked from the first one. Every transfer is O_DIRECT (the DMA lands in this program's buffers, not the
 * page cache) and the buffers rotate through fresh allocations, so consecutive requests reuse IOVAs for different
 * pages: a translation the VMM kept after the guest's invalidation (a lost invalidation) then sends the data to the
 * old page and this program sees wrong bytes.
 *
 * Output goes to /dev/kmsg (the kernel's own console path, which needs no UART interrupt), as lines starting
 * "linux-guest:"; then "linux-guest: result ok=<0|1> ..." and "linux-guest: exit <status>". Exit: the status byte to
 * port 0x501 (the VMM's exit port) where the kernel allows port I/O, else a reboot the VMM watches for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_PORT 0x501
#define CHUNK (64 * 1024)
#define BUFFERS 8

static int kmsg = -1;

static void say(const char *fmt, ...)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "linux-guest: ");
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(line))
		n = sizeof(line) - 1;
	if (kmsg >= 0)
		(void)!write(kmsg, line, (size_t)n);
	else
		(void)!write(1, line, (size_t)n);
}

/* The VMM's exit port where port I/O is allowed (CONFIG_X86_IOPL_IOPERM); otherwise a reboot, which the VMM sees
 * as a keyboard-controller reset or a triple fault, after the "exit" line that carries the status. */
static void finish(int status)
{
	sync();
	say("exit %d\n", status);
	if (ioperm(EXIT_PORT, 1, 1) == 0)
		outb((unsigned char)status, EXIT_PORT);
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

/* The 32-bit word at byte offset `at` of a disk the VMM filled (examples/linux-vmm/virtio_blk.ts: diskWord). */
static uint32_t disk_word(uint64_t at)
{
	uint32_t x = (uint32_t)(at >> 2) * 2654435761u;
	return x ^ (x >> 15) ^ 0x6c696e78u;
}

/* The word this program writes at `at` in round `round`. */
static uint32_t round_word(uint64_t at, unsigned round)
{
	return disk_word(at) ^ (0x9e3779b9u * (round + 1));
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned char *buffers[BUFFERS];

/* Fresh buffers for a pass: the old ones are freed after the new ones are allocated, so the pages differ. */
static int fresh_buffers(void)
{
	unsigned char *next[BUFFERS];
	for (int i = 0; i < BUFFERS; i++) {
		if (posix_memalign((void **)&next[i], 4096, CHUNK) != 0)
			return -1;
		memset(next[i], 0xa5, CHUNK); /* touched, so the pages exist before the DMA */
	}
	for (int i = 0; i < BUFFERS; i++) {
		free(buffers[i]);
		buffers[i] = next[i];
	}
	return 0;
}

int main(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	kmsg = open("/dev/kmsg", O_WRONLY);
	mkdir("/sys", 0755);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	double t0 = now();
	say("init started\n");
	/* Lazy runs (iommu.strict=0 on the command line): the kernel in this guest keeps the strict DMA domain, so the
	 * flush queue is brought up through the group's type (DMA -> DMA-FQ works with the driver bound). */
	int fq_errno = 0;
	char cmdline[1024] = "";
	mkdir("/proc", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	int cfd = open("/proc/cmdline", O_RDONLY);
	if (cfd >= 0) {
		ssize_t n = read(cfd, cmdline, sizeof(cmdline) - 1);
		cmdline[n > 0 ? n : 0] = 0;
		close(cfd);
	}
	if (strstr(cmdline, "iommu.strict=0")) {
		int tfd = open("/sys/bus/pci/devices/0000:00:01.0/iommu_group/type", O_WRONLY);
		if (tfd < 0 || write(tfd, "DMA-FQ", 6) != 6)
			fq_errno = errno;
		if (tfd >= 0)
			close(tfd);
	}
	int fd = -1;
	for (int i = 0; i < 500 && fd < 0; i++) {
		fd = open("/dev/vda", O_RDWR | O_DIRECT);
		if (fd < 0)
			usleep(10000);
	}
	if (fd < 0) {
		say("result ok=0 reason=no-disk errno=%d\n", errno);
		finish(2);
	}
	uint64_t size = 0;
	if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < CHUNK || size % CHUNK) {
		say("result ok=0 reason=disk-size size=%llu\n", (unsigned long long)size);
		finish(3);
	}
	const unsigned rounds = 2; /* a pass over the disk per round each way: about 10 s nested under TCG */
	uint64_t bytes_read = 0, bytes_written = 0, bad_words = 0, first_bad = UINT64_MAX, requests = 0;
	int io_errors = 0;
	unsigned b = 0;
	for (unsigned round = 0; round <= rounds && !io_errors; round++) {
		if (fresh_buffers() != 0) {
			say("result ok=0 reason=no-memory\n");
			finish(4);
		}
		/* Round 0 reads the VMM's pattern; round r > 0 first writes its own pattern over the disk. */
		if (round > 0) {
			for (uint64_t at = 0; at < size && !io_errors; at += CHUNK) {
				unsigned char *buf = buffers[b++ % BUFFERS];
				for (uint32_t i = 0; i < CHUNK; i += 4) {
					uint32_t w = round_word(at + i, round);
					memcpy(buf + i, &w, 4);
				}
				if (pwrite(fd, buf, CHUNK, (off_t)at) != CHUNK)
					io_errors++;
				bytes_written += CHUNK;
				requests++;
			}
			if (fresh_buffers() != 0) {
				say("result ok=0 reason=no-memory\n");
				finish(4);
			}
		}
		for (uint64_t at = 0; at < size && !io_errors; at += CHUNK) {
			unsigned char *buf = buffers[b++ % BUFFERS];
			memset(buf, 0xa5, CHUNK);
			if (pread(fd, buf, CHUNK, (off_t)at) != CHUNK) {
				io_errors++;
				break;
			}
			bytes_read += CHUNK;
			requests++;
			for (uint32_t i = 0; i < CHUNK; i += 4) {
				uint32_t w, want = round ? round_word(at + i, round) : disk_word(at + i);
				memcpy(&w, buf + i, 4);
				if (w != want) {
					if (first_bad == UINT64_MAX)
						first_bad = at + i;
					bad_words++;
				}
			}
		}
		say("round %u done: %llu KiB read, %llu KiB written, %llu bad words\n", round,
		    (unsigned long long)(bytes_read >> 10), (unsigned long long)(bytes_written >> 10),
		    (unsigned long long)bad_words);
	}
	/* The device's IOMMU domain type as the kernel chose it: DMA (strict invalidation) or DMA-FQ (lazy, the flush
	 * queue); "none" when the device has no IOMMU group (its DMA would not be translated at all). */
	char domain[32] = "none";
	int tfd = open("/sys/bus/pci/devices/0000:00:01.0/iommu_group/type", O_RDONLY);
	if (tfd >= 0) {
		ssize_t n = read(tfd, domain, sizeof(domain) - 1);
		domain[n > 0 ? n : 0] = 0;
		domain[strcspn(domain, "\n ")] = 0;
		close(tfd);
	}
	int ok = io_errors == 0 && bad_words == 0;
	say("result ok=%d domain=%s fq_errno=%d disk=%llu requests=%llu read=%llu written=%llu bad_words=%llu first_bad=%lld "
	    "io_errors=%d seconds=%.3f\n",
	    ok, domain[0] ? domain : "none", fq_errno, (unsigned long long)size, (unsigned long long)requests, (unsigned long long)bytes_read,
	    (unsigned long long)bytes_written, (unsigned long long)bad_words,
	    first_bad == UINT64_MAX ? -1LL : (long long)first_bad, io_errors, now() - t0);
	finish(ok ? 0 : 1);
	return 0;
}
