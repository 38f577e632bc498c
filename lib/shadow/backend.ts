/**
 * The relay queue's backend in a VM that may shadow: shadow entries go to the shadowed domain they target (each one
 * a range to walk again), everything else to the host's own backend. Failure attribution works as for the kernel:
 * the first entry whose sync failed is where `handled` stops, with that host call's errno.
 *
 * @module
 */
import type { Backend, Format, InvalidateStatus } from "../host/backend.ts";
import { readShadowEntry } from "../compile/shadow.ts";
import type { ShadowDomain } from "./domain.ts";

/** Shadow target ids start here, clear of iommufd object ids and in-process target ids. */
const FIRST_ID = 0x4000_0000;

/** Routes shadow entries to shadowed domains. */
export class ShadowBackend implements Backend {
  readonly #domains = new Map<number, ShadowDomain>();
  #next = FIRST_ID;

  /** Route shadow-format batches to registered domains; every other format goes to `inner` unchanged. */
  constructor(readonly inner: Backend) {}

  /** Register a domain; returns its target id for the queue. */
  add(domain: ShadowDomain): number {
    const id = this.#next++;
    this.#domains.set(id, domain);
    return id;
  }

  /** Forget the domain registered as `id`; later batches to it fail as to an unknown target. */
  remove(id: number): void {
    this.#domains.delete(id);
  }

  invalidate(targetId: number, format: Format, entries: Uint8Array, count: number, status: InvalidateStatus): void {
    if (format !== "shadow") return this.inner.invalidate(targetId, format, entries, count, status);
    const domain = this.#domains.get(targetId);
    status.errno = 0;
    status.handled = 0;
    if (!domain) return void (status.errno = 2); // ENOENT, as for a destroyed HWPT
    for (let i = 0; i < count; i++) {
      const e = readShadowEntry(entries, i);
      const r = e === "all" ? domain.syncAll() : domain.sync(e.firstPage, e.pages);
      if (r.errno) {
        status.errno = r.errno;
        status.handled = i;
        return;
      }
    }
    status.handled = count;
  }
}
