/**
 * A 16550 UART at 0x3f8 (IRQ 4): enough for Linux's 8250 driver and console — transmit goes to a line sink at once
 * (THR is always empty), nothing is ever received, and the THR-empty interrupt follows the 16550's rules (pending
 * when transmit is enabled in IER and THR is empty; cleared by reading IIR while it is the reason, or by a write
 * to THR), as an edge on the in-kernel PIC/IOAPIC.
 *
 * @module
 */

export const UART_BASE = 0x3f8;
export const UART_IRQ = 4;

export class Uart16550 {
  #ier = 0;
  #lcr = 0;
  #mcr = 0;
  #scr = 0;
  #dll = 1;
  #dlm = 0;
  #thrPending = false;
  #line = 0;
  #pending: number[] = [];
  /** Bytes written by the guest. */
  bytes = 0;

  constructor(readonly onLine: (line: string) => void, readonly setIrq: (level: 0 | 1) => void) {}

  #update(): void {
    const level = (this.#ier & 2) && this.#thrPending ? 1 : 0;
    if (level !== this.#line) {
      this.#line = level;
      this.setIrq(level);
    }
  }

  #emit(byte: number): void {
    this.bytes++;
    if (byte === 10) {
      this.onLine(new TextDecoder().decode(new Uint8Array(this.#pending)).replace(/\r$/, ""));
      this.#pending = [];
    } else if (this.#pending.length < 4096) this.#pending.push(byte);
  }

  /** Flush a last line without a newline. */
  flush(): void {
    if (this.#pending.length) this.#emit(10);
  }

  read(offset: number): number {
    const dlab = (this.#lcr & 0x80) !== 0;
    switch (offset) {
      case 0:
        return dlab ? this.#dll : 0; // RBR: nothing received
      case 1:
        return dlab ? this.#dlm : this.#ier;
      case 2: {
        // IIR: FIFO enabled bits (0xc0) + the highest pending interrupt.
        if ((this.#ier & 2) && this.#thrPending) {
          this.#thrPending = false;
          this.#update();
          return 0xc2;
        }
        return 0xc1;
      }
      case 3:
        return this.#lcr;
      case 4:
        return this.#mcr;
      case 5:
        return 0x60; // LSR: THR empty, transmitter empty, no data
      case 6:
        // MSR: in loopback DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD (the 8250 driver's loopback test); else DCD|DSR|CTS.
        return (this.#mcr & 0x10)
          ? ((this.#mcr & 1) << 5) | ((this.#mcr & 2) << 3) | ((this.#mcr & 4) << 4) | ((this.#mcr & 8) << 4)
          : 0xb0;
      case 7:
        return this.#scr;
      default:
        return 0xff;
    }
  }

  write(offset: number, value: number): void {
    const dlab = (this.#lcr & 0x80) !== 0;
    switch (offset) {
      case 0:
        if (dlab) this.#dll = value;
        else {
          if (!(this.#mcr & 0x10)) this.#emit(value & 0xff);
          this.#thrPending = true; // sent at once: THR empty again
          this.#update();
        }
        return;
      case 1:
        if (dlab) this.#dlm = value;
        else {
          const enabling = !(this.#ier & 2) && (value & 2);
          this.#ier = value & 0x0f;
          if (enabling) this.#thrPending = true;
          this.#update();
        }
        return;
      case 3:
        this.#lcr = value;
        return;
      case 4:
        this.#mcr = value & 0x1f;
        return;
      case 7:
        this.#scr = value;
        return;
      default:
        return; // FCR and the read-only registers
    }
  }
}
