/**
 * The VMM side of the broker: a client that needs no FFI permission — only the socket. Requests are sent one at a
 * time and answered in order.
 *
 * @module
 */
import { encodeSvmBind2017, encodeTlbInvalidate2017 } from "../compile/wire2017.ts";
import type { BindRequest, InvalidateRequest, PasidOrRid } from "../request/request.ts";
import type { Memfd, MemfdChannel } from "../kernel/memfd.ts";
import {
  BrokerErrno,
  BrokerOp,
  decodeError,
  encodeFrame,
  encodeMapMemory,
  type Frame,
  takeFrames,
  u32s,
} from "./protocol.ts";

/**
 * An error the broker answered.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BrokerError, brokerError } from "./client.ts";
 * const e = brokerError(16, "guest domain 2 is another connection's");
 * assert.ok(e instanceof BrokerError && e.errno === 16);
 * ```
 */
export class BrokerError extends Error {
  /** Always `BrokerError`. */
  override name = "BrokerError";
  /** The broker's refusal: its errno and message. */
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Which of the broker's caps a {@linkcode BrokerLimitError} hit. */
export type BrokerLimit =
  | "connections"
  | "devices-per-connection"
  | "pending-per-connection"
  | "mappings-per-connection";

/**
 * The broker refused because one of its caps was reached.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BrokerLimitError, brokerError } from "./client.ts";
 * const e = brokerError(105, "4096 invalidations are pending on this connection: SYNC first");
 * assert.ok(e instanceof BrokerLimitError && e.limit === "pending-per-connection");
 * ```
 */
export class BrokerLimitError extends BrokerError {
  /** Always `BrokerLimitError`. */
  override name = "BrokerLimitError";
  /** A cap the broker enforces was reached: which one, its errno and message. */
  constructor(readonly limit: BrokerLimit, errno: number, message: string) {
    super(errno, message);
  }
}

const LIMITS: Record<number, BrokerLimit> = {
  [BrokerErrno.EUSERS]: "connections",
  [BrokerErrno.ENOSPC]: "devices-per-connection",
  [BrokerErrno.ENOBUFS]: "pending-per-connection",
  [BrokerErrno.EMFILE]: "mappings-per-connection",
};

/** The typed error for an error frame's errno and message (see {@linkcode BrokerErrno}). */
export function brokerError(errno: number, message: string): BrokerError {
  const limit = LIMITS[errno];
  return limit ? new BrokerLimitError(limit, errno, message) : new BrokerError(errno, message);
}

/** The outcome of a remote sync. */
export interface RemoteSync {
  /** Every invalidation of this connection since its previous SYNC reached the host. */
  readonly ok: boolean;
  /** The request id of the earliest failed invalidation (0 if none). */
  readonly firstFailedRequest: number;
  /** How many of them failed. */
  readonly failures: number;
  /** Host ioctls the broker made for this sync's flush. */
  readonly hostIoctls: number;
  /** The host's errno for the earliest failed invalidation (0 if none). */
  readonly firstErrno: number;
}

/**
 * A connection to a broker.
 *
 * @example
 * ```ts ignore
 * // Needs a broker listening on the socket (`cli/main.ts serve`); tests/broker/ runs this for real.
 * await using relay = await BrokerClient.connect("/run/iommu-relay.sock");
 * const dev = await relay.attach(1);
 * await dev.invalidate({ op: "invalidate", domain: 1, scope: { kind: "all" } });
 * const sync = await dev.sync();
 * if (!sync.ok) throw new Error(`invalidation failed on the host: errno ${sync.firstErrno}`);
 * ```
 */
export class BrokerClient implements AsyncDisposable {
  #buffered: Uint8Array = new Uint8Array(0);
  #request = 0;
  private constructor(readonly conn: Deno.Conn) {}

  /** Connect to the broker's unix socket at `path`. */
  static async connect(path: string): Promise<BrokerClient> {
    return new BrokerClient(await Deno.connect({ transport: "unix", path }));
  }

