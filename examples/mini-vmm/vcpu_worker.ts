/**
 * One vCPU's thread: a synchronous KVM_RUN loop (the fast shape, see ../shared/reference/deno-vmm.md) that hands
 * every MMIO and port exit to the VMM thread through the mailbox and waits for the answer.
 *
 * Message in: `{ shimPath, vcpuFd, run, mailbox }` (run: the kvm_run window, mailbox: Int32Array, both shared).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { IOCTL, NativeShim } from "../../ffi/native.ts";
import { KVM_RUN, KvmExitReason } from "../../lib/uapi/mod.ts";
import { KIND, MB, STATE } from "./mailbox.ts";

const EINTR = 4, EAGAIN = 11;
const X = KvmExitReason.values;

self.onmessage = (e: MessageEvent<{ shimPath: string; vcpuFd: number; run: Uint8Array; mailbox: Int32Array }>) => {
  const { shimPath, vcpuFd, run, mailbox: mb } = e.data;
  using shim = NativeShim.loadSync(shimPath);
  const view = new DataView(run.buffer, run.byteOffset, run.byteLength);
  Atomics.store(mb, MB.TID, shim.gettid());
  const finish = (kind: number, code = 0) => {
    mb[MB.KIND] = kind;
    mb[MB.CODE] = code;
    Atomics.store(mb, MB.STATE, STATE.STOPPED);
    Atomics.notify(mb, MB.STATE);
  };
  /** Post an exit and sleep until the VMM answers. */
  const exit = (kind: number, addr: number, len: number, write: boolean, lo: number, hi: number) => {
    mb[MB.KIND] = kind;
    mb[MB.ADDR] = addr;
    mb[MB.LEN] = len;
    mb[MB.WRITE] = write ? 1 : 0;
    mb[MB.DATA_LO] = lo;
    mb[MB.DATA_HI] = hi;
    Atomics.store(mb, MB.STATE, STATE.EXIT);
    Atomics.notify(mb, MB.STATE);
    Atomics.wait(mb, MB.STATE, STATE.EXIT);
    Atomics.store(mb, MB.STATE, STATE.RUNNING);
  };
  for (;;) {
    if (Atomics.load(mb, MB.STOP)) return finish(KIND.CANCELLED);
    const r = shim[IOCTL](vcpuFd, KVM_RUN.request, null);
    if (r === -EINTR || r === -EAGAIN) continue; // a kick: look at STOP
    if (r < 0) return finish(KIND.ERROR, -r);
    Atomics.add(mb, MB.EXITS, 1);
    const reason = view.getUint32(8, true);
    if (reason === X.KVM_EXIT_MMIO) {
      const addr = view.getUint32(32, true) + view.getUint32(36, true) * 2 ** 32;
      const len = view.getUint32(48, true), write = view.getUint8(52) === 1;
      exit(KIND.MMIO, addr, len, write, view.getUint32(40, true), view.getUint32(44, true));
      if (!write) {
        view.setUint32(40, mb[MB.DATA_LO], true);
        view.setUint32(44, mb[MB.DATA_HI], true);
      }
    } else if (reason === X.KVM_EXIT_IO) {
      const out = view.getUint8(32) === X.KVM_EXIT_IO_OUT, size = view.getUint8(33);
      const port = view.getUint16(34, true), at = view.getUint32(40, true);
      const value = size === 1 ? view.getUint8(at) : size === 2 ? view.getUint16(at, true) : view.getUint32(at, true);
      exit(KIND.IO, port, size, out, out ? value : 0, 0);
      if (!out) {
        const v = mb[MB.DATA_LO];
        if (size === 1) view.setUint8(at, v & 0xff);
        else if (size === 2) view.setUint16(at, v & 0xffff, true);
        else view.setUint32(at, v >>> 0, true);
      }
    } else if (reason === X.KVM_EXIT_HLT) {
      return finish(KIND.HLT);
    } else if (reason === X.KVM_EXIT_INTR) {
      continue;
    } else {
      return finish(KIND.OTHER, reason);
    }
  }
};
