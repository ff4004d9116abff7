/* hello_recv: creates a distributed message queue, waits for one message,
 * prints it and removes the queue. Run it on one host, hello_send on
 * another. Usage: hello_recv [key] */
#include <dipc.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hello_msg {
    long mtype;
    char text[256];
};

int main(int argc, char **argv)
{
    key_t key = argc > 1 ? (key_t)strtol(argv[1], NULL, 0) : 0x4849;
    int id = dipc_msgget(key, IPC_CREAT | IPC_DIPC | 0666);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    printf("waiting on queue %d (key %#x)\n", id, (unsigned)key);
    fflush(stdout);
    struct hello_msg m;
    ssize_t n = dipc_msgrcv(id, &m, sizeof m.text - 1, 0, 0);
    if (n < 0) {
        perror("dipc_msgrcv");
        return 1;
    }
    m.text[n] = '\0';
    printf("received: %s\n", m.text);
    if (dipc_msgctl(id, IPC_RMID, NULL) < 0) {
        perror("dipc_msgctl(IPC_RMID)");
        return 1;
    }
    return 0;
}
