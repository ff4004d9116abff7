/* shm_sigbus: touch a page of a distributed segment that must raise SIGBUS
 * (its content was lost), from a thread whose signal handlers run on a
 * small alternate signal stack.
 *
 *   shm_sigbus KEY SIZE PAGE MODE [STACK]
 *
 * MODE says what the program does about SIGBUS:
 *   handler   a handler (SA_SIGINFO | SA_ONSTACK) that checks it runs on
 *             the alternate stack with si_addr = the address touched and
 *             si_code = BUS_ADRERR, prints "sigbus at page PAGE", and
 *             exits 44 (45 if a check fails)
 *   default   nothing: the process dies of SIGBUS
 *   blocked   SIGBUS blocked: the kernel still delivers a fault's SIGBUS,
 *             which kills the process
 *   ignored   SIGBUS ignored: likewise
 *
 * STACK is the alternate stack's size in bytes; by default the least the
 * kernel accepts on this CPU (AT_MINSIGSTKSZ, which holds one signal
 * frame) plus MINSIGSTKSZ for the handlers' own use: room for one frame,
 * not two. The segment must exist (this program does not create it).
 * Exits 3 if the touch returned.
 */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif

static volatile uintptr_t expected;
static size_t page_no;

/* The handler calls libc through these pointers. A function's address is
 * resolved when the program loads; a first call through the PLT instead
 * runs the dynamic linker's lazy binding, which saves the whole vector
 * state (about 3 KB with AVX-512) on the stack the handler runs on, more
 * than MINSIGSTKSZ. (A program linked with -z now needs no such care.) */
static int (*volatile alt_stack)(const stack_t *, stack_t *) = sigaltstack;
static ssize_t (*volatile put)(int, const void *, size_t) = write;
static void (*volatile leave)(int) = _exit;

static void die(const char *what)
{
    fprintf(stderr, "shm_sigbus: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    stack_t now;
    int on_alt = alt_stack(NULL, &now) == 0 && (now.ss_flags & SS_ONSTACK);
    int ok = on_alt && (uintptr_t)info->si_addr == expected && info->si_code == BUS_ADRERR;
    if (ok) {
        /* No stdio here: the handler has MINSIGSTKSZ of stack to itself. */
        static const char head[] = "sigbus at page ";
        char digits[24];
        size_t n = sizeof digits, p = page_no;
        digits[--n] = '\n';
        do {
            digits[--n] = (char)('0' + p % 10);
            p /= 10;
        } while (p != 0 && n > 0);
        (void)!put(1, head, sizeof head - 1);
        (void)!put(1, digits + n, sizeof digits - n);
    } else {
        static const char bad[] = "sigbus with the wrong stack, address or code\n";
        (void)!put(2, bad, sizeof bad - 1);
    }
    leave(ok ? 44 : 45);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: shm_sigbus KEY SIZE PAGE handler|default|blocked|ignored [STACK]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    size_t size = strtoull(argv[2], NULL, 0);
    page_no = strtoull(argv[3], NULL, 0);
    const char *mode = argv[4];
    size_t stack = argc > 5 ? strtoull(argv[5], NULL, 0) : 0;
    if (stack == 0) {
        unsigned long min = getauxval(AT_MINSIGSTKSZ);
        stack = (min > MINSIGSTKSZ ? min : MINSIGSTKSZ) + MINSIGSTKSZ;
    }

    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = malloc(stack);
    ss.ss_size = stack;
    if (ss.ss_sp == NULL || sigaltstack(&ss, NULL) != 0)
        die("sigaltstack");

    if (strcmp(mode, "handler") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, NULL) != 0)
            die("sigaction");
    } else if (strcmp(mode, "blocked") == 0) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGBUS);
        if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
            die("sigprocmask");
    } else if (strcmp(mode, "ignored") == 0) {
        if (signal(SIGBUS, SIG_IGN) == SIG_ERR)
            die("signal");
    } else if (strcmp(mode, "default") != 0) {
        fprintf(stderr, "shm_sigbus: bad mode %s\n", mode);
        return 2;
    }

    int id = dipc_shmget(key, size, IPC_DIPC);
    if (id < 0)
        die("dipc_shmget");
    char *base = dipc_shmat(id, NULL, 0);
    if (base == (void *)-1)
        die("dipc_shmat");
    volatile uint64_t *w = (volatile uint64_t *)(base + page_no * 4096 + 8);
    expected = (uintptr_t)w;
    printf("stack %zu, touching page %zu\n", stack, page_no);
    fflush(stdout);
    uint64_t v = *w;
    printf("no signal: read %llu\n", (unsigned long long)v);
    return 3;
}
