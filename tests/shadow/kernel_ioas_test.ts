// Shadow mode's kernel port sends IOVAs exactly: a guest may map above 2^53, where a JavaScript number loses bits.
import assert from "node:assert/strict";
import { KernelShadowIoas } from "../../lib/shadow/kernel_ioas.ts";
import { Ioas, type Iommufd } from "../../lib/kernel/iommufd.ts";

Deno.test("kernel shadow IOAS: map and unmap of a page above 2^53 reach the kernel with the exact IOVA", () => {
  const seen: bigint[] = [];
  const iommufd = {
    call: (_i: unknown, args: { view: DataView }) => {
      seen.push(args.view.getBigUint64(8, true)); // iommu_ioas_unmap.iova
      args.view.setBigUint64(16, 4096n, true); // .length out: bytes unmapped
      return 0;
    },
    callWithPointer: (_i: unknown, args: { view: DataView }) => {
      seen.push(args.view.getBigUint64(32, true)); // iommu_ioas_map.iova
      return 0;
    },
  } as unknown as Iommufd;
  const port = new KernelShadowIoas(new Ioas(iommufd, 1), new Uint8Array(8192));
  const page = 2 ** 52 - 1; // the last 4 KiB page of the 64-bit space
  assert.equal(port.map(page, 1, 1, true, true), 0);
  assert.equal(port.unmap(page, 1), 0);
  assert.deepEqual(seen, [0xffff_ffff_ffff_f000n, 0xffff_ffff_ffff_f000n]);
});
