/* msg_fork: a process that has used a distributed queue forks children
 * that use it too: each child i blocks in dipc_msgrcv for type i, then the
 * parent sends the messages (last type first), and every child must get
 * its own. Checks that a child does not share (and garble) the parent's
 * connections to dipcd.
 *
 * Usage: msg_fork KEY N   (the queue must exist and be empty)
 * Prints "child I got: TEXT" per child; exit 0 if all got theirs. */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct msg {
    long mtype;
    char text[256];
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: msg_fork KEY N\n");
        return 1;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int n = atoi(argv[2]);
    if (n < 1 || n > 32) {
        fprintf(stderr, "N must be 1..32\n");
        return 1;
    }
    int id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    /* Use the queue before forking, so that the parent holds connections. */
    struct msqid_ds ds;
    if (dipc_msgctl(id, IPC_STAT, &ds) < 0) {
        perror("dipc_msgctl(IPC_STAT)");
        return 1;
    }
    struct msg m;
    if (dipc_msgrcv(id, &m, sizeof m.text, 0, IPC_NOWAIT) >= 0 || errno != ENOMSG) {
        fprintf(stderr, "the queue should be empty (errno %d)\n", errno);
        return 1;
    }
    pid_t kids[32];
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0) {
            ssize_t r = dipc_msgrcv(id, &m, sizeof m.text - 1, i + 1, 0);
            if (r < 0) {
                printf("child %d failed: %s\n", i + 1, strerror(errno));
                fflush(stdout);
                _exit(1);
            }
            m.text[r] = '\0';
            printf("child %d got: %s\n", i + 1, m.text);
            fflush(stdout);
            _exit(strcmp(m.text, "for child") == 0 && m.mtype == i + 1 ? 0 : 1);
        }
        kids[i] = p;
    }
    /* Give the children time to block, and use the queue meanwhile. */
    for (int k = 0; k < 5; k++) {
        usleep(100000);
        if (dipc_msgctl(id, IPC_STAT, &ds) < 0) {
            perror("dipc_msgctl(IPC_STAT) after fork");
            return 1;
        }
    }
    for (int i = n; i >= 1; i--) {
        m.mtype = i;
        strcpy(m.text, "for child");
        if (dipc_msgsnd(id, &m, strlen(m.text), 0) < 0) {
            perror("dipc_msgsnd");
            return 1;
        }
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(kids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    printf("%d of %d children failed\n", bad, n);
    return bad ? 1 : 0;
}
