/* The preload part of tools/bench: a plain System V ping-pong (queue or
 * semaphore set), timed round trip by round trip.
 *
 * Compiled plainly it is any System V program: run as it is (raw System V)
 * or with LD_PRELOAD=libdipc_preload.so. Compiled with -DDIPC_DIRECT (and
 * -ldipc) the very same calls are libdipc's (dipc_msgget with IPC_DIPC,
 * dipc_msgsnd, ...), the baseline for the preload's remote calls.
 *
 *   msg-pong KEY | sem-pong KEY          serve until the ping says stop
 *   msg-ping KEY SIZE N WARMUP LABEL     N timed round trips after WARMUP
 *   sem-ping KEY N WARMUP LABEL
 *
 * A ping prints one JSON line: {"bench": LABEL, "kind": ..., "size": ...,
 * "samples_ns": [...]}; dipc-bench preload-report pools and compares them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <time.h>
#include <unistd.h>

#ifdef DIPC_DIRECT
#include <dipc.h>
#define msgget(k, f) dipc_msgget((k), (f) | IPC_DIPC)
#define semget(k, n, f) dipc_semget((k), (n), (f) | IPC_DIPC)
#define msgsnd dipc_msgsnd
#define msgrcv dipc_msgrcv
#define msgctl dipc_msgctl
#define semop dipc_semop
#define semctl dipc_semctl
#endif

#define MAX_TEXT 8192
#define STOP 0xFF

struct msg { long mtype; unsigned char text[MAX_TEXT]; };

static void die(const char *what) {
    fprintf(stderr, "sysv_pingpong: %s: %s\n", what, strerror(errno));
    exit(1);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The ping's get: the pong makes the structure; wait up to 10 s for it. */
static int wait_get(int is_msg, key_t key) {
    for (int i = 0; i < 500; i++) {
        int id = is_msg ? msgget(key, 0600) : semget(key, 2, 0600);
        if (id >= 0) return id;
        if (errno != ENOENT) die("get");
        usleep(20000);
    }
    errno = ETIMEDOUT;
    die("get");
    return -1;
}

static void sem_do(int s, unsigned short num, short op) {
    struct sembuf b = { num, op, 0 };
    while (semop(s, &b, 1) < 0)
        if (errno != EINTR) die("semop");
}

static void print(const char *label, const char *kind, long size, long long *ns, int n) {
    printf("{\"bench\":\"%s\",\"group\":\"preload\",\"kind\":\"%s\",\"size\":%ld,\"samples_ns\":[",
           label, kind, size);
    for (int i = 0; i < n; i++) printf("%s%lld", i ? "," : "", ns[i]);
    printf("]}\n");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sysv_pingpong msg-pong|sem-pong|msg-ping|sem-ping KEY ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    key_t key = (key_t)strtoul(argv[2], NULL, 0);
    static struct msg m;
    if (!strcmp(cmd, "msg-pong")) {
        int q = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
        if (q < 0) die("msgget");
        for (;;) {
            ssize_t n = msgrcv(q, &m, MAX_TEXT, 1, 0);
            if (n < 0) die("msgrcv");
            if (n > 0 && m.text[0] == STOP) break;
            m.mtype = 2;
            if (msgsnd(q, &m, n, 0) < 0) die("msgsnd");
        }
        if (msgctl(q, IPC_RMID, NULL) < 0) die("msgctl");
    } else if (!strcmp(cmd, "sem-pong")) {
        int s = semget(key, 2, IPC_CREAT | IPC_EXCL | 0600);
        if (s < 0) die("semget");
        for (;;) {
            sem_do(s, 0, -1);
            /* Semaphore 0 at 1 again, unanswered: the ping's stop. */
            if (semctl(s, 0, GETVAL) > 0) break;
            sem_do(s, 1, 1);
        }
        if (semctl(s, 0, IPC_RMID) < 0) die("semctl");
    } else if (!strcmp(cmd, "msg-ping") && argc == 7) {
        long size = atol(argv[3]);
        int n = atoi(argv[4]), warm = atoi(argv[5]);
        if (size < 1 || size > MAX_TEXT || n < 1) {
            fprintf(stderr, "sysv_pingpong: bad size or count\n");
            return 2;
        }
        int q = wait_get(1, key);
        long long *ns = calloc(n, sizeof *ns);
        if (!ns) die("calloc");
        memset(m.text, 0x5a, size);
        for (int i = -warm; i < n; i++) {
            long long t = now_ns();
            m.mtype = 1;
            if (msgsnd(q, &m, size, 0) < 0) die("msgsnd");
            if (msgrcv(q, &m, MAX_TEXT, 2, 0) != size) die("msgrcv");
            if (i >= 0) ns[i] = now_ns() - t;
        }
        m.mtype = 1;
        m.text[0] = STOP;
        if (msgsnd(q, &m, 1, 0) < 0) die("msgsnd stop");
        print(argv[6], "msg", size, ns, n);
    } else if (!strcmp(cmd, "sem-ping") && argc == 6) {
        int n = atoi(argv[3]), warm = atoi(argv[4]);
        if (n < 1) {
            fprintf(stderr, "sysv_pingpong: bad count\n");
            return 2;
        }
        int s = wait_get(0, key);
        long long *ns = calloc(n, sizeof *ns);
        if (!ns) die("calloc");
        for (int i = -warm; i < n; i++) {
            long long t = now_ns();
            sem_do(s, 0, 1);
            sem_do(s, 1, -1);
            if (i >= 0) ns[i] = now_ns() - t;
        }
        /* Stop: V(0) twice; the pong sees 0's value still 1 after its P. */
        struct sembuf stop = { 0, 2, 0 };
        if (semop(s, &stop, 1) < 0) die("semop stop");
        print(argv[5], "sem", 0, ns, n);
    } else {
        fprintf(stderr, "sysv_pingpong: unknown command or wrong arguments\n");
        return 2;
    }
    return 0;
}
