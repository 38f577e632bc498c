/*
 * The mini-VMM's doorbell loop in C: the baseline the doorbell bench compares examples/mini-vmm against.
 *
 * The same guest code and script bytes (written by bench/doorbell_bench.ts), the same memory map and the same shape
 * as the Deno VMM: one vCPU thread in a KVM_RUN loop posting each MMIO/port exit to a shared mailbox and sleeping on
 * a futex until the VMM thread has served it (the Deno VMM: a Worker and Atomics.wait / Atomics.waitAsync). The VMM
 * thread's VT-d register model does the guest-visible minimum: IQA, IQT (walk IQH..IQT, check each descriptor's
 * type, write wait status), IQH/FSTS reads, PRS = a pending page request. It relays nothing: the difference between
 * the two is what iommu-relay's decode, relay and in-process host cost per doorbell, plus JavaScript's thread hop.
 *
 * Usage: minivmm <guest code> <script> [threads|single]   prints one JSON line.
 * Build: cc -O2 -pthread -o minivmm minivmm.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* examples/mini-vmm/layout.ts */
#define RAM_SIZE 0xd0000
#define CODE_GPA 0x1000
#define SCRIPT_GPA 0x10000
#define SCRIPT_END 0xd0000
#define REGS_GPA 0xd0000
#define IQE_PORT 0x511
/* VT-d register offsets */
#define R_FSTS 0x34
#define R_IQH 0x80
#define R_IQT 0x88
#define R_IQA 0x90
#define R_PQA 0xd0
#define R_PRS 0xdc

enum { RUNNING, EXIT, RESUME, STOPPED };

static uint8_t *ram;
static struct kvm_run *run;
static int vcpu_fd;

/* The mailbox (one exit at a time). */
static _Atomic int state = RUNNING;
static uint64_t mb_addr, mb_value;
static uint32_t mb_len;
static int mb_write, mb_is_io, mb_stop_reason; /* stop: 1 = hlt, 2 = error */

/* The register model. */
static uint64_t iqa_base, iqh, iqt;
static uint32_t desc_size = 16, entries = 256;
static uint64_t doorbells, descriptors, waits, bad, exits;
static uint64_t first_doorbell_ns, last_doorbell_ns;

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void futex_wait(_Atomic int *addr, int value) {
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *addr) {
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void die(const char *what) {
	perror(what);
	exit(1);
}

static void doorbell(uint64_t value) {
	uint64_t now = now_ns();
	if (!doorbells) first_doorbell_ns = now;
	last_doorbell_ns = now;
	doorbells++;
	iqt = value;
	if (iqt % desc_size || iqt / desc_size >= entries) {
		bad++;
		return;
	}
	for (uint64_t i = iqh / desc_size; i != iqt / desc_size; i = (i + 1) % entries) {
		uint64_t gpa = iqa_base + i * desc_size;
		if (gpa + desc_size > RAM_SIZE) {
			bad++;
			break;
		}
		uint64_t qw0, qw1;
		memcpy(&qw0, ram + gpa, 8);
		memcpy(&qw1, ram + gpa + 8, 8);
		unsigned type = (qw0 & 0xf) | (((qw0 >> 9) & 7) << 4);
		if (type == 0 || type > 9) bad++;
		if (type == 5) {
			waits++;
			if ((qw0 >> 5) & 1) {
				uint32_t data = (uint32_t)(qw0 >> 32);
				if (qw1 + 4 <= RAM_SIZE) memcpy(ram + qw1, &data, 4);
				else bad++;
			}
		}
		descriptors++;
	}
	iqh = iqt;
}

static uint64_t mmio(uint64_t addr, uint32_t len, int write, uint64_t value) {
	(void)len;
	if (addr < REGS_GPA || addr >= REGS_GPA + 0x1000) return 0;
	uint64_t off = addr - REGS_GPA;
	if (write) {
		switch (off) {
		case R_IQA:
			desc_size = (value >> 11) & 1 ? 32 : 16;
			iqa_base = value & ~0xfffull;
			entries = ((1u << (value & 7)) * 4096) / desc_size;
			iqh = iqt = 0;
			break;
		case R_IQT: doorbell(value); break;
		default: break; /* FSTS (nothing to clear), PQA, ... */
		}
		return 0;
	}
	switch (off) {
	case R_FSTS: return 0;
	case R_IQH: return iqh;
	case R_IQT: return iqt;
	case R_PRS: return 1; /* PPR: the page request the guest waits for is there */
	default: return 0;
	}
}

/* Serve one exit already in kvm_run; returns 0 to go on, 1 when the guest stopped. */
static int exit_in_place(void) {
	switch (run->exit_reason) {
	case KVM_EXIT_MMIO: {
		uint64_t value = 0;
		memcpy(&value, run->mmio.data, run->mmio.len <= 8 ? run->mmio.len : 8);
		uint64_t r = mmio(run->mmio.phys_addr, run->mmio.len, run->mmio.is_write, value);
		if (!run->mmio.is_write) memcpy(run->mmio.data, &r, run->mmio.len <= 8 ? run->mmio.len : 8);
		return 0;
	}
	case KVM_EXIT_IO:
		if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == IQE_PORT) bad++;
		return 0;
	case KVM_EXIT_HLT: return 1;
	default: fprintf(stderr, "exit reason %u\n", run->exit_reason); return 1;
	}
}

