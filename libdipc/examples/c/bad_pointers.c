/* bad_pointers: every call of the C interface that takes a buffer, given
 * a pointer to memory the process does not have, must fail with EFAULT as
 * the kernel's System V calls do, on the owner host (where they are the
 * kernel's) and on any other (where the library copies the buffers):
 * never kill the caller with SIGSEGV.
 *
 * Usage: bad_pointers MSGKEY SEMKEY SHMKEY
 * The keys name a distributed queue, semaphore set (1 semaphore) and
 * segment (4096 bytes), made with mode 0666 where they do not exist yet:
 * run it on the host that is to own them first. Each check runs in a
 * child process, so that one that faults cannot hide the others. Prints
 * "ok: NAME" or "FAIL: NAME: ..." per check and "N failures" at the end;
 * the exit code is the number of failures. */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

/* Memory no process has: the first page is never mapped. */
#define BAD ((void *)8)

static int msq, sem, shm;
static char *edge; /* 8 good bytes, then a page the process may not touch */

static long check(int which)
{
    struct sembuf op = {0, 1, IPC_NOWAIT};
    union semun bad = {.buf = BAD};
    switch (which) {
    case 0: return dipc_msgsnd(msq, BAD, 10, IPC_NOWAIT);
    case 1: return dipc_msgsnd(msq, edge, 64, IPC_NOWAIT); /* text runs off */
    case 2: {
        struct { long t; char c[4]; } m = {1, "abc"};
        if (dipc_msgsnd(msq, &m, 4, IPC_NOWAIT) != 0)
            return -2;
        return dipc_msgrcv(msq, BAD, 4, 0, IPC_NOWAIT);
    }
    case 3: return dipc_msgctl(msq, IPC_STAT, BAD);
    case 4: return dipc_msgctl(msq, IPC_SET, BAD);
    case 5: return dipc_semop(sem, BAD, 1);
    case 6: {
        op.sem_op = 0;
        return dipc_semtimedop(sem, &op, 1, BAD);
    }
    case 7: return dipc_semctl(sem, 0, GETALL, bad);
    case 8: return dipc_semctl(sem, 0, SETALL, bad);
    case 9: return dipc_semctl(sem, 0, IPC_STAT, bad);
    case 10: return dipc_semctl(sem, 0, IPC_SET, bad);
    case 11: return dipc_shmctl(shm, IPC_STAT, BAD);
    case 12: return dipc_shmctl(shm, IPC_SET, BAD);
    case 13: {
        pid_d me = regist();
        if (me < 0)
            return -2;
        return dipc_send(me, BAD, 10, 0);
    }
    }
    return -2;
}

static const char *names[] = {
    "msgsnd of a bad buffer",
    "msgsnd of a text that runs into unmapped memory",
    "msgrcv into a bad buffer",
    "msgctl IPC_STAT into a bad buffer",
    "msgctl IPC_SET from a bad buffer",
    "semop of bad sembufs",
    "semtimedop with a bad timeout",
    "semctl GETALL into a bad array",
    "semctl SETALL from a bad array",
    "semctl IPC_STAT into a bad buffer",
    "semctl IPC_SET from a bad buffer",
    "shmctl IPC_STAT into a bad buffer",
    "shmctl IPC_SET from a bad buffer",
    "dipc_send of a bad buffer",
};

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bad_pointers MSGKEY SEMKEY SHMKEY\n");
        return 100;
    }
    int flags = IPC_DIPC | IPC_CREAT | 0666;
    msq = dipc_msgget((key_t)strtol(argv[1], NULL, 0), flags);
    sem = dipc_semget((key_t)strtol(argv[2], NULL, 0), 1, flags);
    shm = dipc_shmget((key_t)strtol(argv[3], NULL, 0), 4096, flags);
    if (msq < 0 || sem < 0 || shm < 0) {
        perror("get");
        return 100;
    }
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + page, page, PROT_NONE) != 0) {
        perror("mmap");
        return 100;
    }
    edge = p + page - sizeof(long);
    *(long *)edge = 1;
    int failures = 0;
    for (int i = 0; i < (int)(sizeof names / sizeof *names); i++) {
        fflush(stdout);
        pid_t c = fork();
        if (c < 0) {
            perror("fork");
            return 100;
        }
        if (c == 0) {
            errno = 0;
            long r = check(i);
            if (r == -1 && errno == EFAULT)
                _exit(0);
            printf("FAIL: %s: returned %ld, errno %d (%s), want EFAULT\n", names[i], r, errno,
                   strerror(errno));
            _exit(1);
        }
        int st;
        if (waitpid(c, &st, 0) < 0) {
            perror("waitpid");
            return 100;
        }
        if (WIFSIGNALED(st)) {
            printf("FAIL: %s: killed by signal %d (%s)\n", names[i], WTERMSIG(st),
                   strsignal(WTERMSIG(st)));
            failures++;
        } else if (WEXITSTATUS(st) != 0) {
            failures++;
        } else {
            printf("ok: %s\n", names[i]);
        }
    }
    printf("%d failures\n", failures);
    return failures > 100 ? 100 : failures;
}
