/*
 * The C twin of iommu-relay's whole VT-d doorbell pipeline (bench/pipeline_bench.ts compares the TypeScript doorbell
 * against it): on each IQT write, read every descriptor from IQH to IQT out of guest RAM, decode and validate it as
 * lib/frontends/vtd/descriptors.ts does, route it (RID_PASID → the RID's binding, else the PASID's), add it to the
 * target's pending set with the relay's batching policy (lib/request/pending.ts: sorted ranges, overlapping and
 * adjacent ones merged, each range's requests kept as a linked list, escalation past 64 ranges or 2^18 pages), and at
 * the end of the doorbell compile the set into VT-d stage-1 entries (struct iommu_hwpt_vtd_s1_invalidate), fill the
 * iommu_hwpt_invalidate argument, make one ioctl, and write each wait's status to guest RAM.
 *
 * The second policy is QEMU's per-descriptor path: each invalidation compiled into one entry and sent in its own
 * ioctl as it is decoded, each wait's status written when it is reached.
 *
 * The sink: "ioctl" makes the same cheap, real ioctl as the TypeScript bench's sink — KVM_SET_USER_MEMORY_REGION on a
 * VM fd, its userspace_addr pointing at the entries and memory_size 0 (the kernel copies the struct in, takes the
 * VM's slots lock and refuses it with EINVAL: a pointer-carrying call with little kernel work, allowed by the shim's
 * list, where /dev/iommu does not exist); "none" makes no call; "selftest" (the kernel VM: kernel-suite/figures_test.ts)
 * makes the real IOMMU_HWPT_INVALIDATE on a mock nested HWPT of the iommufd selftest (its own chain, built as
 * hwpt_invalidate_loop.c builds it: selftest_chain.h), the entries compiled in the selftest format as
 * lib/compile/selftest.ts compiles them — the mock IOTLB has no pages, so a pending set's ranges all collapse into one
 * entry zeroing the slot of the binding's PASID (PASID 5: slot 1), a whole-space flush into one FLAG_ALL entry; QEMU's
 * policy sends one such entry per invalidation. The selftest sink exists only when built against the 7.3 uAPI headers
 * and iommufd_test.h (tools/kernel/run.ts builds it so); elsewhere it is refused at start.
 *
 * The guest's queue, the same bytes as bench/probes/paths.ts writes:
 *   single:  a 256-entry queue; doorbell i = (PASID-IOTLB of page 8i of PASID 5 in domain 1, wait writing i).
 *   batch64: a 4,096-entry queue; doorbell d = 64 PASID-IOTLBs of single, non-adjacent pages + a wait, 63 doorbells
 *            per lap, IQA rewritten after each lap (IQH back to 0).
 *
 * Usage: vtd_doorbell <ioctl|none|selftest> <single|batch64> <relay|per-descriptor> <doorbells> <rounds> [latency]
 * Prints one JSON line: ns per doorbell of each round (best, median); with "latency", one more pass timing every
 * doorbell (p50, p99, p99.9 in ns, including one clock read, whose own cost is reported as clockNs); the ioctls made and
 * the doorbells rung in all passes (warm-up included), so a caller can check the ioctls per doorbell.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include("iommufd_test.h")
#include "selftest_chain.h"
#define HAVE_SELFTEST 1
#endif
#endif
#ifndef HAVE_SELFTEST
#define HAVE_SELFTEST 0
#endif
#if HAVE_SELFTEST
#define SELFTEST_DATA_TYPE IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
#define HWPT_INVALIDATE_REQUEST IOMMU_HWPT_INVALIDATE
#else
#define SELFTEST_DATA_TYPE 0u /* never sent: without the headers the selftest sink is refused at start */
#define HWPT_INVALIDATE_REQUEST 0u
#endif
/* The mock IOTLB's value at start (every slot): the doorbells must zero PASID 5's slot and leave the RID's alone. */
#define MOCK_IOTLB_START 0x77u

