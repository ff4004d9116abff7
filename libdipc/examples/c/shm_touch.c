/* shm_touch: attach a distributed segment and touch one page.
 *
 *   shm_touch KEY SIZE PAGE read          print the page's first word
 *   shm_touch KEY SIZE PAGE write VALUE   store VALUE there
 *   shm_touch KEY SIZE PAGE hold VALUE    store VALUE, print "held", and
 *                                         stay attached until killed
 *   shm_touch KEY SIZE PAGE read-after MS read page 0, print "attached",
 *                                         sleep MS milliseconds, then read
 *                                         PAGE and print its first word
 *   shm_touch KEY SIZE - stat             print shm_segsz and shm_nattch
 *   shm_touch KEY SIZE - create-private   create it with mode 0600
 *
 * Other commands create the segment with mode 0666 if it does not exist.
 *
 * A page whose content is lost (its writer's host died) or whose owner is
 * gone raises SIGBUS: the program then dies of it.
 */
#include <dipc.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "shm_touch: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: shm_touch KEY SIZE PAGE read|write|hold|stat [VALUE]\n");
        return 2;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    size_t size = strtoull(argv[2], NULL, 0);
    const char *cmd = argv[4];
    int mode = strcmp(cmd, "create-private") == 0 ? IPC_EXCL | 0600 : 0666;
    int id = dipc_shmget(key, size, IPC_CREAT | IPC_DIPC | mode);
    if (id < 0)
        die("dipc_shmget");
    if (strcmp(cmd, "create-private") == 0)
        return 0;
    if (strcmp(cmd, "stat") == 0) {
        struct shmid_ds ds;
        if (dipc_shmctl(id, IPC_STAT, &ds) < 0)
            die("IPC_STAT");
        printf("segsz %zu nattch %lu\n", (size_t)ds.shm_segsz, (unsigned long)ds.shm_nattch);
        return 0;
    }
    size_t page = strtoull(argv[3], NULL, 0);
    char *base = dipc_shmat(id, NULL, 0);
    if (base == (void *)-1)
        die("dipc_shmat");
    volatile uint64_t *w = (volatile uint64_t *)(base + page * 4096);
    if (strcmp(cmd, "read") == 0) {
        printf("%llu\n", (unsigned long long)*w);
    } else if (argc > 5 && strcmp(cmd, "read-after") == 0) {
        printf("attached %llu\n", (unsigned long long)*(volatile uint64_t *)base);
        fflush(stdout);
        usleep((useconds_t)strtoul(argv[5], NULL, 0) * 1000);
        printf("%llu\n", (unsigned long long)*w);
    } else if (argc > 5 && (strcmp(cmd, "write") == 0 || strcmp(cmd, "hold") == 0)) {
        *w = strtoull(argv[5], NULL, 0);
        if (strcmp(cmd, "hold") == 0) {
            printf("held\n");
            fflush(stdout);
            for (;;)
                pause();
        }
    } else {
        fprintf(stderr, "shm_touch: bad command\n");
        return 2;
    }
    if (dipc_shmdt(base) < 0)
        die("dipc_shmdt");
    return 0;
}