  /** Send one frame and wait for its answer. */
  async call(op: number, device: number, payload: Uint8Array = new Uint8Array(0)): Promise<Frame> {
    const request = ++this.#request;
    await this.conn.write(encodeFrame({ op, device, request, payload }));
    for (;;) {
      const { frames, rest } = takeFrames(this.#buffered);
      this.#buffered = rest;
      // Request 0 is the broker speaking for the connection (a cap, a timeout, lost framing): it closes after it.
      const f = frames.find((x) => x.request === request || (x.request === 0 && x.op === BrokerOp.ERROR));
      if (f) {
        if (f.op === BrokerOp.ERROR) {
          const { errno, message } = decodeError(f.payload);
          throw brokerError(errno, message);
        }
        return f;
      }
      const chunk = new Uint8Array(8192);
      const n = await this.conn.read(chunk);
      if (n === null) throw new BrokerError(104, "the broker closed the connection");
      const joined = new Uint8Array(this.#buffered.byteLength + n);
      joined.set(this.#buffered);
      joined.set(chunk.subarray(0, n), this.#buffered.byteLength);
      this.#buffered = joined;
    }
  }

  /** Attach a device in guest domain `domain` (kind 0: in-process model, 1: selftest mock). */
  async attach(domain: number, kind = 0): Promise<RemoteDevice> {
    const f = await this.call(BrokerOp.ATTACH, 0, u32s(domain, kind));
    return new RemoteDevice(this, new DataView(f.payload.buffer).getUint32(0, true), domain);
  }

  /** A handle on a device the broker was started with (`cli/main.ts serve --device NAME=...`); outlives this client. */
  async open(name: string): Promise<RemoteDevice> {
    const f = await this.call(BrokerOp.OPEN, 0, new TextEncoder().encode(name));
    const v = new DataView(f.payload.buffer);
    return new RemoteDevice(this, v.getUint32(0, true), v.getUint32(4, true));
  }

  /**
   * Have the broker map guest RAM held in `memfd` at `iova` of its guest-RAM IOAS (`IOMMU_IOAS_MAP_FILE`): the memfd
   * goes over `channel` (connected to the broker's memfd socket; the shim does the SCM_RIGHTS) with a fresh random
   * token, then MAP_MEMORY names the token. The broker unmaps it when this connection closes. Returns where it was
   * mapped and how many bytes.
   */
  async mapMemory(channel: MemfdChannel, memfd: Memfd, iova: number): Promise<{ iova: number; length: number }> {
    const token = crypto.getRandomValues(new Uint8Array(16));
    channel.send(memfd, token);
    const f = await this.call(BrokerOp.MAP_MEMORY, 0, encodeMapMemory(token, iova));
    const v = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.byteLength);
    return { iova: Number(v.getBigUint64(0, true)), length: Number(v.getBigUint64(8, true)) };
  }

  /** Close the connection (the broker then forgets everything it held for it). */
  [Symbol.asyncDispose](): Promise<void> {
    try {
      this.conn.close();
    } catch { /* closed */ }
    return Promise.resolve();
  }
}

/** A device attached through the broker. */
export class RemoteDevice {
  /** A device `handle` of `client`, in guest domain `domain` (made by the client's attach or open). */
  constructor(readonly client: BrokerClient, readonly handle: number, readonly domain: number) {}

  /** Relay an invalidation in the 2017 wire format; returns the broker-side sequence number. */
  async invalidate(request: InvalidateRequest): Promise<number> {
    const f = await this.client.call(BrokerOp.INVALIDATE, this.handle, encodeTlbInvalidate2017(request));
    return new DataView(f.payload.buffer).getUint32(0, true);
  }

  /** Bind a PASID (or the RID) to a stage-1 table, in the 2017 `VFIO_IOMMU_SVM_BIND_TASK` encoding. */
  async bind(request: BindRequest): Promise<void> {
    await this.client.call(BrokerOp.BIND, this.handle, encodeSvmBind2017(request));
  }

  /** Unbind a PASID (or the RID); ENOENT when nothing is bound there. */
  async unbind(pasid: PasidOrRid): Promise<void> {
    await this.client.call(BrokerOp.UNBIND, this.handle, u32s(pasid === "rid" ? 0xffff_ffff : pasid));
  }

  /** A guest wait: the broker sends what is pending and reports this connection's outcomes since its previous SYNC. */
  async sync(): Promise<RemoteSync> {
    const f = await this.client.call(BrokerOp.SYNC, this.handle);
    const v = new DataView(f.payload.buffer);
    return {
      ok: v.getUint32(0, true) === 1,
      firstFailedRequest: v.getUint32(4, true),
      failures: v.getUint32(8, true),
      hostIoctls: v.getUint32(12, true),
      firstErrno: f.payload.byteLength >= 20 ? v.getUint32(16, true) : 0,
    };
  }

  /** Detach the device: its bindings go and its handle is no longer valid. */
  async detach(): Promise<void> {
    await this.client.call(BrokerOp.DETACH, this.handle);
  }
}
