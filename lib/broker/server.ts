/**
 * The broker: holds the relay (and, on a kernel host, the device fds and the FFI) and serves VMM-side clients over
 * Unix sockets with the protocol in `protocol.ts`.
 *
 * Isolation. Each listener serves a configured set of guest domains (ATTACH) and named devices (OPEN); its socket's
 * file mode is the OS-level ACL, so one socket per VMM gives each VMM its own domains. A guest domain belongs to one
 * connection at a time: a connection cannot ATTACH in a domain another connection or a named device is in, so no
 * client's invalidation ever reaches another client's device. Each connection owns the devices it attached; they
 * are released when it closes. Named devices belong to the broker's caller and survive every connection.
 *
 * Outcomes. Every invalidation is remembered with the connection that sent it; whichever drain sends it (that
 * client's SYNC, another client's SYNC on a shared named device, anyone's BIND barrier), its failure is kept for its
 * own connection, and a SYNC reports all and only that connection's outcomes since its previous SYNC.
 *
 * Survival. Caps on connections, devices per connection and invalidations pending per connection, each answered
 * with its own errno; a connection that sends no frame within `handshakeMs`, holds no device and is idle past
 * `idleMs`, or does not read its answers for `stallMs`, is closed; an `accept()` error (EMFILE, ENFILE) is retried
 * after a back-off and never ends the broker. Nothing grows with the number of connections served: a closed
 * connection leaves no state behind.
 *
 * @module
 */
import { decodeSvmBind2017, decodeTlbInvalidate2017 } from "../compile/wire2017.ts";
import type { PasidOrRid } from "../request/request.ts";
import { UnsupportedError } from "../kernel/errors.ts";
import { type RelayHost, type RelayPlugin, relayPlugin } from "../plugin/plugin.ts";
import { Memfd, type MemfdChannel, MemfdListener } from "../kernel/memfd.ts";
import {
  BrokerErrno,
  BrokerOp,
  decodeAttach,
  decodeMapMemory,
  decodeOpen,
  decodeUnbind,
  encodeFrame,
  errorPayload,
  type Frame,
  FrameError,
  takeFrames,
  tokenHex,
  u32s,
} from "./protocol.ts";

/** Counters, for tests and logs (all monotonic but `live`). */
export interface BrokerStats {
  /** Connections accepted (refused ones included). */
  connections: number;
  /** Connections closed. */
  closed: number;
  /** Connections open now. */
  live: number;
  /** Frames received. */
  frames: number;
  /** Frames answered with an error. */
  errors: number;
  /** Connections refused at the connection cap. */
  refusedConnections: number;
  /** Connections closed by the handshake, idle or stall timeout. */
  timedOut: number;
  /** `accept()` failures survived (EMFILE, ENFILE, ...). */
  acceptErrors: number;
}

/** The broker's caps and timeouts. */
export interface BrokerLimits {
  /** Connections open at once (default 64); one more is answered EUSERS and closed. */
  readonly maxConnections?: number;
  /** Devices (attached and opened) per connection (default 16); one more is ENOSPC. */
  readonly maxDevicesPerConnection?: number;
  /** Invalidations per connection that no SYNC has reported yet (default 4096); one more is ENOBUFS. */
  readonly maxPendingPerConnection?: number;
  /** A new connection's first complete frame must come within this (default 10 s). */
  readonly handshakeMs?: number;
  /** A connection holding no device and no guest RAM is closed after this long without a frame (default 60 s). */
  readonly idleMs?: number;
  /** A connection whose answer could not be written for this long (it does not read) is closed (default 10 s). */
  readonly stallMs?: number;
  /** The longest back-off after an `accept()` error (default 1 s; it starts at 10 ms and doubles). */
  readonly maxAcceptBackoffMs?: number;
  /** Guest-RAM mappings (MAP_MEMORY) the owning connection holds at once (default 64); one more is EMFILE. */
  readonly maxMappingsPerConnection?: number;
}

/** What one listener serves. */
export interface ListenerScope {
  /** Guest domains its clients may ATTACH devices in ("any": every domain no named device is in). Default "any". */
  readonly domains?: Iterable<number> | "any";
  /** Named devices its clients may OPEN ("all" or a list of names). Default "all". */
  readonly devices?: Iterable<string> | "all";
}

