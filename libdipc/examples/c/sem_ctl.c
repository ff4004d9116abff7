/* sem_ctl: semctl and semop semantics on a distributed set, for tests.
 *   sem_ctl create KEY NSEMS   create the set (all zero)
 *   sem_ctl check KEY          run the checks below on a set of 3, print "ok"
 *   sem_ctl ncnt KEY NUM       print GETNCNT of semaphore NUM
 *   sem_ctl rm KEY             IPC_RMID
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "sem_ctl: check failed: " __VA_ARGS__);           \
            fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));     \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sem_ctl create|check|ncnt|rm KEY [N]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    if (strcmp(argv[1], "create") == 0) {
        int n = argc > 3 ? atoi(argv[3]) : 3;
        int s = dipc_semget(key, n, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0666);
        CHECK(s >= 0, "dipc_semget(create)");
        return 0;
    }
    int s = dipc_semget(key, 0, IPC_DIPC);
    CHECK(s >= 0, "dipc_semget");
    if (strcmp(argv[1], "ncnt") == 0) {
        int n = dipc_semctl(s, argc > 3 ? atoi(argv[3]) : 0, GETNCNT);
        CHECK(n >= 0, "GETNCNT");
        printf("%d\n", n);
        return 0;
    }
    if (strcmp(argv[1], "rm") == 0) {
        CHECK(dipc_semctl(s, 0, IPC_RMID) == 0, "IPC_RMID");
        return 0;
    }
    union semun arg = {.val = 3};
    CHECK(dipc_semctl(s, 1, SETVAL, arg) == 0, "SETVAL");
    CHECK(dipc_semctl(s, 1, GETVAL) == 3, "GETVAL after SETVAL 3");
    unsigned short vals[3] = {1, 2, 0}, back[3] = {9, 9, 9};
    arg.array = vals;
    CHECK(dipc_semctl(s, 0, SETALL, arg) == 0, "SETALL");
    arg.array = back;
    CHECK(dipc_semctl(s, 0, GETALL, arg) == 0, "GETALL");
    CHECK(back[0] == 1 && back[1] == 2 && back[2] == 0, "GETALL values %u %u %u", back[0], back[1],
          back[2]);
    struct semid_ds ds;
    arg.buf = &ds;
    CHECK(dipc_semctl(s, 0, IPC_STAT, arg) == 0, "IPC_STAT");
    CHECK(ds.sem_nsems == 3, "sem_nsems %lu", (unsigned long)ds.sem_nsems);
    CHECK((ds.sem_perm.mode & 0777) == 0666, "mode %o", ds.sem_perm.mode & 0777);
    /* A get asking for more semaphores than the set has fails at once, as
     * the owner's kernel says; one asking for no more gets the same set. */
    errno = 0;
    CHECK(dipc_semget(key, 4, IPC_DIPC) < 0 && errno == EINVAL, "semget(4) of a set of 3: EINVAL");
    CHECK(dipc_semget(key, 3, IPC_DIPC) == s, "semget(3) gives the same id");
    ds.sem_perm.mode = 0660;
    CHECK(dipc_semctl(s, 0, IPC_SET, arg) == 0, "IPC_SET");
    CHECK(dipc_semctl(s, 0, IPC_STAT, arg) == 0 && (ds.sem_perm.mode & 0777) == 0660,
          "mode after IPC_SET %o", ds.sem_perm.mode & 0777);
    ds.sem_perm.mode = 0666;
    CHECK(dipc_semctl(s, 0, IPC_SET, arg) == 0, "IPC_SET back to 0666");
    /* Atomicity: the second op cannot proceed, so the first must not either. */
    struct sembuf two[2] = {{0, -1, IPC_NOWAIT}, {2, -1, IPC_NOWAIT}};
    CHECK(dipc_semop(s, two, 2) < 0 && errno == EAGAIN, "semop that cannot proceed gives EAGAIN");
    CHECK(dipc_semctl(s, 0, GETVAL) == 1, "first op of a failed semop was not applied");
    double t0 = now();
    struct sembuf wait2 = {2, -1, 0};
    struct timespec t = {0, 300 * 1000000};
    CHECK(dipc_semtimedop(s, &wait2, 1, &t) < 0 && errno == EAGAIN, "semtimedop times out with EAGAIN");
    CHECK(now() - t0 >= 0.29, "semtimedop waited %.3f s", now() - t0);
    struct sembuf ok[2] = {{0, -1, 0}, {1, 1, 0}};
    CHECK(dipc_semop(s, ok, 2) == 0, "semop of two ops");
    CHECK(dipc_semctl(s, 0, GETVAL) == 0 && dipc_semctl(s, 1, GETVAL) == 3, "values after semop");
    CHECK(dipc_semctl(s, 0, GETPID) > 0, "GETPID");
    CHECK(dipc_semctl(s, 0, GETZCNT) == 0, "GETZCNT");
    CHECK(dipc_semctl(s, 0, 12345) < 0 && errno == EINVAL, "bad command gives EINVAL");
    CHECK(dipc_semop(s, NULL, 1) < 0 && errno == EFAULT, "null sops gives EFAULT");
    struct sembuf bad = {7, 1, 0};
    CHECK(dipc_semop(s, &bad, 1) < 0 && errno == EFBIG, "semaphore number out of range gives EFBIG");
    printf("ok\n");
    return 0;
}
