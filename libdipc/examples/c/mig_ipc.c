/* mig_ipc: a migratable process that keeps using its distributed queues,
 * semaphore set and segment, by the ids it got before (and the segment at
 * the address it had), on every host it moves to.
 *
 *   mig_ipc -d DIR [-s MS] KEYQ KEYS KEYR HOST...
 *
 * At its first start it gets the queue KEYQ (creating it if there is
 * none), creates the set KEYS (one semaphore) and the segment
 * KEYQ + 0x1000 (64 KiB, attached), both owned by its first host, gets
 * the existing queue KEYR, and prints "ids q=Q s=S r=R m=M". Then, on
 * every host (the first and each one it moves to, in the order given),
 * round N:
 *
 *   - checks IPC_STAT of M gives its size and that the segment, at the
 *     address of the first start, holds what was last written in it (int
 *     i is W * 100000 + i, W the round that wrote it); writes
 *     N * 100000 + i;
 *   - sends "round N" on Q and on R and receives each back, checks
 *     IPC_STAT of Q names KEYQ, adds 1 to the semaphore and checks it
 *     counts every round so far, all by the ids of the first start; prints
 *     "round N ids ok";
 *   - waits (at most 60 s) for the file DIR/go.N, then creates the queue
 *     KEYQ + 1 + N + 16 * F (F: moves failed so far) here and checks
 *     that its id is none of Q and R, that a
 *     message sent on it arrives on it, and that Q holds no message;
 *     prints "round N new=ID";
 *   - moves to the next HOST. A move that fails prints "round N move
 *     failed: ERRNO" and round N is done again here, then the next HOST.
 *
 * -s MS: a restored process sleeps MS ms before taking over (longer than
 * the target's wait makes every move fail after the freeze).
 * After the last host it detaches, prints "result ok rounds=N" and exits
 * 0. Any failure prints "FAIL ..." (the call, its errno) and exits 1. */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SEG_BYTES 65536
#define SEG_INTS (SEG_BYTES / (int)sizeof(int))

static struct state {
    int q, s, r, m;
    int *seg;
    int round, failed, written, ups;
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
    long slow = 0;
    int opt;
    while ((opt = getopt(argc, argv, "d:s:")) != -1) {
        if (opt == 'd')
            dir = optarg;
        else if (opt == 's')
            slow = atol(optarg);
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
    if (slow > 0 && getenv("DIPC_MIGRATION")) {
        struct timespec ts = {slow / 1000, (slow % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
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
        S.m = dipc_shmget(kq + 0x1000, SEG_BYTES, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        CHECK(S.m >= 0, "shmget");
        S.written = -1;
        S.seg = dipc_shmat(S.m, NULL, 0);
        CHECK(S.seg != (void *)-1, "shmat");
        printf("ids q=%d s=%d r=%d m=%d\n", S.q, S.s, S.r, S.m);
        fflush(stdout);
    }
    for (;;) {
        struct shmid_ds sds;
        CHECK(dipc_shmctl(S.m, IPC_STAT, &sds) == 0, "IPC_STAT of M");
        errno = 0;
        CHECK(sds.shm_segsz == SEG_BYTES, "M's size");
        for (int i = 0; S.written >= 0 && i < SEG_INTS; i++) {
            if (S.seg[i] != S.written * 100000 + i) {
                printf("FAIL round %d: segment int %d is %d\n", S.round, i, S.seg[i]);
                fflush(stdout);
                exit(1);
            }
        }
        for (int i = 0; i < SEG_INTS; i++)
            S.seg[i] = S.round * 100000 + i;
        S.written = S.round;
        echo(S.q, "echo on Q");
        echo(S.r, "echo on R");
        struct msqid_ds ds;
        CHECK(dipc_msgctl(S.q, IPC_STAT, &ds) == 0, "IPC_STAT of Q");
        errno = 0;
        CHECK(ds.msg_perm.__key == kq, "Q's key");
        struct sembuf up = {0, 1, 0};
        CHECK(dipc_semop(S.s, &up, 1) == 0, "semop on S");
        S.ups++;
        int v = dipc_semctl(S.s, 0, GETVAL);
        errno = 0;
        CHECK(v == S.ups, "S's value");
        printf("round %d ids ok\n", S.round);
        fflush(stdout);

        wait_file(dir, S.round);
        int n = dipc_msgget(kq + 1 + S.round + 16 * S.failed,
                            IPC_CREAT | IPC_EXCL | IPC_DIPC | 0600);
        CHECK(n >= 0, "msgget of a new key");
        errno = 0;
        CHECK(n != S.q && n != S.r, "the new queue's id is a moved one");
        echo(n, "echo on the new queue");
        CHECK(dipc_msgctl(S.q, IPC_STAT, &ds) == 0, "IPC_STAT of Q after");
        errno = 0;
        CHECK(ds.msg_qnum == 0, "Q got the new queue's message");
        printf("round %d new=%d\n", S.round, n);
        fflush(stdout);

        if (S.round + S.failed >= nhosts)
            break;
        const char *to = hosts[S.round + S.failed];
        S.round++;
        if (dipc_migrate(to) < 0) {
            int e = errno;
            S.round--;
            S.failed++;
            printf("round %d move failed: %s\n", S.round, e == ETIMEDOUT ? "ETIMEDOUT" : strerror(e));
            fflush(stdout);
        }
    }
    CHECK(dipc_shmdt(S.seg) == 0, "shmdt");
    printf("result ok rounds=%d\n", S.round);
    fflush(stdout);
    return 0;
}
