/**
 * The C shim's symbol table and thin typed wrappers: the only `Deno.dlopen` in iommu-relay.
 *
 * Every wrapper returns what the C function returns: a result >= 0 or `-errno` from the kernel. Turning those into
 * typed errors is the caller's job (lib/kernel), so this file imports nothing else of the project. What the shim
 * itself refuses (ffi/shim.c: a path that is not a relay's device node, an fd it does not hold, a request not on
 * that fd's list, …) is thrown here as a {@linkcode ShimRefusedError} naming the operation: those are not kernel
 * answers, and no caller should mistake one for the kernel's EPERM.
 *
 * Parameters are `"buffer"` (a Uint8Array passed without taking its address in JavaScript, which works under a
 * path-scoped `--allow-ffi=<shim>`) and 32-bit integers: no BigInt on the hot path.
 *
 * @module
 */
import { ensureShim } from "./build.ts";

/** The ABI version of shim.c this table matches. */
export const SHIM_ABI_VERSION = 8;

const SYMBOLS = {
  relay_shim_version: { parameters: [], result: "i32" },
  relay_open: { parameters: ["buffer", "u32"], result: "i32" },
  relay_adopt_fd: { parameters: ["i32"], result: "i32" },
  relay_close: { parameters: ["i32"], result: "i32" },
  relay_ioctl: { parameters: ["i32", "u32", "buffer", "u32"], result: "i32" },
  relay_ioctl_with_pointer: { parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32"], result: "i32" },
  relay_ioctl_loop: { parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32", "u32"], result: "i32" },
  relay_ioctl_pair_loop: {
    parameters: ["i32", "u32", "buffer", "u32", "u32", "buffer", "u32", "u32", "buffer", "u32", "u32"],
    result: "i32",
  },
  relay_policy_allows: { parameters: ["i32", "u32"], result: "i32" },
  relay_read: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  relay_write: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  relay_poll: { parameters: ["i32", "i32", "i32"], result: "i32" },
  relay_poll_async: { name: "relay_poll", parameters: ["i32", "i32", "i32"], result: "i32", nonblocking: true },
  relay_align_offset: { parameters: ["buffer", "u32"], result: "i32" },
  relay_test_echo_request: { parameters: ["u32"], result: "i32" },
  relay_nop: { parameters: ["i32", "u32", "buffer"], result: "i32" },
  relay_map_fixed: { parameters: ["buffer", "u32", "i32", "u32"], result: "i32" },
  relay_unmap_fixed: { parameters: ["buffer", "u32"], result: "i32" },
  relay_kick_setup: { parameters: [], result: "i32" },
  relay_kick_register: { parameters: [], result: "i32" },
  relay_kick: { parameters: ["i32"], result: "i32" },
  relay_deadline_timer: { parameters: ["u32", "u32"], result: "i32" },
  relay_host_list: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  relay_host_has_iommufd: { parameters: [], result: "i32" },
  relay_cdev_attr: { parameters: ["u32", "u32", "buffer", "u32"], result: "i32" },
  relay_memfd_create: { parameters: ["buffer", "u32", "u64"], result: "i32" },
  relay_memfd_size: { parameters: ["i32"], result: "i64" },
  relay_fdpass_dir: { parameters: ["buffer", "u32"], result: "i32" },
  relay_fdpass_listen: { parameters: ["buffer", "u32"], result: "i32" },
  relay_fdpass_connect: { parameters: ["buffer", "u32"], result: "i32" },
  relay_fdpass_accept: { parameters: ["i32"], result: "i32" },
  relay_fdpass_send: { parameters: ["i32", "i32", "buffer", "u32"], result: "i32" },
  relay_fdpass_recv: { parameters: ["i32", "buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The ioctl entry points are keyed by these symbols, which only iommu-relay's own layers import from this file: the
 * package's public exports (`mod.ts`, `./ffi` = ffi/mod.ts, `./uapi`, `./plugin`, `./testing`) do not export them,
 * and every ioctl the library makes goes through a typed kernel object. They are not the boundary — reflection
 * finds them on the prototype, and a script can import this file — the shim is: it allows only the requests of
 * its list on fds it holds (ffi/shim.c).
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

/** The shim reports its own refusals as `-(REFUSAL_BASE + errno)`, beyond every kernel errno. */
export const REFUSAL_BASE = 4096;

/** The fd kinds of the shim's table (`enum relay_kind` in shim.c), each with its own ioctl list. */
export const FD_KIND = {
  IOMMUFD: 1,
  VFIO_CDEV: 2,
  KVM: 3,
  KVM_VM: 4,
  KVM_VCPU: 5,
  FAULT_QUEUE: 6,
  VEVENTQ: 7,
  TEST_ACCESS: 8,
  MEMFD: 9,
  FDPASS_LISTENER: 10,
  FDPASS_SOCKET: 11,
} as const;

/** The largest payload {@linkcode NativeShim.fdpassSend} carries beside a memfd. */
export const FDPASS_PAYLOAD_MAX = 256;

/** Host listings {@linkcode NativeShim.hostList} offers (`enum relay_listing`). */
export const HOST_LIST = { VFIO_CDEVS: 0, VFIO_GROUPS: 1, IOMMUS: 2 } as const;

/** VFIO cdev attributes {@linkcode NativeShim.cdevAttr} reads (`enum relay_cdev_attr`). */
export const CDEV_ATTR = { PCI: 0, DRIVER: 1, IOMMU_GROUP: 2, IOMMU: 3, VENDOR: 4, DEVICE: 5 } as const;

const REFUSALS: Record<number, { name: "EPERM" | "EACCES" | "EBADF"; why: string }> = {
  1: { name: "EPERM", why: "not allowed for this fd's kind or with this argument" },
  13: { name: "EACCES", why: "not a device node or attribute a relay opens" },
  9: { name: "EBADF", why: "not an fd the shim opened, was returned or was handed" },
};

/**
 * The shim refused an operation (ffi/shim.c): `errno` is EPERM (request, argument, read/write, mmap or kick target
 * not allowed for that fd), EACCES (path or node not a relay's device) or EBADF (an fd the shim does not hold).
 */
export class ShimRefusedError extends Error {
  /** Always `"ShimRefusedError"`. */
  override name = "ShimRefusedError";
  /** The errno of the refusal (1, 13 or 9). */
  readonly errno: number;
  /** The errno's symbolic name: `EPERM`, `EACCES` or `EBADF` (`errno <n>` for a value the shim should not return). */
  readonly errnoName: string;
  /** `result` is the shim's return value, `-(REFUSAL_BASE + errno)`. */
  constructor(
    /** What was refused, e.g. `ioctl 0x3b8d on fd 7` or `open "/dev/mem"`; the message starts with it. */

    readonly operation: string,
    result: number,
  ) {
    const errno = -result - REFUSAL_BASE;
    const r = REFUSALS[errno] ?? { name: `errno ${errno}`, why: "refused" };
    super(`${operation}: refused by the shim (${r.name}, errno ${errno}): ${r.why}`);
    this.errno = errno;
    this.errnoName = r.name;
  }
}

/** Throw a {@linkcode ShimRefusedError} for a refusal, else pass the result through. */
function refused(result: number, operation: () => string): number {
  if (result <= -REFUSAL_BASE) throw new ShimRefusedError(operation(), result);
  return result;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/**
 * The refusal of an ioctl, thrown. Kept out of the ioctl wrappers on purpose: a closure there that captures their
 * parameters makes V8 allocate a context on every call until the wrapper is optimized — the hot path's allocation
 * (about 50 bytes per call) in the kernel VM, whose emulated CPU optimizes late.
 */
const NO_POINTER_OFFSET = -1;

function refusedIoctl(result: number, request: number, fd: number, offset: number): never {
  const where = offset === NO_POINTER_OFFSET ? "" : ` with a pointer at ${offset}`;
  throw new ShimRefusedError(`ioctl ${hex(request)} on fd ${fd}${where}`, result);
}

/** Raised when a shim is used after it was closed (the call would otherwise crash the process). */
export class ShimClosedError extends Error {
  /** Always `"ShimClosedError"`. */
  override name = "ShimClosedError";
  /** The error with its fixed message. */
  constructor() {
    super("the native shim was closed");
  }
}

/** Raised when the library at a path is not a shim of the ABI version this file expects. */
export class ShimVersionError extends Error {
  /** Always `"ShimVersionError"`. */
  override name = "ShimVersionError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const LOADED_PATHS = new Set<string>();

/**
 * Every path this process has loaded a shim from. A scoped `--allow-ffi=<shim>` grant is invisible to a bare
 * `Deno.permissions.query({ name: "ffi" })`; code that must know whether untrusted code could load the shim too
 * (`loadPlugin`) asks for each of these paths.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadedShimPaths, NativeShim } from "./native.ts";
 * using shim = await NativeShim.load();
 * assert.ok(loadedShimPaths().includes(shim.path));
 * ```
 */
export function loadedShimPaths(): readonly string[] {
  return [...LOADED_PATHS];
}

/**
 * The loaded shim. Load it once per process with {@linkcode NativeShim.load} and close it last (`using`), after
 * every fd opened through it is closed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NativeShim, ShimRefusedError } from "./native.ts";
 * using shim = await NativeShim.load();
 * // Not a device node a relay opens: refused in C, before any open(2).
 * assert.throws(() => shim.open("/etc/shadow"), ShimRefusedError);

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
    LOADED_PATHS.add(path);
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

  /**
   * Open a relay's device node read-write: `/dev/iommu`, `/dev/kvm` or `/dev/vfio/devices/vfioN` → fd or `-errno`
   * (`-ENOENT` when absent). Any other path, a symlink, or a node that is not that device throws
   * {@linkcode ShimRefusedError} (EACCES); a path with a NUL in it is `-EINVAL`. Cold path.
   */
  open(path: string): number {
    if (path.includes("\0")) return -22;
    const bytes = encoder.encode(`${path}\0`);
    return refused(this.#live().relay_open(bytes, bytes.byteLength), () => `open ${JSON.stringify(path)}`);
  }

  /**
   * Take an fd this process inherited already open (an iommufd, KVM or a VFIO cdev, checked with `fstat`): it joins
   * the shim's table as if the shim had opened it. Returns its kind ({@linkcode FD_KIND}); anything else throws
   * {@linkcode ShimRefusedError}.
   */
  adoptFd(fd: number): number {
    return refused(this.#live().relay_adopt_fd(fd), () => `adopt fd ${fd}`);
  }

  /** `close(fd)` → 0 or `-errno`, for an fd the shim holds. */
  close(fd: number): number {
    return refused(this.#live().relay_close(fd), () => `close fd ${fd}`);
  }

  /** `ioctl(fd, request, arg)` → result or `-errno`, if the shim's list allows `request` on `fd`. */
  [IOCTL](fd: number, request: number, arg: Uint8Array | null): number {
    const r = this.#live().relay_ioctl(fd, request, arg, arg?.byteLength ?? 0);
    return r <= -REFUSAL_BASE ? refusedIoctl(r, request, fd, NO_POINTER_OFFSET) : r;
  }

  /**
   * The shim stores the address of `second` at `arg[offset]` (of its own copy of `arg`) and makes the ioctl: for
   * structs that carry a user pointer (`data_uptr`, `user_va`, `uptr`). `offset` must be that request's pointer
   * field, and the length the struct gives for it must fit in `second`.
   */
  [IOCTL_WITH_POINTER](fd: number, request: number, arg: Uint8Array, offset: number, second: Uint8Array): number {
    const r = this.#live().relay_ioctl_with_pointer(
      fd,
      request,
      arg,
      arg.byteLength,
      offset,
      second,
      second.byteLength,
    );
    return r <= -REFUSAL_BASE ? refusedIoctl(r, request, fd, offset) : r;
  }

  /**
   * The in-process C baseline: the same ioctl `n` times inside the shim (pointer stored first unless `offset`
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
    const r = this.#live().relay_ioctl_loop(
      fd,
      request,
      arg,
      arg?.byteLength ?? 0,
      offset,
      second,
      second?.byteLength ?? 0,
      n,
    );
    return refused(r, () => `ioctl loop ${hex(request)} on fd ${fd}`);
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
    const r = this.#live().relay_ioctl_pair_loop(
      fd,
      requestA,
      argA,
      argA.byteLength,
      offset,
      second,
      second.byteLength,
      requestB,
      argB,
      argB.byteLength,
      n,
    );
    return refused(r, () => `ioctl pair loop ${hex(requestA)}, ${hex(requestB)} on fd ${fd}`);
  }

  /** Whether the shim's list allows `request` on an fd of kind `kind` ({@linkcode FD_KIND}); no syscall. */
  policyAllows(kind: number, request: number): boolean {
    return this.#live().relay_policy_allows(kind, request) === 1;
  }

  /** `read(fd, buf, buf.length)` → bytes or `-errno`: fault-queue and vEVENTQ fds only. */
  read(fd: number, buf: Uint8Array): number {
    return refused(this.#live().relay_read(fd, buf, buf.byteLength), () => `read fd ${fd}`);
  }

  /** `write(fd, buf, buf.length)` → bytes or `-errno`: fault-queue fds only (page responses). */
  write(fd: number, buf: Uint8Array): number {
    return refused(this.#live().relay_write(fd, buf, buf.byteLength), () => `write fd ${fd}`);
  }

  /** `poll` one fd the shim holds → revents (0 on timeout) or `-errno`; blocks the calling thread up to `timeoutMs`. */
  poll(fd: number, events: number, timeoutMs: number): number {
    return refused(this.#live().relay_poll(fd, events, timeoutMs), () => `poll fd ${fd}`);
  }

  /** `poll` one fd on a worker thread, without blocking the event loop. */
  async pollAsync(fd: number, events: number, timeoutMs: number): Promise<number> {
    return refused(await this.#live().relay_poll_async(fd, events, timeoutMs), () => `poll fd ${fd}`);
  }

  /** Bytes from the start of `buf` to the next `align`-byte boundary (a power of two up to 2 MiB), or `-EINVAL`. */
  alignOffset(buf: Uint8Array, align: number): number {
    return this.#live().relay_align_offset(buf, align);
  }

  /**
   * A zeroed `length`-byte window of fresh memory whose address is a multiple of `align` (up to 2 MiB): for memory
   * the kernel pins (IOAS maps). Cold path.
   */
  alignedBuffer(length: number, align = 4096): Uint8Array {
    const raw = new Uint8Array(length + align);
    const skip = this.alignOffset(raw, align);
    if (skip < 0) throw new RangeError(`alignment ${align} is not a power of two up to 2 MiB`);
    return raw.subarray(skip, skip + length);
  }

  /**
   * A page-aligned window like {@linkcode NativeShim.alignedBuffer}, over a `SharedArrayBuffer` so Workers can
   * see it too (guest RAM shared by vCPU threads and the device model).
   */
  sharedAlignedBuffer(length: number, align = 4096): Uint8Array {
    const raw = new Uint8Array(new SharedArrayBuffer(length + align));
    const skip = this.alignOffset(raw, align);
    if (skip < 0) throw new RangeError(`alignment ${align} is not a power of two up to 2 MiB`);
    return raw.subarray(skip, skip + length);
  }

  /**
   * Map vCPU fd `fd`'s kvm_run over `window`, which must be page aligned and exactly the size KVM reported
   * (`KVM_GET_VCPU_MMAP_SIZE`; from {@linkcode NativeShim.sharedAlignedBuffer}); afterwards the window's bytes
   * are kvm_run's. Only offset 0. Or map `window.length` bytes of memfd `fd` from page `offsetPages` (inside its
   * size): the window's bytes are then the memfd's, shared with whoever else maps it. Undo with
   * {@linkcode NativeShim.unmapFixed} before dropping the buffer.
   */
  mapFixed(window: Uint8Array, fd: number, offsetPages = 0): number {
    return refused(
      this.#live().relay_map_fixed(window, window.byteLength, fd, offsetPages),
      () => `map fd ${fd} (${window.byteLength} bytes at page ${offsetPages})`,
    );
  }

  /** Put zeroed private memory back over a window {@linkcode NativeShim.mapFixed} mapped. Returns 0 or `-errno`. */
  unmapFixed(window: Uint8Array): number {
    return refused(this.#live().relay_unmap_fixed(window, window.byteLength), () => "unmap a window");
  }

  /**
   * Install the shim's no-op handler for its kick signal (SIGUSR1) without `SA_RESTART`, process-wide. The kick and
   * the deadline install it themselves; the signal is the shim's choice, not the caller's.
   */
  kickSetup(): number {
    return this.#live().relay_kick_setup();
  }

  /** Register the calling thread (a vCPU thread) as a kick target; returns its thread id for {@linkcode kick}. */
  registerKickTarget(): number {
    return refused(this.#live().relay_kick_register(), () => "register a kick target");
  }

  /** Send the kick signal to registered thread `tid`: a blocking `KVM_RUN` there returns `-EINTR`. */
  kick(tid: number): number {
    return refused(this.#live().relay_kick(tid), () => `kick thread ${tid}`);
  }

  /**
   * Send the kick signal to the calling thread after `ms` milliseconds, then every `everyMs` (default 0: once); `ms`
   * 0 disarms, and arming replaces the previous deadline. The deadline of a thread blocked in a call with no other
   * thread to kick it (the repeats catch one that was between two calls). Returns 0 or `-errno`.
   */
  deadlineTimer(ms: number, everyMs = 0): number {
    return this.#live().relay_deadline_timer(ms, everyMs);
  }

  /**
   * One host listing ({@linkcode HOST_LIST}): VFIO cdev names (`vfioN`), VFIO group numbers, IOMMU instances;
   * unsorted, or `-errno` (`-ENOENT` when the folder is missing).
   */
  hostList(which: number): string[] | number {
    const out = new Uint8Array(65536);
    const n = this.#live().relay_host_list(which, out, out.byteLength);
    if (n < 0) return n;
    return n === 0 ? [] : decoder.decode(out.subarray(0, n - 1)).split("\0");
  }

  /** Whether `/dev/iommu` is a character device. */
  hasIommufd(): boolean {
    return this.#live().relay_host_has_iommufd() === 1;
  }

  /**
   * Attribute `attr` ({@linkcode CDEV_ATTR}) of VFIO cdev `vfio<cdev>`, as sysfs has it (for a link, the last
   * component of its target), or `-errno`.
   */
  cdevAttr(cdev: number, attr: number): string | number {
    const out = new Uint8Array(256);
    const n = refused(
      this.#live().relay_cdev_attr(cdev, attr, out, out.byteLength),
      () => `read attribute ${attr} of vfio${cdev}`,
    );
    return n < 0 ? n : decoder.decode(out.subarray(0, n));
  }

  /**
   * A memfd of `size` bytes (a multiple of 4096) for guest RAM, sealed against shrinking and growing: fd (kind
   * {@linkcode FD_KIND}.MEMFD) or `-errno`. Map it with {@linkcode NativeShim.mapFixed}; map it into an IOAS with
   * `IOMMU_IOAS_MAP_FILE`; hand it to another process with {@linkcode NativeShim.fdpassSend}.
   */
  memfdCreate(name: string, size: number): number {
    if (name.includes("\0")) return -22;
    const bytes = encoder.encode(`${name}\0`);
    return refused(this.#live().relay_memfd_create(bytes, bytes.byteLength, BigInt(size)), () => `memfd ${name}`);
  }

  /** Bytes of memfd `fd` of the shim's table, or `-errno`. */
  memfdSize(fd: number): number {
    return refused(Number(this.#live().relay_memfd_size(fd)), () => `size of memfd ${fd}`);
  }

  /**
   * The one directory fd-passing sockets live in (`/run/iommu-relay` for root, else `/tmp/iommu-relay-<uid>`), made
   * 0700 on first use; the shim refuses it (EACCES) unless it is this user's, private, and not a link. `-errno` if it
   * cannot be made.
   */
  fdpassDir(): string | number {
    const out = new Uint8Array(64);
    const n = refused(this.#live().relay_fdpass_dir(out, out.byteLength), () => "the fd-passing directory");
    return n < 0 ? n : new TextDecoder().decode(out.subarray(0, n));
  }

  /**
   * Listen for fd-passing connections at socket `name` (letters, digits, `.`, `_`, `-`, ending `.memfd.sock`) in
   * {@linkcode NativeShim.fdpassDir}, a new socket file of mode 0600: fd (nonblocking; poll it, then
   * {@linkcode NativeShim.fdpassAccept}) or `-errno`. A path or another name is refused (EACCES).
   */
  fdpassListen(name: string): number {
    const bytes = encoder.encode(`${name}\0`);
    return refused(this.#live().relay_fdpass_listen(bytes, bytes.byteLength), () => `listen ${JSON.stringify(name)}`);
  }

  /** Connect to fd-passing socket `name` in {@linkcode NativeShim.fdpassDir}: fd or `-errno`. */
  fdpassConnect(name: string): number {
    const bytes = encoder.encode(`${name}\0`);
    return refused(
      this.#live().relay_fdpass_connect(bytes, bytes.byteLength),
      () => `connect ${JSON.stringify(name)}`,
    );
  }

  /** Accept one connection on a listening fd-passing socket: fd, or `-EAGAIN` when none is waiting. */
  fdpassAccept(listener: number): number {
    return refused(this.#live().relay_fdpass_accept(listener), () => `accept on fd ${listener}`);
  }

  /**
   * Send memfd `memfd` (of the shim's table, and checked to be a memfd again) with `payload` (at most
   * {@linkcode FDPASS_PAYLOAD_MAX} bytes) over fd-passing socket `sock` as one message (SCM_RIGHTS): bytes or `-errno`.
   */
  fdpassSend(sock: number, memfd: number, payload: Uint8Array): number {
    return refused(
      this.#live().relay_fdpass_send(sock, memfd, payload, payload.byteLength),
      () => `send memfd ${memfd} on fd ${sock}`,
    );
  }

  /**
   * Receive one message from fd-passing socket `sock`: the memfd it carried (now in the shim's table) and its payload,
   * or `-errno` (`-EAGAIN`: nothing yet; `-EPIPE`: the peer closed). A message whose fd is not one memfd is consumed,
   * its fds closed, and refused ({@linkcode ShimRefusedError}, EACCES).
   */
  fdpassRecv(sock: number): { fd: number; payload: Uint8Array } | number {
    const out = new Uint8Array(4 + FDPASS_PAYLOAD_MAX);
    const fd = refused(this.#live().relay_fdpass_recv(sock, out, out.byteLength), () => `receive on fd ${sock}`);
    if (fd < 0) return fd;
    const length = new DataView(out.buffer).getUint32(0, true);
    return { fd, payload: out.slice(4, 4 + length) };
  }

  /** Test hook: `request` as the shim received it. */
  testEchoRequest(request: number): number {
    return this.#live().relay_test_echo_request(request) >>> 0;
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
