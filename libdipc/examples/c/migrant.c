/* migrant: a migratable process for the migration tests.
 *
 *   migrant [-n SENDERS] [-e EVERY] [-u] [-s MS] HOST...
 *
 * Registers, declares itself migratable and prints "pid_d N". It then
 * receives messages from SENDERS mig_sender programs (default 3), each
 * message {index, sequence number}, checking that each sender's numbers
 * come 1, 2, 3... (none lost, none twice, in order), and counts the
 * signals SIGRTMIN+index sent to it. After every EVERY messages (0: at
 * once) it moves to the next HOST of the list (addresses), until the
 * list is done. A sender's last message says how many kill_d calls of it
 * succeeded; once every sender has sent its last, it waits (at most 10 s)
 * for those signals to arrive, prints
 *   "result received=R errors=E moves=M failed=F sig0=A sig1=B sig2=C pid=P"
 * and exits. Each restored process prints "moved M pid P".
 *
 *   -u     unlink the own executable first (a move then cannot start it)
 *   -s MS  in a restored process, sleep MS ms before taking over
 *   -w F   before exiting, wait (at most 60 s) until the file F exists
 *   -N NAME  take the name NAME at the first start
 *   -p     call dipc_migration_point() before each receive (a move asked
 *          with dipcref migrate happens there)
 *   -U KEY first make a SEM_UNDO operation on a distributed semaphore set
 *          KEY (created here, so owned by this host): a move then fails
 *          with EBUSY
 *
 * A failed move prints "move failed: ERRNO_NAME" and goes on here. */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXS 3

struct msg {
    int32_t idx;
    uint32_t seq;
    int32_t kills;
};

static struct state {
    int64_t pid_d;
    long received;
    int moves;
    int failed;
    int ended;
    long errors;
    uint32_t last[MAXS];
    long expect[MAXS];
    long sigs[MAXS];
} S;

static volatile sig_atomic_t sigs[MAXS];

static void on_sig(int s)
{
    int i = s - SIGRTMIN;
    if (i >= 0 && i < MAXS)
        sigs[i]++;
}

static size_t save(void *ctx, void *buf, size_t cap)
{
    (void)ctx;
    for (int i = 0; i < MAXS; i++)
        S.sigs[i] = sigs[i];
    if (cap >= sizeof S)
        memcpy(buf, &S, sizeof S);
    return sizeof S;
}

static void restore(void *ctx, const void *st, size_t len)
{
    (void)ctx;
    if (len == sizeof S) {
        memcpy(&S, st, sizeof S);
        for (int i = 0; i < MAXS; i++)
            sigs[i] = S.sigs[i];
    }
}

static const char *errno_name(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOEXEC: return "ENOEXEC";
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case ENOTCONN: return "ENOTCONN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECHILD: return "ECHILD";
    case EBUSY: return "EBUSY";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    default: return "other";
    }
}