#define RAM_SIZE (1u << 20)
#define STATUS_GPA 0x8000u
#define SINGLE_BASE 0x10000u
#define BATCH_BASE 0x20000u
#define MAX_RANGES 64
#define MAX_PAGES (1u << 18)
#define MAX_WAITS 1024
#define LEAF 1u /* IOMMU_VTD_INV_FLAGS_LEAF */

static uint8_t ram[RAM_SIZE];

static uint64_t now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- the guest's descriptors (lib/frontends/vtd/encode.ts) ---- */

static void put_desc(uint32_t gpa, uint64_t qw0, uint64_t qw1) {
	memcpy(ram + gpa, &qw0, 8);
	memcpy(ram + gpa + 8, &qw1, 8);
}

static uint64_t pasid_iotlb0(uint32_t did, uint32_t pasid) {
	return ((uint64_t)pasid << 32) | ((uint64_t)did << 16) | (3u << 4) | 6u;
}

static uint64_t wait0(uint32_t data) {
	return ((uint64_t)data << 32) | (1u << 5) | 5u;
}

/* ---- the queue model ---- */

static uint64_t iq_base, iqh, iqt;
static uint32_t iq_entries = 256;
static uint64_t iqe_count, fsts_iqe;

/*
 * The bindings: domain 1, PASID 5 → target 7 (VT-d stage-1), and the RID's of domain 1 → target 7 too. With the
 * selftest sink the target is the mock nested HWPT and only PASID 5 is bound (as the kernel figure binds the
 * TypeScript queue): the one pending set then has one mock IOTLB slot, the binding's (PASID 5 mod 4 = 1).
 */
struct binding {
	int32_t domain, pasid; /* pasid -1 = the RID */
	uint32_t target;
	uint32_t slot; /* the selftest format's mock IOTLB slot: lib/compile/selftest.ts selftestSlot */
};
static struct binding bindings[] = { { 1, 5, 7, 1 }, { 1, -1, 7, 0 } };
static size_t binding_count = 2;

/* A target's pending set: sorted, disjoint, non-adjacent ranges, each with its requests as a linked list. */
struct range {
	uint64_t first, last;
	int leaf;
	int32_t head, tail;
};
static struct range ranges[MAX_RANGES + 2];
static uint32_t range_count;
static uint64_t pending_pages;
static int pending_all;
static int32_t all_head = -1, all_tail = -1;
static double node_seq[1 << 16];
static int32_t node_next[1 << 16];
static uint32_t nodes;

static int32_t new_node(double seq) {
	int32_t n = (int32_t)nodes++;
	node_seq[n] = seq;
	node_next[n] = -1;
	return n;
}

static void to_all(int32_t head, int32_t tail) {
	if (all_head < 0)
		all_head = head;
	else
		node_next[all_tail] = head;
	all_tail = tail;
}

static void escalate(void) {
	if (pending_all) return;
	for (uint32_t i = 0; i < range_count; i++) to_all(ranges[i].head, ranges[i].tail);
	pending_all = 1;
	range_count = 0;
	pending_pages = 0;
}

