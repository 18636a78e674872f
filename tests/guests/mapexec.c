/* mapexec.c: mappings and faults for drcov's module table and cflow's early exits. x86_64 only.
 *  1. maps FILE (argv[1], default /bin/true) readable and executable without running it, then
 *     unmaps it; prints "file 0x...";
 *  2. writes a tiny function into a fresh anonymous executable mapping and calls it; prints
 *     "jit 42 at 0x...";
 *  3. loads from a PROT_NONE page FAULTS times, each time leaving the SIGSEGV handler (on_segv)
 *     with siglongjmp; prints "faults 5". */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FAULTS 5

static sigjmp_buf env;
static volatile int sink;

__attribute__((noinline)) void on_segv(int sig)
{
    siglongjmp(env, sig);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/bin/true";
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    void *file = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    close(fd);
    if (file == MAP_FAILED) {
        perror("mmap file");
        return 1;
    }
    printf("file %p\n", file);
    munmap(file, 4096);

    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) {
        perror("mmap code");
        return 1;
    }
    static const unsigned char ret42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3}; /* mov $42,%eax; ret */
    memcpy(code, ret42, sizeof ret42);
    int (*fn)(void) = (int (*)(void))code;
    printf("jit %d at %p\n", fn(), (void *)code);

    volatile int *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bad == MAP_FAILED) {
        perror("mmap bad");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    int faults = 0;
    for (int i = 0; i < FAULTS; i++) {
        if (sigsetjmp(env, 1) == 0) {
            sink = *bad;
        } else {
            faults++;
        }
    }
    printf("faults %d\n", faults);
    return 0;
}
