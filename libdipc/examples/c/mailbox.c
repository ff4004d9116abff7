/* mailbox: dipc_send / dipc_receive / dipc_poll between registered
 * processes, for tests and scripts. Message texts are "TAG SEQ".
 *
 *   mailbox send DEST COUNT TAG     regist, print "pid_d N", send COUNT
 *                                   messages (blocking), print "sent COUNT"
 *   mailbox send-one DEST SIZE      regist, print "sending", one blocking
 *                                   send of SIZE bytes, print "sent"
 *   mailbox fill DEST SIZE          regist, DIPC_NOWAIT sends of SIZE bytes
 *                                   until EAGAIN; print "filled K"
 *   mailbox check-order N GOFILE    regist, print "pid_d N", wait for
 *                                   GOFILE holding three sender pid_ds
 *                                   A B C; receive N from A only, then 2N
 *                                   from anyone; check senders, order and
 *                                   that nothing more is there; "ok order"
 *   mailbox hold GOFILE             regist, print "pid_d N"; check the
 *                                   empty-mailbox paths ("empty ok"); wait
 *                                   for GOFILE; check E2BIG, drain with
 *                                   DIPC_NOWAIT ("drained K"); wait with
 *                                   dipc_poll for one more message and
 *                                   print "late from S: TEXT"
 *   mailbox sleep                   regist, print "pid_d N", sleep (until
 *                                   killed; a mailbox nobody empties)
 *   mailbox unregistered DEST       send, receive and poll without regist:
 *                                   each must fail with ENOTCONN; "ok"
 *
 * Failures print "mailbox: CALL: strerror (errno NAME)" or "FAIL: ..." on
 * stderr and exit 1. */
#include <dipc.h>
#include <errno.h>
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
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ECONNREFUSED: return "ECONNREFUSED";
    default: return "OTHER";
    }
}

static int die(const char *call)
{
    int e = errno;
    fprintf(stderr, "mailbox: %s: %s (errno %s)\n", call, strerror(e), errno_name(e));
    return 1;
}

static int fail(const char *what)
{
    fprintf(stderr, "FAIL: %s\n", what);
    return 1;
}

static pid_d join(int print)
{
    pid_d me = regist();
    if (me >= 0 && print) {
        printf("pid_d %lld\n", (long long)me);
        fflush(stdout);
    }
    return me;
}

static int wait_file(const char *path)
{
    for (int i = 0; i < 6000; i++) {
        if (access(path, F_OK) == 0)
            return 0;
        usleep(10000);
    }
    return -1;
}

static char buf[1 << 16];

static int check_order(long n, const char *gofile)
{
    if (join(1) < 0)
        return die("regist");
    if (wait_file(gofile) < 0)
        return fail("no go file");
    FILE *f = fopen(gofile, "r");
    long long a, b, c;
    if (!f || fscanf(f, "%lld %lld %lld", &a, &b, &c) != 3)
        return fail("go file does not hold three pid_ds");
    fclose(f);
    char tag_a[64] = "";
    /* Only A's messages, all of them, in order. */
    for (long i = 0; i < n; i++) {
        pid_d src = a;
        ssize_t len = dipc_receive(&src, buf, sizeof buf - 1, 0);
        if (len < 0)
            return die("dipc_receive(A)");
        buf[len] = 0;
        char tag[64];
        long seq;
        if (src != a || sscanf(buf, "%63s %ld", tag, &seq) != 2 || seq != i ||
            (i > 0 && strcmp(tag, tag_a) != 0)) {
            fprintf(stderr, "FAIL: from A (%lld) message %ld: got \"%s\" from %lld\n", a, i,
                    buf, (long long)src);
            return 1;
        }
        strcpy(tag_a, tag);
    }
    /* Then the others', each sender's in order. */
    long next_b = 0, next_c = 0;
    char tag_b[64] = "", tag_c[64] = "";
    for (long i = 0; i < 2 * n; i++) {
        pid_d src = 0;
        ssize_t len = dipc_receive(&src, buf, sizeof buf - 1, 0);
        if (len < 0)
            return die("dipc_receive(any)");
        buf[len] = 0;
        char tag[64];
        long seq;
        if (sscanf(buf, "%63s %ld", tag, &seq) != 2)
            return fail("unparsable message");
        long *next = src == b ? &next_b : src == c ? &next_c : NULL;
        char *t = src == b ? tag_b : tag_c;
        if (!next || seq != *next || (*next > 0 && strcmp(tag, t) != 0)) {
            fprintf(stderr, "FAIL: message \"%s\" from %lld out of order or from a stranger\n",
                    buf, (long long)src);
            return 1;
        }
        strcpy(t, tag);
        (*next)++;
    }
    if (next_b != n || next_c != n)
        return fail("wrong counts");
    pid_d src = 0;
    if (dipc_receive(&src, buf, sizeof buf, DIPC_NOWAIT) >= 0 || errno != EAGAIN)
        return fail("a message more than was sent (or not EAGAIN)");
    printf("ok order: %ld from %s, %ld from %s, %ld from %s\n", n, tag_a, n, tag_b, n, tag_c);
    return 0;
}

