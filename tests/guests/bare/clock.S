/* clock.S: a bare-metal x86 guest that measures how much guest time its own work takes, used as
 * a 64 KiB -bios image (like boot.S) for ips.lua and QEMU's libips.so. From the reset vector it
 * enters 32-bit protected mode with flat segments (like io.S), starts the HPET (QEMU's runs at
 * 100 MHz from the guest's virtual clock), reads its counter, runs LOOPS iterations of dec/jnz
 * (2 * LOOPS instructions), reads the counter again and writes the elapsed guest time in units of
 * 20 ms (at most 127) to the isa-debug-exit port (iobase 0xf4): QEMU exits with status
 * (units << 1) | 1. At a rate of ips instructions per second the loop takes 2 * LOOPS / ips
 * seconds of guest time: 20 units at ips=500k, 100 at ips=100k; without pacing a few ms (0 or 1
 * unit). The HPET is read where it is computed, in the vCPU's own access: no timer, interrupt
 * or main-loop timing is involved. */
#define LOOPS 100000
#define HPET 0xfed00000
#define UNIT 2000000            /* HPET ticks of 10 ns in 20 ms */
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
    movl $1, HPET + 0x10        /* general configuration: ENABLE_CNF */
    mov HPET + 0xf0, %esi       /* main counter, low 32 bits (they wrap after 42 s) */
    mov $LOOPS, %ecx
1:  dec %ecx
    jnz 1b
    mov HPET + 0xf0, %eax
    sub %esi, %eax
    xor %edx, %edx
    mov $UNIT, %ecx
    div %ecx
    cmp $127, %eax
    jbe 2f
    mov $127, %eax
2:  out %al, $0xf4
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
