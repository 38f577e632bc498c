/**
 * The CPUID the Linux guest gets: a conservative subset of what KVM supports.
 *
 * @module
 */
import type { CpuidLeaf } from "../../mod.ts";

/**
 * A conservative CPUID from KVM's supported list, close to QEMU's `kvm64`: a Linux guest inside the nested test VM
 * crashed early with `-cpu host`-like CPUID (features TCG's emulated SVM does not really carry), and boots with
 * kvm64. Kept: the vendor, family/model, the base x86-64 feature set, NX/LM/SYSCALL, the KVM paravirt clock leaves.
 * Dropped: everything in leaf 7 and above (AVX, SMEP/SMAP, PCID...), XSAVE, x2APIC, TSC-deadline, topology leaves.
 */
export function conservativeCpuid(supported: readonly CpuidLeaf[]): CpuidLeaf[] {
  const out: CpuidLeaf[] = [];
  const LEAF1_EDX = 0x078bfbff; // fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
  const LEAF1_ECX = (1 << 0) | (1 << 13) | (1 << 31); // sse3, cx16, hypervisor
  // syscall, nx, lm, and AMD's copies of leaf 1's bits 0-24 (not 25-27: FFXSR, 1 GiB pages, RDTSCP)
  const EXT1_EDX = (1 << 11) | (1 << 20) | (1 << 29) | (LEAF1_EDX & 0x01ffffff);
  const EXT1_ECX = 1 << 0; // lahf_lm
  const KVM_FEATURES = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 24); // kvmclock (old, new MSRs), no port-0x80 delay, stable
  for (const l of supported) {
    const leaf = { ...l };
    if (l.fn === 0) leaf.eax = Math.min(l.eax, 1);
    else if (l.fn === 1) {
      leaf.ecx = (l.ecx & LEAF1_ECX) | (1 << 31);
      leaf.edx = l.edx & LEAF1_EDX;
      leaf.ebx = (l.ebx & 0xff00) | (1 << 16); // APIC id 0, one logical processor, CLFLUSH size
    } else if (l.fn === 0x80000000) leaf.eax = Math.min(l.eax, 0x80000008);
    else if (l.fn === 0x80000001) {
      leaf.ecx = l.ecx & EXT1_ECX;
      leaf.edx = l.edx & EXT1_EDX;
    } else if (l.fn === 0x40000001) {
      leaf.eax = l.eax & KVM_FEATURES;
      leaf.edx = 0;
    } else if (l.fn === 0x80000008) {
      leaf.ebx = 0;
      leaf.ecx = 0;
    } else if (!(l.fn === 0x40000000 || (l.fn >= 0x80000002 && l.fn <= 0x80000006))) continue;
    out.push(leaf);
  }
  return out;
}
