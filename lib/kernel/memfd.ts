/**
 * Guest RAM as a memfd, and handing it to another process: a {@linkcode Memfd} is created (sealed to its size) or
 * received by the shim, mapped into this process over a buffer window, and mapped into an IOAS by file
 * (`IOMMU_IOAS_MAP_FILE`, {@linkcode Ioas.mapFile}). Deno's sockets cannot carry file descriptors, so the shim does
 * the passing: a {@linkcode MemfdListener} and {@linkcode MemfdChannel} are Unix SOCK_SEQPACKET sockets (at a path
 * ending `.memfd.sock`) that carry one memfd per message with SCM_RIGHTS, and the shim sends and accepts only fds
 * that fstat, fstatfs and their /proc name show to be memfds.
 *
 * @module
 */
import type { NativeShim } from "../../ffi/native.ts";
import { KernelError } from "./errors.ts";

const EAGAIN = 11, EPIPE = 32;

/**
 * A memfd of the shim's table.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NativeShim } from "../../ffi/native.ts";
 * import { Memfd } from "./memfd.ts";
 * using shim = await NativeShim.load();
 * using ram = Memfd.create(shim, "guest-ram", 64 * 1024);
 * using view = ram.map();
 * view.bytes[0] = 0x5a;
 * assert.equal(ram.size, 65536);
 * assert.equal(view.bytes[0], 0x5a);
 * ```
 */
export class Memfd implements Disposable {
  #closed = false;
  private constructor(readonly shim: NativeShim, readonly fd: number, readonly size: number) {}

  /** A new memfd of `size` bytes (a multiple of 4096), zero-filled and sealed against shrinking and growing. */
  static create(shim: NativeShim, name: string, size: number): Memfd {
    if (!Number.isSafeInteger(size) || size <= 0 || size % 4096 !== 0) {
      throw new RangeError(`memfd size ${size} is not a positive multiple of 4096`);
    }
    const fd = shim.memfdCreate(name, size);
    if (fd < 0) throw new KernelError(fd, `create memfd ${name} of ${size} bytes`, "memfd_create");
    return new Memfd(shim, fd, size);
  }

  /** @internal A memfd the shim received (already in its table). */
  static received(shim: NativeShim, fd: number): Memfd {
    const size = shim.memfdSize(fd);
    if (size < 0) {
      shim.close(fd);
      throw new KernelError(size, `size of received memfd ${fd}`, "fstat");
    }
    return new Memfd(shim, fd, size);
  }

  /** Whether it was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Map `length` bytes (default: all) from byte `offset` (page aligned) into this process, over a fresh page-aligned
   * window: writes through it are the memfd's, seen by every other mapping (an IOAS's, another process's). Dispose
   * the mapping before dropping it.
   */
  map(offset = 0, length?: number): MemfdMapping {
    length ??= this.size - offset;
    if (offset % 4096 !== 0 || length <= 0 || length % 4096 !== 0 || offset + length > this.size) {
      throw new RangeError(`memfd map [${offset}, +${length}) is not page aligned inside ${this.size} bytes`);
    }
    const window = this.shim.sharedAlignedBuffer(length);
    const r = this.shim.mapFixed(window, this.fd, offset / 4096);
    if (r < 0) throw new KernelError(r, `map memfd ${this.fd}`, "mmap");
    return new MemfdMapping(this.shim, window);
  }

  /** Close the fd (mappings made with it stay valid until disposed; IOAS mappings until unmapped). */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}

/** A memfd mapped over a window of this process's memory. */
export class MemfdMapping implements Disposable {
  #mapped = true;
  /** Made by {@linkcode Memfd.map}. */
  constructor(readonly shim: NativeShim, /** The mapped bytes. */ readonly bytes: Uint8Array) {}

  /** Put private zeroed memory back over the window. */
  [Symbol.dispose](): void {
    if (!this.#mapped) return;
    this.#mapped = false;
    this.shim.unmapFixed(this.bytes);
  }
}

/** One memfd received with its message. */
export interface ReceivedMemfd {
  /** The memfd, now this process's (close it). */
  readonly memfd: Memfd;
  /** The bytes sent beside it (at most 256). */
  readonly payload: Uint8Array;
}

/**
 * A connected fd-passing socket: sends and receives memfds, one per message, with up to 256 bytes beside each.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NativeShim } from "../../ffi/native.ts";
 * import { Memfd, MemfdChannel, MemfdListener } from "./memfd.ts";
 * using shim = await NativeShim.load();
 * const name = `doc-${Deno.pid}.memfd.sock`; // in the shim's own directory (NativeShim.fdpassDir)
 * using listener = MemfdListener.listen(shim, name);
 * using client = MemfdChannel.connect(shim, name);
 * using server = await listener.accept();
 * using ram = Memfd.create(shim, "ram", 4096);
 * client.send(ram, new Uint8Array([7]));
 * const got = await server.receive();
 * using copy = got.memfd;
 * assert.deepEqual([copy.size, got.payload[0]], [4096, 7]);
 * ```
 */
export class MemfdChannel implements Disposable {
  #closed = false;
  private constructor(readonly shim: NativeShim, readonly fd: number) {}

