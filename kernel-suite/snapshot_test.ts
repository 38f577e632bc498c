// Save and restore on the real kernel: a relay snapshotted in one Deno process inside the test VM and restored in a
// second, each on its own iommufd with its own selftest mock devices (kernel-suite/snapshot_process.ts). The mock
// IOTLB says what each process's invalidations did: the restored half reaches the new tables, the first half is not
// done again; the page fault pending at the snapshot was answered to the old host, which the kernel confirms.
import assert from "node:assert/strict";
import { kernelTest } from "./harness.ts";

const B = 0xb2;
/** PASID p's table: IOTLB value 0xa0 + p in every slot, `zeroed` slots 0 (invalidated). */
const table = (p: number, ...zeroed: number[]) => [0, 1, 2, 3].map((s) => zeroed.includes(s) ? 0 : 0xa0 + p);

async function phase(name: "first" | "second", dir: string): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      "--no-lock",
      new URL("./snapshot_process.ts", import.meta.url).pathname,
      name,
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `${name} process failed: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

kernelTest(
  "snapshot: taken mid-workload in one process, restored in another on a fresh iommufd — the mock IOTLB shows nothing lost or done twice",
  ["selftest-pasid", "fault-queue", "selftest-trigger-iopf"],
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const first = await phase("first", dir);
      assert.deepEqual(first.first, { processed: 4, waits: 2 });
      assert.deepEqual(
        first.a,
        [table(8, 0), table(9, 1), table(10), table(11)],
        "PASIDs 8 and 9 invalidated before the snapshot",
      );
      assert.deepEqual(first.b, [B, B, B, B]);
      assert.equal(first.pendingBefore, 1);
      assert.deepEqual(first.answered, [0], "the pending page request answered SUCCESS to the old host");
      assert.ok(first.cookieAnswered);
      assert.equal(first.secondAnswer, "KernelError", "the kernel had taken that answer: a second one is refused");

      const second = await phase("second", dir);
      assert.deepEqual(second.keys, ["mock-a", "mock-b"]);
      assert.ok(second.attached, "every PASID attached to the re-created nested table");
      assert.deepEqual(
        second.before,
        { a: [table(8), table(9), table(10), table(11)], b: [B, B, B, B] },
        "new tables, as the guest's data says",
      );
      assert.deepEqual(second.rest, { processed: 4, waits: 1 });
      assert.deepEqual(
        second.a,
        [table(8), table(9), table(10, 2), table(11, 3)],
        "PASIDs 10, 11 invalidated; 8, 9 not again",
      );
      assert.deepEqual(second.b, [0, B, B, B], "mock-b's RID invalidation reached its new table");
      assert.deepEqual(second.statuses, [0x11, 0x12, 0x13]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
