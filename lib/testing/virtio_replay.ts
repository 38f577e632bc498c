/**
 * Replay of a virtio-iommu recording ("guest-trace VIRTIO-IOMMU v1", see tests/fixtures/traces) through the virtio
 * front end the way a VMM wires it: each request encoded into a request buffer with the layouts of Linux's
 * `include/uapi/linux/virtio_iommu.h` (virtio 1.2 §5.13.6), handled by `handleVirtioIommuRequest`, MAP/UNMAP onto a
 * shadowed domain per guest domain (the in-process IOAS). A VMM author can encode a recording of their own guest
 * ({@linkcode encodeVirtioRequest}) and hand the buffers to their own device model.
 *
 * Format: `seq phase kick type domain endpoint virt_start virt_end phys_start flags extra`; `-` = not applicable.
 *
 * @example Replaying a recording of your own guest kick by kick (a lazy driver's four UNMAPs and a MAP in one kick,
 * merged into one IOAS unmap), then checking the host against the guest's mappings
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseVirtioRecording, readRecordingText, VirtioReplayRig } from "./mod.ts";
 * const path = await Deno.makeTempFile({ suffix: ".txt" });
 * const lines = ["0 0 1 ATTACH 0 16 - - - -"];
 * for (let i = 0; i < 4; i++) lines.push(`${1 + i} 0 ${2 + i} MAP 0 - 0x${(0xa + i).toString(16)}000 0x${(0xa + i).toString(16)}fff 0x1000 1`);
 * for (const page of ["a", "d", "c", "b"]) lines.push(`9 0 6 UNMAP 0 - 0x${page}000 0x${page}fff - - removed=1`);
 * lines.push("13 0 6 MAP 0 - 0x9000 0x9fff 0x2000 3");
 * await Deno.writeTextFile(path, lines.join("\n"));
 * const rig = new VirtioReplayRig(2 ** 40, { batchKicks: true });
 * const result = rig.replay(parseVirtioRecording(await readRecordingText(path)));
 * assert.deepEqual(result.statuses, { 0: 10 });
 * assert.deepEqual([result.ioasMaps, result.ioasUnmaps], [5, 1]);
 * assert.deepEqual(rig.ioas(0)?.areas.all.map((a) => a.firstPage), [9]);
 * await Deno.remove(path);
 * ```
 *
 * @module
 */
import { handleVirtioIommuKick, handleVirtioIommuRequest, type VirtioIommuHooks } from "../frontends/virtio/iommu.ts";
import { shadowMapHooks } from "../frontends/virtio/shadow.ts";
import { ShadowDomain, type ShadowIoasPort } from "../shadow/domain.ts";
import { ModelIoas } from "../shadow/model_ioas.ts";
import { keyValues, splitRecording } from "./recordings.ts";

/** One recorded request. */
export interface VirtioRecordedRequest {
  readonly seq: number;
  readonly phase: number;
  readonly kick: number;
  readonly type: "ATTACH" | "DETACH" | "MAP" | "UNMAP" | "PROBE";
  readonly domain?: number;
  readonly endpoint?: number;
  readonly virtStart?: bigint;
  readonly virtEnd?: bigint;
  readonly physStart?: bigint;
  readonly flags?: number;
  readonly extra: Readonly<Record<string, string>>;
}

const opt = (s: string) => (s === "-" ? undefined : s);

/**
 * Parse a "guest-trace VIRTIO-IOMMU v1" recording.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseVirtioRecording } from "./virtio_replay.ts";
 * const [r] = parseVirtioRecording("33 2 23 UNMAP 0 - 0xffff2000 0xffff2fff - - removed=1\n");
 * assert.deepEqual([r.type, r.domain, r.virtStart, r.virtEnd, r.extra.removed], ["UNMAP", 0, 0xffff2000n, 0xffff2fffn, "1"]);
 * ```
 */
export function parseVirtioRecording(text: string): VirtioRecordedRequest[] {
  return splitRecording(text).rows.map((r) => {
    if (r.length < 10) throw new Error(`virtio recording: short line "${r.join(" ")}"`);
    const big = (s: string) => (opt(s) === undefined ? undefined : BigInt(s));
    const n = (s: string) => (opt(s) === undefined ? undefined : Number(s));
    return {
      seq: Number(r[0]),
      phase: Number(r[1]),
      kick: Number(r[2]),
      type: r[3] as VirtioRecordedRequest["type"],
      domain: n(r[4]),
      endpoint: n(r[5]),
      virtStart: big(r[6]),
      virtEnd: big(r[7]),
      physStart: big(r[8]),
      flags: n(r[9]),
      extra: keyValues(r.slice(10)),
    };
  });
}