static void add_range(uint64_t first, uint64_t pages, int leaf, double seq) {
	int32_t node = new_node(seq);
	if (pending_all) {
		to_all(node, node);
		return;
	}
	uint64_t last = first + pages - 1;
	uint32_t lo = 0, hi = range_count;
	while (lo < hi) {
		uint32_t mid = (lo + hi) >> 1;
		if (ranges[mid].last + 1 < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	uint32_t end = lo;
	while (end < range_count && ranges[end].first <= last + 1) end++;
	if (end == lo) {
		memmove(&ranges[lo + 1], &ranges[lo], (range_count - lo) * sizeof(ranges[0]));
		ranges[lo] = (struct range){ first, last, leaf, node, node };
		range_count++;
		pending_pages += pages;
	} else {
		struct range *r = &ranges[lo];
		pending_pages -= r->last - r->first + 1;
		uint64_t f = first < r->first ? first : r->first, l = last > r->last ? last : r->last;
		int lf = leaf && r->leaf;
		for (uint32_t k = lo + 1; k < end; k++) {
			struct range *o = &ranges[k];
			if (o->first < f) f = o->first;
			if (o->last > l) l = o->last;
			lf = lf && o->leaf;
			pending_pages -= o->last - o->first + 1;
			node_next[r->tail] = o->head;
			r->tail = o->tail;
		}
		node_next[r->tail] = node;
		r->tail = node;
		r->first = f;
		r->last = l;
		r->leaf = lf;
		pending_pages += l - f + 1;
		memmove(&ranges[lo + 1], &ranges[end], (range_count - end) * sizeof(ranges[0]));
		range_count -= end - lo - 1;
	}
	if (range_count > MAX_RANGES || pending_pages > MAX_PAGES) escalate();
}

static void add_all(double seq) {
	escalate();
	int32_t node = new_node(seq);
	to_all(node, node);
}

/* The entries (struct iommu_hwpt_vtd_s1_invalidate: addr, npages, flags, reserved) and where each came from. */
struct vtd_s1_entry {
	uint64_t addr, npages;
	uint32_t flags, reserved;
};
static struct vtd_s1_entry entries[MAX_RANGES + 1];
/* The selftest format (struct iommu_hwpt_invalidate_selftest: flags, iotlb_id); one entry per pending set. */
struct selftest_entry {
	uint32_t flags, iotlb_id;
};
#define SELFTEST_FLAG_ALL 1u /* IOMMU_TEST_INVALIDATE_FLAG_ALL */
static struct selftest_entry selftest_entries[1];
static int selftest_format; /* the selftest sink compiles to the selftest format */
static double origins[1 << 16];
static uint32_t origin_count, entry_count;

static void copy_origins(int32_t head) {
	for (int32_t n = head; n >= 0; n = node_next[n]) origins[origin_count++] = node_seq[n];
}

static void compile(uint32_t slot) {
	entry_count = 0;
	origin_count = 0;
	if (selftest_format) {
		/* lib/compile/selftest.ts: no pages in the mock, so every range's requests are served by one slot flush. */
		if (pending_all) {
			selftest_entries[0] = (struct selftest_entry){ SELFTEST_FLAG_ALL, 0 };
			copy_origins(all_head);
		} else {
			selftest_entries[0] = (struct selftest_entry){ 0, slot };
			for (uint32_t i = 0; i < range_count; i++) copy_origins(ranges[i].head);
		}
		entry_count = 1;
	} else if (pending_all) {
		entries[0] = (struct vtd_s1_entry){ 0, UINT64_MAX, 0, 0 };
		copy_origins(all_head);
		entry_count = 1;
	} else {
		for (uint32_t i = 0; i < range_count; i++) {
			entries[entry_count++] =
				(struct vtd_s1_entry){ ranges[i].first << 12, ranges[i].last - ranges[i].first + 1,
						       ranges[i].leaf ? LEAF : 0, 0 };
			copy_origins(ranges[i].head);
		}
	}
	pending_all = 0;
	range_count = 0;
	pending_pages = 0;
	nodes = 0;
	all_head = all_tail = -1;
}

/* ---- the host call ---- */

struct iommu_hwpt_invalidate_arg { /* include/uapi/linux/iommufd.h */
	uint32_t size, hwpt_id;
	uint64_t data_uptr;
	uint32_t data_type, entry_len, entry_num, reserved;
};
static struct iommu_hwpt_invalidate_arg hwpt_arg;
static struct kvm_userspace_memory_region cheap;
static int vm_fd = -1, iommu_fd = -1, use_ioctl;
static uint64_t ioctls, unexpected;
#if HAVE_SELFTEST
_Static_assert(sizeof(struct iommu_hwpt_invalidate_arg) == sizeof(struct iommu_hwpt_invalidate), "argument layout");
_Static_assert(sizeof(struct selftest_entry) == sizeof(struct iommu_hwpt_invalidate_selftest), "entry layout");
#endif

/*
 * Send `count` entries of `entry_len` bytes at `e` to `target`: returns the errno (0 on success) and sets *handled to
 * the entries the host carried out (the kernel writes entry_num back).
 */
static int send_batch(uint32_t target, const void *e, uint32_t entry_len, uint32_t count, uint32_t *handled) {
	hwpt_arg.size = sizeof(hwpt_arg);
	hwpt_arg.hwpt_id = target;
	hwpt_arg.data_uptr = (uint64_t)(uintptr_t)e;
	hwpt_arg.data_type = selftest_format ? SELFTEST_DATA_TYPE : 0; /* 0: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 */
	hwpt_arg.entry_len = entry_len;
	hwpt_arg.entry_num = count;
	ioctls++;
	*handled = count;
	if (iommu_fd >= 0) {
		int rc = ioctl(iommu_fd, HWPT_INVALIDATE_REQUEST, &hwpt_arg);
		*handled = hwpt_arg.entry_num;
		if (rc) return errno;
	} else if (use_ioctl) {
		cheap.userspace_addr = hwpt_arg.data_uptr;
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &cheap) != -1 || errno != EINVAL) unexpected++;
	}
	return 0;
}

