/**
 * The exit mailbox between a vCPU Worker and the VMM thread: a few Int32 slots on a SharedArrayBuffer. The Worker
 * posts an exit (state EXIT) and sleeps in Atomics.wait; the VMM handles it and answers (state RESUME). A final
 * state STOPPED says why the vCPU ended.
 *
 * @module
 */

/** Slot indexes. */
export const MB = {
  STATE: 0,
  KIND: 1,
  ADDR: 2,
  LEN: 3,
  WRITE: 4,
  DATA_LO: 5,
  DATA_HI: 6,
  /** The vCPU thread's kernel tid, for kicks. */
  TID: 7,
  /** KVM_RUN returns so far. */
  EXITS: 8,
  /** Set by the VMM to ask the vCPU to stop at its next exit (after a kick, at once). */
  STOP: 9,
  /** Exit reason (KIND OTHER) or errno (KIND ERROR). */
  CODE: 10,
  SLOTS: 16,
} as const;

/** STATE values. */
export const STATE = { RUNNING: 0, EXIT: 1, RESUME: 2, STOPPED: 3 } as const;

/** KIND values. */
export const KIND = { MMIO: 1, IO: 2, HLT: 3, OTHER: 4, ERROR: 5, CANCELLED: 6 } as const;

/** SIGUSR1: the signal the shim kicks vCPU threads with (its choice: ffi/shim.c takes none from the caller). */
export const KICK_SIGNAL = 10;
