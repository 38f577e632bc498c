/**
 * PCI for the guest: configuration mechanism 1 (ports 0xcf8/0xcfc) with a host bridge at 00:00.0 and a virtio-pci
 * modern block device at 00:01.0, its 16 KiB memory BAR holding the virtio common, ISR, device and notify
 * structures and an MSI-X table of two vectors (config, queue 0).
 *
 * MSI-X rather than INTx: the guest then needs no interrupt routing at all (no _PRT in the DSDT, no IOAPIC pin for
 * the device), the VMM sends each completion as one `KVM_SIGNAL_MSI`, and Linux's virtio-pci driver asks for
 * MSI-X first anyway.
 *
 * The device negotiates VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM (so the guest maps every buffer through
 * the DMA API, i.e. through its VT-d) and reads/writes a RAM disk. Every descriptor, ring and buffer address is an
 * IOVA translated by the VT-d unit; guest values are validated and a bad chain fails the request, never the VMM.
 *
 * @module
 */

export const PCI_CONFIG_ADDRESS = 0xcf8;
/** The device's BAR 0 (64-bit memory), assigned by the VMM; Linux keeps it. */
export const VIRTIO_BAR = 0xfe000000;
const BAR_SIZE = 0x4000;
const COMMON = 0x0000, ISR = 0x1000, DEVICE_CFG = 0x2000, NOTIFY = 0x3000, MSIX_TABLE = 0x3800, MSIX_PBA = 0x3c00;
const QUEUE_SIZE = 128;
const SECTOR = 512;

/** The device's slot on bus 0. */
export const VIRTIO_DEV = 1;

/** The disk's initial bytes: the 32-bit word at byte offset `at` (tools/kernel/guest-init/init.c: disk_word). */
export function diskWord(at: number): number {
  const x = Math.imul(Math.floor(at / 4) >>> 0, 2654435761) >>> 0;
  return (x ^ (x >>> 15) ^ 0x6c696e78) >>> 0;
}

/** DMA through the IOMMU: translate one page, or undefined (a fault the IOMMU recorded). */
export interface Dma {
  translate(iova: number, write: boolean): number | undefined;
}

/** Guest RAM. */
export interface Ram {
  readonly bytes: Uint8Array;
}

export interface BlkStats {
  requests: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
  interrupts: number;
  notifies: number;
}

/** Queue 0's state (split ring). */
interface Virtqueue {
  size: number;
  msix: number;
  enabled: boolean;
  desc: number;
  driver: number;
  device: number;
  lastAvail: number;
  usedIdx: number;
}

