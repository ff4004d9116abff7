/* A plain System V IPC program: it knows nothing of dipc (no dipc header,
 * no dipc library). Run with LD_PRELOAD=libdipc_preload.so, its queues,
 * semaphore sets and segments become cluster-wide when their keys are in
 * the preload's key policy. Used by tools/tests/preload.rs.
 *
 *   pong KEY N          answer N pings on queue KEY (type 1 in, type 2 out)
 *   ping KEY N          send N pings and check the answers
 *   qsend KEY TEXT      put one message on queue KEY
 *   qsend-private KEY TEXT  the same on a queue made with mode 0600
 *   qnum KEY            print how many messages queue KEY holds
 *   rmq KEY             remove queue KEY
 *   counter-init KEY    semaphore KEY (a mutex) and segment KEY+1 (a counter)
 *   counter-run KEY N   add 1 to the counter N times under the mutex
 *   counter-get KEY     print the counter
 *   counter-rm KEY      remove both
 *   pc-init KEY         semaphores KEY (empty slots, full slots), segment KEY+1
 *   produce KEY N       put 1..N in the ring
 *   consume KEY N       take N values, check their order, print their sum
 *   pc-rm KEY           remove both
 *   fork-ping KEY N     ping from a parent and a forked child at once
 *   thread-ping KEY N   ping from 4 threads at once, N each
 *   exec-ping KEY N     exec this program to ping (the preload follows exec)
 *   rcv-eintr KEY       block in msgrcv until a SIGALRM (no SA_RESTART) ends
 *                       it; say "EINTR" if it failed so
 *   shm-hold KEY        attach segment KEY, read it, say "attached", wait
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 8

union semun { int val; struct semid_ds *buf; unsigned short *array; };
struct msg { long mtype; char text[64]; };
struct ring { long slot[SLOTS]; };

static void die(const char *what) {
    fprintf(stderr, "%s: %s (errno %d)\n", what, strerror(errno), errno);
    exit(1);
}

static key_t key_of(const char *s) { return (key_t)strtoul(s, NULL, 0); }

static int queue_mode(key_t key, int mode) {
    int q = msgget(key, IPC_CREAT | mode);
    if (q < 0) die("msgget");
    return q;
}

static int queue(key_t key) {
    int q = msgget(key, IPC_CREAT | 0666);
    if (q < 0) die("msgget");
    return q;
}

static void sem_step(int s, int num, int op) {
    struct sembuf b = { (unsigned short)num, (short)op, SEM_UNDO };
    while (semop(s, &b, 1) < 0)
        if (errno != EINTR) die("semop");
}

static void ping(key_t key, int n, int tag) {
    int q = queue(key);
    for (int i = 0; i < n; i++) {
        struct msg m = { 1 }, r;
        snprintf(m.text, sizeof m.text, "%d %d", tag, i);
        if (msgsnd(q, &m, strlen(m.text) + 1, 0) < 0) die("msgsnd");
        /* Answers carry the asker's tag as their type. */
        if (msgrcv(q, &r, sizeof r.text, 2 + tag, 0) < 0) die("msgrcv");
        int rt, ri;
        if (sscanf(r.text, "pong %d %d", &rt, &ri) != 2 || rt != tag || ri != i) {
            fprintf(stderr, "ping %d: wrong answer \"%s\"\n", i, r.text);
            exit(1);
        }
    }
}

struct pinger { key_t key; int n, tag; };

static void on_alarm(int sig) { (void)sig; }