static int hold(const char *gofile)
{
    if (join(1) < 0)
        return die("regist");
    pid_d src = 0;
    if (dipc_receive(&src, buf, sizeof buf, DIPC_NOWAIT) >= 0 || errno != EAGAIN)
        return die("dipc_receive(DIPC_NOWAIT) on an empty mailbox should give EAGAIN");
    int p = dipc_poll(20);
    if (p != 0)
        return p < 0 ? die("dipc_poll") : fail("dipc_poll saw a message in an empty mailbox");
    printf("empty ok\n");
    fflush(stdout);
    if (wait_file(gofile) < 0)
        return fail("no go file");
    p = dipc_poll(-1);
    if (p != 1)
        return p < 0 ? die("dipc_poll(-1)") : fail("dipc_poll(-1) returned 0");
    src = 0;
    if (dipc_receive(&src, buf, 1, 0) >= 0 || errno != E2BIG)
        return die("dipc_receive into 1 byte should give E2BIG");
    long k = 0;
    for (;;) {
        src = 0;
        ssize_t n = dipc_receive(&src, buf, sizeof buf, DIPC_NOWAIT);
        if (n < 0) {
            if (errno != EAGAIN)
                return die("dipc_receive(DIPC_NOWAIT)");
            break;
        }
        k++;
    }
    printf("drained %ld\n", k);
    fflush(stdout);
    p = dipc_poll(30000);
    if (p != 1)
        return p < 0 ? die("dipc_poll(30000)") : fail("no late message within 30 s");
    src = 0;
    ssize_t n = dipc_receive(&src, buf, sizeof buf - 1, DIPC_NOWAIT);
    if (n < 0)
        return die("dipc_receive after dipc_poll");
    buf[n] = 0;
    printf("late from %lld: %s\n", (long long)src, buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mailbox send|send-one|fill|check-order|hold|sleep|unregistered ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "send") == 0 && argc >= 5) {
        pid_d dest = strtoll(argv[2], NULL, 0);
        long count = strtol(argv[3], NULL, 0);
        if (join(1) < 0)
            return die("regist");
        for (long i = 0; i < count; i++) {
            int len = snprintf(buf, sizeof buf, "%s %ld", argv[4], i);
            if (dipc_send(dest, buf, (size_t)len, 0) < 0)
                return die("dipc_send");
        }
        printf("sent %ld\n", count);
        return 0;
    }
    if (strcmp(cmd, "send-one") == 0 && argc >= 4) {
        pid_d dest = strtoll(argv[2], NULL, 0);
        size_t size = (size_t)strtoul(argv[3], NULL, 0);
        static char big[1 << 20];
        if (size > sizeof big)
            return fail("SIZE too big");
        memset(big, 'x', size);
        if (join(0) < 0)
            return die("regist");
        printf("sending\n");
        fflush(stdout);
        if (dipc_send(dest, big, size, 0) < 0)
            return die("dipc_send");
        printf("sent\n");
        return 0;
    }
    if (strcmp(cmd, "fill") == 0 && argc >= 4) {
        pid_d dest = strtoll(argv[2], NULL, 0);
        size_t size = (size_t)strtoul(argv[3], NULL, 0);
        if (size > sizeof buf)
            return fail("SIZE too big");
        memset(buf, 'f', size);
        if (join(0) < 0)
            return die("regist");
        long k = 0;
        while (dipc_send(dest, buf, size, DIPC_NOWAIT) == 0)
            if (++k > 100000)
                return fail("the mailbox never filled");
        if (errno != EAGAIN)
            return die("dipc_send(DIPC_NOWAIT)");
        printf("filled %ld\n", k);
        return 0;
    }
    if (strcmp(cmd, "check-order") == 0 && argc >= 4)
        return check_order(strtol(argv[2], NULL, 0), argv[3]);
    if (strcmp(cmd, "hold") == 0 && argc >= 3)
        return hold(argv[2]);
    if (strcmp(cmd, "sleep") == 0) {
        if (join(1) < 0)
            return die("regist");
        for (;;)
            pause();
    }
    if (strcmp(cmd, "unregistered") == 0 && argc >= 3) {
        pid_d dest = strtoll(argv[2], NULL, 0);
        if (dipc_send(dest, "x", 1, 0) == 0 || errno != ENOTCONN)
            return die("dipc_send unregistered should give ENOTCONN");
        pid_d src = 0;
        if (dipc_receive(&src, buf, sizeof buf, DIPC_NOWAIT) >= 0 || errno != ENOTCONN)
            return die("dipc_receive unregistered should give ENOTCONN");
        if (dipc_poll(0) >= 0 || errno != ENOTCONN)
            return die("dipc_poll unregistered should give ENOTCONN");
        printf("ok\n");
        return 0;
    }
    fprintf(stderr, "mailbox: bad arguments\n");
    return 2;
}
