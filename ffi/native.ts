/**
 * The C shim's symbol table and thin typed wrappers: the only `Deno.dlopen` in iommu-relay.
 *
 * Every wrapper returns what the C function returns: a result >= 0 or `-errno`. Turning those into typed
 * errors is the caller's job (lib/kernel), so this file imports nothing else of the project.
 *
 * Parameters are `"buffer"` (a Uint8Array passed without taking its address in JavaScript, which works under a
 * path-scoped `--allow-ffi=<shim>`) and 32-bit integers: no BigInt on the hot path.
 *
 * @module
 */
import { ensureShim } from "./build.ts";

/** The ABI version of shim.c this table matches. */
export const SHIM_ABI_VERSION = 5;

const SYMBOLS = {
  relay_shim_version: { parameters: [], result: "i32" },
  relay_open: { parameters: ["buffer", "u32"], result: "i32" },
  relay_close: { parameters: ["i32"], result: "i32" },
  relay_ioctl: { parameters: ["i32", "u32", "buffer"], result: "i32" },
  relay_ioctl_with_pointer: { parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer"], result: "i32" },
  relay_ioctl_loop: { parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32"], result: "i32" },
  relay_ioctl_pair_loop: {
    parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32", "buffer", "u32"],
    result: "i32",
  },
  relay_read: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  relay_write: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  relay_poll: { parameters: ["i32", "i32", "i32"], result: "i32" },
  relay_poll_async: { name: "relay_poll", parameters: ["i32", "i32", "i32"], result: "i32", nonblocking: true },
  relay_test_address_of: { parameters: ["buffer", "buffer"], result: "i32" },
  relay_align_offset: { parameters: ["buffer", "u32"], result: "i32" },
  relay_test_echo_request: { parameters: ["u32", "buffer"], result: "i32" },
  relay_nop: { parameters: ["i32", "u32", "buffer"], result: "i32" },
  relay_map_fixed: { parameters: ["buffer", "u32", "i32", "u32"], result: "i32" },
  relay_unmap_fixed: { parameters: ["buffer", "u32"], result: "i32" },
  relay_kick_setup: { parameters: ["i32"], result: "i32" },
  relay_gettid: { parameters: [], result: "i32" },
  relay_kick: { parameters: ["i32", "i32"], result: "i32" },
  relay_deadline_timer: { parameters: ["i32", "u32", "u32"], result: "i32" },
  relay_readlink: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },
  relay_read_file: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },
  relay_list_dir: { parameters: ["buffer", "u32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The generic ioctl entry points are keyed by these symbols, which only iommu-relay's own layers import from this
 * file: the package's public exports (`mod.ts`, `./uapi`, `./plugin`, `./testing`) hand out no way to issue an
 * arbitrary ioctl — every ioctl the library makes goes through a typed kernel object.
 */
export const IOCTL: unique symbol = Symbol("iommu-relay ioctl");
/** See {@linkcode IOCTL}: ioctl with a pointer stored into the argument first. */
export const IOCTL_WITH_POINTER: unique symbol = Symbol("iommu-relay ioctl with pointer");
/** See {@linkcode IOCTL}: the in-process C loop (benchmarks). */
export const IOCTL_LOOP: unique symbol = Symbol("iommu-relay ioctl loop");
/** See {@linkcode IOCTL}: the in-process C pair loop (benchmarks). */
export const IOCTL_PAIR_LOOP: unique symbol = Symbol("iommu-relay ioctl pair loop");

/** `POLLIN`, `POLLOUT`, `POLLERR`, `POLLHUP` (asm-generic/poll.h). */
export const POLL = { IN: 0x1, OUT: 0x4, ERR: 0x8, HUP: 0x10 } as const;

/** No pointer patching: pass as `offset` to {@linkcode NativeShim.ioctlLoop}. */
export const NO_POINTER = 0xffff_ffff;

/** Raised when a shim is used after it was closed (the call would otherwise crash the process). */
export class ShimClosedError extends Error {
  override name = "ShimClosedError";
  constructor() {
    super("the native shim was closed");
  }
}

/** Raised when the library at a path is not a shim of the ABI version this file expects. */
export class ShimVersionError extends Error {
  override name = "ShimVersionError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const cString = (s: string) => encoder.encode(`${s}\0`);

/**
 * The loaded shim. Load it once per process with {@linkcode NativeShim.load} and close it last (`using`), after
 * every fd opened through it is closed.
 *
 * @example
 * ```ts
 * import { NativeShim } from "./native.ts";
 * using shim = await NativeShim.load();
 * const fd = shim.open("/dev/null");
 * console.log(shim.open("/nonexistent")); // -2 (ENOENT)
 * shim.close(fd);
 * ```
 */
export class NativeShim implements Disposable {
  /** Path of the loaded library. */
  readonly path: string;
  #lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
  #sym: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

  private constructor(path: string) {
    this.path = path;
    this.#lib = Deno.dlopen(path, SYMBOLS);
    this.#sym = this.#lib.symbols;
    const version = this.#sym.relay_shim_version();
    if (version !== SHIM_ABI_VERSION) {
      this.#lib.close();
      throw new ShimVersionError(`${path} has shim ABI ${version}, expected ${SHIM_ABI_VERSION}`);
    }
  }

  /**
   * Load the shim: from `path`, else `$IOMMU_RELAY_SHIM`, else the per-user cache (building it if needed).
   * Under a path-scoped `--allow-ffi`, pass the prebuilt path (`deno task build` prints it).
   */
  static async load(path?: string): Promise<NativeShim> {
    let p = path;
    if (p === undefined) {
      const env = await Deno.permissions.query({ name: "env", variable: "IOMMU_RELAY_SHIM" });
      if (env.state === "granted") p = Deno.env.get("IOMMU_RELAY_SHIM");
    }
    return new NativeShim(p ?? await ensureShim());
  }

  /** Load from an explicit path, synchronously. */
  static loadSync(path: string): NativeShim {
    return new NativeShim(path);
  }

  /** Whether {@linkcode NativeShim.close} has run. */
  get closed(): boolean {
    return this.#lib === undefined;
  }

  #live(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
    if (this.#lib === undefined) throw new ShimClosedError();
    return this.#sym;
  }

  /** `open(path, O_RDWR | O_CLOEXEC)` → fd or `-errno`; a path with a NUL in it is `-EINVAL`. Cold path. */
  open(path: string): number {
    if (path.includes("\0")) return -22;
    const bytes = encoder.encode(`${path}\0`);
    return this.#live().relay_open(bytes, bytes.byteLength);
  }

  /** `close(fd)` → 0 or `-errno`. */
  close(fd: number): number {
    return this.#live().relay_close(fd);
  }

  /** `ioctl(fd, request, arg)` → result or `-errno`. `request` is an unsigned 32-bit number. */
  [IOCTL](fd: number, request: number, arg: Uint8Array | null): number {
    return this.#live().relay_ioctl(fd, request, arg);
  }

  /**
   * Store the address of `second` as a u64 at `arg[offset]`, then `ioctl(fd, request, arg)`: for structs that
   * carry a user pointer (`data_uptr`, `user_va`, `uptr`). `-EINVAL` if the u64 does not fit in `arg`.
   */
  [IOCTL_WITH_POINTER](fd: number, request: number, arg: Uint8Array, offset: number, second: Uint8Array): number {
    return this.#live().relay_ioctl_with_pointer(fd, request, arg, arg.byteLength, offset, second);
  }

  /**
   * The in-process C baseline: the same ioctl `n` times inside the shim (pointer patched first unless `offset`
   * is {@linkcode NO_POINTER}). All `n` calls are made; returns 0 if all succeeded, else the last `-errno`.
   */
  [IOCTL_LOOP](
    fd: number,
    request: number,
    arg: Uint8Array | null,
    offset: number,
    second: Uint8Array | null,
    n: number,
  ): number {
    return this.#live().relay_ioctl_loop(fd, request, arg, arg?.byteLength ?? 0, offset, second, n);
  }

  /**
   * The C baseline for a pair of calls: `ioctl(requestA, argA)` (with `second`'s address stored at `offset` of
   * `argA` first) then `ioctl(requestB, argB)`, `n` times, inside the shim. 0, or the last `-errno`.
   */
  [IOCTL_PAIR_LOOP](
    fd: number,
    requestA: number,
    argA: Uint8Array,
    offset: number,
    second: Uint8Array,
    requestB: number,
    argB: Uint8Array,
    n: number,
  ): number {
    return this.#live().relay_ioctl_pair_loop(fd, requestA, argA, argA.byteLength, offset, second, requestB, argB, n);
  }

  /** `read(fd, buf, buf.length)` → bytes or `-errno`. */
  read(fd: number, buf: Uint8Array): number {
    return this.#live().relay_read(fd, buf, buf.byteLength);
  }

  /** `write(fd, buf, buf.length)` → bytes or `-errno`. */
  write(fd: number, buf: Uint8Array): number {
    return this.#live().relay_write(fd, buf, buf.byteLength);
  }

  /** `poll` one fd → revents (0 on timeout) or `-errno`; blocks the calling thread up to `timeoutMs`. */
  poll(fd: number, events: number, timeoutMs: number): number {
    return this.#live().relay_poll(fd, events, timeoutMs);
  }

  /** `poll` one fd on a worker thread, without blocking the event loop. */
  pollAsync(fd: number, events: number, timeoutMs: number): Promise<number> {
    return this.#live().relay_poll_async(fd, events, timeoutMs);
  }

  /** Test hook: writes the address of `p` into `out[0..8)` as the shim sees it. */
  testAddressOf(p: Uint8Array, out: Uint8Array): void {
    if (out.byteLength < 8) throw new RangeError("out needs 8 bytes");
    this.#live().relay_test_address_of(p, out);
  }

  /** Bytes from the start of `buf` to the next `align`-byte boundary (`align` a power of two), or `-EINVAL`. */
  alignOffset(buf: Uint8Array, align: number): number {
    return this.#live().relay_align_offset(buf, align);
  }

  /**
   * A zeroed `length`-byte window of fresh memory whose address is a multiple of `align`: for memory the kernel
   * pins (IOAS maps). Cold path.
   */
  alignedBuffer(length: number, align = 4096): Uint8Array {
    const raw = new Uint8Array(length + align);
    const skip = this.alignOffset(raw, align);
    if (skip < 0) throw new RangeError(`alignment ${align} is not a power of two up to 2^30`);
    return raw.subarray(skip, skip + length);
  }

  /**
   * A page-aligned window like {@linkcode NativeShim.alignedBuffer}, over a `SharedArrayBuffer` so Workers can
   * see it too (guest RAM shared by vCPU threads and the device model).
   */
  sharedAlignedBuffer(length: number, align = 4096): Uint8Array {
    const raw = new Uint8Array(new SharedArrayBuffer(length + align));
    const skip = this.alignOffset(raw, align);
    if (skip < 0) throw new RangeError(`alignment ${align} is not a power of two up to 2^30`);
    return raw.subarray(skip, skip + length);
  }

  /**
   * Map `window.length` bytes of `fd` (from page `offsetPages`) over `window`, which must be page aligned and a
   * page multiple (from {@linkcode NativeShim.alignedBuffer}); afterwards the window's bytes are the mapping's.
   * Undo with {@linkcode NativeShim.unmapFixed} before dropping the buffer. Returns 0 or `-errno`.
   */
  mapFixed(window: Uint8Array, fd: number, offsetPages = 0): number {
    return this.#live().relay_map_fixed(window, window.byteLength, fd, offsetPages);
  }

  /** Put zeroed private memory back over a window {@linkcode NativeShim.mapFixed} used. Returns 0 or `-errno`. */
  unmapFixed(window: Uint8Array): number {
    return this.#live().relay_unmap_fixed(window, window.byteLength);
  }

  /** Install a no-op handler for `signo` without `SA_RESTART` (process-wide), for {@linkcode NativeShim.kick}. */
  kickSetup(signo: number): number {
    return this.#live().relay_kick_setup(signo);
  }

  /** The calling thread's kernel thread id. */
  gettid(): number {
    return this.#live().relay_gettid();
  }

  /** Send `signo` to thread `tid` of this process: a blocking `KVM_RUN` there returns `-EINTR`. */
  kick(tid: number, signo: number): number {
    return this.#live().relay_kick(tid, signo);
  }

  /**
   * Send `signo` to the calling thread after `ms` milliseconds, then every `everyMs` (default 0: once); `ms` 0
   * disarms, and arming replaces the previous deadline. The deadline of a thread blocked in a call with no other
   * thread to kick it (the repeats catch one that was between two calls). Returns 0 or `-errno`.
   */
  deadlineTimer(signo: number, ms: number, everyMs = 0): number {
    return this.#live().relay_deadline_timer(signo, ms, everyMs);
  }

  /** The target of symlink `path` (sysfs links: a device's driver, IOMMU group, IOMMU), or `-errno`. */
  readlink(path: string): string | number {
    if (path.includes("\0")) return -22;
    const out = new Uint8Array(4096);
    const p = cString(path);
    const n = this.#live().relay_readlink(p, p.byteLength, out, out.byteLength);
    return n < 0 ? n : decoder.decode(out.subarray(0, n));
  }

  /** The contents of a small file (at most `max` bytes, else `-EFBIG`), as text, or `-errno`. */
  readSmallFile(path: string, max = 4096): string | number {
    const out = new Uint8Array(max);
    if (path.includes("\0")) return -22;
    const p = cString(path);
    const n = this.#live().relay_read_file(p, p.byteLength, out, out.byteLength);
    return n < 0 ? n : decoder.decode(out.subarray(0, n));
  }

  /** The names in directory `path` (unsorted, without `.` and `..`), or `-errno` (`-ENOBUFS` past 64 KiB). */
  listDir(path: string): string[] | number {
    const out = new Uint8Array(65536);
    if (path.includes("\0")) return -22;
    const p = cString(path);
    const n = this.#live().relay_list_dir(p, p.byteLength, out, out.byteLength);
    if (n < 0) return n;
    return n === 0 ? [] : decoder.decode(out.subarray(0, n - 1)).split("\0");
  }

  /** Test hook: writes `request` into `out[0..4)` as the shim received it. */
  testEchoRequest(request: number, out: Uint8Array): void {
    if (out.byteLength < 4) throw new RangeError("out needs 4 bytes");
    this.#live().relay_test_echo_request(request, out);
  }

  /** Pure crossing cost: returns `fd` without a syscall. */
  nop(fd: number, request: number, arg: Uint8Array | null): number {
    return this.#live().relay_nop(fd, request, arg);
  }

  /** Unload the library. Later calls throw {@linkcode ShimClosedError}; closing twice is a no-op. */
  [Symbol.dispose](): void {
    const lib = this.#lib;
    this.#lib = undefined;
    lib?.close();
  }
}
