/* failload: load for the failure suite (tools/tests/failures.rs), one role per process.
 *
 *   failload setup QKEY1 QKEY2 SEMKEY SHMKEY   create two queues, a lock (semaphore = 1) and a segment
 *   failload send QKEY1 QKEY2 SENDER MS        numbered messages, alternately to both queues, for MS ms
 *   failload recv QKEY                         receive until a stop message (type 2), then drain
 *   failload lock SEMKEY FLOCKFILE MS          take/release the lock with SEM_UNDO for MS ms
 *   failload shmw SHMKEY MS | shmr SHMKEY MS   write / read a counter word of the segment for MS ms
 *   failload gone QKEY1 QKEY2 SEMKEY SHMKEY    get each key without creating it, print what it found
 *
 * Every line is flushed as it is written (a killed process loses nothing it printed):
 *   try S N KEY / sent S N KEY      before / after a msgsnd that succeeded
 *   got QKEY TEXT                   a received message (TEXT = "KEY S N")
 *   fail CALL ERRNO MS              a call that failed, with how long it took
 *   enter / violation               the lock taken; someone else was inside at the same time
 *   regress OLD NEW / sigbus        the segment word went backwards; a SIGBUS was caught
 *   done COUNT                      the role's tally at its end
 *   absent KEY ERRNO / present KEY  what a get of the key found
 * Mutual exclusion is checked with flock(2) on FLOCKFILE, which every simulated host sees
 * (they share the file system) and which the kernel drops when a holder dies.
 */
#define _GNU_SOURCE
#include <dipc.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

struct qmsg {
    long mtype;
    char text[64];
};

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void fail(const char *call, int err, double start)
{
    const char *name = strerrorname_np(err);
    printf("fail %s %s %.0f\n", call, name ? name : "?",
           now_ms() - start);
}

static key_t arg_key(const char *s)
{
    return (key_t)strtol(s, NULL, 0);
}

/* A get that fails while the owner is away is tried again until the deadline. */
static int get_retry(int (*get)(key_t, int), key_t key, double deadline)
{
    for (;;) {
        double t0 = now_ms();
        int id = get(key, IPC_DIPC);
        if (id >= 0 || now_ms() > deadline)
            return id;
        fail("get", errno, t0);
        usleep(100000);
    }
}

static int msgget0(key_t k, int f) { return dipc_msgget(k, f); }
static int semget0(key_t k, int f) { return dipc_semget(k, 1, f); }
static int shmget0(key_t k, int f) { return dipc_shmget(k, 4096, f); }

static int setup(char **argv)
{
    int f = IPC_DIPC | IPC_CREAT | IPC_EXCL | 0666;
    int q1 = dipc_msgget(arg_key(argv[2]), f);
    int q2 = dipc_msgget(arg_key(argv[3]), f);
    int sem = dipc_semget(arg_key(argv[4]), 1, f);
    int shm = dipc_shmget(arg_key(argv[5]), 4096, f);
    if (q1 < 0 || q2 < 0 || sem < 0 || shm < 0) {
        perror("failload setup");
        return 1;
    }
    if (dipc_semctl(sem, 0, SETVAL, 1) < 0) {
        perror("failload setup: SETVAL");
        return 1;
    }
    printf("ids %d %d %d %d\n", q1, q2, sem, shm);
    return 0;
}

static int sender(char **argv)
{
    key_t keys[2] = {arg_key(argv[2]), arg_key(argv[3])};
    int sender_no = atoi(argv[4]);
    double deadline = now_ms() + atof(argv[5]);
    int ids[2];
    for (int i = 0; i < 2; i++) {
        ids[i] = get_retry(msgget0, keys[i], deadline);
        if (ids[i] < 0) {
            perror("failload send: msgget");
            return 1;
        }
    }
    long n = 0, sent = 0;
    int gone[2] = {0, 0};
    while (now_ms() < deadline && !(gone[0] && gone[1])) {
        int q = n % 2;
        if (gone[q]) {
            n++;
            continue;
        }
        struct qmsg m = {.mtype = 1};
        snprintf(m.text, sizeof m.text, "%#x %d %ld", (unsigned)keys[q], sender_no, n);
        printf("try %d %ld %#x\n", sender_no, n, (unsigned)keys[q]);
        double t0 = now_ms();
        if (dipc_msgsnd(ids[q], &m, strlen(m.text) + 1, 0) == 0) {
            printf("sent %d %ld %#x\n", sender_no, n, (unsigned)keys[q]);
            sent++;
        } else {
            int e = errno;
            fail("msgsnd", e, t0);
            /* The id no longer names the queue (its owner rebooted): it never will again.
             * Only EIDRM ends a role: an id that reached whatever now has its number would
             * answer something else, and the suite is there to see that. */
            if (e == EIDRM)
                gone[q] = 1;
            else
                usleep(50000);
        }
        n++;
        usleep(2000);
    }
    printf("done %ld\n", sent);
    return 0;
}

