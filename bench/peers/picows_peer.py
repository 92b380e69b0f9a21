"""A broadcast peer on picows and uvloop: ``transport.send`` to every subscriber per published event.

    GATEWAY_JWT_SECRET=... GATEWAY_ADMIN_KEY=... python -m bench.peers.picows_peer \\
        --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:PORT2

picows parses and builds frames in C and hands each connection's frames to a callback: the way
to serve WebSockets from Python with the least interpreter work per message.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import jwt
import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

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


class Session(WSListener):
    """One connection: its first text message must be a valid subscribe, within the timeout."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.transport: WSTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(SUBSCRIBE_TIMEOUT, self._refuse)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT and transport not in self.peer.subscribers:
            if self.timer is not None:
                self.timer.cancel()
            try:
                claims = verify_subscribe(frame.get_payload_as_bytes(), self.peer.secret)
            except (Refused, jwt.InvalidTokenError):
                self._refuse()
                return
            transport.send(WSMsgType.TEXT, subscribed_reply(claims))
            self.peer.subscribers.add(transport)
        # later client messages are read and ignored (pings are answered by picows)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.peer.subscribers.discard(transport)
        if self.timer is not None:
            self.timer.cancel()

    def _refuse(self) -> None:
        if self.transport is not None:
            self.transport.send_close(WSCloseCode(TOKEN_INVALID), b"token invalid")
            self.transport.disconnect()


class Peer:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.subscribers: set[WSTransport] = set()

    def listener(self, request: WSUpgradeRequest) -> Session:
        return Session(self)

    def broadcast(self, payload: bytes) -> None:
        for transport in self.subscribers:
            transport.send(WSMsgType.TEXT, payload)


async def run(args: PeerArgs) -> None:
    peer = Peer(args.secret)
    ws_host, ws_port = host_port(args.listen)
    server = await ws_create_server(peer.listener, ws_host, ws_port, backlog=BACKLOG)
    async with server, await serve_publish_api(args, peer.broadcast):
        await until_signalled()


def main(argv: Sequence[str] | None = None) -> int:
    return peer_main("python -m bench.peers.picows_peer", __doc__, argv, run, uvloop.run)


if __name__ == "__main__":
    sys.exit(main())
