/* undo_split: SEM_UNDO of one process whose calls on the owner of a set
 * travel on several sessions (one per call in flight).
 *
 *   undo_split init KEY          create the set (2 semaphores: 1 and 0)
 *   undo_split holder KEY        P(0) with SEM_UNDO; a thread blocks in P(1)
 *                                with SEM_UNDO; once it waits there, V(0)
 *                                with SEM_UNDO (on another session, as the
 *                                first is busy) and print "released"; then
 *                                wait until some process waits for
 *                                semaphore 0 and exit (the thread with it)
 *   undo_split hold_v KEY FIFO   P(0) with SEM_UNDO, print "held"; read a
 *                                line from FIFO, V(0) with SEM_UNDO (once
 *                                more if it failed for a lost connection),
 *                                print "v ok"
 *   undo_split pingpong KEY N    two threads hand a token to each other N
 *                                times: one P(1)s (blocking) until the other
 *                                V(1)s, then V(0)s for the other's P(0), all
 *                                with SEM_UNDO; print "done N"
 *   undo_split fork KEY          P(0) with SEM_UNDO; a forked child V(0)s
 *                                with SEM_UNDO and exits, which undoes its V
 *                                only; once it has, print "parent holds"
 *                                and exit
 *   undo_split get KEY NUM       print GETVAL and GETNCNT of semaphore NUM
 *   undo_split rm KEY            remove the set
 *
 * Failures print "undo_split: CALL: strerror (errno NAME)" on stderr and
 * exit 1. */
#include <dipc.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

static const char *errno_name(int e)
{
    switch (e) {
    case ENOLINK: return "ENOLINK";
    case EAGAIN: return "EAGAIN";
    case EIDRM: return "EIDRM";
    case EINVAL: return "EINVAL";
    case EINTR: return "EINTR";
    case ENOTCONN: return "ENOTCONN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    default: return "OTHER";
    }
}

static void die(const char *call)
{
    int e = errno;
    fprintf(stderr, "undo_split: %s: %s (errno %s)\n", call, strerror(e), errno_name(e));
    exit(1);
}

static int sem;

static void op(unsigned short num, short delta, const char *what)
{
    struct sembuf b = {.sem_num = num, .sem_op = delta, .sem_flg = SEM_UNDO};
    if (dipc_semop(sem, &b, 1) < 0)
        die(what);
}

/* Waits until at least one process waits for semaphore NUM to grow. */
static void await_waiter(int num)
{
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
    for (;;) {
        int n = dipc_semctl(sem, num, GETNCNT);
        if (n < 0)
            die("dipc_semctl(GETNCNT)");
        if (n > 0)
            return;
        nanosleep(&pause, NULL);
    }
}

static void *blocker(void *arg)
{
    (void)arg;
    op(1, -1, "P(1) in the thread");
    fprintf(stderr, "undo_split: the thread got semaphore 1\n");
    return NULL;
}

static long rounds;

static void *ponger(void *arg)
{
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        op(1, -1, "P(1) in the thread");
        op(0, 1, "V(0) in the thread");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: undo_split init|holder|hold_v|pingpong|get|rm KEY [ARG]\n");
        return 2;
    }
    const char *cmd = argv[1];
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    int init = strcmp(cmd, "init") == 0;
    sem = dipc_semget(key, 2, (init ? IPC_CREAT | IPC_EXCL : 0) | IPC_DIPC | 0666);
    if (sem < 0)
        die("dipc_semget");
    if (init) {
        unsigned short vals[2] = {1, 0};
        union semun a = {.array = vals};
        if (dipc_semctl(sem, 0, SETALL, a) < 0)
            die("dipc_semctl(SETALL)");
        return 0;
    }
    if (strcmp(cmd, "holder") == 0) {
        op(0, -1, "P(0)");
        pthread_t t;
        if (pthread_create(&t, NULL, blocker, NULL) != 0)
            die("pthread_create");
        /* The thread's P(1) is to take the session P(0) used, the only
         * one: no call of ours before it has, so that V(0) needs another
         * session (the split of issue #19). A local pause, as nothing on
         * the owner tells which session a call took. */
        struct timespec settle = {.tv_sec = 0, .tv_nsec = 300 * 1000 * 1000};
        nanosleep(&settle, NULL);
        await_waiter(1);
        op(0, 1, "V(0)");
        printf("released\n");
        fflush(stdout);
        await_waiter(0);
        return 0;
    }
    if (strcmp(cmd, "hold_v") == 0 && argc > 3) {
        op(0, -1, "P(0)");
        printf("held\n");
        fflush(stdout);
        FILE *f = fopen(argv[3], "r");
        char line[64];
        if (f == NULL || fgets(line, sizeof line, f) == NULL)
            die("reading the FIFO");
        /* A V that fails for a lost connection (the call was not made)
         * is tried once more: on a fresh session, that says whether the
         * P was undone meanwhile. */
        struct sembuf v = {.sem_num = 0, .sem_op = 1, .sem_flg = SEM_UNDO};
        if (dipc_semop(sem, &v, 1) < 0) {
            if (errno == ENOLINK)
                die("V(0)");
            fprintf(stderr, "undo_split: V(0): %s (errno %s), again\n", strerror(errno),
                    errno_name(errno));
            op(0, 1, "V(0) again");
        }
        printf("v ok\n");
        return 0;
    }
    if (strcmp(cmd, "pingpong") == 0 && argc > 3) {
        rounds = strtol(argv[3], NULL, 0);
        pthread_t t;
        if (pthread_create(&t, NULL, ponger, NULL) != 0)
            die("pthread_create");
        /* Semaphore 0 starts at 1: take it, so that each P(0) below waits
         * for the thread's V(0). */
        op(0, -1, "P(0)");
        for (long i = 0; i < rounds; i++) {
            op(1, 1, "V(1)");
            op(0, -1, "P(0)");
        }
        if (pthread_join(t, NULL) != 0)
            die("pthread_join");
        op(0, 1, "V(0)");
        printf("done %ld\n", rounds);
        return 0;
    }
    if (strcmp(cmd, "fork") == 0) {
        op(0, -1, "P(0)");
        pid_t child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            op(0, 1, "V(0) in the child");
            _exit(0);
        }
        int st;
        if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "undo_split: the child failed\n");
            return 1;
        }
        /* The child's exit undoes its V (the owner ends its sessions a
         * little later): the value goes back to 0, the parent's hold. */
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        for (;;) {
            int v = dipc_semctl(sem, 0, GETVAL);
            if (v < 0)
                die("dipc_semctl(GETVAL)");
            if (v == 0)
                break;
            nanosleep(&pause, NULL);
        }
        printf("parent holds\n");
        return 0;
    }
    if (strcmp(cmd, "get") == 0 && argc > 3) {
        int num = (int)strtol(argv[3], NULL, 0);
        int v = dipc_semctl(sem, num, GETVAL);
        int n = dipc_semctl(sem, num, GETNCNT);
        if (v < 0 || n < 0)
            die("dipc_semctl");
        printf("%d %d\n", v, n);
        return 0;
    }
    if (strcmp(cmd, "rm") == 0) {
        if (dipc_semctl(sem, 0, IPC_RMID) < 0)
            die("dipc_semctl(IPC_RMID)");
        return 0;
    }
    fprintf(stderr, "undo_split: bad command %s\n", cmd);
    return 2;
}
