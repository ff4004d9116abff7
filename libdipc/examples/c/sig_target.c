/* sig_target: the target of the original DIPC signal experiment. It
 * registers (regist), prints its pid_d, and counts a real-time signal in a
 * handler until COUNT have arrived; then it waits GRACE_MS more so that a
 * signal delivered twice would be counted too, prints "received N" and
 * exits (its registration ends with it).
 *
 * Usage: sig_target COUNT [SIG_OFFSET] [LIMIT_S] [GRACE_MS]
 *   SIG_OFFSET: the signal is SIGRTMIN+SIG_OFFSET (default 1)
 *   LIMIT_S:    give up after this many seconds (default 60)
 * Prints "pid_d N" (and "sig S") once registered, "received N" at the
 * end. Exit 0 if exactly COUNT arrived, 1 otherwise. */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t count;
static volatile sig_atomic_t timed_out;

static void on_signal(int sig)
{
    (void)sig;
    count++;
}

static void on_alarm(int sig)
{
    (void)sig;
    timed_out = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sig_target COUNT [SIG_OFFSET] [LIMIT_S] [GRACE_MS]\n");
        return 2;
    }
    long want = strtol(argv[1], NULL, 0);
    int sig = SIGRTMIN + (argc > 2 ? atoi(argv[2]) : 1);
    unsigned limit = argc > 3 ? (unsigned)atoi(argv[3]) : 60;
    long grace_ms = argc > 4 ? strtol(argv[4], NULL, 0) : 300;

    /* The handler counts; the signal is blocked outside sigsuspend, so
     * none is lost between the check and the wait. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, sig);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    pid_d me = regist();
    if (me < 0) {
        fprintf(stderr, "sig_target: regist: %s\n", strerror(errno));
        return 1;
    }
    printf("pid_d %lld\nsig %d\n", (long long)me, sig);
    fflush(stdout);

    alarm(limit);
    while (count < want && !timed_out)
        sigsuspend(&old);
    if (!timed_out) {
        /* More than COUNT would show up now. */
        sigprocmask(SIG_SETMASK, &old, NULL);
        struct timespec t = {.tv_sec = grace_ms / 1000, .tv_nsec = (grace_ms % 1000) * 1000000};
        while (nanosleep(&t, &t) < 0 && errno == EINTR && !timed_out)
            ;
        sigprocmask(SIG_BLOCK, &block, NULL);
    }
    printf("received %ld\n", (long)count);
    fflush(stdout);
    return count == want ? 0 : 1;
}
