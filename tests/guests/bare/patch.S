/* patch.S: a bare-metal x86 guest for patch.lua and QEMU's libpatch.so, used as a 64 KiB -bios
 * image (like boot.S). In real mode it copies a two-instruction function into RAM at 0:0x2000
 *     movl $0x5a5a0001, %eax      66 b8 01 00 5a 5a    (the bytes a test patches)
 *     lret
 * calls it CALLS times, adds the low byte of each result, and writes the sum to the
 * isa-debug-exit port (iobase 0xf4): QEMU exits with status (sum << 1) | 1. Unpatched, the sum
 * is CALLS (status 7); with target=66b801005a5a,patch=66b802005a5a the function returns 2 once
 * the patched bytes are translated (status 11 when the call that triggers the patch still runs
 * the old translation, 13 if it ran the new one). The code in ROM (this image) holds the same
 * bytes only as data to copy: the patch applies to the copy in RAM, which a physical write can
 * change (a write to the BIOS ROM is dropped). */
#define CALLS 3
#define RAM_FN 0x2000

    .code16
    .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %es
    mov %ax, %ss
    mov $0x7000, %sp
    push %cs
    pop %ds
    mov $fn, %si
    mov $RAM_FN, %di
    mov $(fn_end - fn), %cx
    cld
    rep movsb
    mov %ax, %ds
    xor %bl, %bl
    mov $CALLS, %cx
1:  lcall $0, $RAM_FN
    add %al, %bl
    dec %cx
    jnz 1b
    mov %bl, %al
    out %al, $0xf4
    hlt

fn:
    movl $0x5a5a0001, %eax
    lret
fn_end:

    .org 0xfff0                 /* reset vector: F000:FFF0 */
    ljmp $0xf000, $_start
    .org 0x10000
