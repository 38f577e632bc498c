/**
 * One vCPU's thread: the synchronous KVM_RUN loop (vcpu_loop.ts; the fast shape, see ../shared/reference/deno-vmm.md)
 * handing every MMIO and port exit to the VMM thread through the mailbox and waiting for the answer.
 *
 * Message in: `{ shimPath, vcpuFd, run, mailbox }` (run: the kvm_run window, mailbox: Int32Array, both shared).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { KvmVcpu, NativeShim } from "../../mod.ts";
import { KIND, MB, STATE } from "./mailbox.ts";
import { runVcpuLoop } from "./vcpu_loop.ts";

self.onmessage = (e: MessageEvent<{ shimPath: string; vcpuFd: number; run: Uint8Array; mailbox: Int32Array }>) => {
  const { shimPath, vcpuFd, run, mailbox: mb } = e.data;
  using shim = NativeShim.loadSync(shimPath);
  Atomics.store(mb, MB.TID, shim.registerKickTarget());
  /** Post an exit and sleep until the VMM answers; returns its answer. */
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
    return mb[MB.DATA_LO];
  };
  const end = runVcpuLoop(KvmVcpu.inWorker(shim, vcpuFd, run), {
    mmio: (address, len, write, lo, hi) => exit(KIND.MMIO, address, len, write, lo, hi),
    io: (port, size, out, value) => exit(KIND.IO, port, size, out, value, 0),
    stopped: () => Atomics.load(mb, MB.STOP) === 1,
  });
  mb[MB.EXITS] = end.exits;
  mb[MB.KIND] = end.kind;
  mb[MB.CODE] = end.code;
  Atomics.store(mb, MB.STATE, STATE.STOPPED);
  Atomics.notify(mb, MB.STATE);
};
