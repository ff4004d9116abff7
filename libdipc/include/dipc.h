/*
 * dipc.h - distributed System V IPC for Linux clusters.
 *
 * Link with -ldipc. The library finds its host's daemon (dipcd) through the
 * configuration file named by $DIPC_CONFIG, else /etc/dipc/dipc.conf.
 * $DIPC_SPIN_US (0 to 10000) overrides the file's library.spin_us: how long
 * a call on another host's structure checks for its reply before sleeping.
 *
 * The dipc_* calls take the arguments of the System V calls of the same
 * name and return the same values with the same errno. Add IPC_DIPC to the
 * flags of dipc_msgget, dipc_semget or dipc_shmget to make a structure
 * known cluster-wide by its key; without it (or with IPC_PRIVATE) the
 * structure is a plain local one.
 *
 * A structure lives on the host that created it first. There every call is
 * the plain system call. On other hosts the id names a local placeholder
 * and each call is carried out on the owner with the caller's uid and
 * groups. If the owner host is lost during a call, the call fails with
 * ETIMEDOUT, ECONNRESET, ECONNREFUSED or EHOSTUNREACH within the configured
 * time-outs; ENOTCONN means this host's dipcd is not running or not joined.
 */
#ifndef DIPC_H
#define DIPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The flag Linux reserves for DIPC (octal 00010000). */
#ifndef IPC_DIPC
#define IPC_DIPC 00010000
#endif

int dipc_msgget(key_t key, int msgflg);
int dipc_msgsnd(int msqid, const void *msgp, size_t msgsz, int msgflg);
ssize_t dipc_msgrcv(int msqid, void *msgp, size_t msgsz, long msgtyp, int msgflg);
int dipc_msgctl(int msqid, int cmd, struct msqid_ds *buf);

/* Semaphore sets. As for semctl(2), the caller defines union semun for the
 * fourth argument of dipc_semctl. SEM_UNDO adjustments of a remote process
 * (all its threads) are undone by the owner's kernel when that process
 * exits, however it exits. If they were undone before (the process's
 * sessions with the owner were lost, e.g. to a network partition), its
 * next call on that owner fails with ENOLINK, once. GETPID reads a remote
 * process's operations as the pid of its worker on the owner host. */
int dipc_semget(key_t key, int nsems, int semflg);
int dipc_semop(int semid, struct sembuf *sops, size_t nsops);
int dipc_semtimedop(int semid, struct sembuf *sops, size_t nsops, const struct timespec *timeout);
int dipc_semctl(int semid, int semnum, int cmd, ...);

/* Shared memory segments.
 *
 * Every process that attaches a distributed segment (IPC_DIPC) gets its own
 * private copy, on the owner host too, kept coherent by the segment's
 * manager on the owner: multiple readers, single writer, strict
 * consistency (a read anywhere returns the value most recently written
 * anywhere, with no sync calls). The unit of coherence is a page, or the
 * whole segment (shm.mode in the owner's dipc.conf). The first read of a
 * unit, and the first write to a unit held for reading, fault: the library
 * traps the fault (a SIGSEGV handler), fetches the unit or the right to
 * write it, and the access completes. Further accesses are plain memory
 * accesses until another host needs the unit. A fault on memory that is
 * not a distributed segment reaches the program's own SIGSEGV handler, or
 * kills the process as usual.
 *
 * Differences from System V:
 *  - If the owner host, or the host holding the only valid copy of a unit,
 *    dies, touching the unit raises SIGBUS (si_addr = the address) within
 *    the request time-out. If the connection to the manager is lost, the
 *    whole segment stays inaccessible and every touch raises SIGBUS until
 *    dipc_shmdt. A SIGBUS handler must not return (siglongjmp or exit).
 *  - A child of fork() does not inherit distributed attachments: touching
 *    them gives SIGSEGV. It may attach again.
 *  - exit() detaches every segment, writing back what the process wrote.
 *    A process killed by SIGKILL, or that calls _exit or exec without
 *    dipc_shmdt, loses the units it held for writing (touching them
 *    anywhere then raises SIGBUS).
 *  - A system call given an address in a distributed segment that the
 *    process has not touched yet fails with EFAULT: touch the memory first.
 *  - SIGSEGV must not be blocked in a thread that touches a distributed
 *    segment (a blocked fault signal kills the process).
 *  - Install your own SIGSEGV handler before the first dipc_shmat of a
 *    distributed segment (one installed later takes the faults away from
 *    dipc until the next distributed attach).
 *  - shm_nattch counts attaches on every host. SHM_LOCK and SHM_UNLOCK on a
 *    distributed segment give EINVAL; IPC_INFO, SHM_INFO, SHM_STAT and
 *    SHM_STAT_ANY describe this host only.
 */

