/* io.S: a bare-metal x86 guest that touches two memory-mapped devices, used as a 64 KiB -bios
 * image (like boot.S) for hwprofile.lua. From the reset vector it enters 32-bit protected mode
 * with flat segments (no paging: virtual = physical), then makes these 32-bit accesses:
 *   local APIC (0xfee00000, QEMU's "apic-msi"): 3 reads of the version register (offset 0x30),
 *                       1 read of the ID register (0x20), 2 writes of 0 to the task priority (0x80);
 *   IOAPIC (0xfec00000, "ioapic"): 1 write selecting register 1 (offset 0), 2 reads of it (0x10);
 *   RAM (0x1000): 1 store, 1 load (not I/O);
 * and writes 0x10 to the isa-debug-exit port (iobase 0xf4): QEMU exits with status 33. Both
 * devices belong to the default "pc" machine, also with -nodefaults, and each fills whole pages
 * (a device smaller than a page, like the HPET, shows up in QEMU as an unnamed "subpage" region
 * whose plugin name, "anon" + a host pointer, changes from run to run). The lgdt and the far jump
 * also read the GDT from the image: RAM accesses as well. */
#define APIC 0xfee00000
#define IOAPIC 0xfec00000
#define IMAGE 0xf0000           /* where the 64 KiB image appears below 1 MiB (isa-bios) */

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
    mov APIC + 0x30, %eax
    mov APIC + 0x30, %eax
    mov APIC + 0x30, %eax
    mov APIC + 0x20, %eax
    movl $0, APIC + 0x80
    movl $0, APIC + 0x80
    movl $1, IOAPIC
    mov IOAPIC + 0x10, %eax
    mov IOAPIC + 0x10, %eax
    movl $7, 0x1000
    mov 0x1000, %eax
    mov $0x10, %al
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

    .code16
    .org 0xfff0                 /* reset vector: F000:FFF0 */
    ljmp $0xf000, $_start
    .org 0x10000
