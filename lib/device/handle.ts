/**
 * What every device layer (kernel or in-process) does with a guest request: binds and unbinds go to the device,
 * invalidations and waits — validated against the device's PASID width — to the shared relay queue, counted.
 *
 * @module
 */
import type { RelayQueue } from "../core/queue.ts";
import { type PasidOrRid, type Request, type StageOneTable, validateRequest } from "../core/request.ts";

/** The device side {@linkcode relayRequest} drives. */
export interface RequestTarget {
  readonly pasidBits: number;
  readonly telemetry: { requestsIn: number; refused: number };
  bind(pasid: PasidOrRid, table: StageOneTable): void;
  unbind(pasid: PasidOrRid): unknown;
}

/** Relay one guest request for `device` through `queue`; returns the queue's sequence number (binds: undefined). */
export function relayRequest(device: RequestTarget, queue: RelayQueue, request: Request): number | undefined {
  switch (request.op) {
    case "bind":
      device.bind(request.pasid, request.table);
      return undefined;
    case "unbind":
      device.unbind(request.pasid);
      return undefined;
    default:
      try {
        validateRequest(request, { pasidBits: device.pasidBits });
        const seq = queue.submit(request);
        device.telemetry.requestsIn++;
        return seq;
      } catch (e) {
        device.telemetry.refused++;
        throw e;
      }
  }
}
