/* shm_counter: a counter in a distributed shared memory segment, guarded by
 * a distributed semaphore. Run it on several hosts at once with the same
 * key: each adds `rounds` to the counter; the last one to finish prints the
 * total of everyone's rounds. No sync calls: the counter is plain memory,
 * kept coherent by dipc.
 * Usage: shm_counter [key] [rounds] */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct shared {
    long counter;
    long finished;
};

static int sem_op(int sem, short op)
{
    struct sembuf b = { .sem_num = 0, .sem_op = op, .sem_flg = SEM_UNDO };
    return dipc_semop(sem, &b, 1);
}

int main(int argc, char **argv)
{
    key_t key = argc > 1 ? (key_t)strtol(argv[1], NULL, 0) : 0x5c07;
    long rounds = argc > 2 ? strtol(argv[2], NULL, 0) : 1000;

    int shm = dipc_shmget(key, sizeof(struct shared), IPC_CREAT | IPC_DIPC | 0666);
    if (shm < 0) {
        perror("dipc_shmget");
        return 1;
    }
    /* The set starts at 0: whoever creates it opens it (IPC_EXCL tells). */
    int sem = dipc_semget(key, 1, IPC_CREAT | IPC_EXCL | IPC_DIPC | 0666);
    if (sem >= 0) {
        union semun { int val; } arg = { .val = 1 };
        if (dipc_semctl(sem, 0, SETVAL, arg) < 0) {
            perror("dipc_semctl(SETVAL)");
            return 1;
        }
    } else if (errno == EEXIST) {
        sem = dipc_semget(key, 1, IPC_DIPC | 0666);
    }
    if (sem < 0) {
        perror("dipc_semget");
        return 1;
    }
    struct shared *s = dipc_shmat(shm, NULL, 0);
    if (s == (void *)-1) {
        perror("dipc_shmat");
        return 1;
    }
    for (long i = 0; i < rounds; i++) {
        if (sem_op(sem, -1) < 0) {
            perror("dipc_semop");
            return 1;
        }
        s->counter++;
        sem_op(sem, 1);
    }
    sem_op(sem, -1);
    s->finished++;
    printf("counter %ld after %ld processes finished\n", s->counter, s->finished);
    sem_op(sem, 1);
    if (dipc_shmdt(s) < 0) {
        perror("dipc_shmdt");
        return 1;
    }
    return 0;
}