/** The virtio-blk device with its PCI function. */
export class VirtioBlk {
  readonly config = new Uint8Array(256);
  readonly stats: BlkStats = { requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0, interrupts: 0, notifies: 0 };
  readonly disk: Uint8Array;
  #barLo = VIRTIO_BAR;
  #barHi = 0;
  #barSizing = [false, false];
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #driverFeatures = [0, 0];
  #status = 0;
  #configMsix = 0xffff;
  #queueSelect = 0;
  #isr = 0;
  readonly #msix = new DataView(new ArrayBuffer(2 * 16));
  #msixControl = 0;
  readonly #q: Virtqueue = {
    size: QUEUE_SIZE,
    msix: 0xffff,
    enabled: false,
    desc: 0,
    driver: 0,
    device: 0,
    lastAvail: 0,
    usedIdx: 0,
  };

  constructor(
    diskBytes: number,
    readonly ram: Ram,
    readonly dma: Dma,
    readonly msi: (address: number, data: number) => void,
  ) {
    this.disk = new Uint8Array(diskBytes);
    const d = new DataView(this.disk.buffer);
    for (let at = 0; at < diskBytes; at += 4) d.setUint32(at, diskWord(at), true);
    for (let i = 0; i < 2; i++) this.#msix.setUint32(i * 16 + 12, 1, true); // vectors start masked
    const c = new DataView(this.config.buffer);
    c.setUint16(0x00, 0x1af4, true); // Red Hat / virtio
    c.setUint16(0x02, 0x1042, true); // modern virtio-blk (0x1040 + 2)
    c.setUint16(0x06, 0x0010, true); // status: capability list
    c.setUint8(0x08, 1); // revision 1: modern only
    c.setUint8(0x0a, 0x80); // subclass: other
    c.setUint8(0x0b, 0x01); // class: mass storage
    c.setUint16(0x2c, 0x1af4, true);
    c.setUint16(0x2e, 0x0002, true);
    c.setUint8(0x34, 0x40); // capabilities
    // virtio capabilities: {vndr 9, next, len, cfg_type, bar, id, pad, pad, offset, length}
    const cap = (at: number, next: number, type: number, offset: number, length: number, extra = 0) => {
      this.config.set([0x09, next, 16 + extra, type, 0, 0, 0, 0], at);
      c.setUint32(at + 8, offset, true);
      c.setUint32(at + 12, length, true);
    };
    cap(0x40, 0x50, 1, COMMON, 0x38);
    cap(0x50, 0x64, 2, NOTIFY, 0x4, 4);
    c.setUint32(0x60, 0, true); // notify_off_multiplier: every queue notifies at NOTIFY
    cap(0x64, 0x74, 3, ISR, 4);
    cap(0x74, 0x84, 4, DEVICE_CFG, 0x40);
    // MSI-X: 2 vectors, table and PBA in BAR 0.
    this.config.set([0x11, 0x00], 0x84);
    c.setUint32(0x88, MSIX_TABLE, true);
    c.setUint32(0x8c, MSIX_PBA, true);
  }

  get barBase(): number {
    return this.#barLo - (this.#barLo & 0xf) + this.#barHi * 2 ** 32;
  }

  /** A configuration-space read of `size` bytes at `offset`. */
  configRead(offset: number, size: number): number {
    if (offset === 0x10 && this.#barSizing[0]) return (~(BAR_SIZE - 1) | 0x4) >>> 0;
    if (offset === 0x14 && this.#barSizing[1]) return 0xffffffff;
    const c = new DataView(this.config.buffer);
    if (offset >= 0x10 && offset < 0x18 && size === 4) return offset === 0x10 ? (this.#barLo | 0x4) >>> 0 : this.#barHi;
    if (offset === 0x86 && size === 2) return this.#msixControl | 1; // table size - 1 = 1
    if (offset === 0x84 && size === 4) return (((this.#msixControl | 1) << 16) | 0x0011) >>> 0;
    if (size === 4) return c.getUint32(offset, true);
    if (size === 2) return c.getUint16(offset, true);
    return c.getUint8(offset);
  }

  configWrite(offset: number, size: number, value: number): void {
    const c = new DataView(this.config.buffer);
    if (offset === 0x04 && size >= 2) c.setUint16(0x04, value & 0x0406, true); // memory, bus master, INTx disable
    else if (offset === 0x10 && size === 4) {
      this.#barSizing[0] = value === 0xffffffff;
      if (!this.#barSizing[0]) this.#barLo = (value & ~(BAR_SIZE - 1)) >>> 0;
    } else if (offset === 0x14 && size === 4) {
      this.#barSizing[1] = value === 0xffffffff;
      if (!this.#barSizing[1]) this.#barHi = value >>> 0;
    } else if (offset === 0x86 && size === 2) this.#msixControl = value & 0xc000;
    else if (offset === 0x84 && size === 4) this.#msixControl = (value >>> 16) & 0xc000;
    else if (offset === 0x3c && size === 1) c.setUint8(0x3c, value);
  }

  /** Whether `gpa` falls in the BAR (with memory decoding on). */
  claims(gpa: number): boolean {
    const base = this.barBase;
    return (this.config[0x04] & 2) !== 0 && gpa >= base && gpa < base + BAR_SIZE;
  }

  mmioRead(gpa: number, size: number): number {
    const off = gpa - this.barBase;
    if (off >= MSIX_TABLE && off < MSIX_TABLE + 32) return this.#msix.getUint32((off - MSIX_TABLE) & ~3, true);
    if (off >= MSIX_PBA && off < MSIX_PBA + 8) return 0;
    if (off === ISR) {
      const isr = this.#isr;
      this.#isr = 0;
      return isr;
    }
    if (off >= DEVICE_CFG && off < DEVICE_CFG + 0x40) {
      const cfg = new DataView(new ArrayBuffer(0x40));
      cfg.setUint32(0, (this.disk.length / SECTOR) >>> 0, true); // capacity in sectors (u64)
      cfg.setUint32(12, 126, true); // seg_max (VIRTIO_BLK_F_SEG_MAX)
      const at = off - DEVICE_CFG;
      return size === 4 ? cfg.getUint32(at, true) : size === 2 ? cfg.getUint16(at, true) : cfg.getUint8(at);
    }
    if (off >= COMMON && off < COMMON + 0x38) return this.#commonRead(off - COMMON, size);
    return 0;
  }

  mmioWrite(gpa: number, size: number, value: number): void {
    const off = gpa - this.barBase;
    if (off >= MSIX_TABLE && off < MSIX_TABLE + 32) {
      this.#msix.setUint32((off - MSIX_TABLE) & ~3, value, true);
      return;
    }
    if (off >= NOTIFY && off < NOTIFY + 4) {
      this.stats.notifies++;
      this.#process();
      return;
    }
    if (off >= COMMON && off < COMMON + 0x38) this.#commonWrite(off - COMMON, size, value);
  }

  #features(select: number): number {
    // VIRTIO_BLK_F_SEG_MAX (2); word 1: VIRTIO_F_VERSION_1 (32), VIRTIO_F_ACCESS_PLATFORM (33).
    return select === 0 ? 1 << 2 : select === 1 ? 0b11 : 0;
  }

  /** Whether the driver accepted VIRTIO_F_ACCESS_PLATFORM (its DMA then goes through the IOMMU). */
  get accessPlatform(): boolean {
    return (this.#driverFeatures[1] & 2) !== 0;
  }

  #commonRead(off: number, _size: number): number {
    const q = this.#q, qsel = this.#queueSelect === 0;
    switch (off) {
      case 0x00:
        return this.#deviceFeatureSelect;
      case 0x04:
        return this.#features(this.#deviceFeatureSelect);
      case 0x08:
        return this.#driverFeatureSelect;
      case 0x0c:
        return this.#driverFeatures[this.#driverFeatureSelect] ?? 0;
      case 0x10:
        return this.#configMsix;
      case 0x12:
        return 1; // num_queues
      case 0x14:
        return this.#status;
      case 0x15:
        return 0; // config_generation
      case 0x16:
        return this.#queueSelect;
      case 0x18:
        return qsel ? q.size : 0;
      case 0x1a:
        return qsel ? q.msix : 0xffff;
      case 0x1c:
        return qsel && q.enabled ? 1 : 0;
      case 0x1e:
        return 0; // queue_notify_off
      case 0x20:
        return q.desc >>> 0;
      case 0x24:
        return Math.floor(q.desc / 2 ** 32);
      case 0x28:
        return q.driver >>> 0;
      case 0x2c:
        return Math.floor(q.driver / 2 ** 32);
      case 0x30:
        return q.device >>> 0;
      case 0x34:
        return Math.floor(q.device / 2 ** 32);
      default:
        return 0;
    }
  }

  #commonWrite(off: number, _size: number, value: number): void {
    const q = this.#q, qsel = this.#queueSelect === 0;
    const setLo = (old: number) => old - (old % 2 ** 32) + (value >>> 0);
    const setHi = (old: number) => (old % 2 ** 32) + (value >>> 0) * 2 ** 32;
    switch (off) {
      case 0x00:
        this.#deviceFeatureSelect = value;
        return;
      case 0x08:
        this.#driverFeatureSelect = value;
        return;
      case 0x0c:
        if (this.#driverFeatureSelect < 2) {
          this.#driverFeatures[this.#driverFeatureSelect] = value & this.#features(this.#driverFeatureSelect);
        }
        return;
      case 0x10:
        this.#configMsix = value & 0xffff;
        return;
      case 0x14:
        if (value === 0) this.#reset();
        else this.#status = value & 0xff;
        return;
      case 0x16:
        this.#queueSelect = value;
        return;
      case 0x18:
        if (qsel && value > 0 && value <= QUEUE_SIZE && (value & (value - 1)) === 0) q.size = value;
        return;
      case 0x1a:
        if (qsel) q.msix = value & 0xffff;
        return;
      case 0x1c:
        if (qsel) q.enabled = value === 1;
        return;
      case 0x20:
        if (qsel) q.desc = setLo(q.desc);
        return;
      case 0x24:
        if (qsel) q.desc = setHi(q.desc);
        return;
      case 0x28:
        if (qsel) q.driver = setLo(q.driver);
        return;
      case 0x2c:
        if (qsel) q.driver = setHi(q.driver);
        return;
      case 0x30:
        if (qsel) q.device = setLo(q.device);
        return;
      case 0x34:
        if (qsel) q.device = setHi(q.device);
        return;
    }
  }

  #reset(): void {
    this.#status = 0;
    this.#driverFeatures = [0, 0];
    Object.assign(this.#q, {
      size: QUEUE_SIZE,
      msix: 0xffff,
      enabled: false,
      desc: 0,
      driver: 0,
      device: 0,
      lastAvail: 0,
      usedIdx: 0,
    });
    this.#configMsix = 0xffff;
    this.#isr = 0;
  }

  // ---- DMA: every access is translated page by page; undefined means the IOMMU faulted.

  #dmaRead(iova: number, length: number): Uint8Array | undefined {
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const a = iova + done, n = Math.min(length - done, 4096 - (a % 4096));
      const gpa = this.dma.translate(a, false);
      if (gpa === undefined || gpa + n > this.ram.bytes.length) return undefined;
      out.set(this.ram.bytes.subarray(gpa, gpa + n), done);
      done += n;
    }
    return out;
  }

  #dmaWrite(iova: number, bytes: Uint8Array): boolean {
    for (let done = 0; done < bytes.length;) {
      const a = iova + done, n = Math.min(bytes.length - done, 4096 - (a % 4096));
      const gpa = this.dma.translate(a, true);
      if (gpa === undefined || gpa + n > this.ram.bytes.length) return false;
      this.ram.bytes.set(bytes.subarray(done, done + n), gpa);
      done += n;
    }
    return true;
  }

  #u16(bytes: Uint8Array | undefined, at = 0): number | undefined {
    return bytes ? bytes[at] | (bytes[at + 1] << 8) : undefined;
  }

  /** Serve every request the driver made available. */
  #process(): void {
    const q = this.#q;
    if (!q.enabled || !(this.#status & 4)) return; // DRIVER_OK
    const avail = this.#u16(this.#dmaRead(q.driver + 2, 2));
    if (avail === undefined) return;
    let served = 0;
    while (q.lastAvail !== avail && served < q.size) {
      const head = this.#u16(this.#dmaRead(q.driver + 4 + (q.lastAvail % q.size) * 2, 2));
      q.lastAvail = (q.lastAvail + 1) & 0xffff;
      served++;
      if (head === undefined || head >= q.size) {
        this.stats.errors++;
        continue;
      }
      const written = this.#request(head);
      const used = new Uint8Array(8);
      const u = new DataView(used.buffer);
      u.setUint32(0, head, true);
      u.setUint32(4, written, true);
      this.#dmaWrite(q.device + 4 + (q.usedIdx % q.size) * 8, used);
      q.usedIdx = (q.usedIdx + 1) & 0xffff;
      this.#dmaWrite(q.device + 2, new Uint8Array([q.usedIdx & 0xff, q.usedIdx >> 8]));
    }
    if (served) this.#interrupt(q.msix);
  }

  /** One request chain; returns the bytes written into device-writable buffers. */
  #request(head: number): number {
    const q = this.#q;
    this.stats.requests++;
    const chain: { addr: number; len: number; write: boolean }[] = [];
    for (let i = head, n = 0; n < q.size; n++) {
      const d = this.#dmaRead(q.desc + i * 16, 16);
      if (!d) return this.#failed(chain);
      const v = new DataView(d.buffer);
      const flags = v.getUint16(12, true);
      chain.push({
        addr: v.getUint32(0, true) + v.getUint32(4, true) * 2 ** 32,
        len: v.getUint32(8, true),
        write: (flags & 2) !== 0,
      });
      if (!(flags & 1)) break;
      i = v.getUint16(14, true);
      if (i >= q.size) return this.#failed(chain);
    }
    if (chain.length < 2 || chain[0].len < 16 || chain[0].write) return this.#failed(chain);
    const status = chain[chain.length - 1];
    if (!status.write || status.len < 1) return this.#failed(chain);
    const header = this.#dmaRead(chain[0].addr, 16);
    if (!header) return this.#failed(chain);
    const h = new DataView(header.buffer);
    const type = h.getUint32(0, true);
    let at = (h.getUint32(8, true) + h.getUint32(12, true) * 2 ** 32) * SECTOR;
    const data = chain.slice(1, -1);
    let written = 0, code = 0;
    if (type === 0 || type === 1) {
      for (const d of data) {
        if (d.write !== (type === 0) || at + d.len > this.disk.length) {
          code = 1;
          break;
        }
        if (type === 0) {
          if (!this.#dmaWrite(d.addr, this.disk.subarray(at, at + d.len))) {
            code = 1;
            break;
          }
          written += d.len;
          this.stats.bytesRead += d.len;
        } else {
          const bytes = this.#dmaRead(d.addr, d.len);
          if (!bytes) {
            code = 1;
            break;
          }
          this.disk.set(bytes, at);
          this.stats.bytesWritten += d.len;
        }
        at += d.len;
      }
    } else if (type !== 4) code = 2; // FLUSH is a no-op on a RAM disk; GET_ID and the rest: unsupported
    if (code) this.stats.errors++;
    this.#dmaWrite(status.addr, new Uint8Array([code]));
    return written + 1;
  }

  #failed(chain: { addr: number; len: number; write: boolean }[]): number {
    this.stats.errors++;
    const status = chain.at(-1);
    if (status?.write) this.#dmaWrite(status.addr, new Uint8Array([1]));
    return 0;
  }

  #interrupt(vector: number): void {
    this.#isr |= 1;
    if (!(this.#msixControl & 0x8000) || vector >= 2) return; // MSI-X off: no INTx is wired (see above)
    if (this.#msixControl & 0x4000) return; // function mask
    const at = vector * 16;
    if (this.#msix.getUint32(at + 12, true) & 1) return; // vector masked (no pending-bit delivery modelled)
    this.stats.interrupts++;
    this.msi(
      this.#msix.getUint32(at, true) + this.#msix.getUint32(at + 4, true) * 2 ** 32,
      this.#msix.getUint32(at + 8, true),
    );
  }
}

/** The host bridge at 00:00.0 (class 0x0600), which Linux's type-1 sanity check looks for. */
export function hostBridgeConfig(offset: number, size: number): number {
  const c = new DataView(new ArrayBuffer(64));
  c.setUint16(0, 0x8086, true);
  c.setUint16(2, 0x29c0, true); // as QEMU's q35 host bridge
  c.setUint8(0x0b, 0x06);
  if (offset + size > 64) return 0;
  return size === 4 ? c.getUint32(offset, true) : size === 2 ? c.getUint16(offset, true) : c.getUint8(offset);
}
