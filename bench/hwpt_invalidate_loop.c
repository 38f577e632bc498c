/*
 * The standalone C reference for the kernel VM's figures (kernel-suite/figures_test.ts): IOMMU_HWPT_INVALIDATE on a
 * mock nested HWPT of the iommufd selftest, from a process with no Deno runtime, beside the shim's in-process loop.
 * It builds its own chain as the kernel selftest does (IOAS, mock domain, nesting parent, nested HWPT; the code is in
 * selftest_chain.h, shared with vtd_doorbell.c's selftest sink), then times 1-entry and 64-entry invalidations.
 * Compiled on the host by tools/kernel/run.ts against the 7.3 uAPI headers and iommufd_test.h (the VM sees the host's
 * root).
 *
 * Usage: hwpt_invalidate_loop <calls> [rounds]   prints one JSON line (best ns per ioctl over the rounds, and per entry
 * for the 64-entry batches).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include "selftest_chain.h"

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
	printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
	exit(1);
}

/* Best time per ioctl of `rounds` rounds of `calls` invalidations of `count` entries each. */
static double best_ns(int fd, uint32_t hwpt, struct iommu_hwpt_invalidate_selftest *entries, uint32_t count,
		      long calls, int rounds) {
	struct iommu_hwpt_invalidate cmd = {
		.size = sizeof(cmd),
		.hwpt_id = hwpt,
		.data_uptr = (uint64_t)(uintptr_t)entries,
		.data_type = IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
		.entry_len = sizeof(*entries),
		.entry_num = count,
	};
	for (long i = 0; i < calls; i++) /* warm-up */
		if (ioctl(fd, IOMMU_HWPT_INVALIDATE, &cmd)) die("IOMMU_HWPT_INVALIDATE");
	double best = 1e18;
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();
		for (long i = 0; i < calls; i++)
			if (ioctl(fd, IOMMU_HWPT_INVALIDATE, &cmd)) die("IOMMU_HWPT_INVALIDATE");
		double per = (double)(now_ns() - t0) / (double)calls;
		if (per < best) best = per;
	}
	return best;
}

int main(int argc, char **argv) {
	long calls = argc > 1 ? atol(argv[1]) : 4000;
	int rounds = argc > 2 ? atoi(argv[2]) : 3;
	if (calls < 1 || rounds < 1) return 2;
	int fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (fd < 0) die("/dev/iommu");

	uint32_t nested;
	const char *failed;
	if (selftest_nested_chain(fd, IOMMU_TEST_IOTLB_DEFAULT, &nested, &failed)) die(failed);

	struct iommu_hwpt_invalidate_selftest entries[64];
	for (int i = 0; i < 64; i++) entries[i] = (struct iommu_hwpt_invalidate_selftest){.iotlb_id = (uint32_t)i % 4};
	double one = best_ns(fd, nested, entries, 1, calls, rounds);
	double batch = best_ns(fd, nested, entries, 64, calls / 8 > 0 ? calls / 8 : 1, rounds) / 64;
	printf("{\"oneEntryNs\":%.1f,\"perEntryNs64\":%.1f,\"calls\":%ld,\"rounds\":%d}\n", one, batch, calls, rounds);
	close(fd); /* the chain goes with the fd */
	return 0;
}
