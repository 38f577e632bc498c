/*
 * The standalone C reference for bench/ffi_bench.ts: the same two ioctls as the shim's in-process loop, from a
 * process of its own (no Deno runtime beside it):
 *   - KVM_CHECK_EXTENSION(0) on /dev/kvm (no argument: what the shim passes for a request without one);
 *   - KVM_SET_USER_MEMORY_REGION on a VM fd with memory_size 0 and userspace_addr pointing at a buffer (the kernel
 *     copies the struct in and refuses it with EINVAL: a pointer-carrying call, as the shim's pointer path makes).
 *
 * Usage: ioctl_loop <calls> [rounds]   prints one JSON line: the best and the median ns per ioctl of each.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) return 1;
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) return 1;
	static unsigned char second[64];
	struct kvm_userspace_memory_region region;
	memset(&region, 0, sizeof(region));
	region.userspace_addr = (uint64_t)(uintptr_t)second;
	double check[1000], pointer[1000];
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();
		for (long i = 0; i < calls; i++) ioctl(kvm, KVM_CHECK_EXTENSION, 0);
		uint64_t t1 = now_ns();
		for (long i = 0; i < calls; i++) ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region);
		uint64_t t2 = now_ns();
		check[r] = (double)(t1 - t0) / (double)calls;
		pointer[r] = (double)(t2 - t1) / (double)calls;
	}
	qsort(check, rounds, sizeof check[0], cmp);
	qsort(pointer, rounds, sizeof pointer[0], cmp);
	printf("{\"calls\":%ld,\"rounds\":%d,\"checkBestNs\":%.1f,\"checkMedianNs\":%.1f,\"pointerBestNs\":%.1f,"
	       "\"pointerMedianNs\":%.1f}\n",
	       calls, rounds, check[0], check[rounds / 2], pointer[0], pointer[rounds / 2]);
	return 0;
}
