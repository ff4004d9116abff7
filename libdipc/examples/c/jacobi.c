/* jacobi: a parallel Jacobi iteration for the Laplace equation on an N x N
 * grid held in a distributed shared memory segment, computed by P
 * processes (on any hosts), each owning a band of rows, with a barrier on
 * a distributed semaphore between sweeps. Rank 0 then runs the same
 * iteration alone in private memory and compares: the results must be
 * identical to the bit, since every point is computed by the same
 * operations in the same order.
 *
 *   jacobi KEY P RANK N ITERS
 *
 * Prints "jacobi: identical, checksum C" (rank 0) or "jacobi: rank R done".
 * The segment and the semaphore are removed by rank 0 at the end.
 */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "jacobi: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void init(double *g, int n)
{
    memset(g, 0, sizeof(double) * (size_t)n * (size_t)n);
    for (int i = 0; i < n; i++) {
        g[i] = 100.0;                           /* top edge hot */
        g[(size_t)(n - 1) * n + i] = (double)i; /* bottom edge ramp */
    }
}

static void sweep(const double *from, double *to, int n, int r0, int r1)
{
    for (int r = r0; r < r1; r++) {
        if (r == 0 || r == n - 1) {
            memcpy(&to[(size_t)r * n], &from[(size_t)r * n], sizeof(double) * (size_t)n);
            continue;
        }
        to[(size_t)r * n] = from[(size_t)r * n];
        to[(size_t)r * n + n - 1] = from[(size_t)r * n + n - 1];
        for (int c = 1; c < n - 1; c++)
            to[(size_t)r * n + c] = 0.25 * (from[(size_t)(r - 1) * n + c] + from[(size_t)(r + 1) * n + c] +
                                             from[(size_t)r * n + c - 1] + from[(size_t)r * n + c + 1]);
    }
}

/* Barrier number `round`: everyone adds 1, then waits until all P*round
 * arrivals are in (the value only grows, so barriers never mix). */
static void barrier(int sem, int p, int round)
{
    struct sembuf up = {0, 1, 0};
    if (dipc_semop(sem, &up, 1) < 0)
        die("barrier arrive");
    struct sembuf wait[2] = {{0, (short)-(p * round), 0}, {0, (short)(p * round), 0}};
    if (dipc_semop(sem, wait, 2) < 0)
        die("barrier wait");
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: jacobi KEY P RANK N ITERS\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int p = atoi(argv[2]), rank = atoi(argv[3]), n = atoi(argv[4]), iters = atoi(argv[5]);
    if (p < 1 || rank < 0 || rank >= p || n < 3 || iters < 1 || p * (iters + 2) > 32767) {
        fprintf(stderr, "jacobi: bad arguments\n");
        return 2;
    }
    size_t grid = (size_t)n * (size_t)n * sizeof(double);
    int shm = dipc_shmget(key, 2 * grid, IPC_CREAT | IPC_DIPC | 0666);
    if (shm < 0)
        die("dipc_shmget");
    int sem = dipc_semget(key, 1, IPC_CREAT | IPC_DIPC | 0666);
    if (sem < 0)
        die("dipc_semget");
    double *g = dipc_shmat(shm, NULL, 0);
    if (g == (void *)-1)
        die("dipc_shmat");
    double *cur = g, *next = g + (size_t)n * n;
    if (rank == 0) {
        init(cur, n);
        init(next, n);
    }
    int round = 1;
    barrier(sem, p, round++);
    int r0 = rank * n / p, r1 = (rank + 1) * n / p;
    for (int it = 0; it < iters; it++) {
        sweep(cur, next, n, r0, r1);
        barrier(sem, p, round++);
        double *t = cur;
        cur = next;
        next = t;
    }
    if (rank != 0) {
        if (dipc_shmdt(g) < 0)
            die("dipc_shmdt");
        /* Past the last barrier: tell rank 0 it may remove the semaphore. */
        struct sembuf up = {0, 1, 0};
        if (dipc_semop(sem, &up, 1) < 0)
            die("leave");
        printf("jacobi: rank %d done\n", rank);
        return 0;
    }
    double *a = malloc(grid), *b = malloc(grid);
    if (!a || !b)
        die("malloc");
    init(a, n);
    init(b, n);
    for (int it = 0; it < iters; it++) {
        sweep(a, b, n, 0, n);
        double *t = a;
        a = b;
        b = t;
    }
    if (memcmp(a, cur, grid) != 0) {
        for (size_t i = 0; i < (size_t)n * n; i++)
            if (a[i] != cur[i]) {
                fprintf(stderr, "jacobi: differs at row %zu col %zu: %.17g (distributed) vs %.17g\n",
                        i / (size_t)n, i % (size_t)n, cur[i], a[i]);
                break;
            }
        return 1;
    }
    double sum = 0;
    for (size_t i = 0; i < (size_t)n * n; i++)
        sum += cur[i];
    printf("jacobi: identical, checksum %.6f\n", sum);
    if (dipc_shmdt(g) < 0)
        die("dipc_shmdt");
    int all = p * (round - 1) + (p - 1);
    struct sembuf left[2] = {{0, (short)-all, 0}, {0, (short)all, 0}};
    if (dipc_semop(sem, left, 2) < 0)
        die("waiting for the others to leave");
    if (dipc_shmctl(shm, IPC_RMID, NULL) < 0)
        die("IPC_RMID shm");
    if (dipc_semctl(sem, 0, IPC_RMID) < 0)
        die("IPC_RMID sem");
    return 0;
}
