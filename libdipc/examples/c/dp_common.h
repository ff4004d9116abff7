/* What the distributed-process examples (dp_*.c) share: error reports,
 * looking a process up by name, serving under a name, stopping, napping.
 * A program defines PROG (its name, for messages) before including it. */
#ifndef DP_COMMON_H
#define DP_COMMON_H

#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline const char *errno_name(int e)
{
    switch (e) {
    case ESRCH: return "ESRCH";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EDEADLK: return "EDEADLK";
    case EMSGSIZE: return "EMSGSIZE";
    case E2BIG: return "E2BIG";
    case EFAULT: return "EFAULT";
    case ENOTCONN: return "ENOTCONN";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINVAL: return "EINVAL";
    default: return "OTHER";
    }
}

/* Reports a failed call with errno; returns the exit code 1. */
static inline int die(const char *call)
{
    int e = errno;
    fprintf(stderr, "%s: %s: %s (errno %s)\n", PROG, call, strerror(e), errno_name(e));
    return 1;
}

/* The pid_d holding name; exits if there is none. */
static inline pid_d find(const char *name)
{
    pid_d q = dipc_name_lookup(name);
    if (q < 0)
        exit(die(name));
    return q;
}

/* A procedure that ends dipc_serve after this step. */
static inline int proc_stop(void *state, struct dipc_call_info *call)
{
    (void)state;
    call->outlen = 0;
    dipc_serve_stop();
    return 0;
}

/* Registers, takes name, prints "pid_d N", serves until stopped and
 * prints "stopped". */
static inline int serve_as(const char *name, void *state, const struct dipc_proc *procs,
                           size_t n, dipc_initial_fn initial)
{
    pid_d me = regist();
    if (me < 0)
        return die("regist");
    if (dipc_name_register(name) < 0)
        return die("dipc_name_register");
    printf("pid_d %lld\n", (long long)me);
    fflush(stdout);
    if (dipc_serve(state, procs, n, initial) < 0)
        return die("dipc_serve");
    printf("stopped\n");
    return 0;
}

/* Prints the Observer's report, then stops it and the process named
 * other; the exit code. */
static inline int report_and_stop(const char *other)
{
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
    if (dipc_call(obs, "Stop", NULL, 0, NULL, 0, 0) < 0)
        return die("Stop");
    if (dipc_call(find(other), "Stop", NULL, 0, NULL, 0, 0) < 0)
        return die("Stop");
    return 0;
}

static inline void nap_us(long us)
{
    struct timespec ts = { us / 1000000, us % 1000000 * 1000 };
    nanosleep(&ts, NULL);
}

#endif