/** Options of {@linkcode Broker}. */
export interface BrokerOptions {
  /** Devices the broker's caller made (`serve --device`): any connection whose listener lists them may open them. */
  readonly named?: ReadonlyMap<string, RelayPlugin>;
  /** Caps per broker and per connection (each defaults to the broker's built-in limit). */
  readonly limits?: BrokerLimits;
  /**
   * Accept guest RAM as memfds (MAP_MEMORY): the name of the memfd socket to create (ending `.memfd.sock`), which the
   * shim puts in its own private directory (`NativeShim.fdpassDir`, mode 0700: the VMM runs as the broker's user).
   * Needs a kernel host (`RelayHost.kernel`).
   */
  readonly memfdSocket?: string;
}

/** Memfds received and not yet claimed by a MAP_MEMORY: at most this many, the oldest closed first. */
const MAX_UNCLAIMED_MEMFDS = 64;

/** A device as the broker tracks it: its plugin, who sent each of its unreported invalidations, what is bound. */
interface TrackedDevice {
  readonly plugin: RelayPlugin;
  readonly named: boolean;
  /** Sequence number → the connection that sent it and the request id it gave. */
  readonly inflight: Map<number, { readonly conn: Connection; readonly request: number }>;
  /** PASIDs bound through the broker (an UNBIND of anything else is ENOENT). */
  readonly bound: Set<PasidOrRid>;
}

/** One client connection's state; dropped whole when it closes. */
interface Connection {
  readonly conn: Deno.Conn;
  readonly scope: ResolvedScope;
  /** Handle → device. */
  readonly handles: Map<number, TrackedDevice>;
  /** Guest domains this connection's attached devices are in, with a count. */
  readonly domains: Map<number, number>;
  /** Devices (its own and named) it has invalidations in flight on. */
  readonly touched: Set<TrackedDevice>;
  /** Its invalidations sent but not yet reported: in flight plus failed-unreported. */
  pending: number;
  /** Guest RAM it had mapped (MAP_MEMORY): unmapped and closed when it closes. */
  readonly memory: { readonly iova: number; readonly length: number; readonly memfd: Memfd }[];
  /** Its failures not yet reported: request id and sequence number. */
  readonly failures: { readonly request: number; readonly seq: number; readonly errno: number }[];
  nextHandle: number;
  framesSeen: number;
  readonly openedAt: number;
  lastFrameAt: number;
  /** When the answer being written started (0: none). */
  writingSince: number;
  closing: boolean;
}

interface ResolvedScope {
  readonly domains: ReadonlySet<number> | "any";
  readonly devices: ReadonlySet<string> | "all";
}

const DEFAULTS: Required<BrokerLimits> = {
  maxConnections: 64,
  maxDevicesPerConnection: 16,
  maxPendingPerConnection: 4096,
  handshakeMs: 10_000,
  idleMs: 60_000,
  stallMs: 10_000,
  maxAcceptBackoffMs: 1000,
  maxMappingsPerConnection: 64,
};

/** Syncs between resets of the in-process host's coverage record (a test aid that grows with distinct ranges). */
const COVERAGE_RESET_SYNCS = 1024;

