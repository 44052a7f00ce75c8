#!/usr/bin/env python3
"""A WebSocket test server built on aiohttp's ``web.WebSocketResponse``.

wsbridge's client side follows aiohttp's client model; ``tests/aiohttp_peer.rs`` proves it
against the real aiohttp server implementation. Started by the tests as

    python tests/peers/aiohttp_server.py --port 0 [--exit-on-stdin-eof]

It binds 127.0.0.1 (port 0 picks a free one), prints ``LISTENING <port>`` once it accepts
connections, then logs what its handlers see as one JSON object per line on stdout, each with
``event`` and ``conn`` (a per-connection number), for example::

    {"event":"handshake","conn":1,"route":"echo","path":"/echo","query":{},"headers":{...},
     "cookies":{"session":"abc"},"origin":"https://example.com","protocol":null}
    {"event":"received","conn":1,"type":"text","data":"hello"}
    {"event":"closed","conn":1,"close_code":1000,"exception":null}

Routes:

- ``/echo``: logs the handshake, echoes every text/binary message back.
- ``/protocols``: ``WebSocketResponse(protocols=("chat", "superchat"))``; logs the chosen one.
- ``/heartbeat``: ``WebSocketResponse(heartbeat=0.5)``; sends ``tick 1`` … ``tick N``
  (``?count=6``, one every ``?every=0.5`` s), logs ``heartbeat_report`` (closed?, exception,
  pings sent), sends ``done`` and stays open. aiohttp closes the connection (code 1006,
  ``ServerTimeoutError``/``TimeoutError``) when a Pong is late.
- ``/close``: sends ``bye soon`` then closes with ``?code=4001`` and ``?reason=custom bye``.
- ``/big?size=N&kind=text|binary``: sends one message of N bytes (``x`` repeated for text,
  byte values 0..255 repeated for binary), then stays open.
- ``/reject401``, ``/reject403``: answer the handshake with that HTTP status and a short body.
- ``/strict-ping``: an exchange's application keepalive. Every ``?every=0.25`` s it sends
  ``{"ping": N}`` and a data message ``{"tick": N}``; a client that has not answered a ping
  with ``{"pong": N}`` within ``?grace=1`` s is dropped (Close 4000 ``pong timeout``). Logs
  ``pong`` for each answer and ``dropped`` when it gives up.

Only the standard library and aiohttp (``tests/peers/requirements.txt``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import os
import sys
import threading
from typing import Any

from aiohttp import WSMsgType, web

_conn_ids = itertools.count(1)


def log(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once."""
    line = json.dumps({"event": event, **fields}, default=str, separators=(",", ":"))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class CountingWebSocketResponse(web.WebSocketResponse):
    """Counts the heartbeat Pings aiohttp sends (best effort, private API of aiohttp 3.x)."""

    pings_sent = 0

    def _send_heartbeat(self) -> None:  # type: ignore[override]
        before = getattr(self, "_pong_response_cb", None)
        super()._send_heartbeat()
        after = getattr(self, "_pong_response_cb", None)
        if after is not None and after is not before:
            self.pings_sent += 1


def log_handshake(conn: int, route: str, request: web.Request, ws: web.WebSocketResponse) -> None:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    log(
        "handshake",
        conn=conn,
        route=route,
        path=request.path,
        query=dict(request.query),
        headers=headers,
        cookies=dict(request.cookies),
        origin=request.headers.get("Origin"),
        offered_protocols=request.headers.get("Sec-WebSocket-Protocol"),
        protocol=ws.ws_protocol,
    )


async def receive_loop(conn: int, ws: web.WebSocketResponse, echo: bool) -> None:
    """Reads (logging, optionally echoing) until the connection ends, then logs ``closed``."""
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            log("received", conn=conn, type="text", data=msg.data)
            if echo:
                await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            log("received", conn=conn, type="binary", size=len(msg.data), data=msg.data.hex())
            if echo:
                await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.ERROR:
            log("ws_error", conn=conn, error=repr(ws.exception()))
    log(
        "closed",
        conn=conn,
        close_code=ws.close_code,
        exception=None if ws.exception() is None else repr(ws.exception()),
    )


