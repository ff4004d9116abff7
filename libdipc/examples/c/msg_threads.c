/* msg_threads: N threads of one process block at the same time in
 * dipc_msgrcv on one queue, thread i waiting for messages of type i. Each
 * prints "thread I got: TEXT" when its message arrives, so a test can send
 * the messages in any order and see that no thread waits for another.
 *
 * Usage: msg_threads KEY N   (the queue must exist)
 * Prints "ready" when all threads are about to block; exit 0 when every
 * thread received its message. */
#include <dipc.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg {
    long mtype;
    char text[512];
};

static int id;
static int started;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void *run(void *arg)
{
    long type = (long)arg;
    struct msg m;
    pthread_mutex_lock(&lock);
    started++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    ssize_t n = dipc_msgrcv(id, &m, sizeof m.text - 1, type, 0);
    if (n < 0) {
        int e = errno;
        printf("thread %ld failed: %s (errno %d)\n", type, strerror(e), e);
        fflush(stdout);
        return (void *)1;
    }
    m.text[n] = '\0';
    printf("thread %ld got: %s\n", type, m.text);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: msg_threads KEY N\n");
        return 1;
    }
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int n = atoi(argv[2]);
    if (n < 1 || n > 64) {
        fprintf(stderr, "N must be 1..64\n");
        return 1;
    }
    id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    pthread_t t[64];
    for (long i = 0; i < n; i++) {
        if (pthread_create(&t[i], NULL, run, (void *)(i + 1)) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    pthread_mutex_lock(&lock);
    while (started < n)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    printf("ready\n");
    fflush(stdout);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r != NULL)
            bad++;
    }
    return bad ? 1 : 0;
}
