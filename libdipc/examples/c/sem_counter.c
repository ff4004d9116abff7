/* sem_counter: processes on several hosts increment one counter under a
 * distributed semaphore. The counter is the text of the single message in
 * a distributed queue: a process takes it with IPC_NOWAIT inside the
 * critical section, so if the semaphore ever let two processes in at once,
 * one of them would find the queue empty and report it.
 *
 *   sem_counter init KEY      create the semaphore (value 1) and the queue
 *   sem_counter run KEY N     N increments
 *   sem_counter get KEY       print the counter
 *   sem_counter rm KEY        remove both
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct counter_msg {
    long mtype;
    long value;
};

static void die(const char *what)
{
    fprintf(stderr, "sem_counter: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sem_counter init|run|get|rm KEY [N]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    const char *cmd = argv[1];
    int create = strcmp(cmd, "init") == 0 ? IPC_CREAT | IPC_EXCL : 0;
    int sem = dipc_semget(key, 1, create | IPC_DIPC | 0666);
    if (sem < 0)
        die("dipc_semget");
    int q = dipc_msgget(key, create | IPC_DIPC | 0666);
    if (q < 0)
        die("dipc_msgget");
    struct counter_msg m = {.mtype = 1, .value = 0};
    if (strcmp(cmd, "init") == 0) {
        union semun arg = {.val = 1};
        if (dipc_semctl(sem, 0, SETVAL, arg) < 0)
            die("dipc_semctl(SETVAL)");
        if (dipc_msgsnd(q, &m, sizeof m.value, 0) < 0)
            die("dipc_msgsnd");
    } else if (strcmp(cmd, "run") == 0) {
        long n = argc > 3 ? strtol(argv[3], NULL, 0) : 1000;
        struct sembuf p = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
        struct sembuf v = {.sem_num = 0, .sem_op = 1, .sem_flg = SEM_UNDO};
        for (long i = 0; i < n; i++) {
            if (dipc_semop(sem, &p, 1) < 0)
                die("dipc_semop(P)");
            if (dipc_msgrcv(q, &m, sizeof m.value, 0, IPC_NOWAIT) < 0)
                die("dipc_msgrcv inside the critical section (mutual exclusion broken?)");
            m.value++;
            if (dipc_msgsnd(q, &m, sizeof m.value, IPC_NOWAIT) < 0)
                die("dipc_msgsnd");
            if (dipc_semop(sem, &v, 1) < 0)
                die("dipc_semop(V)");
        }
    } else if (strcmp(cmd, "get") == 0) {
        if (dipc_msgrcv(q, &m, sizeof m.value, 0, IPC_NOWAIT) < 0)
            die("dipc_msgrcv");
        printf("%ld\n", m.value);
        if (dipc_msgsnd(q, &m, sizeof m.value, IPC_NOWAIT) < 0)
            die("dipc_msgsnd");
    } else if (strcmp(cmd, "rm") == 0) {
        if (dipc_semctl(sem, 0, IPC_RMID) < 0)
            die("dipc_semctl(IPC_RMID)");
        if (dipc_msgctl(q, IPC_RMID, NULL) < 0)
            die("dipc_msgctl(IPC_RMID)");
    } else {
        fprintf(stderr, "sem_counter: unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
