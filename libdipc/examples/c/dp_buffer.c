/* dp_buffer: Brinch Hansen's Buffer as a distributed process, with the
 * C API (dipc_serve, dipc_call, dipc_name_*).
 *
 *   process Buffer
 *     M: line; full: bool
 *     proc Send(N: line)     when not full: M := N; full := true end
 *     proc Receive(#N: line) when full: N := M; full := false end
 *     full := false
 *
 *   dp_buffer serve [NAME]         regist, take NAME (default "Buffer"),
 *                                  print "pid_d N", serve until a Stop
 *                                  call; print "stopped"
 *   dp_buffer send TAG COUNT [NAME]   send COUNT letters "TAG SEQ" (each
 *                                  LETTER bytes, blank-padded); "sent COUNT"
 *   dp_buffer receive COUNT [NAME] receive COUNT letters, print each
 *                                  (unpadded) on a line; "received COUNT"
 *   dp_buffer stream-in FILE [NAME]   Stream: send each line of FILE
 *                                  (at most LETTER - 1 bytes) as a letter,
 *                                  then an empty letter (an empty line
 *                                  travels as "."); "streamed COUNT"
 *   dp_buffer stream-out [NAME]    receive letters until the empty one,
 *                                  print each on a line
 *   dp_buffer stop [NAME]          call Stop
 *   dp_buffer errors [NAME]        the C API's errors: ENOSYS, EDEADLK,
 *                                  EMSGSIZE, ESRCH, EFAULT, ENOENT,
 *                                  EEXIST; print "errors ok"
 *
 * Failures print "dp_buffer: CALL: strerror (errno NAME)" or "FAIL: ..."
 * on stderr and exit 1. */
#define PROG "dp_buffer"
#include "dp_common.h"

#define LETTER 128

struct buffer {
    char m[LETTER];
    int full;
};



static int fail(const char *what)
{
    fprintf(stderr, "FAIL: %s\n", what);
    return 1;
}

static int proc_send(void *state, struct dipc_call_info *call)
{
    struct buffer *b = state;
    if (b->full)
        return DIPC_WAIT;
    if (call->inlen != LETTER)
        return EINVAL;
    memcpy(b->m, call->in, LETTER);
    b->full = 1;
    call->outlen = 0;
    return 0;
}

static int proc_receive(void *state, struct dipc_call_info *call)
{
    struct buffer *b = state;
    if (!b->full)
        return DIPC_WAIT;
    if (call->outcap < LETTER)
        return E2BIG;
    memcpy(call->out, b->m, LETTER);
    call->outlen = LETTER;
    b->full = 0;
    return 0;
}


static int initial(void *state, unsigned *phase)
{
    struct buffer *b = state;
    (void)phase;
    b->full = 0;
    return 0;
}


static int serve(const char *name)
{
    static const struct dipc_proc procs[] = {
        { "Send", proc_send },
        { "Receive", proc_receive },
        { "Stop", proc_stop },
    };
    static struct buffer b;
    return serve_as(name, &b, procs, sizeof procs / sizeof procs[0], initial);
}

static int send_letters(const char *tag, int count, const char *name)
{
    char letter[LETTER];
    pid_d q;
    if (regist() < 0)
        return die("regist");
    q = find(name);
    for (int i = 0; i < count; i++) {
        memset(letter, ' ', LETTER);
        int n = snprintf(letter, LETTER, "%s %d", tag, i);
        letter[n] = ' ';
        if (dipc_call(q, "Send", letter, LETTER, NULL, 0, 0) < 0)
            return die("dipc_call Send");
    }
    printf("sent %d\n", count);
    return 0;
}

static int receive_letters(int count, const char *name)
{
    char letter[LETTER + 1];
    pid_d q;
    if (regist() < 0)
        return die("regist");
    q = find(name);
    for (int i = 0; i < count; i++) {
        ssize_t n = dipc_call(q, "Receive", NULL, 0, letter, LETTER, 0);
        if (n < 0)
            return die("dipc_call Receive");
        if (n != LETTER)
            return fail("a letter of the wrong length");
        while (n > 0 && letter[n - 1] == ' ')
            n--;
        letter[n] = '\0';
        printf("%s\n", letter);
    }
    printf("received %d\n", count);
    return 0;
}

