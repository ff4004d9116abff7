"""The Python side of tools/tests/preload.rs: Debian's python3-sysv-ipc,
unmodified, run with LD_PRELOAD=libdipc_preload.so. It speaks the protocol
of sysv_demo.c's queue ping-pong.

    sysv_py.py ping KEY N    ask sysv_demo's pong N times
    sysv_py.py pong KEY N    answer sysv_demo's ping N times
    sysv_py.py counter-run KEY N
                             add 1 N times to sysv_demo's counter (segment
                             KEY+1) under its semaphore KEY
"""
import sys

import sysv_ipc

cmd, key, n = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3])
if cmd == "counter-run":
    sem = sysv_ipc.Semaphore(key)
    mem = sysv_ipc.SharedMemory(key + 1)
    for _ in range(n):
        sem.acquire()
        v = int.from_bytes(mem.read(8), sys.byteorder)
        mem.write((v + 1).to_bytes(8, sys.byteorder))
        sem.release()
    mem.detach()
    print("added %d" % n)
    sys.exit(0)
q = sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREAT, 0o666)
if cmd == "ping":
    for i in range(n):
        q.send(b"0 %d\0" % i, type=1)
        text, mtype = q.receive(type=2)
        want = b"pong 0 %d\0" % i
        if mtype != 2 or text != want:
            sys.exit("ping %d: got type %d %r, expected %r" % (i, mtype, text, want))
    print("pinged %d" % n)
elif cmd == "pong":
    print("ready", flush=True)
    for i in range(n):
        text, mtype = q.receive(type=1)
        tag, seq = text.rstrip(b"\0").split()
        q.send(b"pong %s %s\0" % (tag, seq), type=2 + int(tag))
    print("answered %d" % n)
else:
    sys.exit("unknown command " + cmd)
