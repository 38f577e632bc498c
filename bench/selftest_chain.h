/*
 * The iommufd selftest chain the kernel VM's C programs invalidate (bench/hwpt_invalidate_loop.c and the "selftest"
 * sink of bench/vtd_doorbell.c): an IOAS, a mock device with its mock domain on it, a nesting parent HWPT and a nested
 * HWPT in the selftest format — the chain lib/kernel/selftest.ts mockNestedChain builds for the TypeScript side, so
 * both sides invalidate the same kind of object. Needs the 7.3 uAPI headers and iommufd_test.h (tools/kernel/run.ts
 * passes both). The chain lives as long as the iommufd: closing the fd destroys it.
 */
#ifndef IOMMU_RELAY_SELFTEST_CHAIN_H
#define IOMMU_RELAY_SELFTEST_CHAIN_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/iommufd.h>
#include "iommufd_test.h"

/*
 * Build the chain on `fd` with every mock IOTLB slot holding `iotlb`; on success store the nested HWPT's id and return
 * 0, else return -1 with errno set and *failed naming the call that failed.
 */
static int selftest_nested_chain(int fd, uint32_t iotlb, uint32_t *nested_id, const char **failed) {
	struct iommu_ioas_alloc ioas = { .size = sizeof(ioas) };
	*failed = "IOMMU_IOAS_ALLOC";
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &ioas)) return -1;
	struct iommu_test_cmd mock = { .size = sizeof(mock), .op = IOMMU_TEST_OP_MOCK_DOMAIN, .id = ioas.out_ioas_id };
	*failed = "IOMMU_TEST_OP_MOCK_DOMAIN";
	if (ioctl(fd, IOMMU_TEST_CMD, &mock)) return -1;
	uint32_t idev = mock.mock_domain.out_idev_id;
	struct iommu_hwpt_alloc parent = {
		.size = sizeof(parent), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT, .dev_id = idev, .pt_id = ioas.out_ioas_id
	};
	*failed = "IOMMU_HWPT_ALLOC (parent)";
	if (ioctl(fd, IOMMU_HWPT_ALLOC, &parent)) return -1;
	struct iommu_hwpt_selftest data = { .iotlb = iotlb };
	struct iommu_hwpt_alloc nested = {
		.size = sizeof(nested),
		.dev_id = idev,
		.pt_id = parent.out_hwpt_id,
		.data_type = IOMMU_HWPT_DATA_SELFTEST,
		.data_len = sizeof(data),
		.data_uptr = (uint64_t)(uintptr_t)&data,
	};
	*failed = "IOMMU_HWPT_ALLOC (nested)";
	if (ioctl(fd, IOMMU_HWPT_ALLOC, &nested)) return -1;
	*nested_id = nested.out_hwpt_id;
	*failed = NULL;
	return 0;
}

#endif