/* As shmget(2). IPC_DIPC is the bit Linux uses for SHM_NORESERVE; it is
 * never passed on to the kernel. Getting an existing segment with a larger
 * size is EINVAL, wherever it lives. */
int dipc_shmget(key_t key, size_t size, int shmflg);
/* As shmat(2), with SHM_RDONLY, SHM_EXEC, SHM_RND and SHM_REMAP. A write to
 * a segment attached SHM_RDONLY is a SIGSEGV, as with the kernel. */
void *dipc_shmat(int shmid, const void *shmaddr, int shmflg);
/* As shmdt(2). For a distributed segment, what this process wrote is
 * written back first; returns when the manager has it (or after the
 * request time-out if the manager does not answer). */
int dipc_shmdt(const void *shmaddr);
/* As shmctl(2): IPC_STAT, IPC_SET and IPC_RMID from any host (IPC_RMID
 * also frees the key cluster-wide). */
int dipc_shmctl(int shmid, int cmd, struct shmid_ds *buf);
/* Cluster-wide process ids and signals.
 *
 * regist() joins the cluster's process table and returns this process's
 * pid_d (unique in the cluster, never reused; a process already
 * registered gets its pid_d again; a forked child is not registered).
 * uregist() leaves it: only the caller's own registration (pid_d, host
 * and pid must match), else EPERM (ESRCH for an unknown pid_d) and nothing
 * is removed. A registration also ends when the process exits, however it
 * exits. kill_d() sends sig to the process pid_d on whatever host it runs,
 * with kill(2)'s rules: EPERM unless the caller's uid may signal it, ESRCH
 * if it is not registered or has exited, sig 0 only checks; real-time
 * signals are queued; EINVAL for a bad signal number. The caller of
 * kill_d need not be registered. All return -1 and set errno on error;
 * ENOTCONN means this host's dipcd is not running or has not joined. */
typedef int64_t pid_d;

pid_d regist(void);
int uregist(pid_d pid);
int kill_d(pid_d pid, int sig);

/* Send and receive, addressed by pid_d. Both ends must be registered
 * (else ENOTCONN). Each registered process has a mailbox (a private
 * System V queue of this host, mode 0622) that dipc_send puts messages
 * into and dipc_receive takes them from; messages from one sender to one
 * receiver arrive in order and never twice.
 *
 * dipc_send blocks while the destination's mailbox is full and returns
 * once the message is in it; with DIPC_NOWAIT it fails with EAGAIN
 * instead. ESRCH: dest is not registered, or its registration ended while
 * the send waited. EMSGSIZE: len exceeds the destination kernel's msgmax.
 *
 * dipc_receive takes the first message from *src (0: from anyone) into
 * buf, sets *src to the sender and returns the length; it blocks until one
 * arrives, or with DIPC_NOWAIT fails with EAGAIN. E2BIG: the message is
 * longer than len (it stays in the mailbox). EINTR: a signal interrupted
 * the wait. EIDRM: the registration ended meanwhile.
 *
 * dipc_poll returns 1 if a message waits, 0 if none arrived within
 * timeout_ms (negative: no limit); it checks the mailbox every 50 us at
 * first, then every 1 ms, so an arrival is noticed within about 1 ms.
 * EINTR if a signal handler ran meanwhile. */
#define DIPC_NOWAIT IPC_NOWAIT

int dipc_send(pid_d dest, const void *buf, size_t len, int flags);
ssize_t dipc_receive(pid_d *src, void *buf, size_t len, int flags);
int dipc_poll(int timeout_ms);

/* Distributed processes (Brinch Hansen): names, calls and serving.
 *
 * dipc_name_register gives the calling (registered) process a cluster-wide
 * name of 1 to 128 printable bytes: EEXIST if another process holds it,
 * ENOTCONN if the caller is not registered, EAGAIN past 16 names. The name
 * is released by dipc_name_release (ENOENT: nobody holds it, EPERM:
 * another does) or when the registration ends, however it ends.
 * dipc_name_lookup returns the pid_d holding a name (ENOENT if none).
 *
 * dipc_call runs procedure proc of process q with inlen bytes of input and
 * returns the length of its output, written to out (at most outlen
 * bytes). The caller must be registered. The call travels on a link of
 * the caller's own to q (a Unix connection on the same host, the caller's
 * own session passed to q on another: one round trip a call).
 * timeout_ms <= 0: no time-out. Errors: ESRCH no such process; ENOSYS no
 * such procedure; EDEADLK q is the caller; EMSGSIZE the input is longer
 * than msgmax less an 18-byte header and the name; E2BIG the output was
 * longer than outlen; ECONNRESET q exited, unregistered or its host was
 * lost before it replied; ETIMEDOUT timeout_ms passed; EINTR a signal
 * came while waiting (the calling thread holds its signals, but those of
 * faults, while awake, and takes them in while it sleeps, so none goes
 * unnoticed); EAGAIN q holds as many links as it may, each with a call
 * waiting. After ECONNRESET, ETIMEDOUT or EINTR the procedure may have
 * run (once at most) or not, and never runs later. Any other errno is the
 * procedure's own answer.
 *
 * dipc_serve runs the calling process as a distributed process: its
 * initial statements (initial, may be NULL) and the calls of its
 * procedures, one step at a time. A procedure returns 0 (done; its output
 * in call->out, call->outlen bytes, at most call->outcap), DIPC_WAIT (its
 * guard is false: it is postponed and tried again after each later step,
 * oldest first; if it already did part of its work it changes call->phase,
 * which it finds again when retried), or an errno for the caller. The
 * initial function returns DIPC_STEP (did a step, call again), DIPC_WAIT
 * (waits for a condition: serve calls meanwhile) or 0 (finished), with a
 * phase of its own. dipc_serve returns 0 after dipc_serve_stop() (called
 * from a callback) or when the process unregisters; -1 and errno on
 * error (ENOTCONN: not registered). */
