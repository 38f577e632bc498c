/**
 * virtio-iommu MAP and UNMAP on a shadowed domain: the guest's own requests become IOAS map/unmap through the same
 * path shadow mode's invalidations use, with the same bookkeeping. Statuses: a domain nobody attached is NOENT;
 * unaligned ranges, unknown flags and overlaps are INVAL; MMIO mappings are UNSUPP; memory outside guest RAM and
 * a partial unmap are RANGE; the host's ENOMEM is NOMEM; any other host error is DEVERR.
 *
 * @example
 * ```ts
 * import { shadowMapHooks } from "./shadow.ts";
 * import { ShadowDomain } from "../../shadow/domain.ts";
 * import { ModelIoas } from "../../shadow/model_ioas.ts";
 * const ioas = new ModelIoas();
 * const d = new ShadowDomain({ read: () => new Uint8Array(4096) }, 1 << 20, ioas);
 * const hooks = shadowMapHooks((domain) => (domain === 3 ? d : undefined));
 * const map = { type: "map" as const, domain: 3, virtStart: 0x10000n, virtEnd: 0x11fffn, physStart: 0x2000n, flags: 1 };
 * console.log(hooks.map!(map), hooks.map!(map), ioas.lookup(0x11)); // 0 4 { gpaPage: 3, read: true, write: false }
 * ```
 *
 * @module
 */
import type { ShadowDomain } from "../../shadow/domain.ts";
import { type VirtioIommuHooks, type VirtioIommuRequest, VirtioIommuStatus as S } from "./iommu.ts";

const READ = 1, WRITE = 2, MMIO = 4;

function status(errno: number): number {
  switch (errno) {
    case 0:
      return S.OK;
    case 17: // EEXIST: overlaps a mapping
      return S.INVAL;
    case 14: // EFAULT: not guest RAM
    case 34: // ERANGE: a mapping only partly inside
      return S.RANGE;
    case 12:
      return S.NOMEM;
    default:
      return S.DEVERR;
  }
}

/** MAP/UNMAP hooks for the virtio-iommu front end over the shadowed domain `lookup(domain)` returns. */
export function shadowMapHooks(
  lookup: (domain: number) => ShadowDomain | undefined,
): Pick<VirtioIommuHooks, "map" | "unmap" | "unmapMany"> {
  const unmap = (r: VirtioIommuRequest & { type: "unmap" }): number => {
    const d = lookup(r.domain);
    if (!d) return S.NOENT;
    const end = r.virtEnd + 1n;
    if (r.virtStart % 4096n || end % 4096n) return S.INVAL;
    return status(d.unmapDirect(Number(r.virtStart / 4096n), Number((end - r.virtStart) / 4096n)));
  };
  const accepted: { firstPage: number; pages: number }[] = [], at: number[] = [], errnos: number[] = [];
  return {
    map(r) {
      const d = lookup(r.domain);
      if (!d) return S.NOENT;
      if (r.flags & MMIO) return S.UNSUPP;
      if (!(r.flags & (READ | WRITE))) return S.INVAL;
      const end = r.virtEnd + 1n;
      if (r.virtStart % 4096n || end % 4096n || r.physStart % 4096n) return S.INVAL;
      const pages = Number((end - r.virtStart) / 4096n);
      return status(
        d.mapDirect(
          Number(r.virtStart / 4096n),
          pages,
          Number(r.physStart / 4096n),
          (r.flags & READ) !== 0,
          (r.flags & WRITE) !== 0,
        ),
      );
    },
    unmap,
    // One kick's UNMAPs for one domain: the aligned ones go to the shadowed domain as one batch (merged host calls,
    // each request's status as if alone); the others are answered as `unmap` answers them.
    unmapMany(requests, statuses) {
      accepted.length = at.length = errnos.length = 0;
      const d = lookup(requests[0]?.domain ?? 0);
      for (let i = 0; i < requests.length; i++) {
        const r = requests[i], end = r.virtEnd + 1n;
        if (!d || r.domain !== requests[0].domain) statuses[i] = unmap(r);
        else if (r.virtStart % 4096n || end % 4096n) statuses[i] = S.INVAL;
        else {
          at.push(i);
          accepted.push({ firstPage: Number(r.virtStart / 4096n), pages: Number((end - r.virtStart) / 4096n) });
        }
      }
      if (!d || accepted.length === 0) return;
      d.unmapDirectBatch(accepted, errnos);
      for (let k = 0; k < at.length; k++) statuses[at[k]] = status(errnos[k]);
    },
  };
}
