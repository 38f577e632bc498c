/**
 * The Linux guest recordings (`tests/fixtures/traces/*.qi.txt.gz`, "guest-trace QI v1") as policy workloads: each
 * recorded doorbell (one IQT write) becomes one doorbell of the requests the VT-d front end makes of its descriptors —
 * decoded from the raw words with the front end's own decoder, mapped as `VtdInvalidationQueue` maps them (a
 * PASID-IOTLB of the RID_PASID, PASID 0, is the RID's; page-selective → a range with IH as leaf; domain- and
 * PASID-selective → the whole space; a global IOTLB → every domain of the recording) — while descriptors the relay
 * does not forward (context-cache, PASID-cache, interrupt-entry-cache, device-TLB) count as descriptors and make no
 * request. One vCPU, as recorded; doorbells 20 µs apart (the recordings carry no time).
 *
 * @module
 */
import { decodeVtdDescriptor } from "../lib/frontends/vtd/descriptors.ts";
import { readVtdQueueTrace } from "../lib/testing/vtd_trace.ts";
import type { Doorbell, Workload } from "../lib/testing/workloads.ts";
import type { InvalidateRequest, Request } from "../lib/request/request.ts";

/** The VT-d recordings, by file name. */
export const VTD_RECORDINGS = ["legacy-strict", "sm-strict", "q10-flts-strict"] as const;

/** A recording's workload and the domains its invalidations name (bind each at "rid"). */
export interface RecordedWorkload {
  readonly workload: Workload;
  readonly domains: readonly number[];
  /** The recorder's own counts (`<name>.stats.json`). */
  readonly stats: {
    readonly psi_size_hist: Record<string, number>;
    readonly psi_ih: Record<string, number>;
    readonly psi_descriptors: number;
    readonly contiguous_with_prev_detail: { same_range_as_prev: number };
  };
}

const FIXTURES = new URL("../tests/fixtures/traces/", import.meta.url);

/** Read recording `name` as a workload. */
export async function recordedWorkload(name: (typeof VTD_RECORDINGS)[number]): Promise<RecordedWorkload> {
  const trace = await readVtdQueueTrace(new URL(`${name}.qi.txt.gz`, FIXTURES));
  const stats = JSON.parse(await Deno.readTextFile(new URL(`${name}.stats.json`, FIXTURES)));
  const size = trace.descriptorBits === 256 ? 32 : 16;
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  const domains = new Set<number>();
  const decoded = trace.doorbells.map((bell) =>
    bell.map((d) => {
      for (let w = 0; w < size / 8; w++) view.setBigUint64(8 * w, d.words[w], true);
      return { ...decodeVtdDescriptor(bytes, 0, size as 16 | 32) };
    })
  );
  for (const bell of decoded) {
    for (const d of bell) if (d.type === "iotlb" || d.type === "pasid-iotlb") domains.add(d.did);
  }
  const every = [...domains].sort((a, b) => a - b);
  const doorbells: Doorbell[] = decoded.map((bell, i) => {
    const requests: Request[] = [];
    for (const d of bell) {
      if (d.type === "wait") requests.push({ op: "sync" });
      else if (d.type === "iotlb" || d.type === "pasid-iotlb") {
        const rid = d.type === "iotlb" || d.pasid === 0;
        if (d.type === "iotlb" && d.granularity === "global") {
          for (const domain of every) {
            requests.push({ op: "invalidate", domain, scope: { kind: "all" }, noPasid: true });
          }
          continue;
        }
        if (d.granularity !== "page") {
          requests.push(
            rid
              ? { op: "invalidate", domain: d.did, scope: { kind: "all" }, noPasid: true }
              : { op: "invalidate", domain: d.did, scope: { kind: "pasid", pasid: d.pasid } },
          );
          continue;
        }
        const pages = 2 ** d.am, firstPage = Math.floor(d.page / pages) * pages;
        const r: InvalidateRequest = rid
          ? { op: "invalidate", domain: d.did, scope: { kind: "range", firstPage, pages }, noPasid: true, leaf: d.ih }
          : {
            op: "invalidate",
            domain: d.did,
            scope: { kind: "pasid-range", pasid: d.pasid, firstPage, pages },
            leaf: d.ih,
          };
        requests.push(r);
      }
    }
    return { at: i * 20_000, vcpu: 0, requests };
  });
  return {
    workload: { name: `recorded: ${name}`, doorbells, descriptors: trace.descriptors.length },
    domains: every,
    stats,
  };
}
