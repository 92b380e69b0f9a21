"""One load-client session: a picows connection that subscribes, checks what arrives, reconnects.

picows parses frames in C and answers pings by itself (unless the spec says not to, to play a
half-open peer); this module only sees whole frames. A session's first message is the subscribe
(with ``"ack": true``); text messages before the ``subscribed`` reply are the reply, after it they
go to the session's checker (in resume mode, through its :class:`loadclient.resume.Resumer`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from time import time_ns
from typing import TYPE_CHECKING, Final

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from loadclient.checks import SessionChecker, Totals, now_us
from loadclient.resume import Drop, Resumer

if TYPE_CHECKING:
    from loadclient.interface import Spec

SUBSCRIBE_TIMEOUT: Final = 60.0
CLOSE_TIMEOUT: Final = 30.0
RECONNECT_FIRST_DELAY: Final = 0.02
RECONNECT_MAX_DELAY: Final = 0.25
ABNORMAL_CLOSE: Final = 1006  # the connection ended without a close frame from the server


class Connection(WSListener):
    """One WebSocket connection of a session."""

    def __init__(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.transport: WSTransport | None = None
        self.subscribed: asyncio.Future[bool] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.live = False
        self.ended_by_us = False  # we closed or dropped it: not an abnormal end
        self.aborted = False  # we dropped it: frames read with the ones before are lost with it
        self._parts: list[bytes] = []  # a fragmented text message, until its last frame
        self._check = session.on_message
        self._now = 0

    # -- picows callbacks -------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        # The session's connection from now on: frames (and a drop they cause) can come before
        # ws_connect returns to the session.
        self.session.connection = self
        subscribe = {"@type": "subscribe", "ack": True, "jwt": self.session.token}
        if self.session.resumer is not None:
            subscribe.update(self.session.resumer.subscribe_fields())
        transport.send(WSMsgType.TEXT, json.dumps(subscribe).encode())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and frame.fin and self.live and not self._parts:
            # The hot path. The clock is read once per buffer of frames, not once per frame.
            now = self._now or time_ns() // 1000
            self._now = 0 if frame.last_in_buffer else now
            self._check(frame.get_payload_as_bytes(), now)
        elif self.aborted:
            return
        elif kind == WSMsgType.TEXT and frame.fin and not self._parts:
            self._on_text(frame.get_payload_as_bytes())
        elif kind in (WSMsgType.TEXT, WSMsgType.CONTINUATION):
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                text, self._parts = b"".join(self._parts), []
                self._on_text(text)
        elif kind == WSMsgType.CLOSE:
            self._on_close(frame.get_close_code().value)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.live and not self.ended_by_us:
            self.session.totals.closes[ABNORMAL_CLOSE] += 1
        self.live = False
        self._resolve(False)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- messages ---------------------------------------------------------------------------

    def _on_text(self, payload: bytes) -> None:
        if self.live:
            self._check(payload, now_us())
            return
        reply = json.loads(payload)
        if reply.get("@type") == "subscribed":
            if self.session.resumer is not None:
                self.session.resumer.on_subscribed(reply)
            self.live = True
            self.session.totals.subscriptions += 1
            self._resolve(True)
        else:
            self.session.totals.errors[str(reply.get("error"))] += 1

    def _on_close(self, code: int) -> None:
        if not self.ended_by_us:  # the server closed first: record its code, answer, hang up
            self.session.totals.closes[code] += 1
            self.ended_by_us = True
            if self.transport is not None:
                self.transport.send_close(WSCloseCode(code))
        self.live = False
        self._resolve(False)
        if self.transport is not None:
            self.transport.disconnect()

    def _resolve(self, subscribed: bool) -> None:
        if not self.subscribed.done():
            self.subscribed.set_result(subscribed)

    # -- ending it --------------------------------------------------------------------------

    def close_handshake(self) -> None:
        """Start a normal close; the connection ends when the server answers."""
        self.ended_by_us = True
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.OK)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.ended_by_us = True
        self.aborted = True
        self.live = False
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


class Session:
    """One client: connects, subscribes, and (in reconnect and resume modes) connects again whenever
    dropped; in resume mode it also drops its connection after the message counts ``drops``."""

    def __init__(
        self, spec: Spec, index: int, totals: Totals, checker: SessionChecker, drops: list[Drop] | None = None
    ) -> None:
        self.spec = spec
        self.token = spec.token(index)
        self.totals = totals
        self.checker = checker
        self.resumer = Resumer(checker, totals, drops or [], self.abort) if spec.resume else None
        self.on_message = checker.on_message if self.resumer is None else self.resumer.on_message
        self.connection: Connection | None = None
        self.stopping = False
        self.first_attempt: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def live(self) -> bool:
        caught_up = self.resumer is None or not self.resumer.recovering
        return self.connection is not None and self.connection.live and caught_up

    async def run(self, slots: asyncio.Semaphore) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self.stopping:
            if not self.first_attempt.done():
                async with slots:  # the first connections ramp up; reconnections all go at once
                    subscribed = await self._connect()
                self.first_attempt.set_result(subscribed)
            else:
                subscribed = await self._connect()
            if subscribed:
                delay = RECONNECT_FIRST_DELAY
                assert self.connection is not None
                await self.connection.lost
            if not (self.spec.reconnect or self.spec.resume) or self.stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def _connect(self) -> bool:
        factory: Callable[[], Connection] = lambda: Connection(self)  # noqa: E731
        try:
            _, connection = await ws_connect(
                factory,
                self.spec.url,
                websocket_handshake_timeout=SUBSCRIBE_TIMEOUT,
                enable_auto_pong=self.spec.answer_pings,
            )
        except WSInvalidStatusError as exc:
            self.totals.refused[int(exc.response.status) if exc.response else 0] += 1
            return False
        except (OSError, WSError, TimeoutError):
            self.totals.connect_errors += 1
            return False
        assert isinstance(connection, Connection)
        self.connection = connection
        try:
            return await asyncio.wait_for(asyncio.shield(connection.subscribed), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            connection.abort()
            return False

    async def close(self, graceful: bool) -> None:
        self.stopping = True
        connection = self.connection
        if connection is None or connection.lost.done():
            return
        if graceful and connection.live:
            connection.close_handshake()
        else:
            connection.abort()
        try:
            await asyncio.wait_for(asyncio.shield(connection.lost), CLOSE_TIMEOUT)
        except TimeoutError:
            self.totals.problem("unexpected", "the server did not answer a close in time")
            connection.abort()

    def abort(self) -> None:
        if self.connection is not None:
            self.connection.abort()
