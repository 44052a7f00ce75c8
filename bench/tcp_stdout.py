#!/usr/bin/env python3
"""Runs a command whose stdout is a TCP connection: the bare client delivering to a socket.

    tcp_stdout.py PORT -- CMD [ARGS...]

Listens on 127.0.0.1:PORT, takes one connection (the reader: `latency --tcp`), makes it the
command's stdout and replaces itself with the command, so nothing of this script stays
between the two (and nothing of its CPU is counted when CMD is bench/timed.py).
"""

import os
import socket
import sys


def main():
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        sys.exit(__doc__)
    port, cmd = int(argv[0]), argv[2:]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    listener.settimeout(60)
    conn, _ = listener.accept()
    listener.close()
    # As the daemon's tcp sink: no Nagle delay on small writes.
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setblocking(True)
    os.dup2(conn.fileno(), 1)
    conn.close()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