static void *ping_thread(void *arg) {
    struct pinger *p = arg;
    ping(p->key, p->n, p->tag);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sysv_demo COMMAND KEY [ARG]\n");
        return 2;
    }
    const char *cmd = argv[1];
    key_t key = key_of(argv[2]);
    int n = argc > 3 ? atoi(argv[3]) : 0;

    if (!strcmp(cmd, "pong")) {
        int q = queue(key);
        printf("ready\n");
        fflush(stdout);
        for (int i = 0; i < n; i++) {
            struct msg m, r;
            if (msgrcv(q, &m, sizeof m.text, 1, 0) < 0) die("msgrcv");
            int tag, seq;
            if (sscanf(m.text, "%d %d", &tag, &seq) != 2) {
                fprintf(stderr, "pong: bad ping \"%s\"\n", m.text);
                return 1;
            }
            r.mtype = 2 + tag;
            snprintf(r.text, sizeof r.text, "pong %d %d", tag, seq);
            if (msgsnd(q, &r, strlen(r.text) + 1, 0) < 0) die("msgsnd");
        }
        printf("answered %d\n", n);
    } else if (!strcmp(cmd, "ping")) {
        ping(key, n, 0);
        printf("pinged %d\n", n);
    } else if (!strcmp(cmd, "fork-ping")) {
        pid_t c = fork();
        if (c < 0) die("fork");
        ping(key, n, c == 0 ? 1 : 0);
        if (c == 0) _exit(0);
        int st;
        if (waitpid(c, &st, 0) < 0) die("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fork-ping: the child failed\n");
            return 1;
        }
        printf("pinged %d from parent and child\n", n);
    } else if (!strcmp(cmd, "thread-ping")) {
        pthread_t t[4];
        struct pinger p[4];
        for (int i = 0; i < 4; i++) {
            p[i] = (struct pinger){ key, n, 10 + i };
            if (pthread_create(&t[i], NULL, ping_thread, &p[i])) die("pthread_create");
        }
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
        printf("pinged %d from 4 threads\n", n);
    } else if (!strcmp(cmd, "exec-ping")) {
        execl("/proc/self/exe", argv[0], "ping", argv[2], argv[3], (char *)NULL);
        die("execl");
    } else if (!strcmp(cmd, "rcv-eintr")) {
        int q = queue(key);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        if (sigaction(SIGALRM, &sa, NULL) < 0) die("sigaction");
        alarm(1);
        struct msg m;
        /* No message of this type ever comes. */
        if (msgrcv(q, &m, sizeof m.text, 999, 0) >= 0 || errno != EINTR) die("msgrcv");
        printf("EINTR\n");
    } else if (!strcmp(cmd, "qsend")) {
        struct msg m = { 1 };
        snprintf(m.text, sizeof m.text, "%s", argc > 3 ? argv[3] : "");
        if (msgsnd(queue(key), &m, strlen(m.text) + 1, 0) < 0) die("msgsnd");
    } else if (!strcmp(cmd, "qsend-private")) {
        struct msg m = { 1 };
        snprintf(m.text, sizeof m.text, "%s", argc > 3 ? argv[3] : "");
        if (msgsnd(queue_mode(key, 0600), &m, strlen(m.text) + 1, 0) < 0) die("msgsnd");
    } else if (!strcmp(cmd, "shm-hold")) {
        int m = shmget(key, 0, 0);
        if (m < 0) die("shmget");
        volatile char *p = shmat(m, NULL, 0);
        if (p == (void *)-1) die("shmat");
        printf("attached %d\n", p[0]);
        fflush(stdout);
        pause();
    } else if (!strcmp(cmd, "qnum")) {
        struct msqid_ds ds;
        if (msgctl(queue(key), IPC_STAT, &ds) < 0) die("msgctl");
        printf("%lu\n", (unsigned long)ds.msg_qnum);
    } else if (!strcmp(cmd, "rmq")) {
        int q = msgget(key, 0);
        if (q < 0) die("msgget");
        if (msgctl(q, IPC_RMID, NULL) < 0) die("msgctl");
    } else if (!strcmp(cmd, "counter-init") || !strcmp(cmd, "pc-init")) {
        int pc = cmd[0] == 'p';
        int s = semget(key, pc ? 2 : 1, IPC_CREAT | 0666);
        if (s < 0) die("semget");
        unsigned short init[2] = { pc ? SLOTS : 1, 0 };
        union semun a = { .array = init };
        if (semctl(s, 0, SETALL, a) < 0) die("semctl SETALL");
        int m = shmget(key + 1, sizeof(struct ring), IPC_CREAT | 0666);
        if (m < 0) die("shmget");
        long *p = shmat(m, NULL, 0);
        if (p == (void *)-1) die("shmat");
        memset(p, 0, sizeof(struct ring));
        if (shmdt(p) < 0) die("shmdt");
    } else if (!strcmp(cmd, "counter-run") || !strcmp(cmd, "counter-get")) {
        int s = semget(key, 1, 0);
        int m = shmget(key + 1, 0, 0);
        if (s < 0 || m < 0) die("get");
        volatile long *p = shmat(m, NULL, 0);
        if (p == (void *)-1) die("shmat");
        for (int i = 0; i < n; i++) {
            sem_step(s, 0, -1);
            long v = *p;
            *p = v + 1;
            sem_step(s, 0, 1);
        }
        if (cmd[8] == 'g') printf("%ld\n", *p);
        if (shmdt((void *)p) < 0) die("shmdt");
    } else if (!strcmp(cmd, "produce") || !strcmp(cmd, "consume")) {
        int s = semget(key, 2, 0);
        int m = shmget(key + 1, 0, 0);
        if (s < 0 || m < 0) die("get");
        volatile struct ring *r = shmat(m, NULL, 0);
        if (r == (void *)-1) die("shmat");
        long sum = 0;
        for (int i = 1; i <= n; i++) {
            if (cmd[0] == 'p') {
                sem_step(s, 0, -1);
                r->slot[i % SLOTS] = i;
                sem_step(s, 1, 1);
            } else {
                sem_step(s, 1, -1);
                long v = r->slot[i % SLOTS];
                sem_step(s, 0, 1);
                if (v != i) {
                    fprintf(stderr, "consume: slot %d holds %ld, expected %d\n", i % SLOTS, v, i);
                    return 1;
                }
                sum += v;
            }
        }
        if (cmd[0] == 'c') printf("sum %ld\n", sum);
        if (shmdt((void *)r) < 0) die("shmdt");
    } else if (!strcmp(cmd, "counter-rm") || !strcmp(cmd, "pc-rm")) {
        int s = semget(key, 0, 0);
        int m = shmget(key + 1, 0, 0);
        if (s < 0 || m < 0) die("get");
        if (semctl(s, 0, IPC_RMID) < 0) die("semctl IPC_RMID");
        if (shmctl(m, IPC_RMID, NULL) < 0) die("shmctl IPC_RMID");
    } else {
        fprintf(stderr, "unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
