#!/usr/bin/env python3
"""An echo server built on Python ``websockets`` (its asyncio server), the way its docs write one.

``websockets`` answers a Close frame at once and drops the replies its handler had not sent
yet, which is what ``wsbridge connect --linger`` is for; the connect tests run the README's
"send a file and keep the replies" recipe against it. Started by the tests as

    python tests/peers/websockets_echo.py [--port 0]

It binds 127.0.0.1 (port 0 picks a free one), prints ``LISTENING <port>`` once it accepts
connections, and echoes every text and binary message back until the client closes. It exits
when its stdin reaches EOF (the test that started it went away).

Only the standard library and ``websockets`` (``tests/peers/requirements.txt``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(websocket) -> None:
    try:
        async for message in websocket:
            await websocket.send(message)
    except ConnectionClosed:
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    async with serve(echo, "127.0.0.1", args.port, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"LISTENING {port}", flush=True)
        loop = asyncio.get_running_loop()
        # Stdin at EOF: whoever started us is gone.
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
