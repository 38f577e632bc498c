/**
 * One vCPU's synchronous `KVM_RUN` loop, decoding each MMIO and port exit from `kvm_run` and handing it to an exit
 * sink: the vCPU Worker's sink posts it to the VMM thread and waits for the answer; the inline sink serves it on the
 * spot, as a one-thread C VMM does.
 *
 * @module
 */
import { Errno } from "../../lib/uapi/errno.ts";
import type { KvmVcpu } from "../../mod.ts";
import { KvmExitReason } from "../../lib/uapi/mod.ts";
import { KIND } from "./mailbox.ts";

const { EINTR, EAGAIN } = Errno.values;
const X = KvmExitReason.values;

/** Who serves a vCPU's exits. */
export interface ExitSink {
  /** An MMIO access of `len` bytes at guest-physical `address`; returns the value a read gets (low 32 bits). */
  mmio(address: number, len: number, write: boolean, lo: number, hi: number): number;
  /** A port access; returns the value an `in` gets. */
  io(port: number, size: number, out: boolean, value: number): number;
  /** Whether to stop, asked after every exit and every interrupted `KVM_RUN` (a kick). */
  stopped(): boolean;
}

/** How the loop ended: a mailbox `KIND` (HLT, CANCELLED, ERROR with errno, OTHER with the exit reason). */
export interface VcpuEnd {
  readonly kind: number;
  readonly code: number;
  /** `KVM_RUN` returns. */
  readonly exits: number;
}

/**
 * Run vCPU `vcpuFd` until it halts, fails or `sink.stopped()`. `run` is its `kvm_run` window.
 *
 * @example
 * ```ts ignore
 * import { runVcpuLoop } from "./vcpu_loop.ts";
 * const end = runVcpuLoop(vcpu, { mmio: () => 0, io: () => 0, stopped: () => false });
 * ```
 */
export function runVcpuLoop(vcpu: KvmVcpu, sink: ExitSink): VcpuEnd {
  const run = vcpu.run;
  const view = new DataView(run.buffer, run.byteOffset, run.byteLength);
  let exits = 0;
  for (;;) {
    if (sink.stopped()) return { kind: KIND.CANCELLED, code: 0, exits };
    const r = vcpu.runOnce();
    if (r === -EINTR || r === -EAGAIN) continue; // a kick: look at stopped()
    if (r < 0) return { kind: KIND.ERROR, code: -r, exits };
    exits++;
    const reason = view.getUint32(8, true);
    if (reason === X.KVM_EXIT_MMIO) {
      const address = view.getUint32(32, true) + view.getUint32(36, true) * 2 ** 32;
      const len = view.getUint32(48, true), write = view.getUint8(52) === 1;
      const value = sink.mmio(address, len, write, view.getUint32(40, true), view.getUint32(44, true));
      if (!write) {
        view.setUint32(40, value >>> 0, true);
        view.setUint32(44, 0, true);
      }
    } else if (reason === X.KVM_EXIT_IO) {
      const out = view.getUint8(32) === X.KVM_EXIT_IO_OUT, size = view.getUint8(33);
      const port = view.getUint16(34, true), at = view.getUint32(40, true);
      const value = size === 1 ? view.getUint8(at) : size === 2 ? view.getUint16(at, true) : view.getUint32(at, true);
      const answer = sink.io(port, size, out, out ? value : 0);
      if (!out) {
        if (size === 1) view.setUint8(at, answer & 0xff);
        else if (size === 2) view.setUint16(at, answer & 0xffff, true);
        else view.setUint32(at, answer >>> 0, true);
      }
    } else if (reason === X.KVM_EXIT_HLT) {
      return { kind: KIND.HLT, code: 0, exits };
    } else if (reason !== X.KVM_EXIT_INTR) {
      return { kind: KIND.OTHER, code: reason, exits };
    }
  }
}
