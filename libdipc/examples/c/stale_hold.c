/* stale_hold: keep a distributed structure's id across an event, then use
 * it again, as a long-running process does when the owner host reboots
 * or the key is freed meanwhile.
 *
 *   stale_hold hold KIND KEY FILE   (below)
 *   stale_hold create KIND KEY      create KEY (mode 0666, IPC_EXCL), print its id
 *   stale_hold open KIND KEY        get KEY with IPC_CREAT (mode 0666), print its id
 *   stale_hold rm KIND KEY          remove KEY's structure (IPC_RMID)
 *   stale_hold call KIND ID         make the call (below) on ID, as another
 *                                   process of this host got it, without a
 *                                   get; print "call: ok" or "call: errno N"
 *   stale_hold count KIND KEY       print what calls left: a queue's message
 *                                   count, semaphore 0's value, a segment's
 *                                   attach count
 *
 * KIND is msg, sem or shm. `hold` gets KEY with IPC_DIPC (no creation; a set of 1 semaphore, a segment of
 * 4096 bytes), prints "id ID", makes one call on it and prints
 * "before: ok" (or "before: errno N"), waits (up to 120 s) until FILE
 * exists, makes the same call on the same id and prints "after: ok" or
 * "after: errno N". The call: msgsnd of a type 1 message "from stale_hold"
 * (IPC_NOWAIT); semop +1 on semaphore 0 (IPC_NOWAIT); shmat and shmdt.
 * Exits 0 once it printed "after", else 1.
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct text_msg {
    long mtype;
    char mtext[32];
};

static int call(const char *kind, int id)
{
    if (strcmp(kind, "msg") == 0) {
        struct text_msg m = {1, "from stale_hold"};
        return dipc_msgsnd(id, &m, strlen(m.mtext), IPC_NOWAIT);
    }
    if (strcmp(kind, "sem") == 0) {
        struct sembuf op = {0, 1, IPC_NOWAIT};
        return dipc_semop(id, &op, 1);
    }
    void *p = dipc_shmat(id, NULL, 0);
    if (p == (void *)-1)
        return -1;
    return dipc_shmdt(p);
}

static void report(const char *when, int r)
{
    if (r == 0)
        printf("%s: ok\n", when);
    else
        printf("%s: errno %d\n", when, errno);
    fflush(stdout);
}

static int rm(const char *kind, int id)
{
    if (strcmp(kind, "msg") == 0)
        return dipc_msgctl(id, IPC_RMID, NULL);
    if (strcmp(kind, "sem") == 0)
        return dipc_semctl(id, 0, IPC_RMID);
    return dipc_shmctl(id, IPC_RMID, NULL);
}

static int get(const char *kind, key_t key, int flags)
{
    if (strcmp(kind, "msg") == 0)
        return dipc_msgget(key, IPC_DIPC | flags);
    if (strcmp(kind, "sem") == 0)
        return dipc_semget(key, 1, IPC_DIPC | flags);
    if (strcmp(kind, "shm") == 0)
        return dipc_shmget(key, 4096, IPC_DIPC | flags);
    errno = EINVAL;
    return -1;
}

static long count(const char *kind, int id)
{
    if (strcmp(kind, "msg") == 0) {
        struct msqid_ds ds;
        return dipc_msgctl(id, IPC_STAT, &ds) < 0 ? -1 : (long)ds.msg_qnum;
    }
    if (strcmp(kind, "sem") == 0)
        return dipc_semctl(id, 0, GETVAL);
    struct shmid_ds ds;
    return dipc_shmctl(id, IPC_STAT, &ds) < 0 ? -1 : (long)ds.shm_nattch;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: stale_hold hold|create|open|rm|count KIND KEY [FILE] | call KIND ID\n");
        return 2;
    }
    const char *cmd = argv[1], *kind = argv[2];
    if (strcmp(cmd, "call") == 0) {
        report("call", call(kind, (int)strtol(argv[3], NULL, 0)));
        return 0;
    }
    key_t key = (key_t)strtol(argv[3], NULL, 0);
    int flags = 0;
    if (strcmp(cmd, "create") == 0)
        flags = IPC_CREAT | IPC_EXCL | 0666;
    else if (strcmp(cmd, "open") == 0)
        flags = IPC_CREAT | 0666;
    int id = get(kind, key, flags);
    if (id < 0) {
        fprintf(stderr, "stale_hold: get %s %s: %s\n", kind, argv[3], strerror(errno));
        return 1;
    }
    if (strcmp(cmd, "create") == 0 || strcmp(cmd, "open") == 0) {
        printf("%d\n", id);
        return 0;
    }
    if (strcmp(cmd, "rm") == 0) {
        if (rm(kind, id) < 0) {
            fprintf(stderr, "stale_hold: rm: %s\n", strerror(errno));
            return 1;
        }
        return 0;
    }
    if (strcmp(cmd, "count") == 0) {
        long n = count(kind, id);
        if (n < 0) {
            fprintf(stderr, "stale_hold: count: %s\n", strerror(errno));
            return 1;
        }
        printf("%ld\n", n);
        return 0;
    }
    if (strcmp(cmd, "hold") != 0 || argc != 5) {
        fprintf(stderr, "usage: stale_hold hold KIND KEY FILE\n");
        return 2;
    }
    printf("id %d\n", id);
    report("before", call(kind, id));
    struct stat st;
    int waited = 0;
    while (stat(argv[4], &st) != 0) {
        if (waited++ > 6000) {
            fprintf(stderr, "stale_hold: %s never appeared\n", argv[4]);
            return 1;
        }
        usleep(20000);
    }
    report("after", call(kind, id));
    return 0;
}
