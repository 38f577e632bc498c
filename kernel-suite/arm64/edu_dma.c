/*
 * edu_dma: drives the DMA engine of QEMU's edu device for the kernel suite's arm64 tests (kernel-suite/arm64/), so
 * that what the SMMU translates is shown by a device, not by a return code. Cross-built and run inside the arm64 VM
 * by tools/kernel/arm64.ts; the device is bound to vfio-pci and its iommufd domains are the test's, so the DMA goes
 * through the test's stage 1 and stage 2.
 *
 *   edu_dma /sys/bus/pci/devices/<bdf>
 *
 * Reads commands from stdin, one per line, and answers each with one line:
 *   dma to-ram <iova> <offset> <count>   edu's buffer [offset, +count) → memory at iova (a device write)
 *   dma to-dev <iova> <offset> <count>   memory at iova → edu's buffer (a device read)
 *   ident                                the identification register (0x010000ed)
 * Numbers are hexadecimal. A DMA answers "ok" once edu's command register says it is done, "timeout" if it is not
 * done within 5 s, and "bad ..." for a request edu would refuse by stopping QEMU (a buffer range outside its 4 KiB).
 *
 * Register map (QEMU docs/specs/edu.rst): 0x00 identification, 0x80 DMA source, 0x88 DMA destination, 0x90 count,
 * 0x98 command (bit 0 start, bit 1 direction: 1 = from edu to RAM). Its buffer sits at device address 0x40000.
 * PCI_COMMAND's bus master bit is set before each DMA: vfio-pci leaves it to the user, and without it QEMU drops
 * the device's DMA.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define EDU_BUFFER 0x40000u
#define EDU_BUFFER_SIZE 4096u

static volatile uint64_t *reg64(volatile uint8_t *bar, unsigned offset)
{
	return (volatile uint64_t *)(bar + offset);
}

static int bus_master(const char *dev)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/config", dev);
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return -1;
	uint16_t command = 0;
	int ok = pread(fd, &command, 2, 4) == 2;
	command |= 0x6; /* memory space, bus master */
	ok = ok && pwrite(fd, &command, 2, 4) == 2;
	close(fd);
	return ok ? 0 : -1;
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: edu_dma /sys/bus/pci/devices/<bdf>\n");
		return 2;
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/resource0", argv[1]);
	int fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	volatile uint8_t *bar = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (bar == MAP_FAILED) {
		perror("mmap resource0");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	char line[256];
	while (fgets(line, sizeof(line), stdin)) {
		char dir[16];
		unsigned long long iova, offset, count;
		if (!strncmp(line, "ident", 5)) {
			printf("0x%08x\n", *(volatile uint32_t *)bar);
			continue;
		}
		if (sscanf(line, "dma %15s %llx %llx %llx", dir, &iova, &offset, &count) != 4) {
			printf("bad request\n");
			continue;
		}
		int to_ram = !strcmp(dir, "to-ram");
		if ((!to_ram && strcmp(dir, "to-dev")) || count == 0 || offset + count > EDU_BUFFER_SIZE) {
			printf("bad direction or range\n");
			continue;
		}
		if (bus_master(argv[1]) != 0) {
			printf("bad config space\n");
			continue;
		}
		*reg64(bar, 0x80) = to_ram ? EDU_BUFFER + offset : iova;
		*reg64(bar, 0x88) = to_ram ? iova : EDU_BUFFER + offset;
		*reg64(bar, 0x90) = count;
		*reg64(bar, 0x98) = to_ram ? 3 : 1;
		double deadline = now() + 5;
		while ((*reg64(bar, 0x98) & 1) && now() < deadline)
			usleep(1000);
		printf((*reg64(bar, 0x98) & 1) ? "timeout\n" : "ok\n");
	}
	return 0;
}