/**
 * A request as the guest's driver lays it out in its buffer (device-readable part + the 4-byte tail), per
 * `virtio_iommu.h`; PROBE gets `probeSize` bytes of properties.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeVirtioRequest } from "./virtio_replay.ts";
 * const b = encodeVirtioRequest({ type: "UNMAP", domain: 2, virtStart: 0x1000n, virtEnd: 0x1fffn });
 * const v = new DataView(b.buffer);
 * assert.deepEqual([b.length, b[0], v.getUint32(4, true), v.getBigUint64(8, true), v.getBigUint64(16, true)], [32, 4, 2, 0x1000n, 0x1fffn]);
 * ```
 */
export function encodeVirtioRequest(
  r: Pick<VirtioRecordedRequest, "type" | "domain" | "endpoint" | "virtStart" | "virtEnd" | "physStart" | "flags">,
  probeSize = 512,
): Uint8Array {
  const sizes = { ATTACH: 24, DETACH: 24, MAP: 40, UNMAP: 32, PROBE: 4 + 4 + 64 + probeSize + 4 };
  const type = { ATTACH: 1, DETACH: 2, MAP: 3, UNMAP: 4, PROBE: 5 }[r.type];
  const b = new Uint8Array(sizes[r.type]);
  const v = new DataView(b.buffer);
  b[0] = type;
  switch (r.type) {
    case "ATTACH":
    case "DETACH":
      v.setUint32(4, r.domain ?? 0, true);
      v.setUint32(8, r.endpoint ?? 0, true);
      break;
    case "MAP":
      v.setUint32(4, r.domain ?? 0, true);
      v.setBigUint64(8, r.virtStart ?? 0n, true);
      v.setBigUint64(16, r.virtEnd ?? 0n, true);
      v.setBigUint64(24, r.physStart ?? 0n, true);
      v.setUint32(32, r.flags ?? 0, true);
      break;
    case "UNMAP":
      v.setUint32(4, r.domain ?? 0, true);
      v.setBigUint64(8, r.virtStart ?? 0n, true);
      v.setBigUint64(16, r.virtEnd ?? 0n, true);
      break;
    case "PROBE":
      v.setUint32(4, r.endpoint ?? 0, true);
      break;
  }
  return b;
}

/** What a replay did. */
export interface VirtioReplayResult {
  readonly requests: number;
  readonly kicks: number;
  /** Requests per status code. */
  readonly statuses: Readonly<Record<number, number>>;
  /** IOAS map and unmap calls made (the host calls of the shadowed domains: what a kernel host would ioctl). */
  readonly ioasMaps: number;
  readonly ioasUnmaps: number;
}

/** How the rig hands requests to the front end. */
export interface VirtioReplayOptions {
  /**
   * Hand each kick's requests over together ({@linkcode handleVirtioIommuKick}: a run of UNMAPs becomes merged IOAS
   * unmaps) instead of one request at a time. Default false.
   */
  readonly batchKicks?: boolean;
}

/**
 * The virtio front end over shadowed domains on the in-process IOAS, with the domain lifecycle of the virtio-iommu
 * specification as QEMU implements it: ATTACH creates a domain's shadow (one IOAS per domain) and moves an endpoint
 * attached elsewhere; the domain's last endpoint leaving (DETACH, or ATTACH to another domain) destroys it with its
 * mappings. MAP/UNMAP go through {@linkcode shadowMapHooks}, PROBE answers no property.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseVirtioRecording, VirtioReplayRig } from "./virtio_replay.ts";
 * const rig = new VirtioReplayRig();
 * const result = rig.replay(parseVirtioRecording([
 *   "0 0 1 ATTACH 2 16 - - - -",
 *   "1 0 2 MAP 2 - 0xffff2000 0xffff2fff 0x2089000 1",
 *   "2 0 3 UNMAP 2 - 0xffff2000 0xffff2fff - - removed=1",
 * ].join("\n")));
 * assert.deepEqual(result.statuses, { 0: 3 });
 * assert.equal(rig.ioas(2)?.areas.size, 0);
 * ```
 */
export class VirtioReplayRig {
  readonly #domains = new Map<number, { shadow: ShadowDomain; ioas: ModelIoas; endpoints: Set<number> }>();
  /** Endpoint → the domain it is attached to. */
  readonly #endpoints = new Map<number, number>();
  readonly hooks: VirtioIommuHooks;
  readonly relay = { submit: () => 0 };
  /** IOAS map calls made, over every domain. */
  ioasMaps = 0;
  /** IOAS unmap calls made, over every domain. */
  ioasUnmaps = 0;