/**
 * A broker: one host, its named devices, and the listeners serving clients.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Broker } from "./server.ts";
 * import { BrokerClient } from "./client.ts";
 * import { RelayHost } from "../plugin/plugin.ts";
 * const dir = await Deno.makeTempDir();
 * using host = RelayHost.inProcess();
 * const broker = new Broker(host);
 * const listener = Deno.listen({ transport: "unix", path: `${dir}/vm1.sock` });
 * const served = broker.serve(listener, { domains: [1, 2] });
 * const client = await BrokerClient.connect(`${dir}/vm1.sock`);
 * const dev = await client.attach(1);
 * await dev.invalidate({ op: "invalidate", domain: 1, scope: { kind: "all" } });
 * assert.equal((await dev.sync()).ok, true);
 * await assert.rejects(client.attach(3), /not served/); // domain 3 is not this listener's
 * await client[Symbol.asyncDispose]();
 * listener.close();
 * await served;
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Broker {
  /** Counters. */
  readonly stats: BrokerStats = {
    connections: 0,
    closed: 0,
    live: 0,
    frames: 0,
    errors: 0,
    refusedConnections: 0,
    timedOut: 0,
    acceptErrors: 0,
  };
  readonly #host: RelayHost;
  readonly #limits: Required<BrokerLimits>;
  readonly #named = new Map<string, TrackedDevice>();
  /** Guest domains of named devices: no connection may attach in them. */
  readonly #reserved = new Set<number>();
  /** Guest domain → the connection whose devices are in it. */
  readonly #claims = new Map<number, Connection>();
  readonly #live = new Set<Connection>();
  #syncs = 0;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  readonly #memfdListener: MemfdListener | undefined;
  readonly #memfdChannels: MemfdChannel[] = [];
  /** Token (hex) → a memfd received with it, oldest first. */
  readonly #unclaimed = new Map<string, Memfd>();
  /**
   * The connection whose MAP_MEMORY mappings the guest-RAM IOAS holds. That IOAS is the stage 2 of every device of
   * the broker, whoever attached it: a second connection mapping memory there would place its pages under the other
   * connections' devices (where their guests' DMA lands) and reach theirs with its own devices. So guest RAM has one
   * owner at a time, on a listener that serves the whole broker.
   */
  #ramOwner: Connection | undefined;

  /** A broker over `host`'s devices, with named devices and limits from `options`; `serve` it on a listener. */
  constructor(host: RelayHost, options: BrokerOptions = {}) {
    this.#host = host;
    this.#limits = { ...DEFAULTS, ...options.limits };
    for (const [name, plugin] of options.named ?? []) {
      this.#named.set(name, { plugin, named: true, inflight: new Map(), bound: new Set() });
      this.#reserved.add(plugin.config.domain);
    }
    if (options.memfdSocket !== undefined) {
      if (!host.iommufd || !host.ioas) {
        throw new UnsupportedError("map-memory", "a memfd socket needs a kernel host (RelayHost.kernel)");
      }
      this.#memfdListener = MemfdListener.listen(host.iommufd.shim, options.memfdSocket);
    }
  }

  /** Close the memfd socket and every memfd received and not mapped (mapped ones go with their connections). */
  closeMemfdSocket(): void {
    for (const c of this.#memfdChannels.splice(0)) c[Symbol.dispose]();
    for (const m of this.#unclaimed.values()) m[Symbol.dispose]();
    this.#unclaimed.clear();
    this.#memfdListener?.[Symbol.dispose]();
  }

  /**
   * Take everything waiting on the memfd socket, without waiting: new connections, and each memfd with its token.
   * A client sends its memfd before the MAP_MEMORY frame, so by the time the frame is handled the message is there.
   */
  #collectMemfds(): void {
    const listener = this.#memfdListener!;
    for (let c = listener.tryAccept(); c; c = listener.tryAccept()) {
      // Each is an fd of the broker's: as many as connections may be open, the newest refused beyond that.
      if (this.#memfdChannels.length >= this.#limits.maxConnections) c[Symbol.dispose]();
      else this.#memfdChannels.push(c);
    }
    for (const channel of [...this.#memfdChannels]) {
      for (;;) {
        let r: ReturnType<typeof channel.shim.fdpassRecv>;
        try {
          r = channel.shim.fdpassRecv(channel.fd);
        } catch {
          continue; // not one memfd: the shim closed what came and refused it; the next message may be fine
        }
        if (typeof r === "number") {
          if (r !== -11 /* EAGAIN */) {
            channel[Symbol.dispose](); // the peer closed (or the socket failed): drop it
            this.#memfdChannels.splice(this.#memfdChannels.indexOf(channel), 1);
          }
          break;
        }
        const memfd = Memfd.received(channel.shim, r.fd);
        const token = tokenHex(r.payload);
        if (r.payload.byteLength !== 16 || this.#unclaimed.has(token)) {
          memfd[Symbol.dispose]();
          continue;
        }
        this.#unclaimed.set(token, memfd);
        if (this.#unclaimed.size > MAX_UNCLAIMED_MEMFDS) {
          const [oldest, m] = this.#unclaimed.entries().next().value!;
          this.#unclaimed.delete(oldest);
          m[Symbol.dispose]();
        }
      }
    }
  }

  /** MAP_MEMORY: map the memfd sent with the token into the guest-RAM IOAS; the connection owns the mapping. */
  #mapMemory(c: Connection, f: Frame): Uint8Array {
    const { token, iova } = decodeMapMemory(f.payload);
    if (c.scope.domains !== "any" || c.scope.devices !== "all") {
      throw new FrameError(
        BrokerErrno.EACCES,
        "MAP_MEMORY changes the guest RAM every device of the broker translates through: only a listener serving the " +
          "whole broker may",
        false,
      );
    }
    if (this.#ramOwner !== undefined && this.#ramOwner !== c) {
      throw new FrameError(BrokerErrno.EBUSY, "another connection holds the guest RAM mappings", false);
    }
    if (c.memory.length >= this.#limits.maxMappingsPerConnection) {
      throw new FrameError(
        BrokerErrno.EMFILE,
        `a connection holds ${this.#limits.maxMappingsPerConnection} guest RAM mappings at most`,
        false,
      );
    }
    if (!this.#memfdListener) {
      throw new FrameError(
        BrokerErrno.EOPNOTSUPP,
        "this broker has no memfd socket (BrokerOptions.memfdSocket)",
        false,
      );
    }
    this.#collectMemfds();
    const memfd = this.#unclaimed.get(token);
    if (!memfd) throw new FrameError(BrokerErrno.ENOENT, "no memfd was sent with this token", false);
    this.#unclaimed.delete(token);
    let mapped: number;
    try {
      mapped = this.#host.ioas!.mapFile(memfd, { iova });
    } catch (e) {
      memfd[Symbol.dispose]();
      throw e;
    }
    c.memory.push({ iova: mapped, length: memfd.size, memfd });
    this.#ramOwner = c;
    const answer = new Uint8Array(16);
    const v = new DataView(answer.buffer);
    v.setBigUint64(0, BigInt(mapped), true);
    v.setBigUint64(8, BigInt(memfd.size), true);
    return answer;
  }

  /** Serve `listener` until it is closed; `scope` is what its clients may reach. */
  async serve(listener: Deno.Listener, scope: ListenerScope = {}): Promise<void> {
    const resolved: ResolvedScope = {
      domains: scope.domains === undefined || scope.domains === "any" ? "any" : new Set(scope.domains),
      devices: scope.devices === undefined || scope.devices === "all" ? "all" : new Set(scope.devices),
    };
    this.#startSweeper();
    const served = new Set<Promise<void>>();
    let backoff = 0;
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoff = 0;
      } catch (e) {
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break; // closed
        // EMFILE / ENFILE and the like: connections wait in the backlog until fds are free again (the timeouts
        // free them); the broker never exits because of a client.
        this.stats.acceptErrors++;
        backoff = Math.min(this.#limits.maxAcceptBackoffMs, Math.max(10, backoff * 2));
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      this.stats.connections++;
      if (this.#live.size >= this.#limits.maxConnections) {
        this.stats.refusedConnections++;
        this.stats.closed++;
        const p = this.#refuse(conn);
        served.add(p);
        p.finally(() => served.delete(p));
        continue;
      }
      const p = this.#serveClient(conn, resolved).catch(() => {}).finally(() => served.delete(p));
      served.add(p);
    }
    // The listener is closed (the broker stops): its connections go too, or a client could hold the stop forever.
    for (const c of this.#live) {
      if (c.scope !== resolved) continue;
      c.closing = true;
      try {
        c.conn.close();
      } catch { /* closed */ }
    }
    await Promise.allSettled([...served]);
    if (this.#live.size === 0) this.#stopSweeper();
  }

  /** Connections open now. */
  get liveConnections(): number {
    return this.#live.size;
  }

  async #refuse(conn: Deno.Conn): Promise<void> {
    try {
      const message = `the broker serves ${this.#limits.maxConnections} connections at most`;
      await conn.write(
        encodeFrame({ op: BrokerOp.ERROR, device: 0, request: 0, payload: errorPayload(BrokerErrno.EUSERS, message) }),
      );
    } catch { /* gone already */ }
    try {
      conn.close();
    } catch { /* closed */ }
  }

  #startSweeper(): void {
    if (this.#sweeper !== undefined) return;
    const l = this.#limits;
    const every = Math.max(5, Math.floor(Math.min(l.handshakeMs, l.idleMs, l.stallMs) / 4));
    const sweeper = setInterval(() => this.#sweep(), every);
    Deno.unrefTimer(sweeper as unknown as number);
    this.#sweeper = sweeper;
  }

  #stopSweeper(): void {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** Close connections past their handshake, idle or stall deadline. */
  #sweep(): void {
    const now = performance.now(), l = this.#limits;
    for (const c of this.#live) {
      const late = (c.framesSeen === 0 && now - c.openedAt > l.handshakeMs) ||
        // A connection holding guest RAM holds every device's stage 2: closing it for silence would unmap it.
        (c.handles.size === 0 && c.memory.length === 0 && now - c.lastFrameAt > l.idleMs) ||
        (c.writingSince !== 0 && now - c.writingSince > l.stallMs);
      if (!late || c.closing) continue;
      c.closing = true;
      this.stats.timedOut++;
      // Best effort: a client that reads learns why; one that does not is closed all the same.
      c.conn.write(
        encodeFrame({
          op: BrokerOp.ERROR,
          device: 0,
          request: 0,
          payload: errorPayload(BrokerErrno.ETIMEDOUT, "closed: no frame in time, or the answers are not read"),
        }),
      ).catch(() => {});
      try {
        c.conn.close();
      } catch { /* closed */ }
    }
  }

  async #serveClient(conn: Deno.Conn, scope: ResolvedScope): Promise<void> {
    const now = performance.now();
    const c: Connection = {
      conn,
      scope,
      handles: new Map(),
      domains: new Map(),
      touched: new Set(),
      memory: [],
      pending: 0,
      failures: [],
      nextHandle: 1,
      framesSeen: 0,
      openedAt: now,
      lastFrameAt: now,
      writingSince: 0,
      closing: false,
    };
    this.#live.add(c);
    this.stats.live = this.#live.size;
    let buffered: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(8192);
    try {
      for (;;) {
        const n = await conn.read(chunk).catch(() => null);
        if (n === null || c.closing) break;
        const joined = new Uint8Array(buffered.byteLength + n);
        joined.set(buffered);
        joined.set(chunk.subarray(0, n), buffered.byteLength);
        let frames: Frame[];
        try {
          ({ frames, rest: buffered } = takeFrames(joined));
        } catch (e) {
          const fe = e as FrameError;
          await this.#send(c, {
            op: BrokerOp.ERROR,
            device: 0,
            request: 0,
            payload: errorPayload(fe.errno, fe.message),
          });
          this.stats.errors++;
          break; // framing is lost: close this client only
        }
        for (const f of frames) {
          if (c.closing) break;
          c.framesSeen++;
          c.lastFrameAt = performance.now();
          this.stats.frames++;
          let answer: Uint8Array;
          try {
            answer = this.#handle(c, f);
          } catch (e) {
            this.stats.errors++;
            const errno = e instanceof FrameError ? e.errno : errnoOf(e);
            await this.#send(c, {
              op: BrokerOp.ERROR,
              device: f.device,
              request: f.request,
              payload: errorPayload(errno, (e as Error).message),
            });
            continue;
          }
          await this.#send(c, { op: f.op | 0x80, device: f.device, request: f.request, payload: answer });
        }
      }
    } finally {
      this.#release(c);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  }

  async #send(c: Connection, f: Frame): Promise<void> {
    c.writingSince = performance.now();
    try {
      await c.conn.write(encodeFrame(f));
    } catch { /* the client went away; the read loop ends */ }
    c.writingSince = 0;
  }

  /** One request; returns the answer's payload or throws the refusal. */
  #handle(c: Connection, f: Frame): Uint8Array {
    switch (f.op) {
      case BrokerOp.ATTACH:
        return this.#attach(c, f);
      case BrokerOp.OPEN:
        return this.#open(c, f);
      case BrokerOp.MAP_MEMORY:
        return this.#mapMemory(c, f);
    }
    const d = c.handles.get(f.device);
    if (!d) throw new FrameError(BrokerErrno.ENOENT, `device ${f.device} is not attached on this connection`, false);
    const domain = d.plugin.config.domain;
    switch (f.op) {
      case BrokerOp.INVALIDATE: {
        if (c.pending >= this.#limits.maxPendingPerConnection) {
          throw new FrameError(
            BrokerErrno.ENOBUFS,
            `${this.#limits.maxPendingPerConnection} invalidations are pending on this connection: SYNC first`,
            false,
          );
        }
        const seq = d.plugin.submit(decodeTlbInvalidate2017(f.payload, domain))!;
        d.inflight.set(seq, { conn: c, request: f.request });
        c.touched.add(d);
        c.pending++;
        return u32s(seq);
      }
      case BrokerOp.BIND: {
        const bind = decodeSvmBind2017(f.payload, domain);
        d.plugin.submit(bind);
        d.bound.add(bind.pasid);
        return new Uint8Array(0);
      }
      case BrokerOp.UNBIND: {
        const pasid = decodeUnbind(f.payload);
        if (!d.bound.has(pasid)) {
          throw new FrameError(BrokerErrno.ENOENT, `PASID ${pasid} is not bound on device ${f.device}`, false);
        }
        d.plugin.submit({ op: "unbind", domain, pasid });
        d.bound.delete(pasid);
        return new Uint8Array(0);
      }
      case BrokerOp.SYNC:
        return this.#sync(c);
      case BrokerOp.DETACH:
        this.#drop(c, f.device, d);
        return new Uint8Array(0);
      default:
        throw new FrameError(BrokerErrno.EINVAL, `unknown op ${f.op}`, false);
    }
  }

  #roomForDevice(c: Connection): void {
    if (c.handles.size >= this.#limits.maxDevicesPerConnection) {
      throw new FrameError(
        BrokerErrno.ENOSPC,
        `a connection holds ${this.#limits.maxDevicesPerConnection} devices at most: DETACH one first`,
        false,
      );
    }
  }

  #attach(c: Connection, f: Frame): Uint8Array {
    const { domain, kind } = decodeAttach(f.payload);
    this.#roomForDevice(c);
    if (c.scope.domains !== "any" && !c.scope.domains.has(domain)) {
      throw new FrameError(BrokerErrno.EACCES, `guest domain ${domain} is not served on this socket`, false);
    }
    if (this.#reserved.has(domain)) {
      throw new FrameError(BrokerErrno.EBUSY, `guest domain ${domain} is a named device's`, false);
    }
    const holder = this.#claims.get(domain);
    if (holder !== undefined && holder !== c) {
      throw new FrameError(BrokerErrno.EBUSY, `guest domain ${domain} is another connection's`, false);
    }
    const plugin = relayPlugin.create(this.#host, {
      domain,
      device: kind === 0 ? { kind: "model" } : { kind: "mock", pasid: true },
    });
    this.#claims.set(domain, c);
    c.domains.set(domain, (c.domains.get(domain) ?? 0) + 1);
    const handle = c.nextHandle++;
    c.handles.set(handle, { plugin, named: false, inflight: new Map(), bound: new Set() });
    return u32s(handle);
  }

  #open(c: Connection, f: Frame): Uint8Array {
    const name = decodeOpen(f.payload);
    this.#roomForDevice(c);
    const served = c.scope.devices === "all"
      ? [...this.#named.keys()]
      : [...c.scope.devices].filter((n) => this.#named.has(n));
    const d = served.includes(name) ? this.#named.get(name) : undefined;
    if (!d || d.plugin.state !== "attached") {
      throw new FrameError(
        BrokerErrno.ENOENT,
        `no device named '${name}' (known: ${served.join(", ") || "none"})`,
        false,
      );
    }
    const handle = c.nextHandle++;
    c.handles.set(handle, d);
    return u32s(handle, d.plugin.config.domain);
  }

  /**
   * SYNC: drain every device this connection holds or sent to, then report its own failures since its previous
   * SYNC (also those another connection's drain sent and attributed to it).
   */
  #sync(c: Connection): Uint8Array {
    const devices = new Set<TrackedDevice>([...c.handles.values(), ...c.touched]);
    let ioctls = 0;
    for (const d of devices) ioctls += this.#drain(d);
    c.touched.clear();
    const failures = c.failures.sort((a, b) => a.seq - b.seq);
    const first = failures[0];
    const answer = u32s(failures.length ? 0 : 1, first?.request ?? 0, failures.length, ioctls, first?.errno ?? 0);
    c.pending -= failures.length;
    failures.length = 0;
    if (++this.#syncs % COVERAGE_RESET_SYNCS === 0) this.#host.model?.resetCoverage();
    return answer;
  }

  /** Drain one device and hand each of its invalidations' outcomes to the connection that sent it; returns ioctls. */
  #drain(d: TrackedDevice): number {
    if (d.plugin.state !== "attached") return 0;
    const report = d.plugin.drain();
    for (const failure of report.failures) {
      const owner = d.inflight.get(failure.seq);
      if (!owner) continue;
      d.inflight.delete(failure.seq);
      owner.conn.failures.push({ request: owner.request, seq: failure.seq, errno: failure.errno });
    }
    // Everything else this device had in flight was sent and succeeded: a drain sends all of it.
    for (const { conn } of d.inflight.values()) conn.pending--;
    d.inflight.clear();
    return report.ioctls;
  }

  /** DETACH: drop a handle; an attached device is released (its domain too, with its last device). */
  #drop(c: Connection, handle: number, d: TrackedDevice): void {
    c.handles.delete(handle);
    if (d.named) return;
    this.#forgetInflight(d, c);
    c.touched.delete(d);
    d.plugin[Symbol.dispose]();
    const domain = d.plugin.config.domain;
    const n = (c.domains.get(domain) ?? 1) - 1;
    if (n > 0) c.domains.set(domain, n);
    else {
      c.domains.delete(domain);
      if (this.#claims.get(domain) === c) this.#claims.delete(domain);
    }
  }

  /** Forget `c`'s invalidations in flight on `d` (they were or will be sent; nobody is left to tell). */
  #forgetInflight(d: TrackedDevice, c: Connection): void {
    for (const [seq, owner] of d.inflight) {
      if (owner.conn !== c) continue;
      d.inflight.delete(seq);
      c.pending--;
    }
  }

  /** A connection closed: release its devices, domains and every record of it. */
  #release(c: Connection): void {
    if (!this.#live.delete(c)) return;
    for (const [handle, d] of [...c.handles]) {
      try {
        this.#drop(c, handle, d);
      } catch { /* a failed release must not keep the rest */ }
    }
    for (const d of c.touched) this.#forgetInflight(d, c);
    c.touched.clear();
    for (const m of c.memory.splice(0)) {
      try {
        this.#host.ioas!.unmap(m.iova, m.length);
      } catch { /* the IOAS is gone with the host */ }
      m.memfd[Symbol.dispose]();
    }
    if (this.#ramOwner === c) this.#ramOwner = undefined;
    c.failures.length = 0;
    for (const domain of c.domains.keys()) if (this.#claims.get(domain) === c) this.#claims.delete(domain);
    this.stats.closed++;
    this.stats.live = this.#live.size;
    c.closing = true;
    // The in-process host keeps coverage of destroyed targets for tests; a long-lived broker must not.
    this.#host.model?.resetCoverage();
  }
}

function errnoOf(e: unknown): number {
  const errno = (e as { errno?: unknown })?.errno;
  // KernelError carries the host's errno; request and record errors are the client's: EINVAL.
  return typeof errno === "number" && errno > 0 && errno < 4096 ? errno : BrokerErrno.EINVAL;
}

/** Options of {@linkcode serveBroker}: the broker's and the one listener's. */
export interface ServeOptions extends BrokerOptions, ListenerScope {}

/**
 * Serve one listener with a broker of its own until the listener closes; returns the broker's counters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serveBroker } from "./server.ts";
 * import { RelayHost } from "../plugin/plugin.ts";
 * const dir = await Deno.makeTempDir();
 * using host = RelayHost.inProcess();
 * const listener = Deno.listen({ transport: "unix", path: `${dir}/relay.sock` });
 * const done = serveBroker(listener, host, { limits: { maxConnections: 8 } });
 * listener.close();
 * assert.equal((await done).connections, 0);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function serveBroker(
  listener: Deno.Listener,
  host: RelayHost,
  options: ServeOptions = {},
): Promise<BrokerStats> {
  const broker = new Broker(host, options);
  await broker.serve(listener, options);
  return broker.stats;
}
