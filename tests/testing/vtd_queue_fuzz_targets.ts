// Fuzz targets for the VT-d queue models, run in a Worker by tests/testing/fuzz_deadline_test.ts (so a hang fails
// with its seed). Every input is hostile guest state: register values and queue contents. Nothing may throw — the
// queue models sit under a VMM's MMIO handler — so no thrown value counts as typed.
import { guestMemoryOver } from "../../lib/memory/guest_memory.ts";
import { RelayQueue } from "../../lib/relay/queue.ts";
import { RequestError } from "../../lib/request/request.ts";
import { FSTS, VtdDomainRouter, VtdInvalidationQueue, VtdPageRequestQueue } from "../../lib/frontends/vtd/mod.ts";
import { decodeVtdDescriptor, VtdDescriptorError } from "../../lib/frontends/vtd/descriptors.ts";
import { ModelHost } from "../../lib/host/model.ts";
import type { FuzzTarget } from "../../lib/testing/fuzz.ts";

const QBASE = 0x4000;

/** A word of the input (0 past its end). */
const u32 = (b: Uint8Array, at: number) =>
  at + 4 <= b.length ? new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, true) : 0;

/**
 * The invalidation queue: input bytes 0..15 are register writes (IQA low bits, two IQTs as signed or unsigned
 * words), the rest the queue's contents; the sink is a router with one relayed domain and a hook that refuses domain
 * 7, so sink refusals are exercised too.
 */
export function vtdQueueTarget(): FuzzTarget {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  const host = new ModelHost();
  const relay = new RelayQueue(host, { maxPendingWaits: 64 });
  relay.bind(3, "rid", { targetId: host.createTarget("vtd-s1"), format: "vtd-s1" });
  const router = new VtdDomainRouter({
    invalidate(r) {
      if (r.domain === 7) throw new RequestError("conflicting-flags", "domain", "domain 7 is refused");
    },
    invalidateEveryDomain() {},
  });
  router.assign(3, relay);
  const prq = new VtdPageRequestQueue(memory, () => {});
  return {
    name: "vtd invalidation queue",
    sizes: [48, 272, 1040, 4112],
    corpus: [corpus()],
    run(bytes) {
      ram.fill(0, QBASE, QBASE + 0x2000);
      ram.set(bytes.subarray(16, 16 + 0x2000), QBASE);
      const qi = new VtdInvalidationQueue(memory, router, {
        pageGroupResponse: (d) => void prq.guestResponse(d),
        configChanged() {},
      }, { maxWaitsPerDrain: 1 + (bytes[1] ?? 0) % 128 });
      const iqa = u32(bytes, 0);
      qi.writeIqa(QBASE | (iqa & 0xfff & ~0x7f0) | (iqa & 0x10));
      const first = u32(bytes, 4), second = u32(bytes, 8);
      const signed = (bytes[12] ?? 0) & 1;
      const r1 = qi.writeIqt(signed ? first | 0 : first & 0x7fff0);
      if (r1.error) qi.writeFsts(FSTS.IQE);
      qi.writeIqt(signed ? second | 0 : second & 0x7fff0);
    },
    typed: () => false,
  };
}

/** A queue of valid Linux-style descriptors (P-IOTLB page + wait, 128-bit) to mutate. */
function corpus(): Uint8Array {
  const b = new Uint8Array(16 + 64 * 16);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0, true); // IQA: 128-bit, one page
  v.setUint32(4, 64 * 16, true); // IQT after 64 descriptors
  for (let i = 0; i < 32; i++) {
    const at = 16 + 32 * i;
    v.setUint32(at, 0x36 | (3 << 16), true); // PASID-IOTLB page, DID 3, PASID 0
    v.setUint32(at + 8, ((0xfffdf + i) << 12) | 0x40, true);
    v.setUint32(at + 16, 0x25, true); // wait with status write
    v.setUint32(at + 20, i, true);
    v.setUint32(at + 24, 0x8000 + 4 * i, true);
  }
  return b;
}

/**
 * The page request queue: PQA/PQH writes, host faults (some outside a queue based beyond guest RAM) and guest
 * responses (decoded from the input) in the order the input gives.
 */
export function vtdPageRequestTarget(): FuzzTarget {
  const ram = new Uint8Array(1 << 16);
  const memory = guestMemoryOver(ram);
  let now = 0;
  return {
    name: "vtd page request queue",
    sizes: [64, 256, 1024],
    run(bytes) {
      const prq = new VtdPageRequestQueue(memory, () => {}, { now: () => now }, 100);
      for (let at = 0; at + 16 <= bytes.length; at += 16) {
        const op = bytes[at] % 6, a = u32(bytes, at + 4), b = u32(bytes, at + 8), c = u32(bytes, at + 12);
        if (op === 0) prq.writePqa(bytes[at + 1] & 1 ? a * 4096 + (b & 7) : (a | 0));
        else if (op === 1) prq.writePqh(a | 0);
        else if (op === 2) {
          prq.deliver({
            rid: a & 0xffff,
            ...(b & 1 ? { pasid: c & 0xfffff } : {}),
            page: (a >>> 4) * 16 + (c & 0xf),
            read: (b & 2) !== 0,
            write: (b & 4) !== 0,
            exec: false,
            priv: false,
            lastInGroup: (b & 8) !== 0,
            grpid: (b >>> 4) & 0x1ff,
            cookie: c,
          });
        } else if (op === 3) {
          const d = new Uint8Array(bytes.subarray(at, at + 16));
          d[0] = (d[0] & 0xf0) | 9;
          try {
            const r = decodeVtdDescriptor(d, 0, 16);
            if (r.type === "page-group-response") prq.guestResponse(r);
          } catch (e) {
            if (!(e instanceof VtdDescriptorError)) throw e;
          }
        } else if (op === 4) prq.pasidUnbound(a & 0xffff, b & 1 ? "rid" : c & 0xfffff);
        else {
          now += a % 1000;
          prq.expire();
        }
      }
    },
    typed: () => false,
  };
}