  /** Connect to the listener at socket `name` (ending `.memfd.sock`) of the shim's fd-passing directory. */
  static connect(shim: NativeShim, name: string): MemfdChannel {
    const fd = shim.fdpassConnect(name);
    if (fd < 0) throw new KernelError(fd, `connect to ${name}`, "connect");
    return new MemfdChannel(shim, fd);
  }

  /** @internal An accepted connection. */
  static accepted(shim: NativeShim, fd: number): MemfdChannel {
    return new MemfdChannel(shim, fd);
  }

  /** Send `memfd` with `payload` (at most 256 bytes). */
  send(memfd: Memfd, payload: Uint8Array = new Uint8Array(0)): void {
    const r = this.shim.fdpassSend(this.fd, memfd.fd, payload);
    if (r < 0) throw new KernelError(r, `send memfd ${memfd.fd}`, "sendmsg");
  }

  /** Receive the next memfd, waiting up to `timeoutMs` (an EAGAIN {@linkcode KernelError} after). */
  async receive(timeoutMs = 10_000): Promise<ReceivedMemfd> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.shim.fdpassRecv(this.fd);
      if (typeof r !== "number") return { memfd: Memfd.received(this.shim, r.fd), payload: r.payload };
      if (r === -EPIPE) throw new KernelError(r, "receive memfd: the peer closed", "recvmsg");
      if (r !== -EAGAIN) throw new KernelError(r, "receive memfd", "recvmsg");
      const left = deadline - performance.now();
      if (left <= 0) throw new KernelError(-EAGAIN, `receive memfd: nothing within ${timeoutMs} ms`, "recvmsg");
      await this.shim.pollAsync(this.fd, 1, Math.min(50, Math.ceil(left)));
    }
  }

  /** Close the socket. */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}

/**
 * A listening fd-passing socket: a new socket file of mode 0600 named `name` (ending `.memfd.sock`) in the shim's own
 * directory ({@linkcode NativeShim.fdpassDir}); no caller picks where.
 */
export class MemfdListener implements Disposable {
  #closed = false;
  private constructor(readonly shim: NativeShim, readonly fd: number, readonly name: string) {}

  /** Listen at socket `name`: EADDRINUSE while another listener has it (one that is gone leaves no obstacle). */
  static listen(shim: NativeShim, name: string): MemfdListener {
    const fd = shim.fdpassListen(name);
    if (fd < 0) throw new KernelError(fd, `listen at ${name}`, "bind");
    return new MemfdListener(shim, fd, name);
  }

  /** The next connection, waiting up to `timeoutMs`. */
  async accept(timeoutMs = 10_000): Promise<MemfdChannel> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const fd = this.shim.fdpassAccept(this.fd);
      if (fd >= 0) return MemfdChannel.accepted(this.shim, fd);
      if (fd !== -EAGAIN) throw new KernelError(fd, `accept at ${this.name}`, "accept");
      const left = deadline - performance.now();
      if (left <= 0) throw new KernelError(-EAGAIN, `accept at ${this.name}: nobody within ${timeoutMs} ms`, "accept");
      await this.shim.pollAsync(this.fd, 1, Math.min(50, Math.ceil(left)));
    }
  }

  /** A connection if one is waiting, else undefined (never waits). */
  tryAccept(): MemfdChannel | undefined {
    const fd = this.shim.fdpassAccept(this.fd);
    if (fd >= 0) return MemfdChannel.accepted(this.shim, fd);
    if (fd !== -EAGAIN) throw new KernelError(fd, `accept at ${this.name}`, "accept");
    return undefined;
  }

  /** Close the socket (the socket file stays until the next listener of the name replaces it). */
  [Symbol.dispose](): void {
    if (this.#closed) return;
    this.#closed = true;
    this.shim.close(this.fd);
  }
}
