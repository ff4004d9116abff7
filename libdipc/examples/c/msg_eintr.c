/* msg_eintr: blocks in dipc_msgrcv on a distributed queue until SIGALRM,
 * whose handler is installed with SA_RESTART, interrupts it. System V
 * msgrcv is never restarted after a handler (signal(7)), so the call must
 * return -1 with errno EINTR, as the kernel's msgrcv does locally.
 *
 * Usage: msg_eintr KEY [SECONDS]   (the queue must exist; default 1 s)
 * Prints "blocking" once it is about to block, then "EINTR after N ms".
 * Exit 0 on EINTR; 2 if a message arrived instead; 1 on any other result. */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

struct msg {
    long mtype;
    char text[8192];
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: msg_eintr KEY [SECONDS]\n");
        return 1;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    unsigned secs = argc > 2 ? (unsigned)atoi(argv[2]) : 1;
    int id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) < 0) {
        perror("sigaction");
        return 1;
    }
    static struct msg m;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    alarm(secs);
    printf("blocking\n");
    fflush(stdout);
    ssize_t n = dipc_msgrcv(id, &m, sizeof m.text, 0, 0);
    int e = errno;
    long ms = ms_since(&t0);
    if (n < 0 && e == EINTR) {
        printf("EINTR after %ld ms (%d alarm)\n", ms, (int)alarms);
        return alarms == 1 ? 0 : 1;
    }
    if (n >= 0) {
        printf("received a message of type %ld, %zd bytes, after %ld ms\n", m.mtype, n, ms);
        return 2;
    }
    printf("failed after %ld ms: %s (errno %d)\n", ms, strerror(e), e);
    return 1;
}
