"""Test peers for tfo wrap: a server that speaks first, and clients that read first.

server PORT N       : TFO listener (set by the program itself) writing "220 banner" at accept, N connections
blocking PORT       : connect, read the banner (blocking recv), print it
asyncio PORT        : asyncio open_connection, read the banner, print it
select PORT         : non-blocking connect, select() for input, read
fork PORT           : fork a child that connects and reads; the parent waits
shared PORT         : connect, fork; the child reads and closes, the parent closes a dup, then the socket
"""
import asyncio, os, select, socket, sys

def server(port, n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_TCP, 23, 16)  # TCP_FASTOPEN: the program asks for it itself
    s.bind(("127.0.0.1", port))
    s.listen(16)
    print("listening", flush=True)
    for _ in range(n):
        c, _ = s.accept()
        try:
            c.sendall(b"220 banner\r\n")
            c.recv(100)  # until the client closes
        except OSError:
            pass
        c.close()

def blocking(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    print(s.recv(100).decode().strip())
    s.close()

async def reader(port):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    print((await asyncio.wait_for(r.readline(), 5)).decode().strip())
    w.close()

def with_select(port):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    r, _, _ = select.select([s], [], [], 5)
    print(s.recv(100).decode().strip() if r else "timeout")
    s.close()

def forked(port):
    pid = os.fork()
    if pid == 0:
        blocking(port)
        os._exit(0)
    os.waitpid(pid, 0)

def shared(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    pid = os.fork()
    if pid == 0:
        print(s.recv(100).decode().strip())
        s.close()
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(os.dup(s.fileno()))
    s.close()

kind, port = sys.argv[1], int(sys.argv[2])
if kind == "server":
    server(port, int(sys.argv[3]))
elif kind == "asyncio":
    asyncio.run(reader(port))
else:
    {"blocking": blocking, "select": with_select, "fork": forked, "shared": shared}[kind](port)
