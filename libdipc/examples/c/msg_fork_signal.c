/* msg_fork_signal: N forked children each block in dipc_msgrcv on a
 * distributed queue of another host (their first remote call: each opens
 * a session of its own), and each gets SIGUSR1, whose handler is
 * installed with SA_RESTART, 0.2 to 3 ms after it said it was about to
 * call, while its session is still opening. As with the kernel's msgrcv,
 * every call must end with EINTR; none may sleep on with its signal lost.
 *
 * A signal handled before the child enters dipc_msgrcv (the child was not
 * scheduled between its "about to call" and the call, on a busy machine)
 * leaves the call to sleep, as it would leave the kernel's msgrcv: no
 * call could report it. The child sees that case (its handler ran before
 * it set `calling`), does not call, and exits 4: it is counted "early",
 * not as a call. The same can happen after that check, in the few
 * instructions before the library holds signals for the call; a child
 * still in its call 1 s after its signal gets a second one, and if that
 * ends its call with EINTR it is counted "late". A library that loses
 * signals while it opens the session makes many children late (5 to 8 in
 * 100 before it held them); the caller decides how many it tolerates.
 *
 * Usage: msg_fork_signal KEY N   (the queue must exist and stay empty)
 * Prints "E eintr, H hung, O other, X early, L late" (their sum is N);
 * exits 0 only if every call made ended with EINTR (H = O = 0). */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t calling, early;

static void on_usr1(int sig)
{
    (void)sig;
    if (!calling)
        early = 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: msg_fork_signal KEY N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    if (n < 1 || n > 1000) {
        fprintf(stderr, "msg_fork_signal: N must be 1..1000\n");
        return 2;
    }
    int msq = dipc_msgget((key_t)strtol(argv[1], NULL, 0), IPC_DIPC);
    if (msq < 0) {
        perror("dipc_msgget");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pid_t *kids = calloc((size_t)n, sizeof *kids);
    int *done = calloc((size_t)n, sizeof *done);
    int *again = calloc((size_t)n, sizeof *again);
    struct timespec *sent = calloc((size_t)n, sizeof *sent);
    if (!kids || !done || !again || !sent)
        return 2;
    srand((unsigned)getpid());
    for (int i = 0; i < n; i++) {
        int p[2];
        if (pipe(p) != 0) {
            perror("pipe");
            return 2;
        }
        pid_t c = fork();
        if (c < 0) {
            perror("fork");
            return 2;
        }
        if (c == 0) {
            struct { long t; char text[64]; } m;
            close(p[0]);
            if (write(p[1], "x", 1) != 1)
                _exit(1);
            calling = 1;
            if (early)
                _exit(4);
            errno = 0;
            long r = dipc_msgrcv(msq, &m, sizeof m.text, 0, 0);
            if (r == -1 && errno == EINTR)
                _exit(0);
            fprintf(stderr, "child %d: msgrcv returned %ld, errno %d (%s)\n", i, r, errno,
                    strerror(errno));
            _exit(r >= 0 ? 3 : 1);
        }
        close(p[1]);
        char b;
        if (read(p[0], &b, 1) != 1) {
            fprintf(stderr, "child %d died before its call\n", i);
            return 2;
        }
        close(p[0]);
        struct timespec d = {0, (200 + rand() % 2800) * 1000L};
        nanosleep(&d, NULL);
        kill(c, SIGUSR1);
        clock_gettime(CLOCK_MONOTONIC, &sent[i]);
        kids[i] = c;
    }
    int eintr = 0, other = 0, early_n = 0, late = 0, left = n;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* Every call has 10 s to end once its signal came. */
    for (;;) {
        for (int i = 0; i < n; i++) {
            int st;
            if (done[i] || waitpid(kids[i], &st, WNOHANG) != kids[i])
                continue;
            done[i] = 1;
            left--;
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && again[i])
                late++;
            else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                eintr++;
            else if (WIFEXITED(st) && WEXITSTATUS(st) == 4)
                early_n++;
            else
                other++;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        for (int i = 0; i < n; i++) {
            double since = (double)(t.tv_sec - sent[i].tv_sec) +
                           (double)(t.tv_nsec - sent[i].tv_nsec) / 1e9;
            if (!done[i] && !again[i] && since >= 1.0) {
                again[i] = 1;
                kill(kids[i], SIGUSR1);
            }
        }
        if (left == 0 || t.tv_sec - t0.tv_sec >= 10)
            break;
        struct timespec nap = {0, 10 * 1000000L};
        nanosleep(&nap, NULL);
    }
    for (int i = 0; i < n; i++) {
        if (!done[i]) {
            fprintf(stderr, "child %d (pid %d) still in msgrcv 10 s after its signal\n", i,
                    kids[i]);
            kill(kids[i], SIGKILL);
            waitpid(kids[i], NULL, 0);
        }
    }
    printf("%d eintr, %d hung, %d other, %d early, %d late\n", eintr, left, other, early_n,
           late);
    return left == 0 && other == 0 ? 0 : 1;
}
