/*
 * The mini-VMM's guest: a real-mode "driver" for an emulated VT-d invalidation queue.
 *
 * It executes a workload script the VMM placed in guest RAM at 0x10000, record by record:
 *   op 1  DESCRIPTORS  u32 count, then count 256-bit descriptors: copied into the queue at IQT (wrapping),
 *                      then the doorbell (IQT write), then IQH/FSTS polled until the queue caught up;
 *   op 2  STORE        u32 gpa, u32 len (a multiple of 4), then len bytes: copied to gpa (PASID table entries);
 *   op 3  WRITE_REG    u32 offset, u32 value: a 32-bit write to the VT-d register page (e.g. PQA);
 *   op 4  WAIT_REG     u32 offset, u32 mask: poll that register until a bit of mask is set (e.g. PRS.PPR);
 *   op 0  END          halt.
 * If the queue reports FSTS.IQE it writes IQH to port 0x511 and halts, as a driver with no recovery would.
 *
 * Memory: code at 0x1000, the queue at 0x8000 (8 KiB: IQA QS=1, DW=1), the script from 0x10000, the VT-d
 * register page at 0xD0000 (unbacked, so every access is an MMIO exit).
 * Build: as --32 -o guest.o guest.S && objcopy -O binary -j .text guest.o guest.bin (guest_code.ts holds the bytes;
 * tests/examples/mini_vmm_test.ts reassembles this file and compares).
 */
	.code16
	.text
	.globl _start
_start:
	cli
	xor	%ax, %ax
	mov	%ax, %ss
	mov	$0x1000, %sp
	mov	$0xD000, %ax
	mov	%ax, %gs		/* gs: the VT-d register page */
	movl	$0x8801, %gs:0x90	/* IQA: queue at 0x8000, 256-bit descriptors, 2 pages */
	movl	$0, %gs:0x94
	mov	$0x1000, %ax
	mov	%ax, %ds		/* ds:si walks the script */
	xor	%si, %si
	xor	%edi, %edi		/* queue tail, bytes */
next:
	mov	%si, %ax		/* normalise ds:si (si < 16) so the script may span 64 KiB segments */
	shr	$4, %ax
	mov	%ds, %dx
	add	%ax, %dx
	mov	%dx, %ds
	and	$0xF, %si
	lodsl
	cmp	$1, %eax
	je	descriptors
	cmp	$2, %eax
	je	store
	cmp	$3, %eax
	je	write_reg
	cmp	$4, %eax
	je	wait_reg
halt:
	hlt
	jmp	halt

descriptors:
	lodsl
	mov	%ax, %bp		/* descriptors in this record */
	test	%bp, %bp
	jz	next
	mov	$0x0800, %ax
	mov	%ax, %es		/* es:di: the queue slot at IQT */
copy:
	mov	$8, %cx
	rep movsl
	and	$0x1FFF, %di
	dec	%bp
	jnz	copy
	movl	%edi, %gs:0x88		/* IQT: the doorbell */
poll:
	movl	%gs:0x34, %eax		/* FSTS */
	test	$0x10, %al		/* IQE */
	jnz	iqe
	movl	%gs:0x80, %eax		/* IQH */
	cmp	%edi, %eax
	jne	poll
	jmp	next

store:
	push	%edi
	lodsl				/* gpa */
	mov	%eax, %ebx
	shr	$4, %ebx
	mov	%bx, %es
	and	$0xF, %ax
	mov	%ax, %di
	lodsl				/* length in bytes */
	shr	$2, %eax
	mov	%ax, %cx
	rep movsl
	pop	%edi
	jmp	next

write_reg:
	lodsl				/* register offset */
	mov	%ax, %bx
	lodsl				/* value */
	movl	%eax, %gs:(%bx)
	jmp	next

wait_reg:
	lodsl				/* register offset */
	mov	%ax, %bx
	lodsl				/* mask */
	mov	%eax, %ecx
1:
	movl	%gs:(%bx), %eax
	test	%ecx, %eax
	jz	1b
	jmp	next

iqe:
	movl	%gs:0x80, %eax
	mov	$0x511, %dx
	out	%eax, %dx		/* report where the queue stopped */
	jmp	halt
