/*
 * The standalone C reference for bench/ffi_bench.ts: the same ioctl as the shim's in-process loop, from a process
 * of its own (no Deno runtime beside it). KVM_CHECK_EXTENSION on /dev/kvm where it opens, else TCGETS on
 * /dev/null (the kernel's ENOTTY path).
 *
 * Usage: ioctl_loop <calls> [rounds]   prints one JSON line: the best and the median ns per ioctl over the rounds.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
	long calls = argc > 1 ? atol(argv[1]) : 10000;
	int rounds = argc > 2 ? atoi(argv[2]) : 20;
	if (calls < 1 || rounds < 1 || rounds > 1000) return 2;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int kvm = fd >= 0;
	if (!kvm) fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0) return 1;
	unsigned long request = kvm ? 0xae03 : 0x5401; /* KVM_CHECK_EXTENSION, TCGETS */
	unsigned char arg[64] = {0};
	double per[1000];
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();
		for (long i = 0; i < calls; i++) ioctl(fd, request, arg); /* the shim's loop passes its buffer too */
		per[r] = (double)(now_ns() - t0) / (double)calls;
	}
	qsort(per, rounds, sizeof per[0], cmp);
	printf("{\"ioctl\":\"%s\",\"calls\":%ld,\"rounds\":%d,\"bestNs\":%.1f,\"medianNs\":%.1f}\n",
	       kvm ? "KVM_CHECK_EXTENSION on /dev/kvm" : "TCGETS on /dev/null", calls, rounds, per[0], per[rounds / 2]);
	return 0;
}
