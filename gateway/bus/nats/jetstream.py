"""JetStream over ``NatsBus``: streams, publishing with acknowledgement, ordered consumers.

The wire shapes live in ``jetstream_api`` (pure), the ordered consumer in ``ordered``. Every call
is bounded by ``timeout``: a server without JetStream answers a request with "no responders" (503)
at once, a JetStream that does not answer in time and a broker we are not connected to within
that time raise ``JetStreamUnavailable``; every other API error raises ``JetStreamError`` with the
server's code and description.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from gateway.bus.base import BusError
from gateway.bus.nats.bus import NatsBus
from gateway.bus.nats.jetstream_api import (
    MSG_ID_HEADER,
    STREAM_NOT_FOUND,
    JetStreamError,
    JetStreamUnavailable,
    StreamGone,
    StreamInfo,
    StreamMessage,
    api_subject,
    check_name,
    consumer_name,
    ordered_consumer_config,
    parse_pub_ack,
    parse_response,
    parse_stream_info,
    stream_config,
    stream_gone,
)
from gateway.bus.nats.ordered import HEARTBEAT, INACTIVE_THRESHOLD, OrderedConsumer
from gateway.bus.nats.protocol import check_subject
from gateway.bus.nats.requests import NoResponders, RequestTimeout

__all__ = [
    "JetStream",
    "JetStreamError",
    "JetStreamUnavailable",
    "OrderedConsumer",
    "StreamGone",
    "StreamInfo",
    "StreamMessage",
]

log = logging.getLogger("gateway.bus.nats.jetstream")


class JetStream:
    """The JetStream client of one ``NatsBus`` (which must be running)."""

    def __init__(self, bus: NatsBus, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.timeout = timeout

    # -- streams -------------------------------------------------------------------------------

    async def stream_info(self, name: str) -> StreamInfo | None:
        """The stream's configuration and state; None when it does not exist."""
        check_name(name)
        try:
            doc = await self._api(api_subject("STREAM", "INFO", name), b"", f"stream info {name}")
        except JetStreamError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return None
            raise
        return parse_stream_info(doc)

    async def create_stream(
        self, name: str, subjects: Sequence[str], *, max_msgs: int, max_age: float, duplicate_window: float
    ) -> StreamInfo:
        """Create the stream (file storage, limits retention, discard old, one replica).

        Creating a stream that exists with the same configuration succeeds; with another one it
        raises JetStreamError (err_code 10058).
        """
        check_name(name)
        for subject in subjects:
            check_subject(subject, wildcards=True)
        body = stream_config(
            name, subjects, max_msgs=max_msgs, max_age=max_age, duplicate_window=duplicate_window
        )
        doc = await self._api(api_subject("STREAM", "CREATE", name), body, f"create stream {name}")
        return parse_stream_info(doc)

    async def delete_stream(self, name: str) -> bool:
        """Delete the stream and its messages; False when it did not exist."""
        check_name(name)
        try:
            await self._api(api_subject("STREAM", "DELETE", name), b"", f"delete stream {name}")
        except JetStreamError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                return False
            raise
        return True

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> int:
        """Store a message in the stream that captures ``subject``: its stream sequence.

        With ``msg_id`` (the ``Nats-Msg-Id`` header), a message published again with the same id
        within the stream's duplicate window is stored once: the server answers ``duplicate``
        with the sequence of the first, which is returned as well.
        """
        check_subject(subject)
        headers = {MSG_ID_HEADER: msg_id} if msg_id is not None else None
        what = f"publish on {subject}"
        payload = await self._request(
            subject, data, what, headers=headers, no_responders="no stream captures it"
        )
        return parse_pub_ack(payload, subject)

    # -- consuming -----------------------------------------------------------------------------

    def ordered_consumer(
        self, stream: str, *, start_seq: int, queue_size: int = 10000, heartbeat: float = HEARTBEAT
    ) -> AbstractAsyncContextManager[OrderedConsumer]:
        """Every message of ``stream`` from ``start_seq`` on, in order, each once (see ``ordered``).

        Entering creates the consumer: JetStreamUnavailable when it cannot be (the stream does
        not exist, JetStream is off). ``heartbeat`` is the server's idle heartbeat interval;
        two missed ones make the consumer recreate itself.
        """
        check_name(stream)
        return self._ordered(stream, start_seq, queue_size, heartbeat)

    @asynccontextmanager
    async def _ordered(
        self, stream: str, start_seq: int, queue_size: int, heartbeat: float
    ) -> AsyncIterator[OrderedConsumer]:
        consumer = OrderedConsumer(
            self, stream, start_seq=start_seq, queue_size=queue_size, heartbeat=heartbeat
        )
        try:
            await consumer.start()
            yield consumer
        finally:
            await consumer.close()

    async def create_ordered(
        self, stream: str, deliver_subject: str, *, start_seq: int, heartbeat: float
    ) -> str:
        """Create one incarnation of an ordered consumer: its name (for ``OrderedConsumer``)."""
        body = ordered_consumer_config(
            stream,
            deliver_subject,
            start_seq=start_seq,
            heartbeat=heartbeat,
            inactive_threshold=INACTIVE_THRESHOLD,
        )
        what = f"create a consumer on stream {stream}"
        try:
            doc = await self._api(api_subject("CONSUMER", "CREATE", stream), body, what)
        except JetStreamError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                raise
            raise stream_gone(stream, "does not exist") from None
        return consumer_name(doc)

    async def delete_consumer_soon(self, stream: str, name: str) -> None:
        """Ask for a consumer's deletion without waiting (its inactivity threshold is the backstop)."""
        try:
            await self.bus.publish_unanswered(api_subject("CONSUMER", "DELETE", stream, name), b"")
        except BusError as exc:
            log.debug("could not ask to delete consumer %s of %s: %s", name, stream, exc)

    # -- requests ------------------------------------------------------------------------------

    async def _api(self, subject: str, body: bytes, what: str) -> dict[str, object]:
        return parse_response(await self._request(subject, body, what), what)

    async def _request(
        self,
        subject: str,
        body: bytes,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        no_responders: str = "JetStream is not enabled on the NATS server",
    ) -> bytes:
        """One request, its failures as JetStream errors: the payload of the answer."""
        try:
            reply = await self.bus.request(subject, body, max_wait=self.timeout, headers=headers)
        except NoResponders:
            raise JetStreamUnavailable(
                f"{what}: {no_responders} (no responders on {subject})", code=503
            ) from None
        except RequestTimeout as exc:
            raise JetStreamUnavailable(f"{what}: {exc}") from None
        except BusError as exc:
            kind = JetStreamError if self.bus.connected else JetStreamUnavailable
            raise kind(f"{what}: {exc}") from None
        return reply.payload