static int send_compiled(uint32_t target) {
	uint32_t handled;
	int rc = selftest_format ? send_batch(target, selftest_entries, sizeof(selftest_entries[0]), entry_count, &handled)
				 : send_batch(target, entries, sizeof(entries[0]), entry_count, &handled);
	return rc == 0 && handled == entry_count ? 0 : -1;
}

/* Waits of the doorbell: status (data, address) and flags. */
static uint32_t wait_data[MAX_WAITS], wait_flags[MAX_WAITS];
static uint64_t wait_addr[MAX_WAITS];
static uint32_t wait_count;
static double seq_counter;

static int complete_wait(uint32_t flags, uint32_t data, uint64_t addr) {
	if (flags & 1) {
		if (addr + 4 > RAM_SIZE) return -1;
		memcpy(ram + addr, &data, 4);
	}
	return 0;
}

/* Drain: compile, one ioctl, then the waits. Returns -1 on failure. */
static int settle(void) {
	if (pending_all || range_count) {
		compile(bindings[0].slot); /* the one pending set: PASID 5's binding's target (and slot) */
		if (send_compiled(bindings[0].target) < 0) return -1;
	}
	for (uint32_t k = 0; k < wait_count; k++)
		if (complete_wait(wait_flags[k], wait_data[k], wait_addr[k]) < 0) return -1;
	wait_count = 0;
	return 0;
}

static int per_descriptor; /* QEMU's policy */

/* Decode and queue (or, per-descriptor, send) one descriptor; -1 = IQE. */
static int descriptor(uint64_t qw0, uint64_t qw1) {
	unsigned type = (unsigned)((qw0 & 0xf) | (((qw0 >> 9) & 7) << 4));
	switch (type) {
	case 6: { /* PASID-IOTLB */
		const uint64_t m0 = 0xfull | (3ull << 4) | (0xffffull << 16) | (0xfffffull << 32);
		const uint64_t m1 = 0x3full | (1ull << 6) | (~0ull << 12);
		if ((qw0 & ~m0) || (qw1 & ~m1)) return -1;
		unsigned g = (qw0 >> 4) & 3;
		if (g < 2) return -1;
		int32_t did = (int32_t)((qw0 >> 16) & 0xffff), pasid = (int32_t)((qw0 >> 32) & 0xfffff);
		uint64_t page = qw1 >> 12, am = qw1 & 0x3f;
		int leaf = (qw1 >> 6) & 1;
		int32_t route = pasid == 0 ? -1 : pasid; /* the RID_PASID's invalidations are the RID's */
		const struct binding *b = NULL;
		for (size_t i = 0; i < binding_count; i++)
			if (bindings[i].domain == did && bindings[i].pasid == route) b = &bindings[i];
		double seq = ++seq_counter;
		if (!b) return 0; /* unrouted: counted, nothing to send */
		uint64_t pages = 1ull << (am > 52 ? 52 : am);
		uint64_t first = page / pages * pages;
		if (per_descriptor) {
			uint32_t handled;
			int rc;
			if (selftest_format) {
				struct selftest_entry e = g == 2 ? (struct selftest_entry){ SELFTEST_FLAG_ALL, 0 }
								 : (struct selftest_entry){ 0, b->slot };
				rc = send_batch(b->target, &e, sizeof(e), 1, &handled);
			} else {
				struct vtd_s1_entry e = g == 2 ? (struct vtd_s1_entry){ 0, UINT64_MAX, 0, 0 }
							       : (struct vtd_s1_entry){ first << 12, pages, leaf ? LEAF : 0, 0 };
				rc = send_batch(b->target, &e, sizeof(e), 1, &handled);
			}
			return rc == 0 && handled == 1 ? 0 : -1;
		}
		if (g == 2)
			add_all(seq);
		else
			add_range(first, pages, leaf, seq);
		return 0;
	}
	case 5: { /* wait */
		const uint64_t m0 = 0xfull | (0xfull << 4) | (0xffffffffull << 32);
		if ((qw0 & ~m0) || (qw1 & 3)) return -1;
		++seq_counter;
		uint32_t flags = (uint32_t)(((qw0 >> 5) & 1) | (((qw0 >> 4) & 1) << 1));
		if (per_descriptor) return complete_wait(flags, (uint32_t)(qw0 >> 32), qw1);
		wait_flags[wait_count] = flags;
		wait_data[wait_count] = (uint32_t)(qw0 >> 32);
		wait_addr[wait_count++] = qw1;
		if (((qw0 >> 6) & 1) || wait_count >= MAX_WAITS) return settle(); /* fence, or the wait limit */
		return 0;
	}
	default:
		return -1; /* other types: not in this workload (the TypeScript side handles them; IQE here) */
	}
}

