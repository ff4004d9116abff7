/* msg_errors: checks that dipc_msg* calls on a queue give the errors the
 * kernel gives for a local queue (E2BIG, MSG_NOERROR truncation, ENOMSG,
 * EFAULT for null buffers, EINVAL for bad ids, sizes, types and commands).
 * Run it on the owner host and on another: the results must be the same.
 *
 * Usage: msg_errors KEY   (the queue must exist, be empty and writable)
 * Prints "ok: ..." or "FAIL: ..." per check and "N failures" at the end;
 * the exit code is the number of failures (capped at 100). */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

static void expect(const char *what, long got, long want, int err, int want_err)
{
    if (got == want && (want != -1 || err == want_err)) {
        printf("ok: %s\n", what);
        return;
    }
    failures++;
    if (want == -1)
        printf("FAIL: %s: got %ld (errno %d: %s), want -1 with errno %d (%s)\n", what, got,
               err, strerror(err), want_err, strerror(want_err));
    else
        printf("FAIL: %s: got %ld (errno %d: %s), want %ld\n", what, got, err, strerror(err),
               want);
}

struct msg {
    long mtype;
    char text[16384];
};

static struct msg m, r;

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: msg_errors KEY\n");
        return 100;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 100;
    }
    long n;

    /* An empty queue. */
    errno = 0;
    n = dipc_msgrcv(id, &r, sizeof r.text, 0, IPC_NOWAIT);
    expect("IPC_NOWAIT on an empty queue gives ENOMSG", n, -1, errno, ENOMSG);

    /* A 100-byte message of type 5. */
    m.mtype = 5;
    for (int i = 0; i < 100; i++)
        m.text[i] = 'a' + i % 26;
    errno = 0;
    n = dipc_msgsnd(id, &m, 100, 0);
    expect("send 100 bytes", n, 0, errno, 0);

    errno = 0;
    n = dipc_msgrcv(id, &r, 10, 0, IPC_NOWAIT);
    expect("receive into 10 bytes gives E2BIG", n, -1, errno, E2BIG);

    errno = 0;
    n = dipc_msgrcv(id, &r, 10, 4, IPC_NOWAIT);
    expect("no message of type 4: ENOMSG", n, -1, errno, ENOMSG);

    memset(&r, 0, sizeof r);
    errno = 0;
    n = dipc_msgrcv(id, &r, 10, 5, IPC_NOWAIT | MSG_NOERROR);
    expect("MSG_NOERROR truncates to 10 bytes", n, 10, errno, 0);
    expect("truncated message has type 5", r.mtype, 5, 0, 0);
    expect("truncated text is the first 10 bytes", memcmp(r.text, m.text, 10), 0, 0, 0);
    expect("the byte after the truncated text is untouched", r.text[10], 0, 0, 0);

    errno = 0;
    n = dipc_msgrcv(id, &r, sizeof r.text, 0, IPC_NOWAIT);
    expect("the truncated message was consumed: ENOMSG", n, -1, errno, ENOMSG);

    /* Bad arguments. */
    m.mtype = 0;
    errno = 0;
    n = dipc_msgsnd(id, &m, 10, IPC_NOWAIT);
    expect("mtype 0 gives EINVAL", n, -1, errno, EINVAL);
    m.mtype = 1;

    errno = 0;
    n = dipc_msgsnd(id, &m, 8193, IPC_NOWAIT);
    expect("8193 bytes (over msgmax 8192) gives EINVAL", n, -1, errno, EINVAL);

    size_t big = 4u << 20;
    char *huge = calloc(1, big + sizeof(long));
    if (!huge) {
        perror("calloc");
        return 100;
    }
    *(long *)huge = 1;
    errno = 0;
    n = dipc_msgsnd(id, huge, big, IPC_NOWAIT);
    expect("4 MiB message gives EINVAL", n, -1, errno, EINVAL);
    free(huge);

    errno = 0;
    n = dipc_msgrcv(id, &r, (size_t)-1, 0, IPC_NOWAIT);
    expect("negative msgsz gives EINVAL", n, -1, errno, EINVAL);

    errno = 0;
    n = dipc_msgsnd(id, NULL, 10, IPC_NOWAIT);
    expect("msgsnd from a null buffer gives EFAULT", n, -1, errno, EFAULT);

    errno = 0;
    n = dipc_msgctl(id, IPC_STAT, NULL);
    expect("IPC_STAT into a null buffer gives EFAULT", n, -1, errno, EFAULT);

    errno = 0;
    n = dipc_msgctl(id, 12345, NULL);
    expect("unknown msgctl command gives EINVAL", n, -1, errno, EINVAL);

    int bad = 0x7ffffff0;
    errno = 0;
    n = dipc_msgsnd(bad, &m, 10, IPC_NOWAIT);
    expect("msgsnd on a bad id gives EINVAL", n, -1, errno, EINVAL);
    errno = 0;
    n = dipc_msgrcv(bad, &r, 10, 0, IPC_NOWAIT);
    expect("msgrcv on a bad id gives EINVAL", n, -1, errno, EINVAL);
    errno = 0;
    n = dipc_msgrcv(-1, &r, 10, 0, IPC_NOWAIT);
    expect("msgrcv on id -1 gives EINVAL", n, -1, errno, EINVAL);
    struct msqid_ds ds;
    errno = 0;
    n = dipc_msgctl(bad, IPC_STAT, &ds);
    expect("IPC_STAT on a bad id gives EINVAL", n, -1, errno, EINVAL);

    /* The queue still works, and IPC_STAT sees what was sent. */
    m.mtype = 9;
    memcpy(m.text, "still here", 10);
    errno = 0;
    n = dipc_msgsnd(id, &m, 10, IPC_NOWAIT);
    expect("send after the errors", n, 0, errno, 0);
    errno = 0;
    n = dipc_msgctl(id, IPC_STAT, &ds);
    expect("IPC_STAT", n, 0, errno, 0);
    expect("IPC_STAT: msg_qnum is 1", (long)ds.msg_qnum, 1, 0, 0);
    expect("IPC_STAT: msg_cbytes is 10", (long)ds.__msg_cbytes, 10, 0, 0);
    expect("IPC_STAT: key", (long)ds.msg_perm.__key, (long)key, 0, 0);

    /* msgrcv into a null buffer: EFAULT (the kernel drops the message; dipc
     * may keep it, so empty the queue afterwards either way). */
    errno = 0;
    n = dipc_msgrcv(id, NULL, 100, 0, IPC_NOWAIT);
    expect("msgrcv into a null buffer gives EFAULT", n, -1, errno, EFAULT);
    while (dipc_msgrcv(id, &r, sizeof r.text, 0, IPC_NOWAIT) >= 0)
        ;

    printf("%d failures\n", failures);
    return failures > 100 ? 100 : failures;
}
