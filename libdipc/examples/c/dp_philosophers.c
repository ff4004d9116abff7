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
 * Failures print "dp_philosophers: CALL: strerror (errno NAME)" on stderr
 * and exit 1. */
#define PROG "dp_philosophers"
#include "dp_common.h"

#define N 5

struct table {
    int eating[N];
};

struct observer {
    int eating[N];
    long meals[N];
    long clashes;
};


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
        call0(observer, "Eats", i);
        nap_us(1000 + rand() % 2000);         /* eat */
        call0(observer, "Rests", i);
        call0(table, "Leave", i);
    }
    printf("ate %d\n", meals);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct dipc_proc table_procs[] = {
        { "Join", join }, { "Leave", leave }, { "Stop", proc_stop },
    };
    static const struct dipc_proc observer_procs[] = {
        { "Eats", starts }, { "Rests", stops }, { "Report", report }, { "Stop", proc_stop },
    };
    static struct table t;
    static struct observer o;
    if (argc >= 2 && strcmp(argv[1], "table") == 0)
        return serve_as("Table", &t, table_procs, 3, NULL);
    if (argc >= 2 && strcmp(argv[1], "observer") == 0)
        return serve_as("Observer", &o, observer_procs, 4, NULL);
    if (argc >= 4 && strcmp(argv[1], "philosopher") == 0)
        return philosopher(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 2 && strcmp(argv[1], "report") == 0)
        return report_and_stop("Table");
    fprintf(stderr, "usage: dp_philosophers table|observer|philosopher I MEALS|report\n");
    return 2;
}
