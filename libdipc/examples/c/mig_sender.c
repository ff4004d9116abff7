/* mig_sender: one of migrant's senders.
 *
 *   mig_sender DEST INDEX COUNT SIGEVERY [PAUSE_US]
 *
 * Registers and sends COUNT messages {INDEX, 1..COUNT} to the pid_d DEST,
 * each with a blocking dipc_send, and after every SIGEVERY messages sends
 * it SIGRTMIN+INDEX with kill_d. Then it sends a last message
 * {INDEX, UINT32_MAX, number of kill_d calls that succeeded} and prints
 * "sent COUNT kills K". PAUSE_US: microseconds to sleep after each send.
 * Exits 1 on the first failed send. */
#include <dipc.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct msg {
    int32_t idx;
    uint32_t seq;
    int32_t kills;
};

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6)
        return 2;
    long pause_us = argc == 6 ? atol(argv[5]) : 0;
    pid_d dest = atoll(argv[1]);
    int idx = atoi(argv[2]);
    long count = atol(argv[3]), every = atol(argv[4]);
    if (regist() < 0) {
        perror("mig_sender: regist");
        return 1;
    }
    int32_t kills = 0, failed_kills = 0;
    for (long i = 1; i <= count; i++) {
        struct msg m = {idx, (uint32_t)i, 0};
        while (dipc_send(dest, &m, sizeof m, 0) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "mig_sender %d: dipc_send %ld: %s\n", idx, i, strerror(errno));
            return 1;
        }
        if (pause_us > 0)
            usleep(pause_us);
        if (every > 0 && i % every == 0) {
            if (kill_d(dest, SIGRTMIN + idx) == 0)
                kills++;
            else {
                failed_kills++;
                fprintf(stderr, "mig_sender %d: kill_d: %s\n", idx, strerror(errno));
            }
        }
    }
    struct msg end = {idx, UINT32_MAX, kills};
    while (dipc_send(dest, &end, sizeof end, 0) < 0) {
        if (errno == EINTR)
            continue;
        fprintf(stderr, "mig_sender %d: last dipc_send: %s\n", idx, strerror(errno));
        return 1;
    }
    printf("sent %ld kills %d failed %d\n", count, kills, failed_kills);
    return 0;
}
