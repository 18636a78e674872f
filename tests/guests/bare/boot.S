/* boot.S: a bare-metal x86 guest for system-mode tests, used as a 64 KiB -bios image.
 * The reset vector jumps to a real-mode loop of LOOPS iterations, each one 32-bit store and one
 * load at physical 0x1000, then writes 0x10 to the isa-debug-exit port (iobase 0xf4): QEMU exits
 * with status (0x10 << 1) | 1 = 33. Instruction count: 4 * LOOPS + 6, +1 on QEMU >= 10 when its
 * asynchronous debug-exit lets the final hlt run first; LOOPS stores and LOOPS loads. */
#define LOOPS 1000

    .code16
    .text
    .globl _start
_start:
    xor %ax, %ax
    mov %ax, %ds
    mov $LOOPS, %ecx
1:  mov %ecx, 0x1000
    mov 0x1000, %edx
    dec %ecx
    jnz 1b
    mov $0x10, %al
    out %al, $0xf4
    hlt

    .org 0xfff0             /* reset vector: F000:FFF0 */
    ljmp $0xf000, $_start
    .org 0x10000
