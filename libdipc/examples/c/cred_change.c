/* cred_change: remote calls act with the caller's credentials of now,
 * not those it had at its first call.
 *
 *   cred_change KEY UID
 *
 * Gets the distributed queue KEY (IPC_DIPC, no creation), reads its state
 * (IPC_STAT) and prints "before: ok" (or "before: errno N"), then gives up
 * root for UID (its gid the same number, no supplementary groups), reads
 * the state again on the same id and prints "after: ok" or
 * "after: errno N". Run as root on a host that does not own KEY. Exits 0
 * once it printed "after", else 1.
 */
#include <dipc.h>
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void report(const char *when, int r)
{
    if (r == 0)
        printf("%s: ok\n", when);
    else
        printf("%s: errno %d\n", when, errno);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cred_change KEY UID\n");
        return 1;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    uid_t uid = (uid_t)strtoul(argv[2], NULL, 10);
    int id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    struct msqid_ds ds;
    report("before", dipc_msgctl(id, IPC_STAT, &ds));
    if (setgroups(0, NULL) != 0 || setgid(uid) != 0 || setuid(uid) != 0) {
        perror("giving up root");
        return 1;
    }
    report("after", dipc_msgctl(id, IPC_STAT, &ds));
    return 0;
}
