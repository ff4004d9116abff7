/* sem_undo: SEM_UNDO across hosts.
 *   sem_undo hold KEY        take the semaphore (value 1 -> 0) with SEM_UNDO, print "held", sleep
 *   sem_undo wait KEY MS     take it with a time-out of MS ms (semtimedop), print "got" or fail
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sem_undo hold|wait KEY [MS]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    int sem = dipc_semget(key, 1, IPC_DIPC);
    if (sem < 0) {
        perror("dipc_semget");
        return 1;
    }
    struct sembuf p = {.sem_num = 0, .sem_op = -1, .sem_flg = SEM_UNDO};
    if (strcmp(argv[1], "hold") == 0) {
        if (dipc_semop(sem, &p, 1) < 0) {
            perror("dipc_semop");
            return 1;
        }
        printf("held\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    long ms = argc > 3 ? strtol(argv[3], NULL, 0) : 10000;
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    if (dipc_semtimedop(sem, &p, 1, &t) < 0) {
        fprintf(stderr, "sem_undo: dipc_semtimedop: %s\n", strerror(errno));
        return 1;
    }
    printf("got\n");
    return 0;
}
