/* pidctl: one dipc process-id call per run, for tests and scripts.
 *
 *   pidctl kill PID_D SIG [COUNT]   kill_d COUNT times (default 1); with a
 *                                   registered sender (regist first);
 *                                   SIG may be rtN for SIGRTMIN+N
 *   pidctl kill-anon PID_D SIG      kill_d once without registering
 *   pidctl uregist PID_D            uregist(PID_D) (of another process)
 *   pidctl regist                   regist twice (same pid_d), uregist,
 *                                   uregist again (ESRCH); prints the pid_d
 *   pidctl reregist GOFILE          regist, print "pid_d N", wait until
 *                                   GOFILE exists, regist again, print
 *                                   "again M"
 *   pidctl wait GOFILE              regist, print "pid_d N", wait until
 *                                   GOFILE exists, then uregist itself,
 *                                   print "unregistered", wait until
 *                                   GOFILE.exit exists (at most 60 s)
 *
 * Prints "ok" (or what it did) on success. On failure prints
 * "pidctl: CALL: strerror (errno NAME)" on stderr and exits 1. */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *errno_name(int e)
{
    switch (e) {
    case ESRCH: return "ESRCH";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case EAGAIN: return "EAGAIN";
    case EMSGSIZE: return "EMSGSIZE";
    case E2BIG: return "E2BIG";
    case EINTR: return "EINTR";
    case EIDRM: return "EIDRM";
    case EACCES: return "EACCES";
    default: return "OTHER";
    }
}

static int die(const char *call)
{
    int e = errno;
    fprintf(stderr, "pidctl: %s: %s (errno %s)\n", call, strerror(e), errno_name(e));
    return 1;
}

static int parse_sig(const char *s)
{
    if (strncmp(s, "rt", 2) == 0)
        return SIGRTMIN + atoi(s + 2);
    return atoi(s);
}

static void wait_file(const char *path)
{
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
        usleep(10000);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pidctl kill|kill-anon|uregist|regist|reregist|wait ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    if ((strcmp(cmd, "kill") == 0 || strcmp(cmd, "kill-anon") == 0) && argc >= 4) {
        pid_d target = strtoll(argv[2], NULL, 0);
        int sig = parse_sig(argv[3]);
        long n = argc > 4 ? strtol(argv[4], NULL, 0) : 1;
        if (strcmp(cmd, "kill") == 0 && regist() < 0)
            return die("regist");
        for (long i = 0; i < n; i++)
            if (kill_d(target, sig) < 0)
                return die("kill_d");
        printf("sent %ld\n", n);
        return 0;
    }
    if (strcmp(cmd, "uregist") == 0 && argc >= 3) {
        if (uregist(strtoll(argv[2], NULL, 0)) < 0)
            return die("uregist");
        printf("ok\n");
        return 0;
    }
    if (strcmp(cmd, "regist") == 0) {
        pid_d a = regist();
        if (a < 0)
            return die("regist");
        pid_d b = regist();
        if (b != a) {
            fprintf(stderr, "pidctl: second regist gave %lld, first %lld\n", (long long)b,
                    (long long)a);
            return 1;
        }
        if (uregist(a) < 0)
            return die("uregist");
        if (uregist(a) == 0 || errno != ESRCH) {
            fprintf(stderr, "pidctl: second uregist did not fail with ESRCH\n");
            return 1;
        }
        printf("pid_d %lld\n", (long long)a);
        return 0;
    }
    if (strcmp(cmd, "reregist") == 0 && argc >= 3) {
        pid_d me = regist();
        if (me < 0)
            return die("regist");
        printf("pid_d %lld\n", (long long)me);
        fflush(stdout);
        wait_file(argv[2]);
        pid_d again = regist();
        if (again < 0)
            return die("regist again");
        printf("again %lld\n", (long long)again);
        return 0;
    }
    if (strcmp(cmd, "wait") == 0 && argc >= 3) {
        pid_d me = regist();
        if (me < 0)
            return die("regist");
        printf("pid_d %lld\n", (long long)me);
        fflush(stdout);
        wait_file(argv[2]);
        if (uregist(me) < 0)
            return die("uregist");
        printf("unregistered\n");
        fflush(stdout);
        char exit_file[4096];
        snprintf(exit_file, sizeof exit_file, "%s.exit", argv[2]);
        wait_file(exit_file);
        return 0;
    }
    fprintf(stderr, "pidctl: bad arguments\n");
    return 2;
}
