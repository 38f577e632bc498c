import assert from "node:assert/strict";
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_UAPI,
  VfioDeviceAttachIommufdPt,
  VfioDeviceBindIommufd,
} from "../../lib/uapi/mod.ts";
import { checkBadInputs, fuzzDecoders } from "./bad_input.ts";

Deno.test("vfio: every decoder rejects bad input with a typed error", () => {
  assert.ok(checkBadInputs(VFIO_UAPI.structs) >= 15);
  assert.ok(fuzzDecoders(VFIO_UAPI.structs, 5_000, 0x7f10) > 0);
});

Deno.test("vfio: request numbers are VFIO_BASE + 18..20 on ';'", () => {
  assert.equal(VFIO_DEVICE_BIND_IOMMUFD.request, 0x3b76);
  assert.equal(VFIO_DEVICE_ATTACH_IOMMUFD_PT.request, 0x3b77);
  assert.equal(VFIO_DEVICE_DETACH_IOMMUFD_PT.request, 0x3b78);
});

Deno.test("vfio: the iommufd fd is signed, and older (shorter) argsz decodes with zeroed new fields", () => {
  const bind = VfioDeviceBindIommufd.buffer().set("iommufd", -1);
  assert.equal(bind.get("iommufd"), -1);
  // A 6.6-era attach (12 bytes, no pasid field) is still a valid struct.
  const old = new Uint8Array(12);
  new DataView(old.buffer).setUint32(0, 12, true);
  new DataView(old.buffer).setUint32(8, 5, true);
  assert.deepEqual(VfioDeviceAttachIommufdPt.decode(old), { argsz: 12, flags: 0, pt_id: 5, pasid: 0 });
});
