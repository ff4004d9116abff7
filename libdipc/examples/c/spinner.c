/* spinner: a CPU-bound migratable process for the load balancer's tests.
 *
 *   spinner SECONDS
 *
 * Starts a session of its own, registers, declares itself migratable and
 * prints "pid_d N". Then it spins (pure CPU work) until SECONDS of wall
 * time have passed since its first start (the deadline travels with it),
 * calling dipc_migration_point() every 5 ms or so: a move the balancer
 * (or dipcref migrate) asks for happens there. Each restored process
 * prints "moved M pid_d D pid P"; a move that fails prints "move failed:
 * errno E" and goes on here. At the deadline it prints "done pid_d D
 * moves M" and exits 0.
 *
 * Its own session: the kernel's autogroup scheduling shares the CPUs
 * between sessions, and a moved process runs in a session of its own (the
 * worker starts it so). Six spinners that each have one get the same share,
 * wherever they run. */
#include <dipc.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct state {
    int64_t pid_d;
    int64_t deadline_ns; /* CLOCK_REALTIME */
    int moves;
    uint64_t work;
} S;

static size_t save(void *ctx, void *buf, size_t cap)
{
    (void)ctx;
    if (cap >= sizeof S)
        memcpy(buf, &S, sizeof S);
    return sizeof S;
}

static void restore(void *ctx, const void *st, size_t len)
{
    (void)ctx;
    if (len == sizeof S)
        memcpy(&S, st, sizeof S);
}

static int64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    long secs = atol(argv[1]);
    if (secs <= 0 || secs > 3600)
        return 2;
    /* A process group leader cannot start a session: a child does, and
     * this one waits for it. A process that continues a moved one leads
     * its session already (the worker started it so). */
    if (getsid(0) != getpid() && setsid() < 0) {
        pid_t c = fork();
        if (c < 0)
            return 1;
        if (c > 0) {
            int st = 0;
            while (waitpid(c, &st, 0) < 0 && errno == EINTR)
                ;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        }
        if (setsid() < 0)
            return 1;
    }
    int r = dipc_migratable(save, restore, NULL);
    if (r < 0) {
        fprintf(stderr, "spinner: dipc_migratable: %s\n", strerror(errno));
        return 1;
    }
    if (r == 0) {
        S.pid_d = regist();
        S.deadline_ns = now_ns(CLOCK_REALTIME) + (int64_t)secs * 1000000000;
        printf("pid_d %lld\n", (long long)S.pid_d);
    } else {
        S.moves++;
        printf("moved %d pid_d %lld pid %d\n", S.moves, (long long)S.pid_d, (int)getpid());
    }
    fflush(stdout);
    while (now_ns(CLOCK_REALTIME) < S.deadline_ns) {
        int64_t until = now_ns(CLOCK_MONOTONIC) + 5000000;
        volatile uint64_t x = S.work;
        while (now_ns(CLOCK_MONOTONIC) < until)
            for (int i = 0; i < 1000; i++)
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        S.work = x;
        if (dipc_migration_point() < 0) {
            printf("move failed: errno %d\n", errno);
            fflush(stdout);
        }
    }
    printf("done pid_d %lld moves %d\n", (long long)S.pid_d, S.moves);
    return 0;
}
