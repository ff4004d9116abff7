/* dp_philosophers: the dining philosophers with distributed processes.
 *
 *   process Table
 *     eating: array [0..4] of bool
 *     proc Join(i)  when not eating[i-1] and not eating[i+1]: eating[i] := true end
 *     proc Leave(i) eating[i] := false
 *   process Philosopher[i]
 *     cycle think; call Table.Join(i); eat; call Table.Leave(i) end
 *
 * An Observer process, independent of the Table's state, is told by each
 * philosopher when it starts and stops eating (after Join, before
 * Leave): it counts the meals and every time two neighbours were both
 * eating.
 *
 *   dp_philosophers table          regist, take "Table", print "pid_d N", serve
 *   dp_philosophers observer       regist, take "Observer", print "pid_d N", serve
 *   dp_philosophers philosopher I MEALS   take "Philosopher[I]", eat MEALS
 *                                  times; print "ate MEALS"
 *   dp_philosophers report         print the Observer's "meals M0 M1 M2 M3 M4
 *                                  clashes C" and stop it and the Table
 *
 * Failures print "dp_philosophers: CALL: strerror" or "FAIL: ..." on
 * stderr and exit 1. */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 5

struct table {
    int eating[N];
};

struct observer {
    int eating[N];
    long meals[N];
    long clashes;
};

static int die(const char *call)
{
    fprintf(stderr, "dp_philosophers: %s: %s\n", call, strerror(errno));
    return 1;
}

/* The philosopher's number, sent as one byte. */
static int seat(const struct dipc_call_info *call)
{
    if (call->inlen != 1 || ((const unsigned char *)call->in)[0] >= N)
        return -1;
    return ((const unsigned char *)call->in)[0];
}

static int join(void *state, struct dipc_call_info *call)
{
    struct table *t = state;
    int i = seat(call);
    if (i < 0)
        return EINVAL;
    if (t->eating[(i + N - 1) % N] || t->eating[(i + 1) % N])
        return DIPC_WAIT;
    t->eating[i] = 1;
    call->outlen = 0;
    return 0;
}

static int leave(void *state, struct dipc_call_info *call)
{
    struct table *t = state;
    int i = seat(call);
    if (i < 0)
        return EINVAL;
    t->eating[i] = 0;
    call->outlen = 0;
    return 0;
}

static int starts(void *state, struct dipc_call_info *call)
{
    struct observer *o = state;
    int i = seat(call);
    if (i < 0)
        return EINVAL;
    if (o->eating[(i + N - 1) % N] || o->eating[(i + 1) % N])
        o->clashes++;
    o->eating[i] = 1;
    o->meals[i]++;
    call->outlen = 0;
    return 0;
}

static int stops(void *state, struct dipc_call_info *call)
{
    struct observer *o = state;
    int i = seat(call);
    if (i < 0)
        return EINVAL;
    o->eating[i] = 0;
    call->outlen = 0;
    return 0;
}

static int report(void *state, struct dipc_call_info *call)
{
    struct observer *o = state;
    int n = snprintf(call->out, call->outcap, "meals %ld %ld %ld %ld %ld clashes %ld",
                     o->meals[0], o->meals[1], o->meals[2], o->meals[3], o->meals[4],
                     o->clashes);
    if (n < 0 || (size_t)n >= call->outcap)
        return E2BIG;
    call->outlen = n;
    return 0;
}

static int stop(void *state, struct dipc_call_info *call)
{
    (void)state;
    call->outlen = 0;
    dipc_serve_stop();
    return 0;
}

static int serve(const char *name, void *state, const struct dipc_proc *procs, size_t n)
{
    pid_d me = regist();
    if (me < 0)
        return die("regist");
    if (dipc_name_register(name) < 0)
        return die("dipc_name_register");
    printf("pid_d %lld\n", (long long)me);
    fflush(stdout);
    if (dipc_serve(state, procs, n, NULL) < 0)
        return die("dipc_serve");
    printf("stopped\n");
    return 0;
}

static pid_d find(const char *name)
{
    pid_d q = dipc_name_lookup(name);
    if (q < 0)
        exit(die(name));
    return q;
}

static void nap_us(long us)
{
    struct timespec ts = { 0, us * 1000 };
    nanosleep(&ts, NULL);
}

static int call0(pid_d q, const char *proc, unsigned char i)
{
    if (dipc_call(q, proc, &i, 1, NULL, 0, 0) < 0)
        exit(die(proc));
    return 0;
}

static int philosopher(int i, int meals)
{
    char name[32];
    pid_d table, observer;
    if (i < 0 || i >= N)
        return die("seat");
    if (regist() < 0)
        return die("regist");
    snprintf(name, sizeof name, "Philosopher[%d]", i);
    if (dipc_name_register(name) < 0)
        return die("dipc_name_register");
    table = find("Table");
    observer = find("Observer");
    srand(i + 1);
    for (int m = 0; m < meals; m++) {
        nap_us(rand() % 2000);                /* think */
        call0(table, "Join", i);
        call0(observer, "Start", i);
        nap_us(1000 + rand() % 2000);         /* eat */
        call0(observer, "Stop", i);
        call0(table, "Leave", i);
    }
    printf("ate %d\n", meals);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct dipc_proc table_procs[] = {
        { "Join", join }, { "Leave", leave }, { "Stop", stop },
    };
    static const struct dipc_proc observer_procs[] = {
        { "Start", starts }, { "Stop", stops }, { "Report", report }, { "End", stop },
    };
    static struct table t;
    static struct observer o;
    if (argc >= 2 && strcmp(argv[1], "table") == 0)
        return serve("Table", &t, table_procs, 3);
    if (argc >= 2 && strcmp(argv[1], "observer") == 0)
        return serve("Observer", &o, observer_procs, 4);
    if (argc >= 4 && strcmp(argv[1], "philosopher") == 0)
        return philosopher(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 2 && strcmp(argv[1], "report") == 0) {
        char out[128];
        ssize_t n;
        pid_d obs;
        if (regist() < 0)
            return die("regist");
        obs = find("Observer");
        n = dipc_call(obs, "Report", NULL, 0, out, sizeof out - 1, 0);
        if (n < 0)
            return die("Report");
        out[n] = '\0';
        printf("%s\n", out);
        if (dipc_call(obs, "End", NULL, 0, NULL, 0, 0) < 0)
            return die("End");
        if (dipc_call(find("Table"), "Stop", NULL, 0, NULL, 0, 0) < 0)
            return die("Stop");
        return 0;
    }
    fprintf(stderr, "usage: dp_philosophers table|observer|philosopher I MEALS|report\n");
    return 2;
}
