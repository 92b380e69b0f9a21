"""A broadcast peer on asyncio and ``websockets``: ``websockets.broadcast()`` per published event.

    GATEWAY_JWT_SECRET=... GATEWAY_ADMIN_KEY=... python -m bench.peers.websockets_peer \\
        --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import jwt
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench.peers.common import (
    BACKLOG,
    SUBSCRIBE_TIMEOUT,
    TOKEN_INVALID,
    PeerArgs,
    Refused,
    host_port,
    peer_main,
    serve_publish_api,
    subscribed_reply,
    until_signalled,
    verify_subscribe,
)


class Peer:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.subscribers: set[ServerConnection] = set()

    async def handle(self, ws: ServerConnection) -> None:
        try:
            claims = verify_subscribe(await asyncio.wait_for(ws.recv(), SUBSCRIBE_TIMEOUT), self.secret)
        except (TimeoutError, Refused, jwt.InvalidTokenError):
            await ws.close(TOKEN_INVALID, "token invalid")
            return
        except ConnectionClosed:
            return
        await ws.send(subscribed_reply(claims).decode())
        self.subscribers.add(ws)
        try:
            async for _ in ws:  # later client messages are read and ignored
                pass
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.discard(ws)

    def broadcast(self, payload: bytes) -> None:
        broadcast(self.subscribers, payload.decode())


async def run(args: PeerArgs) -> None:
    peer = Peer(args.secret)
    ws_host, ws_port = host_port(args.listen)
    ws_server = serve(peer.handle, ws_host, ws_port, compression=None, backlog=BACKLOG)
    async with ws_server, await serve_publish_api(args, peer.broadcast):
        await until_signalled()


def main(argv: Sequence[str] | None = None) -> int:
    return peer_main("python -m bench.peers.websockets_peer", __doc__, argv, run, asyncio.run)


if __name__ == "__main__":
    sys.exit(main())