#define DIPC_WAIT (-1)
#define DIPC_STEP 1

struct dipc_call_info {
    pid_d caller;          /* who calls (the kernel's credentials of its link) */
    uid_t uid;             /* its uid (from another host: as its worker acts) */
    const char *proc;
    const void *in;
    size_t inlen;
    void *out;
    size_t outcap;
    size_t outlen;         /* set by the procedure */
    unsigned phase;        /* 0 at first; kept across DIPC_WAIT */
};
typedef int (*dipc_proc_fn)(void *state, struct dipc_call_info *call);
typedef int (*dipc_initial_fn)(void *state, unsigned *phase);
struct dipc_proc {
    const char *name;
    dipc_proc_fn fn;
};

int dipc_name_register(const char *name);
int dipc_name_release(const char *name);
pid_d dipc_name_lookup(const char *name);
ssize_t dipc_call(pid_d q, const char *proc, const void *in, size_t inlen,
                  void *out, size_t outlen, int timeout_ms);
int dipc_serve(void *state, const struct dipc_proc *procs, size_t nprocs,
               dipc_initial_fn initial);
void dipc_serve_stop(void);

/* Process migration (see README "Process migration").
 *
 * dipc_migratable declares the calling process migratable (registering it
 * first if needed): save(ctx, buf, cap) returns the length of the state a
 * move must carry and writes it to buf if it fits in cap bytes (it is
 * called again with a larger buffer otherwise); it runs at the move's safe
 * point with every signal blocked. In the program started on the target
 * host, dipc_migratable calls restore(ctx, state, len), then sets the
 * signal mask the process had when it moved (install signal handlers
 * before calling it) and returns 1; elsewhere it returns 0. -1 and errno
 * on error.
 *
 * dipc_migrate(host) moves the calling process to the host whose address
 * is host ("10.66.0.2", or "10.66.0.2:7100"): the same program starts
 * there as the same user, takes the pid_d, names, mailbox contents and
 * held signals over, and this process exits with status 0. The ids of
 * distributed queues, semaphore sets and segments keep working there, and
 * attached distributed segments are attached again at the same addresses
 * (the move fails with shmat's errno if an address is taken there). It returns
 * only on failure, with the process as it was: EINVAL not migratable (or a
 * bad host), ENOTCONN not registered, ENOENT/EACCES/ENOEXEC the target
 * cannot run the program, EPERM the target would run it as another user
 * (root squash), EBUSY it made a SEM_UNDO operation through dipc (here or
 * on another host), has a dead distributed segment attached or knows more
 * than 4096 distributed ids, or the errors
 * of a lost host. */
typedef size_t (*dipc_save_fn)(void *ctx, void *buf, size_t cap);
typedef void (*dipc_restore_fn)(void *ctx, const void *state, size_t len);
int dipc_migratable(dipc_save_fn save, dipc_restore_fn restore, void *ctx);
int dipc_migrate(const char *host);

/* A migration point: where a move asked for by an administrator or the
 * process's user (dipcref migrate PID_D HOST) happens; dipc never moves a
 * process from arbitrary code. Call it where the state is whole (between
 * two steps of work). Costs one open(2) when nothing is asked. Returns 0
 * if no move was asked (or the process is not migratable), -1 and errno
 * if the asked move failed (the request is dropped); does not return if
 * it succeeded. */
int dipc_migration_point(void);

/* In a process that arrived by a move: how many mailbox messages the move
 * carried (they are in its mailbox, in order); -1 elsewhere. */
long dipc_migrated_messages(void);

#ifdef __cplusplus
}
#endif

#endif /* DIPC_H */