static int receiver(char **argv)
{
    key_t key = arg_key(argv[2]);
    int id = get_retry(msgget0, key, now_ms() + 20000);
    if (id < 0) {
        perror("failload recv: msgget");
        return 1;
    }
    long got = 0;
    int flags = 0;
    for (;;) {
        struct qmsg m;
        double t0 = now_ms();
        ssize_t r = dipc_msgrcv(id, &m, sizeof m.text, 0, flags);
        if (r < 0) {
            int e = errno;
            if (e == ENOMSG)
                break;
            fail("msgrcv", e, t0);
            if (e == EIDRM)
                break;
            usleep(50000);
            continue;
        }
        if (m.mtype == 2) {
            /* Stop: what is still queued (e.g. put back behind the stop) is drained. */
            flags = IPC_NOWAIT;
            continue;
        }
        /* Texts from other tools (dipc-msg) carry no NUL. */
        m.text[(size_t)r < sizeof m.text ? (size_t)r : sizeof m.text - 1] = 0;
        printf("got %#x %s\n", (unsigned)key, m.text);
        got++;
    }
    printf("done %ld\n", got);
    return 0;
}

static int locker(char **argv)
{
    double deadline = now_ms() + atof(argv[4]);
    int sem = get_retry(semget0, arg_key(argv[2]), deadline);
    if (sem < 0) {
        perror("failload lock: semget");
        return 1;
    }
    FILE *lf = fopen(argv[3], "a");
    if (!lf) {
        perror(argv[3]);
        return 1;
    }
    int fd = fileno(lf);
    long held = 0;
    while (now_ms() < deadline) {
        struct sembuf p = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
        double t0 = now_ms();
        if (dipc_semop(sem, &p, 1) < 0) {
            int e = errno;
            fail("P", e, t0);
            if (e == EIDRM)
                break;
            usleep(50000);
            continue;
        }
        printf("enter\n");
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
            printf("violation\n");
        usleep(1000);
        flock(fd, LOCK_UN);
        held++;
        struct sembuf v = {.sem_num = 0, .sem_op = 1, .sem_flg = SEM_UNDO};
        t0 = now_ms();
        if (dipc_semop(sem, &v, 1) < 0) {
            /* Whether the V happened is unknown: exit, so the owner undoes what is left. */
            fail("V", errno, t0);
            break;
        }
        usleep(1000);
    }
    printf("done %ld\n", held);
    return 0;
}

static sigjmp_buf on_bus;

static void bus_handler(int sig)
{
    (void)sig;
    siglongjmp(on_bus, 1);
}

static int shm_role(char **argv, int writer)
{
    double deadline = now_ms() + atof(argv[3]);
    int id = get_retry(shmget0, arg_key(argv[2]), deadline);
    if (id < 0) {
        perror("failload shm: shmget");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = bus_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
    volatile unsigned long *word = NULL;
    volatile long last = 0, steps = 0;
    while (now_ms() < deadline) {
        if (sigsetjmp(on_bus, 1)) {
            printf("sigbus\n");
            dipc_shmdt((const void *)word);
            word = NULL;
            usleep(100000);
            continue;
        }
        if (!word) {
            double t0 = now_ms();
            void *a = dipc_shmat(id, NULL, 0);
            if (a == (void *)-1) {
                int e = errno;
                fail("shmat", e, t0);
                if (e == EIDRM)
                    break;
                usleep(100000);
                continue;
            }
            word = a;
        }
        if (writer) {
            *word = *word + 1;
            last = (long)*word;
        } else {
            unsigned long v = *word;
            if ((long)v < last)
                printf("regress %ld %lu\n", last, v);
            last = v;
        }
        steps++;
        usleep(1000);
    }
    if (word)
        dipc_shmdt((const void *)word);
    printf("done %ld %ld\n", steps, last);
    return 0;
}

static int gone(char **argv)
{
    int (*gets[4])(key_t, int) = {msgget0, msgget0, semget0, shmget0};
    for (int i = 0; i < 4; i++) {
        key_t key = arg_key(argv[2 + i]);
        if (gets[i](key, IPC_DIPC) >= 0)
            printf("present %#x\n", (unsigned)key);
        else
            printf("absent %#x %s\n", (unsigned)key, strerrorname_np(errno));
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 6 && strcmp(argv[1], "setup") == 0)
        return setup(argv);
    if (argc >= 6 && strcmp(argv[1], "send") == 0)
        return sender(argv);
    if (argc >= 3 && strcmp(argv[1], "recv") == 0)
        return receiver(argv);
    if (argc >= 5 && strcmp(argv[1], "lock") == 0)
        return locker(argv);
    if (argc >= 4 && strcmp(argv[1], "shmw") == 0)
        return shm_role(argv, 1);
    if (argc >= 4 && strcmp(argv[1], "shmr") == 0)
        return shm_role(argv, 0);
    if (argc >= 6 && strcmp(argv[1], "gone") == 0)
        return gone(argv);
    fprintf(stderr, "usage: see the comment at the top of failload.c\n");
    return 2;
}
