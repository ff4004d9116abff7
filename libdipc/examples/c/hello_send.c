/* hello_send: sends "Hello, Distributed Programming" to the distributed
 * queue that hello_recv created on another host. Usage: hello_send [key] */
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
    int id = dipc_msgget(key, IPC_DIPC);
    if (id < 0) {
        perror("dipc_msgget");
        return 1;
    }
    struct hello_msg m = {.mtype = 1};
    strcpy(m.text, "Hello, Distributed Programming");
    if (dipc_msgsnd(id, &m, strlen(m.text), 0) < 0) {
        perror("dipc_msgsnd");
        return 1;
    }
    return 0;
}