  constructor(readonly ramBytes: number = 2 ** 40, readonly options: VirtioReplayOptions = {}) {
    const maps = shadowMapHooks((d) => this.#domains.get(d)?.shadow);
    this.hooks = {
      attach: (r) => {
        // virtio-iommu (and QEMU): an endpoint attached elsewhere is detached from that domain first.
        const old = this.#endpoints.get(r.endpoint);
        if (old !== undefined && old !== r.domain) this.#detach(r.endpoint, old);
        let domain = this.#domains.get(r.domain);
        if (!domain) {
          const ioas = new ModelIoas();
          // The host calls are counted at the IOAS, so a merged unmap counts once.
          const counted: ShadowIoasPort = {
            map: (first, pages, gpa, read, write) => (this.ioasMaps++, ioas.map(first, pages, gpa, read, write)),
            unmap: (first, pages) => (this.ioasUnmaps++, ioas.unmap(first, pages)),
          };
          const shadow = new ShadowDomain({ read: () => new Uint8Array(4096) }, ramBytes, counted);
          this.#domains.set(r.domain, domain = { shadow, ioas, endpoints: new Set() });
        }
        domain.endpoints.add(r.endpoint);
        this.#endpoints.set(r.endpoint, r.domain);
        return 0;
      },
      // An endpoint not attached to the domain is INVAL, an unknown one NOENT (as QEMU answers).
      detach: (r) => {
        const attached = this.#endpoints.get(r.endpoint);
        if (attached === undefined) return 6;
        if (attached !== r.domain) return 4;
        this.#detach(r.endpoint, r.domain);
        return 0;
      },
      ...maps,
      probe: () => 0,
    };
    if (!options.batchKicks) delete this.hooks.unmapMany;
  }

  /**
   * Detach `endpoint` from `domain`; the domain's last endpoint leaving destroys it, its mappings removed from the host
   * (QEMU frees the domain then, so a later ATTACH to the same id starts with no mapping).
   */
  #detach(endpoint: number, domain: number): void {
    this.#endpoints.delete(endpoint);
    const d = this.#domains.get(domain);
    if (!d) return;
    d.endpoints.delete(endpoint);
    if (d.endpoints.size > 0) return;
    const areas = d.shadow.areas.all;
    if (areas.length) {
      const last = areas[areas.length - 1];
      d.shadow.unmapDirectBatch([{
        firstPage: areas[0].firstPage,
        pages: last.firstPage + last.pages - areas[0].firstPage,
      }], []);
    }
    this.#domains.delete(domain);
  }

  /** The IOAS behind guest domain `domain`. */
  ioas(domain: number): ModelIoas | undefined {
    return this.#domains.get(domain)?.ioas;
  }

  /** Handle one request; returns its status (written into the buffer's tail, as the guest reads it). */
  handle(r: VirtioRecordedRequest): number {
    const buffer = encodeVirtioRequest(r);
    handleVirtioIommuRequest(buffer, this.hooks, this.relay);
    return buffer[buffer.length - 4];
  }

  /** Handle one kick's requests together; returns their statuses, as read from the buffers' tails. */
  handleKick(requests: readonly VirtioRecordedRequest[]): number[] {
    const buffers = requests.map((r) => encodeVirtioRequest(r));
    handleVirtioIommuKick(buffers, this.hooks, this.relay);
    return buffers.map((b) => b[b.length - 4]);
  }

  /**
   * Replay every request in order; `after` sees each request and its status as soon as it is written — with
   * `batchKicks`, once its whole kick was handled (the host state it sees is the kick's end).
   */
  replay(
    requests: readonly VirtioRecordedRequest[],
    after?: (r: VirtioRecordedRequest, status: number) => void,
  ): VirtioReplayResult {
    const statuses: Record<number, number> = {};
    const kicks = new Set<number>();
    const answered = (r: VirtioRecordedRequest, status: number) => {
      statuses[status] = (statuses[status] ?? 0) + 1;
      kicks.add(r.kick);
      after?.(r, status);
    };
    for (let i = 0; i < requests.length;) {
      if (!this.options.batchKicks) {
        answered(requests[i], this.handle(requests[i]));
        i++;
        continue;
      }
      let j = i + 1;
      while (j < requests.length && requests[j].kick === requests[i].kick) j++;
      const kick = requests.slice(i, j);
      const answers = this.handleKick(kick);
      for (let k = 0; k < kick.length; k++) answered(kick[k], answers[k]);
      i = j;
    }
    return {
      requests: requests.length,
      kicks: kicks.size,
      statuses,
      ioasMaps: this.ioasMaps,
      ioasUnmaps: this.ioasUnmaps,
    };
  }
}
