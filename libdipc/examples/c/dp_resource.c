/* dp_resource: readers and writers of a file through a Resource process,
 * in the starvation-free version: once a writer waits, no new reader gets
 * in.
 *
 *   process Resource
 *     s: int (readers in); writing: bool; waiting: int (writers waiting)
 *     proc Startread  when not writing and waiting = 0: s := s + 1 end
 *     proc Endread    s := s - 1
 *     proc Startwrite waiting := waiting + 1;
 *                     when not writing and s = 0: waiting := waiting - 1; writing := true end
 *     proc Endwrite   writing := false
 *     proc Read(#B)   B := the file
 *     proc Write(B)   the file := B
 *
 * An Observer, told by each reader and writer when it is in (after
 * Startread/Startwrite, before Endread/Endwrite), counts every time a
 * reader and a writer, or two writers, were in at once.
 *
 *   dp_resource resource FILE      take "Resource", print "pid_d N", serve
 *   dp_resource observer           take "Observer", print "pid_d N", serve
 *   dp_resource reader [MS]        read until the file says "last", each
 *                                  read staying in MS ms (default 2);
 *                                  print "reading" after the first read,
 *                                  "read K" at the end
 *   dp_resource writer COUNT       write "write 1" .. "write COUNT-1",
 *                                  then "last"; print "wrote COUNT"
 *   dp_resource report             print the Observer's "reads R writes W
 *                                  clashes C"; stop the Observer and the
 *                                  Resource
 *
 * Failures print "dp_resource: CALL: strerror (errno NAME)" on stderr and
 * exit 1. */
#define PROG "dp_resource"
#include "dp_common.h"

#define MAXB 256

struct resource {
    const char *path;
    int s, writing, waiting;
};

struct observer {
    int readers, writers;
    long reads, writes, clashes;
};


static int done(struct dipc_call_info *call)
{
    call->outlen = 0;
    return 0;
}

static int startread(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    if (r->writing || r->waiting > 0)
        return DIPC_WAIT;
    r->s++;
    return done(call);
}

static int endread(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    if (r->s > 0)
        r->s--;
    return done(call);
}

static int startwrite(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    if (call->phase == 0) {
        r->waiting++;
        call->phase = 1;
    }
    if (r->writing || r->s > 0)
        return DIPC_WAIT;
    r->waiting--;
    r->writing = 1;
    return done(call);
}

static int endwrite(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    r->writing = 0;
    return done(call);
}

static int read_file(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    FILE *f = fopen(r->path, "r");
    size_t n;
    if (!f)
        return errno;
    n = fread(call->out, 1, call->outcap, f);
    fclose(f);
    call->outlen = n;
    return 0;
}

static int write_file(void *st, struct dipc_call_info *call)
{
    struct resource *r = st;
    FILE *f = fopen(r->path, "w");
    if (!f)
        return errno;
    if (fwrite(call->in, 1, call->inlen, f) != call->inlen) {
        fclose(f);
        return EIO;
    }
    if (fclose(f) != 0)
        return errno;
    return done(call);
}


/* The observer: input "r+", "r-", "w+" or "w-". */
static int observe(void *st, struct dipc_call_info *call)
{
    struct observer *o = st;
    const char *in = call->in;
    if (call->inlen != 2)
        return EINVAL;
    if (in[0] == 'r' && in[1] == '+') {
        if (o->writers > 0)
            o->clashes++;
        o->readers++;
        o->reads++;
    } else if (in[0] == 'r') {
        o->readers--;
    } else if (in[1] == '+') {
        if (o->writers > 0 || o->readers > 0)
            o->clashes++;
        o->writers++;
        o->writes++;
    } else {
        o->writers--;
    }
    return done(call);
}

static int report(void *st, struct dipc_call_info *call)
{
    struct observer *o = st;
    int n = snprintf(call->out, call->outcap, "reads %ld writes %ld clashes %ld",
                     o->reads, o->writes, o->clashes);
    if (n < 0 || (size_t)n >= call->outcap)
        return E2BIG;
    call->outlen = n;
    return 0;
}



static ssize_t call(pid_d q, const char *proc, const char *in, void *out, size_t outlen)
{
    ssize_t n = dipc_call(q, proc, in, in ? strlen(in) : 0, out, outlen, 0);
    if (n < 0)
        exit(die(proc));
    return n;
}


static int reader(long ms)
{
    char b[MAXB + 1];
    long k = 0;
    pid_d res, obs;
    if (regist() < 0)
        return die("regist");
    res = find("Resource");
    obs = find("Observer");
    for (;;) {
        ssize_t n;
        call(res, "Startread", NULL, NULL, 0);
        call(obs, "Observe", "r+", NULL, 0);
        n = call(res, "Read", NULL, b, MAXB);
        nap_us(ms * 1000);
        call(obs, "Observe", "r-", NULL, 0);
        call(res, "Endread", NULL, NULL, 0);
        b[n] = '\0';
        if (k++ == 0) {
            printf("reading\n");
            fflush(stdout);
        }
        if (strcmp(b, "last") == 0)
            break;
    }
    printf("read %ld\n", k);
    return 0;
}

static int writer(int count)
{
    char b[MAXB];
    pid_d res, obs;
    if (regist() < 0)
        return die("regist");
    res = find("Resource");
    obs = find("Observer");
    for (int i = 1; i <= count; i++) {
        if (i < count)
            snprintf(b, sizeof b, "write %d", i);
        else
            snprintf(b, sizeof b, "last");
        call(res, "Startwrite", NULL, NULL, 0);
        call(obs, "Observe", "w+", NULL, 0);
        call(res, "Write", b, NULL, 0);
        nap_us(1000);
        call(obs, "Observe", "w-", NULL, 0);
        call(res, "Endwrite", NULL, NULL, 0);
    }
    printf("wrote %d\n", count);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct dipc_proc res_procs[] = {
        { "Startread", startread }, { "Endread", endread },
        { "Startwrite", startwrite }, { "Endwrite", endwrite },
        { "Read", read_file }, { "Write", write_file }, { "Stop", proc_stop },
    };
    static const struct dipc_proc obs_procs[] = {
        { "Observe", observe }, { "Report", report }, { "Stop", proc_stop },
    };
    static struct resource r;
    static struct observer o;
    if (argc >= 3 && strcmp(argv[1], "resource") == 0) {
        r.path = argv[2];
        return serve_as("Resource", &r, res_procs, 7, NULL);
    }
    if (argc >= 2 && strcmp(argv[1], "observer") == 0)
        return serve_as("Observer", &o, obs_procs, 3, NULL);
    if (argc >= 2 && strcmp(argv[1], "reader") == 0)
        return reader(argc >= 3 ? atol(argv[2]) : 2);
    if (argc >= 3 && strcmp(argv[1], "writer") == 0)
        return writer(atoi(argv[2]));
    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return report_and_stop("Resource");
    fprintf(stderr, "usage: dp_resource resource FILE|observer|reader|writer COUNT|report\n");
    return 2;
}