/* The vCPU thread of the two-thread shape: exits go through the mailbox. */
static void *vcpu_thread(void *unused) {
	(void)unused;
	for (;;) {
		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
			mb_stop_reason = 2;
			break;
		}
		exits++;
		if (run->exit_reason == KVM_EXIT_HLT) {
			mb_stop_reason = 1;
			break;
		}
		if (run->exit_reason == KVM_EXIT_MMIO) {
			mb_is_io = 0;
			mb_addr = run->mmio.phys_addr;
			mb_len = run->mmio.len;
			mb_write = run->mmio.is_write;
			mb_value = 0;
			memcpy(&mb_value, run->mmio.data, mb_len <= 8 ? mb_len : 8);
		} else if (run->exit_reason == KVM_EXIT_IO) {
			mb_is_io = 1;
			mb_addr = run->io.port;
			mb_write = run->io.direction == KVM_EXIT_IO_OUT;
		} else {
			mb_stop_reason = 2;
			break;
		}
		atomic_store(&state, EXIT);
		futex_wake(&state);
		while (atomic_load(&state) == EXIT) futex_wait(&state, EXIT);
		atomic_store(&state, RUNNING);
		if (!mb_is_io && !mb_write) memcpy(run->mmio.data, &mb_value, mb_len <= 8 ? mb_len : 8);
	}
	atomic_store(&state, STOPPED);
	futex_wake(&state);
	return NULL;
}

static void load(const char *path, uint64_t gpa, uint64_t limit) {
	int fd = open(path, O_RDONLY);
	if (fd < 0) die(path);
	ssize_t n = read(fd, ram + gpa, limit - gpa);
	if (n <= 0) die(path);
	close(fd);
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: %s <guest code> <script> [threads|single]\n", argv[0]);
		return 2;
	}
	int threads = argc < 4 || strcmp(argv[3], "single") != 0;
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED) die("mmap ram");
	load(argv[1], CODE_GPA, SCRIPT_GPA);
	load(argv[2], SCRIPT_GPA, SCRIPT_END);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)ram};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
	vcpu_fd = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu_fd < 0) die("KVM_CREATE_VCPU");
	int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = CODE_GPA, .rflags = 2};
	if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	uint64_t t0 = now_ns();
	if (threads) {
		pthread_t t;
		if (pthread_create(&t, NULL, vcpu_thread, NULL)) die("pthread_create");
		for (;;) {
			int s = atomic_load(&state);
			if (s == RUNNING || s == RESUME) {
				futex_wait(&state, s);
				continue;
			}
			if (s == STOPPED) break;
			if (mb_is_io) {
				if (mb_write && mb_addr == IQE_PORT) bad++;
				mb_value = 0;
			} else {
				mb_value = mmio(mb_addr, mb_len, mb_write, mb_value);
			}
			atomic_store(&state, RESUME);
			futex_wake(&state);
		}
		pthread_join(t, NULL);
	} else {
		for (;;) {
			if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
				mb_stop_reason = 2;
				break;
			}
			exits++;
			if (exit_in_place()) {
				mb_stop_reason = 1;
				break;
			}
		}
	}
	uint64_t t1 = now_ns();
	printf("{\"shape\":\"%s\",\"end\":\"%s\",\"exits\":%llu,\"doorbells\":%llu,\"descriptors\":%llu,\"waits\":%llu,"
	       "\"bad\":%llu,\"totalNs\":%llu,\"doorbellSpanNs\":%llu}\n",
	       threads ? "threads" : "single", mb_stop_reason == 1 ? "halted" : "error", (unsigned long long)exits,
	       (unsigned long long)doorbells, (unsigned long long)descriptors, (unsigned long long)waits,
	       (unsigned long long)bad, (unsigned long long)(t1 - t0),
	       (unsigned long long)(last_doorbell_ns - first_doorbell_ns));
	return mb_stop_reason == 1 && bad == 0 ? 0 : 1;
}
