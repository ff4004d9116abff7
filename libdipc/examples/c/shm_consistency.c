/* shm_consistency: strict consistency of a distributed segment, with no
 * locks and no synchronisation calls.
 *
 *   shm_consistency writer KEY M    write b = i (page 1) then a = i
 *                                   (page 0) for i = 1..M
 *   shm_consistency reader KEY M    read a, then b, until a == M; every
 *                                   value must have been written, a never
 *                                   goes back, and b >= a (b was written
 *                                   before a)
 *   shm_consistency handoff-send KEY N   N rounds: fill page 2 with the
 *                                   round number, then set the flag (page
 *                                   3) and wait for the ack (page 4)
 *   shm_consistency handoff-recv KEY N   wait for each flag, check the
 *                                   whole data page, ack
 *   shm_consistency rm KEY          remove the segment
 *
 * The segment (5 pages) is created by whoever comes first.
 */
#include <dipc.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 5

static void die(const char *what)
{
    fprintf(stderr, "shm_consistency: %s: %s\n", what, strerror(errno));
    exit(1);
}

static volatile uint64_t *word(char *base, int page)
{
    return (volatile uint64_t *)(base + (size_t)page * PAGE);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: shm_consistency writer|reader|handoff-send|handoff-recv|rm KEY [N]\n");
        return 2;
    }
    const char *cmd = argv[1];
    key_t key = (key_t)strtol(argv[2], NULL, 0);
    uint64_t n = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    int id = dipc_shmget(key, PAGES * PAGE, IPC_CREAT | IPC_DIPC | 0666);
    if (id < 0)
        die("dipc_shmget");
    if (strcmp(cmd, "rm") == 0) {
        if (dipc_shmctl(id, IPC_RMID, NULL) < 0)
            die("IPC_RMID");
        return 0;
    }
    char *base = dipc_shmat(id, NULL, 0);
    if (base == (void *)-1)
        die("dipc_shmat");
    volatile uint64_t *a = word(base, 0), *b = word(base, 1);
    if (strcmp(cmd, "writer") == 0) {
        for (uint64_t i = 1; i <= n; i++) {
            *b = i;
            *a = i;
        }
        printf("wrote %llu\n", (unsigned long long)n);
    } else if (strcmp(cmd, "reader") == 0) {
        uint64_t last = 0, seen = 0;
        for (;;) {
            uint64_t ra = *a;
            uint64_t rb = *b;
            if (ra > n || rb > n) {
                fprintf(stderr, "shm_consistency: read a=%llu b=%llu, never written (max %llu)\n",
                        (unsigned long long)ra, (unsigned long long)rb, (unsigned long long)n);
                return 1;
            }
            if (ra < last) {
                fprintf(stderr, "shm_consistency: a went back from %llu to %llu\n",
                        (unsigned long long)last, (unsigned long long)ra);
                return 1;
            }
            if (rb < ra) {
                fprintf(stderr, "shm_consistency: b=%llu older than a=%llu\n",
                        (unsigned long long)rb, (unsigned long long)ra);
                return 1;
            }
            if (ra != last)
                seen++;
            last = ra;
            if (ra == n)
                break;
        }
        printf("read up to %llu, %llu distinct values\n", (unsigned long long)n,
               (unsigned long long)seen);
    } else if (strcmp(cmd, "handoff-send") == 0) {
        volatile uint64_t *data = word(base, 2), *flag = word(base, 3), *ack = word(base, 4);
        for (uint64_t r = 1; r <= n; r++) {
            for (int i = 0; i < PAGE / 8; i++)
                data[i] = r * 1000 + (uint64_t)i;
            *flag = r;
            while (*ack != r)
                ;
        }
        printf("sent %llu rounds\n", (unsigned long long)n);
    } else if (strcmp(cmd, "handoff-recv") == 0) {
        volatile uint64_t *data = word(base, 2), *flag = word(base, 3), *ack = word(base, 4);
        for (uint64_t r = 1; r <= n; r++) {
            while (*flag != r)
                ;
            for (int i = 0; i < PAGE / 8; i++) {
                if (data[i] != r * 1000 + (uint64_t)i) {
                    fprintf(stderr, "shm_consistency: round %llu: data[%d] = %llu, not %llu\n",
                            (unsigned long long)r, i, (unsigned long long)data[i],
                            (unsigned long long)(r * 1000 + (uint64_t)i));
                    return 1;
                }
            }
            *ack = r;
        }
        printf("received %llu rounds\n", (unsigned long long)n);
    } else {
        fprintf(stderr, "shm_consistency: unknown command %s\n", cmd);
        return 2;
    }
    if (dipc_shmdt(base) < 0)
        die("dipc_shmdt");
    return 0;
}