static int stream_in(const char *path, const char *name)
{
    char line[LETTER + 1];
    char letter[LETTER];
    int count = 0;
    FILE *f = fopen(path, "r");
    pid_d q;
    if (!f)
        return die("fopen");
    if (regist() < 0)
        return die("regist");
    q = find(name);
    for (;;) {
        int end = fgets(line, sizeof line, f) == NULL;
        size_t n = end ? 0 : strcspn(line, "\n");
        /* A letter is blank-padded; the empty letter ends the stream. */
        memset(letter, ' ', LETTER);
        memcpy(letter, line, n);
        if (n == 0 && !end)
            letter[0] = '.';
        if (dipc_call(q, "Send", letter, LETTER, NULL, 0, 0) < 0)
            return die("dipc_call Send");
        if (end)
            break;
        count++;
    }
    fclose(f);
    printf("streamed %d\n", count);
    return 0;
}

static int stream_out(const char *name)
{
    char letter[LETTER + 1];
    pid_d q;
    if (regist() < 0)
        return die("regist");
    q = find(name);
    for (;;) {
        ssize_t n = dipc_call(q, "Receive", NULL, 0, letter, LETTER, 0);
        if (n < 0)
            return die("dipc_call Receive");
        while (n > 0 && letter[n - 1] == ' ')
            n--;
        if (n == 0)
            return 0;
        letter[n] = '\0';
        printf("%s\n", letter);
        fflush(stdout);
    }
}

static int expect(ssize_t r, int err, const char *what)
{
    if (r >= 0 || errno != err) {
        fprintf(stderr, "FAIL: %s: got %zd, errno %s, not %s\n", what, r,
                r < 0 ? errno_name(errno) : "-", errno_name(err));
        return 1;
    }
    return 0;
}

static int errors(const char *name)
{
    static char big[65536];
    char out[8];
    pid_d me = regist();
    pid_d q;
    int bad = 0;
    if (me < 0)
        return die("regist");
    q = find(name);
    bad |= expect(dipc_call(q, "Nope", NULL, 0, NULL, 0, 0), ENOSYS, "unknown procedure");
    bad |= expect(dipc_call(me, "Send", NULL, 0, NULL, 0, 0), EDEADLK, "self-call");
    bad |= expect(dipc_call(q, "Send", big, sizeof big, NULL, 0, 0), EMSGSIZE, "too long");
    bad |= expect(dipc_call(999999, "Send", NULL, 0, NULL, 0, 0), ESRCH, "no such process");
    bad |= expect(dipc_call(q, "Receive", NULL, 0, NULL, sizeof out, 0), EFAULT, "null out");
    bad |= expect(dipc_call(q, NULL, NULL, 0, NULL, 0, 0), EFAULT, "null procedure");
    bad |= expect(dipc_name_lookup("No such name"), ENOENT, "unknown name");
    bad |= expect(dipc_name_register(name), EEXIST, "a name taken");
    bad |= expect(dipc_name_release(name), EPERM, "another's name");
    if (bad)
        return 1;
    printf("errors ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve(argc > 2 ? argv[2] : "Buffer");
    if (argc >= 4 && strcmp(argv[1], "send") == 0)
        return send_letters(argv[2], atoi(argv[3]), argc > 4 ? argv[4] : "Buffer");
    if (argc >= 3 && strcmp(argv[1], "receive") == 0)
        return receive_letters(atoi(argv[2]), argc > 3 ? argv[3] : "Buffer");
    if (argc >= 3 && strcmp(argv[1], "stream-in") == 0)
        return stream_in(argv[2], argc > 3 ? argv[3] : "Buffer");
    if (argc >= 2 && strcmp(argv[1], "stream-out") == 0)
        return stream_out(argc > 2 ? argv[2] : "Buffer");
    if (argc >= 2 && strcmp(argv[1], "stop") == 0) {
        if (regist() < 0)
            return die("regist");
        if (dipc_call(find(argc > 2 ? argv[2] : "Buffer"), "Stop", NULL, 0, NULL, 0, 0) < 0)
            return die("dipc_call Stop");
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "errors") == 0)
        return errors(argc > 2 ? argv[2] : "Buffer");
    fprintf(stderr, "usage: dp_buffer serve|send TAG COUNT|receive COUNT|stop|errors [NAME]\n");
    return 2;
}
