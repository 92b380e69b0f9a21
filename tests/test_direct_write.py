"""Direct writes on a real socket: a frame the kernel takes only part of is finished (by the
session's writer task) before anything else is written, whatever comes next."""

from __future__ import annotations

import json
import socket

import trio
import trio.testing
from wsproto.events import CloseConnection, Ping, TextMessage

from gateway.protocol import text_frame
from tests.helpers import Harness, RawClient, token


def small_buffered_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    server, client = trio.socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return trio.SocketStream(server), trio.SocketStream(client)


async def test_direct_write_ping_waits_for_the_half_written_frame(harness: Harness) -> None:
    server_stream, client_stream = small_buffered_pair()
    async with client_stream, trio.open_nursery() as nursery:
        nursery.start_soon(harness.gateway.websocket.serve_stream, server_stream, "local")
        client = RawClient(client_stream)
        await client.handshake()
        await client.send_json({"@type": "subscribe", "ack": True, "jwt": token()})
        with trio.fail_after(5):
            while not client.texts():
                await client.receive_some()
        (session,) = harness.gateway.hub.sessions
        assert session.writer is not None
        big = {"Type": "DELETE", "Source": {"Uuid": "n-big", "Path": "x" * 300_000}}
        # The direct write takes only part of the frame; a keepalive tick comes before the
        # writer task runs. The ping must still come after the whole frame.
        session.send(text_frame(json.dumps(big)))
        session.flush()
        assert session.writer.busy
        session.check_timers(trio.current_time() + 3600)
        with trio.fail_after(10):
            while not any(isinstance(e, Ping) for e in client.events):
                assert await client.receive_some()
        nursery.cancel_scope.cancel()
    assert not any(isinstance(e, CloseConnection) for e in client.events)
    # Reassemble messages (wsproto hands large ones over in pieces) and note where the ping fell.
    order: list[str] = []
    current = ""
    for event in client.events:
        if isinstance(event, TextMessage):
            current += event.data
            if event.message_finished:
                order.append(current)
                current = ""
        elif isinstance(event, Ping):
            assert current == "", "a ping arrived inside a message"
            order.append("<ping>")
    assert order[-1] == "<ping>"
    assert json.loads(order[-2]) == big
