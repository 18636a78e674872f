/* traps.S: a bare-metal x86 guest that takes exceptions and interrupts, used as a 64 KiB -bios
 * image (like boot.S) for the discontinuity ports (traps.lua, tests/scripts/discons.lua). From
 * the reset vector it enters 32-bit protected mode with flat segments (no paging: virtual =
 * physical), loads an IDT and then, in this order:
 *   BREAKS  int3           #BP (vector 3, a trap: returns after the int3)
 *   UDS     ud2            #UD (vector 6, a fault: the handler skips the 2-byte ud2)
 *   DIVS    div %ecx by 0  #DE (vector 0, a fault: the handler skips the 2-byte div)
 *   SWINTS  int $0x30      a software interrupt (vector 0x30)
 * then puts the local APIC in virtual-wire mode, remaps the 8259 PIC (IRQ 0 -> vector 0x20,
 * every other line masked), sets the 8254 PIT channel 0 to a 100 Hz rate generator, enables
 * interrupts and spins, without hlt, until TICKS timer interrupts have come (a spin executes
 * instructions, so under a plugin that moves the guest clock by instruction counts, ips.lua or
 * libips.so, time still passes and the ticks come). Each handler counts its calls in RAM
 * (0x1000 + 4 * kind); at the end the guest checks the counts and writes 0x10 to the
 * isa-debug-exit port (iobase 0xf4), so QEMU exits with status (0x10 << 1) | 1 = 33, or 0x11
 * (status 35) when a count is wrong or another vector came.
 * The handler of the last tick returns with interrupts disabled, so the counts are the same in
 * every run: BREAKS + UDS + DIVS + SWINTS exceptions and TICKS timer interrupts. (QEMU 10.2
 * reports each x86 exception, int $n included, twice: as an exception where it is raised and as
 * an interrupt where it is delivered; and the #DE of div with from_pc at the start of the div's
 * block, which libdiscons.so reports as a mismatch.) */
#define BREAKS 3
#define UDS 2
#define DIVS 1
#define SWINTS 4
#define TICKS 5
#define IMAGE 0xf0000           /* where the 64 KiB image appears below 1 MiB (isa-bios) */
#define COUNTS 0x1000           /* u32 counts: breaks, uds, divs, swints, ticks */
#define PIT_DIVISOR 11932       /* 1193182 Hz / 11932 = 100 Hz */
#define APIC 0xfee00000

    .code16
    .text
    .globl _start
_start:
    cli
    lgdtl %cs:gdt_desc
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(IMAGE + pm32)

    .code32
pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x8000, %esp
    lidt IMAGE + idt_desc
    xor %eax, %eax
    mov $COUNTS, %edi
    mov $5, %ecx
    rep stosl

    mov $BREAKS, %ebx
1:  int3
    dec %ebx
    jnz 1b
    mov $UDS, %ebx
2:  ud2
    dec %ebx
    jnz 2b
    mov $DIVS, %ebx
3:  xor %edx, %edx
    mov $1, %eax
    xor %ecx, %ecx
    div %ecx
    dec %ebx
    jnz 3b
    mov $SWINTS, %ebx
4:  int $0x30
    dec %ebx
    jnz 4b

    /* Local APIC in virtual-wire mode, as a BIOS leaves it: software-enabled (spurious vector
     * 0x2f) with LINT0 in ExtINT mode, so the 8259's output reaches the CPU (QEMU resets LINT0
     * to fixed delivery of vector 0, which drops it). */
    movl $0x12f, APIC + 0xf0
    movl $0x700, APIC + 0x350
    /* 8259 PIC: ICW1 (edge, cascade, ICW4), ICW2 vector bases 0x20/0x28, ICW3, ICW4 8086 mode */
    mov $0x11, %al
    out %al, $0x20
    out %al, $0xa0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xa1
    mov $0x04, %al
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al
    out %al, $0x21
    out %al, $0xa1
    mov $0xfe, %al              /* only IRQ 0 */
    out %al, $0x21
    mov $0xff, %al
    out %al, $0xa1
    /* 8254 PIT channel 0: lobyte/hibyte, mode 2 (rate generator) */
    mov $0x34, %al
    out %al, $0x43
    mov $(PIT_DIVISOR & 0xff), %al
    out %al, $0x40
    mov $(PIT_DIVISOR >> 8), %al
    out %al, $0x40
    sti
5:  cmpl $TICKS, COUNTS + 16
    jb 5b
    cli

    mov $0x10, %al
    cmpl $BREAKS, COUNTS
    jne 6f
    cmpl $UDS, COUNTS + 4
    jne 6f
    cmpl $DIVS, COUNTS + 8
    jne 6f
    cmpl $SWINTS, COUNTS + 12
    je 7f
6:  mov $0x11, %al
7:  out %al, $0xf4
    hlt

on_break:
    incl COUNTS
    iret
on_ud:
    incl COUNTS + 4
    addl $2, (%esp)             /* past the ud2 */
    iret
on_div:
    incl COUNTS + 8
    addl $2, (%esp)             /* past the div %ecx */
    iret
on_swint:
    incl COUNTS + 12
    iret
on_tick:
    push %eax
    incl COUNTS + 16
    cmpl $TICKS, COUNTS + 16
    jb 8f
    andl $~0x200, 12(%esp)      /* the last tick: return with interrupts off (IF in EFLAGS) */
8:  mov $0x20, %al              /* end of interrupt */
    out %al, $0x20
    pop %eax
    iret
on_other:                       /* any other vector: exit with status 35 */
    mov $0x11, %al
    out %al, $0xf4
    hlt

    .p2align 3
gdt:
    .quad 0                     /* null */
    .quad 0x00cf9a000000ffff    /* 0x08: code, base 0, limit 4 GiB, 32-bit */
    .quad 0x00cf92000000ffff    /* 0x10: data, base 0, limit 4 GiB */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long IMAGE + gdt

/* A 32-bit interrupt gate to a handler of this image: the handler's offset in the image fits 16
 * bits and the image sits at 0xf0000, so the high half of the address is 0x000f. */
.macro gate handler
    .word \handler
    .word 0x08
    .byte 0, 0x8e
    .word IMAGE >> 16
.endm

    .p2align 3
idt:
    gate on_div                 /* 0 #DE */
    .rept 2
    gate on_other
    .endr
    gate on_break               /* 3 #BP */
    .rept 2
    gate on_other
    .endr
    gate on_ud                  /* 6 #UD */
    .rept 0x20 - 7
    gate on_other
    .endr
    gate on_tick                /* 0x20: IRQ 0 */
    .rept 0x30 - 0x21
    gate on_other
    .endr
    gate on_swint               /* 0x30 */
idt_end:
idt_desc:
    .word idt_end - idt - 1
    .long IMAGE + idt

    .code16
    .org 0xfff0                 /* reset vector: F000:FFF0 */
    ljmp $0xf000, $_start
    .org 0x10000
