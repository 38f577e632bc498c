/**
 * The broker: holds the relay (and, on a kernel host, the device fds and the FFI) and serves VMM-side clients
 * over a Unix socket with the protocol in `protocol.ts`. Each connection owns the devices it attached; they are
 * released when it closes (also mid-batch); one client's bad frames never affect another. Named devices (`named`)
 * belong to the broker's caller: any connection may open them, and closing a connection leaves them as they are.
 *
 * @module
 */
import { decodeSvmBind2017, decodeTlbInvalidate2017 } from "../compile/wire2017.ts";
import { type RelayHost, type RelayPlugin, relayPlugin } from "../plugin/plugin.ts";
import { BrokerOp, encodeFrame, errorPayload, type Frame, FrameError, takeFrames, u32s } from "./protocol.ts";

/** Counters, for tests and logs. */
export interface BrokerStats {
  connections: number;
  closed: number;
  frames: number;
  errors: number;
}

/** Serve `listener` until it closes. Every client shares `host` (one VM). */
export async function serveBroker(
  listener: Deno.Listener,
  host: RelayHost,
  stats: BrokerStats = { connections: 0, closed: 0, frames: 0, errors: 0 },
  named: ReadonlyMap<string, RelayPlugin> = new Map(),
): Promise<BrokerStats> {
  const clients: Promise<void>[] = [];
  for await (const conn of listener) {
    stats.connections++;
    clients.push(serveClient(conn, host, stats, named).finally(() => stats.closed++));
  }
  await Promise.allSettled(clients);
  return stats;
}

async function serveClient(
  conn: Deno.Conn,
  host: RelayHost,
  stats: BrokerStats,
  named: ReadonlyMap<string, RelayPlugin>,
): Promise<void> {
  const devices = new Map<number, RelayPlugin>();
  /** Handles on named devices: not this connection's to dispose. */
  const opened = new Set<number>();
  const seqToRequest = new Map<number, number>();
  let nextHandle = 1;
  let buffered: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(8192);
  const send = async (f: Frame) => {
    try {
      await conn.write(encodeFrame(f));
    } catch { /* the client went away; the read loop ends */ }
  };
  const fail = (f: Frame, errno: number, message: string) => {
    stats.errors++;
    return send({ op: BrokerOp.ERROR, device: f.device, request: f.request, payload: errorPayload(errno, message) });
  };
  try {
    for (;;) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) break;
      const joined = new Uint8Array(buffered.byteLength + n);
      joined.set(buffered);
      joined.set(chunk.subarray(0, n), buffered.byteLength);
      let frames: Frame[];
      try {
        ({ frames, rest: buffered } = takeFrames(joined));
      } catch (e) {
        const fe = e as FrameError;
        await fail({ op: 0, device: 0, request: 0, payload: new Uint8Array(0) }, fe.errno, fe.message);
        break; // framing is lost: close this client only
      }
      for (const f of frames) {
        stats.frames++;
        const answer = (payload: Uint8Array = new Uint8Array(0)) =>
          send({ op: f.op | 0x80, device: f.device, request: f.request, payload });
        try {
          if (f.op === BrokerOp.ATTACH) {
            if (f.payload.byteLength !== 8) throw new FrameError(22, "ATTACH takes domain u32, kind u32", false);
            const v = new DataView(f.payload.buffer);
            const kind = v.getUint32(4, true);
            if (kind > 1) throw new FrameError(22, `unknown device kind ${kind}`, false);
            const plugin = relayPlugin.create(host, {
              domain: v.getUint32(0, true),
              device: kind === 0 ? { kind: "model" } : { kind: "mock", pasid: true },
            });
            const handle = nextHandle++;
            devices.set(handle, plugin);
            await answer(u32s(handle));
            continue;
          }
          if (f.op === BrokerOp.OPEN) {
            const name = f.payload.byteLength >= 1 && f.payload.byteLength <= 64
              ? new TextDecoder("utf-8", { fatal: true }).decode(f.payload)
              : undefined;
            if (name === undefined) throw new FrameError(22, "OPEN takes a device name of 1..64 bytes", false);
            const plugin = named.get(name);
            if (!plugin || plugin.state !== "attached") {
              throw new FrameError(
                2,
                `no device named '${name}' (known: ${[...named.keys()].join(", ") || "none"})`,
                false,
              );
            }
            const handle = nextHandle++;
            devices.set(handle, plugin);
            opened.add(handle);
            await answer(u32s(handle, plugin.config.domain));
            continue;
          }
          const plugin = devices.get(f.device);
          if (!plugin) throw new FrameError(2, `device ${f.device} is not attached on this connection`, false);
          switch (f.op) {
            case BrokerOp.INVALIDATE: {
              const seq = plugin.submit(decodeTlbInvalidate2017(f.payload, plugin.config.domain))!;
              seqToRequest.set(seq, f.request);
              await answer(u32s(seq));
              break;
            }
            case BrokerOp.BIND: {
              const bind = decodeSvmBind2017(f.payload, plugin.config.domain);
              plugin.submit(bind);
              await answer();
              break;
            }
            case BrokerOp.UNBIND: {
              if (f.payload.byteLength !== 4) throw new FrameError(22, "UNBIND takes pasid u32", false);
              const p = new DataView(f.payload.buffer).getUint32(0, true);
              plugin.submit({ op: "unbind", domain: plugin.config.domain, pasid: p === 0xffff_ffff ? "rid" : p });
              await answer();
              break;
            }
            case BrokerOp.SYNC: {
              plugin.submit({ op: "sync" });
              const report = plugin.drain();
              const mine = report.failures.filter((x) => seqToRequest.has(x.seq));
              const first = mine.length ? seqToRequest.get(mine[0].seq)! : 0;
              for (const s of seqToRequest.keys()) if (!mine.some((x) => x.seq === s)) seqToRequest.delete(s);
              await answer(u32s(mine.length ? 0 : 1, first, mine.length, report.ioctls));
              break;
            }
            case BrokerOp.DETACH:
              if (!opened.delete(f.device)) plugin[Symbol.dispose]();
              devices.delete(f.device);
              await answer();
              break;
            default:
              throw new FrameError(22, `unknown op ${f.op}`, false);
          }
        } catch (e) {
          const errno = e instanceof FrameError ? e.errno : 22;
          await fail(f, errno, (e as Error).message);
        }
      }
    }
  } finally {
    for (const [handle, p] of devices) if (!opened.has(handle)) p[Symbol.dispose]();
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}
