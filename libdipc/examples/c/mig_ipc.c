/* mig_ipc: a migratable process that keeps using its distributed queues
 * and semaphore set, by the ids it got before, on every host it moves to.
 *
 *   mig_ipc -d DIR KEYQ KEYS KEYR HOST...
 *
 * At its first start it gets the queue KEYQ (creating it if there is
 * none) and creates the set KEYS (one semaphore, owned by its first
 * host), gets the existing queue KEYR, and prints "ids q=Q s=S r=R". Then, on every host (the first and
 * each one it moves to, in the order given), round N:
 *
 *   - sends "round N" on Q and on R and receives each back, checks
 *     IPC_STAT of Q names KEYQ, adds 1 to the semaphore and checks it
 *     reads N + 1, all by the ids of the first start; prints
 *     "round N ids ok";
 *   - waits (at most 60 s) for the file DIR/go.N, then creates the queue
 *     KEYQ + 1 + N here and checks that its id is none of Q and R, that a
 *     message sent on it arrives on it, and that Q holds no message;
 *     prints "round N new=ID";
 *   - moves to the next HOST.
 *
 * After the last host it prints "result ok rounds=N" and exits 0. Any
 * failure prints "FAIL ..." (the call, its errno) and exits 1. */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct state {
    int q, s, r;
    int round;
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

#define CHECK(cond, what)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            printf("FAIL round %d: %s: %s (errno %d)\n", S.round, what, strerror(errno), \
                   errno);                                                             \
            fflush(stdout);                                                            \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

struct text {
    long mtype;
    char mtext[32];
};

/* Sends "round N" on queue id and receives it back. */
static void echo(int id, const char *what)
{
    struct text m = {1, ""}, back;
    snprintf(m.mtext, sizeof m.mtext, "round %d", S.round);
    CHECK(dipc_msgsnd(id, &m, sizeof m.mtext, 0) == 0, what);
    memset(&back, 0, sizeof back);
    CHECK(dipc_msgrcv(id, &back, sizeof back.mtext, 1, IPC_NOWAIT) == sizeof back.mtext, what);
    CHECK(strcmp(back.mtext, m.mtext) == 0, what);
}

static void wait_file(const char *dir, int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/go.%d", dir, n);
    for (int t = 0; t < 6000 && access(path, F_OK) != 0; t++) {
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    errno = ETIMEDOUT;
    CHECK(access(path, F_OK) == 0, path);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt == 'd')
            dir = optarg;
        else
            return 2;
    }
    if (!dir || argc - optind < 3)
        return 2;
    key_t kq = (key_t)strtol(argv[optind], NULL, 0);
    key_t ks = (key_t)strtol(argv[optind + 1], NULL, 0);
    key_t kr = (key_t)strtol(argv[optind + 2], NULL, 0);
    char **hosts = argv + optind + 3;
    int nhosts = argc - optind - 3;
    alarm(300);
    int r = dipc_migratable(save, restore, NULL);
    CHECK(r >= 0, "dipc_migratable");
    if (r == 0) {
        CHECK(regist() > 0, "regist");
        S.q = dipc_msgget(kq, IPC_CREAT | IPC_DIPC | 0600);
        CHECK(S.q >= 0, "msgget KEYQ");
        S.s = dipc_semget(ks, 1, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        CHECK(S.s >= 0, "semget KEYS");
        S.r = dipc_msgget(kr, IPC_DIPC);
        CHECK(S.r >= 0, "msgget KEYR");
        printf("ids q=%d s=%d r=%d\n", S.q, S.s, S.r);
        fflush(stdout);
    }
    for (;;) {
        echo(S.q, "echo on Q");
        echo(S.r, "echo on R");
        struct msqid_ds ds;
        CHECK(dipc_msgctl(S.q, IPC_STAT, &ds) == 0, "IPC_STAT of Q");
        errno = 0;
        CHECK(ds.msg_perm.__key == kq, "Q's key");
        struct sembuf up = {0, 1, 0};
        CHECK(dipc_semop(S.s, &up, 1) == 0, "semop on S");
        int v = dipc_semctl(S.s, 0, GETVAL);
        errno = 0;
        CHECK(v == S.round + 1, "S's value");
        printf("round %d ids ok\n", S.round);
        fflush(stdout);

        wait_file(dir, S.round);
        int n = dipc_msgget(kq + 1 + S.round, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        CHECK(n >= 0, "msgget of a new key");
        errno = 0;
        CHECK(n != S.q && n != S.r, "the new queue's id is a moved one");
        echo(n, "echo on the new queue");
        CHECK(dipc_msgctl(S.q, IPC_STAT, &ds) == 0, "IPC_STAT of Q after");
        errno = 0;
        CHECK(ds.msg_qnum == 0, "Q got the new queue's message");
        printf("round %d new=%d\n", S.round, n);
        fflush(stdout);

        if (S.round >= nhosts)
            break;
        const char *to = hosts[S.round];
        S.round++;
        if (dipc_migrate(to) < 0) {
            S.round--;
            CHECK(0, "dipc_migrate");
        }
    }
    printf("result ok rounds=%d\n", S.round);
    fflush(stdout);
    return 0;
}
