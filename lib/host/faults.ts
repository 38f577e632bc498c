/**
 * Fault injection at the backend boundary: a {@linkcode Backend} that wraps another one (the kernel or the
 * in-process host) and, on scheduled calls, fails the way a kernel can — before anything was sent (EINTR, EAGAIN,
 * ENOMEM, EBUSY during a device reset, ENODEV for a device that is gone, EBADF), after a prefix of the entries
 * (a partial `entry_num`), or with a count that cannot be trusted (SMMUv3's chunking). Used by the reliability
 * tests on both hosts.
 *
 * @module
 */
import type { Backend, Format, InvalidateStatus } from "./backend.ts";

/** One scheduled fault. */
export interface InjectedBackendFault {
  /** Which call (0-based, counting every call through this wrapper) to fail. */
  readonly call: number;
  /** The positive errno that call reports. */
  readonly errno: number;
  /**
   * How much the inner backend really does first: `"none"` (fail before sending), or a number of entries sent
   * before the failure is reported at that index (a partial batch).
   */
  readonly sent: "none" | number;
  /** Report this entry count instead of the truth (an untrustworthy count). */
  readonly reportHandled?: number;
}

/**
 * A failing backend.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FaultInjectingBackend } from "./faults.ts";
 * import { ModelHost } from "./model.ts";
 * const host = new ModelHost();
 * const t = host.createTarget("selftest");
 * const backend = new FaultInjectingBackend(host, [{ call: 0, errno: 4, sent: "none" }]);
 * const s = { errno: 0, handled: 0 };
 * backend.invalidate(t, "selftest", new Uint8Array(8), 1, s);
 * assert.deepEqual(s, { errno: 4, handled: 0 });
 * ```
 */
export class FaultInjectingBackend implements Backend {
  #calls = 0;
  /** What happened, per call: the errno reported (0 = passed through). */
  readonly log: { call: number; targetId: number; count: number; errno: number; handled: number }[] = [];

  /** Wrap `inner`; each of `faults` fails the call it names, every other call passes through unchanged. */
  constructor(readonly inner: Backend, readonly faults: InjectedBackendFault[]) {}

  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    const call = this.#calls++;
    const fault = this.faults.find((f) => f.call === call);
    if (!fault) {
      this.inner.invalidate(targetId, format, entries, count, status);
    } else if (fault.sent === "none") {
      status.errno = fault.errno;
      status.handled = fault.reportHandled ?? 0;
    } else {
      const sent = Math.min(fault.sent, count);
      this.inner.invalidate(targetId, format, entries, sent, status);
      if (status.errno === 0) {
        status.errno = fault.errno;
        status.handled = fault.reportHandled ?? sent;
      }
    }
    this.log.push({ call, targetId, count, errno: status.errno, handled: status.handled });
  }
}