async def echo(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    log_handshake(conn, "echo", request, ws)
    await receive_loop(conn, ws, echo=True)
    return ws


async def protocols(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    ws = web.WebSocketResponse(protocols=("chat", "superchat"))
    await ws.prepare(request)
    log_handshake(conn, "protocols", request, ws)
    await ws.send_str(f"protocol={ws.ws_protocol}")
    await receive_loop(conn, ws, echo=True)
    return ws


async def heartbeat(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    count = int(request.query.get("count", "6"))
    every = float(request.query.get("every", "0.5"))
    ws = CountingWebSocketResponse(heartbeat=float(request.query.get("heartbeat", "0.5")))
    await ws.prepare(request)
    log_handshake(conn, "heartbeat", request, ws)
    reader = asyncio.create_task(receive_loop(conn, ws, echo=False))
    for n in range(1, count + 1):
        await asyncio.sleep(every)
        if ws.closed:
            break
        await ws.send_str(f"tick {n}")
        log("sent", conn=conn, data=f"tick {n}")
    log(
        "heartbeat_report",
        conn=conn,
        closed=ws.closed,
        close_code=ws.close_code,
        exception=None if ws.exception() is None else repr(ws.exception()),
        pings_sent=ws.pings_sent,
    )
    if not ws.closed:
        await ws.send_str("done")
    await reader
    return ws


async def close(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    code = int(request.query.get("code", "4001"))
    reason = request.query.get("reason", "custom bye")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    log_handshake(conn, "close", request, ws)
    await ws.send_str("bye soon")
    # close() sends our Close and waits (bounded) for the client's answer.
    await ws.close(code=code, message=reason.encode())
    log("closed", conn=conn, close_code=ws.close_code, sent_code=code, sent_reason=reason)
    return ws


async def big(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    size = int(request.query["size"])
    kind = request.query.get("kind", "text")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    log_handshake(conn, "big", request, ws)
    try:
        if kind == "binary":
            await ws.send_bytes(bytes(i % 256 for i in range(size)))
        else:
            await ws.send_str("x" * size)
        log("sent", conn=conn, kind=kind, size=size)
    except ConnectionError as e:
        # A client that refuses the message may drop the connection while it is being sent.
        log("send_failed", conn=conn, kind=kind, size=size, error=repr(e))
    await receive_loop(conn, ws, echo=False)
    return ws


async def strict_ping(request: web.Request) -> web.WebSocketResponse:
    conn = next(_conn_ids)
    every = float(request.query.get("every", "0.25"))
    grace = float(request.query.get("grace", "1"))
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    log_handshake(conn, "strict-ping", request, ws)
    loop = asyncio.get_running_loop()
    unanswered: dict[int, float] = {}

    async def read() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                n = json.loads(msg.data).get("pong")
            except (ValueError, AttributeError):
                n = None
            if n in unanswered:
                del unanswered[n]
                log("pong", conn=conn, n=n)

    reader = asyncio.create_task(read())
    n = 0
    try:
        while not ws.closed:
            n += 1
            unanswered[n] = loop.time()
            await ws.send_str(json.dumps({"ping": n}))
            await ws.send_str(json.dumps({"tick": n}))
            await asyncio.sleep(every)
            late = [k for k, sent in unanswered.items() if loop.time() - sent > grace]
            if late:
                log("dropped", conn=conn, unanswered=late)
                await ws.close(code=4000, message=b"pong timeout")
                break
    except ConnectionError:
        pass
    reader.cancel()
    log("closed", conn=conn, close_code=ws.close_code)
    return ws


def reject(status: int):
    async def handler(request: web.Request) -> web.Response:
        log("rejected", route=f"reject{status}", path=request.path, status=status)
        return web.Response(status=status, text=f"test rejection {status}: go away\n")

    return handler


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/echo", echo)
    app.router.add_get("/protocols", protocols)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/close", close)
    app.router.add_get("/big", big)
    app.router.add_get("/strict-ping", strict_ping)
    app.router.add_get("/reject401", reject(401))
    app.router.add_get("/reject403", reject(403))
    return app


def exit_on_stdin_eof() -> None:
    """Ends the process when the parent closes our stdin (the test died or finished)."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    runner = web.AppRunner(make_app(), handle_signals=True, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    log_line = f"LISTENING {sock.getsockname()[1]}"
    sys.stdout.write(log_line + "\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin closes"
    )
    args = parser.parse_args()
    if args.exit_on_stdin_eof:
        exit_on_stdin_eof()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
