/*
 * dipc.h - distributed System V IPC for Linux clusters.
 *
 * Link with -ldipc. The library finds its host's daemon (dipcd) through the
 * configuration file named by $DIPC_CONFIG, else /etc/dipc/dipc.conf.
 *
 * The dipc_* calls take the arguments of the System V calls of the same
 * name and return the same values with the same errno. Add IPC_DIPC to the
 * flags of dipc_msgget to make a structure known cluster-wide by its key;
 * without it (or with IPC_PRIVATE) the structure is a plain local one.
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
#include <sys/types.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
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
 * are undone by the owner's kernel when that process exits, however it
 * exits. GETPID reads a remote process's operations as the pid of its
 * worker on the owner host. */
int dipc_semget(key_t key, int nsems, int semflg);
int dipc_semop(int semid, struct sembuf *sops, size_t nsops);
int dipc_semtimedop(int semid, struct sembuf *sops, size_t nsops, const struct timespec *timeout);
int dipc_semctl(int semid, int semnum, int cmd, ...);

#ifdef __cplusplus
}
#endif

#endif /* DIPC_H */
