/* philosophers: the dining philosophers across hosts. Five forks are
 * semaphores 0-4 of a distributed set; philosopher I takes forks I and
 * (I+1)%5 in one atomic semop (no deadlock possible), with SEM_UNDO. While
 * eating it raises its own flag (semaphore 5+I) and checks that neither
 * neighbour's flag is up: neighbours share a fork, so they must never eat
 * together.
 *
 *   philosophers init KEY        create the set (forks 1, flags 0)
 *   philosophers dine KEY I N    philosopher I eats N meals
 *   philosophers rm KEY
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 5

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

static void die(const char *what)
{
    fprintf(stderr, "philosophers: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: philosophers init|dine|rm KEY [I MEALS]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    int init = strcmp(argv[1], "init") == 0;
    int set = dipc_semget(key, 2 * N, (init ? IPC_CREAT | IPC_EXCL : 0) | IPC_DIPC | 0666);
    if (set < 0)
        die("dipc_semget");
    if (init) {
        unsigned short vals[2 * N] = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
        union semun arg = {.array = vals};
        if (dipc_semctl(set, 0, SETALL, arg) < 0)
            die("dipc_semctl(SETALL)");
        return 0;
    }
    if (strcmp(argv[1], "rm") == 0) {
        if (dipc_semctl(set, 0, IPC_RMID) < 0)
            die("dipc_semctl(IPC_RMID)");
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: philosophers dine KEY I MEALS\n");
        return 2;
    }
    int i = atoi(argv[3]);
    long meals = strtol(argv[4], NULL, 0);
    unsigned short left = (unsigned short)i, right = (unsigned short)((i + 1) % N);
    for (long m = 0; m < meals; m++) {
        struct sembuf take[3] = {
            {.sem_num = left, .sem_op = -1, .sem_flg = SEM_UNDO},
            {.sem_num = right, .sem_op = -1, .sem_flg = SEM_UNDO},
            {.sem_num = (unsigned short)(N + i), .sem_op = 1, .sem_flg = SEM_UNDO},
        };
        if (dipc_semop(set, take, 3) < 0)
            die("dipc_semop(take forks)");
        int l = dipc_semctl(set, N + (i + N - 1) % N, GETVAL);
        int r = dipc_semctl(set, N + (i + 1) % N, GETVAL);
        if (l < 0 || r < 0)
            die("dipc_semctl(GETVAL)");
        if (l != 0 || r != 0) {
            fprintf(stderr, "philosophers: %d eats beside a neighbour (flags %d %d)\n", i, l, r);
            return 1;
        }
        usleep(200);
        struct sembuf put[3] = {
            {.sem_num = (unsigned short)(N + i), .sem_op = -1, .sem_flg = SEM_UNDO},
            {.sem_num = left, .sem_op = 1, .sem_flg = SEM_UNDO},
            {.sem_num = right, .sem_op = 1, .sem_flg = SEM_UNDO},
        };
        if (dipc_semop(set, put, 3) < 0)
            die("dipc_semop(put forks)");
    }
    printf("philosopher %d ate %ld meals\n", i, meals);
    return 0;
}