static void write_iqa(uint64_t base, unsigned qs) {
	iq_base = base;
	iq_entries = (4096u << qs) / 16;
	iqh = iqt = 0;
}

/* The doorbell: IQT written. */
static void write_iqt(uint64_t value) {
	iqt = value;
	if (fsts_iqe || value % 16 || value / 16 >= iq_entries) {
		iqe_count++;
		fsts_iqe = 1;
		return;
	}
	uint64_t tail = value / 16;
	for (uint64_t i = iqh / 16; i != tail; i = (i + 1) % iq_entries) {
		uint64_t gpa = iq_base + i * 16;
		uint64_t qw[2] = { 0, 0 };
		int bad = gpa + 16 > RAM_SIZE;
		if (!bad) {
			memcpy(qw, ram + gpa, 16);
			bad = descriptor(qw[0], qw[1]) < 0;
		}
		if (bad) {
			settle();
			iqe_count++;
			fsts_iqe = 1;
			iqh = i * 16;
			return;
		}
	}
	if (settle() < 0) {
		iqe_count++;
		fsts_iqe = 1;
		return;
	}
	iqh = value;
}

/* ---- the workload ---- */

static int batch;
static uint64_t step_index;

static void setup(void) {
	if (!batch) {
		write_iqa(SINGLE_BASE, 0);
		for (uint32_t i = 0; i < 128; i++) {
			put_desc(SINGLE_BASE + 32 * i, pasid_iotlb0(1, 5), (uint64_t)(i * 8) << 12);
			put_desc(SINGLE_BASE + 32 * i + 16, wait0(i), STATUS_GPA);
		}
	} else {
		write_iqa(BATCH_BASE, 4);
		for (uint32_t d = 0; d < 63; d++) {
			for (uint32_t j = 0; j < 64; j++)
				put_desc(BATCH_BASE + 16 * (d * 65 + j), pasid_iotlb0(1, 5), (uint64_t)((d * 64 + j) * 2) << 12);
			put_desc(BATCH_BASE + 16 * (d * 65 + 64), wait0(d), STATUS_GPA);
		}
	}
}