int main(int argc, char **argv)
{
    int senders = 3, unlink_self = 0, point = 0, opt;
    long every = 1000, slow = 0;
    const char *waitfile = NULL, *name = NULL;
    long undo_key = -1;
    while ((opt = getopt(argc, argv, "n:e:us:w:pN:U:")) != -1) {
        switch (opt) {
        case 'n': senders = atoi(optarg); break;
        case 'e': every = atol(optarg); break;
        case 'u': unlink_self = 1; break;
        case 's': slow = atol(optarg); break;
        case 'w': waitfile = optarg; break;
        case 'p': point = 1; break;
        case 'N': name = optarg; break;
        case 'U': undo_key = strtol(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    if (senders < 0 || senders > MAXS)
        return 2;
    char **hosts = argv + optind;
    int nhosts = argc - optind;
    alarm(600);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sa.sa_flags = SA_RESTART;
    for (int i = 0; i < MAXS; i++)
        sigaction(SIGRTMIN + i, &sa, NULL);
    if (slow > 0 && getenv("DIPC_MIGRATION")) {
        struct timespec ts = {slow / 1000, (slow % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    int r = dipc_migratable(save, restore, NULL);
    if (r < 0) {
        fprintf(stderr, "migrant: dipc_migratable: %s (errno %s)\n", strerror(errno),
                errno_name(errno));
        return 1;
    }
    if (r == 0) {
        S.pid_d = regist();
        if (unlink_self) {
            char exe[4096];
            ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
            if (n > 0) {
                exe[n] = 0;
                unlink(exe);
            }
        }
        if (name && dipc_name_register(name) < 0) {
            fprintf(stderr, "migrant: dipc_name_register: %s\n", strerror(errno));
            return 1;
        }
        if (undo_key >= 0) {
            struct sembuf up = {0, 1, SEM_UNDO};
            int id = dipc_semget((key_t)undo_key, 1, IPC_CREAT | IPC_DIPC | 0600);
            if (id < 0 || dipc_semop(id, &up, 1) < 0) {
                fprintf(stderr, "migrant: SEM_UNDO on key %#lx: %s\n", undo_key, strerror(errno));
                return 1;
            }
        }
        printf("pid_d %lld\n", (long long)S.pid_d);
    } else {
        printf("moved %d pid %d carried %ld\n", S.moves, (int)getpid(), dipc_migrated_messages());
    }
    fflush(stdout);
    for (;;) {
        if (S.moves + S.failed < nhosts && S.received >= every * (S.moves + S.failed + 1)) {
            const char *to = hosts[S.moves + S.failed];
            S.moves++;
            printf("moving to %s\n", to);
            fflush(stdout);
            if (dipc_migrate(to) < 0) {
                int e = errno;
                S.moves--;
                S.failed++;
                printf("move failed: %s\n", errno_name(e));
                fprintf(stderr, "migrant: dipc_migrate(%s): %s (errno %d)\n", to, strerror(e), e);
                fflush(stdout);
            }
            continue;
        }
        if (S.ended >= senders)
            break;
        if (point) {
            /* Counted as done in the state a move carries. */
            S.moves++;
            int r = dipc_migration_point();
            int e = errno;
            S.moves--;
            if (r < 0) {
                S.failed++;
                printf("asked move failed: %s\n", errno_name(e));
                fflush(stdout);
            }
        }
        struct msg m;
        pid_d from = 0;
        ssize_t n = dipc_receive(&from, &m, sizeof m, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "migrant: dipc_receive: %s (errno %s)\n", strerror(errno),
                    errno_name(errno));
            return 1;
        }
        if (n != sizeof m || m.idx < 0 || m.idx >= senders) {
            S.errors++;
            continue;
        }
        if (m.seq == UINT32_MAX) {
            S.expect[m.idx] = m.kills;
            S.ended++;
            continue;
        }
        if (m.seq != S.last[m.idx] + 1) {
            if (S.errors < 10)
                fprintf(stderr, "migrant: sender %d: %u after %u\n", m.idx, m.seq,
                        S.last[m.idx]);
            S.errors++;
        }
        S.last[m.idx] = m.seq;
        S.received++;
    }
    for (int t = 0; t < 1000; t++) {
        int all = 1;
        for (int i = 0; i < senders; i++)
            if (sigs[i] < S.expect[i])
                all = 0;
        if (all)
            break;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    printf("result received=%ld errors=%ld moves=%d failed=%d sig0=%ld sig1=%ld sig2=%ld "
           "exp0=%ld exp1=%ld exp2=%ld pid=%d\n",
           S.received, S.errors, S.moves, S.failed, (long)sigs[0], (long)sigs[1],
           (long)sigs[2], S.expect[0], S.expect[1], S.expect[2], (int)getpid());
    fflush(stdout);
    for (int t = 0; waitfile && t < 6000 && access(waitfile, F_OK) != 0; t++) {
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}