/* One doorbell of the workload. */
static void step(void) {
	if (!batch) {
		write_iqt(((step_index + 1) * 32) % 4096);
	} else {
		uint64_t d = step_index % 63;
		if (d == 0) write_iqa(BATCH_BASE, 4);
		write_iqt((d + 1) * 65 * 16);
	}
	step_index++;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
	if (argc < 6) {
		fprintf(stderr, "usage: vtd_doorbell <ioctl|none|selftest> <single|batch64> <relay|per-descriptor> <doorbells> "
				"<rounds> [latency]\n");
		return 2;
	}
	use_ioctl = strcmp(argv[1], "ioctl") == 0;
	int use_selftest = strcmp(argv[1], "selftest") == 0;
	if (!use_ioctl && !use_selftest && strcmp(argv[1], "none") != 0) return 2;
	batch = strcmp(argv[2], "batch64") == 0;
	per_descriptor = strcmp(argv[3], "per-descriptor") == 0;
	long n = atol(argv[4]);
	int rounds = atoi(argv[5]);
	int latency = argc > 6 && strcmp(argv[6], "latency") == 0;
	if (n < 1 || rounds < 1 || rounds > 1000) return 2;
	if (use_ioctl) {
		int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		if (kvm < 0) {
			perror("/dev/kvm");
			return 1;
		}
		vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
		if (vm_fd < 0) {
			perror("KVM_CREATE_VM");
			return 1;
		}
	}
	if (use_selftest) {
#if HAVE_SELFTEST
		iommu_fd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
		if (iommu_fd < 0) {
			perror("/dev/iommu");
			return 1;
		}
		uint32_t nested;
		const char *failed;
		if (selftest_nested_chain(iommu_fd, MOCK_IOTLB_START, &nested, &failed)) {
			perror(failed);
			return 1;
		}
		bindings[0].target = nested;
		binding_count = 1;
		selftest_format = 1;
#else
		fprintf(stderr, "vtd_doorbell: built without the 7.3 uAPI headers and iommufd_test.h: no selftest sink\n");
		return 2;
#endif
	}
	setup();
	for (long i = 0; i < n; i++) step(); /* warm-up: caches, branch predictors */
	double per[1000];
	for (int r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();
		for (long i = 0; i < n; i++) step();
		per[r] = (double)(now_ns() - t0) / (double)n;
	}
	qsort(per, rounds, sizeof(per[0]), cmp);
	printf("{\"sink\":\"%s\",\"shape\":\"%s\",\"policy\":\"%s\",\"doorbells\":%ld,\"rounds\":%d,\"bestNs\":%.1f,"
	       "\"medianNs\":%.1f",
	       argv[1], argv[2], argv[3], n, rounds, per[0], per[rounds / 2]);
	if (latency) {
		double *lat = malloc(sizeof(double) * (size_t)n);
		uint64_t c0 = now_ns();
		for (long i = 0; i < n; i++) lat[i] = (double)now_ns();
		double clock_ns = (double)(now_ns() - c0) / (double)n;
		for (long i = 0; i < n; i++) {
			uint64_t t = now_ns();
			step();
			lat[i] = (double)(now_ns() - t);
		}
		qsort(lat, (size_t)n, sizeof(double), cmp);
		printf(",\"p50Ns\":%.1f,\"p99Ns\":%.1f,\"p999Ns\":%.1f,\"clockNs\":%.1f", lat[n / 2],
		       lat[(long)(n * 0.99)], lat[(long)(n * 0.999)], clock_ns);
		free(lat);
	}
#if HAVE_SELFTEST
	if (iommu_fd >= 0) {
		/* The invalidations reached the mock IOTLB: PASID 5's slot zeroed, the RID's slot untouched. */
		for (uint32_t slot = 0; slot < 2; slot++) {
			struct iommu_test_cmd check = { .size = sizeof(check),
							.op = IOMMU_TEST_OP_MD_CHECK_IOTLB,
							.id = bindings[0].target,
							.check_iotlb = { .id = slot, .iotlb = slot ? 0 : MOCK_IOTLB_START } };
			if (ioctl(iommu_fd, IOMMU_TEST_CMD, &check)) unexpected++;
		}
	}
#endif
	uint32_t status;
	memcpy(&status, ram + STATUS_GPA, 4);
	printf(",\"ioctls\":%lu,\"doorbellsRun\":%lu,\"iqe\":%lu,\"unexpected\":%lu,\"lastStatus\":%u}\n",
	       (unsigned long)ioctls, (unsigned long)step_index, (unsigned long)iqe_count, (unsigned long)unexpected,
	       status);
	return iqe_count || unexpected ? 1 : 0;
}
