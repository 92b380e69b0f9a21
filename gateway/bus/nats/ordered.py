"""The ordered consumer: every message of a stream from a sequence on, in order, each at most once.

What the official clients call an ordered consumer (nats.go ``OrderedConsumer``): an ephemeral
push consumer without acks that delivers to a fresh inbox. The client checks each delivery's
consumer sequence (from its ``$JS.ACK`` reply subject) and, on anything suspicious, drops that
consumer and creates another that starts right after the last stream sequence handed to the
caller. Suspicious is:

- a consumer sequence that is not the previous one + 1 (a message lost: a full queue drops), or a
  drop by the queue once what was queued before it is handed over;
- an idle heartbeat whose ``Nats-Last-Consumer`` is not the last consumer sequence received
  (messages lost at the end), or no message nor heartbeat for two heartbeat intervals;
- a status other than a heartbeat or a flow-control request (e.g. 409, consumer deleted);
- a reconnect to NATS (the consumer may be gone with a restarted server: it lives in memory).

Flow-control requests are answered when the caller's batch reaches them, so the server never runs
more than its flow-control window ahead of the caller. Before each recreation the stream is looked
up: gone, created again since (another ``created``), or back before the last sequence handed
over raises ``StreamGone`` (a ``JetStreamUnavailable``: what the caller read does not continue
there); JetStream off or not answering raises ``JetStreamUnavailable`` once the client's
timeout has passed in retries. The caller may call
``receive_batch`` again after such an error: it tries again from where it stopped.

Not safe for concurrent ``receive_batch`` calls from several tasks (one reader per consumer).
"""

from __future__ import annotations

import logging
import secrets
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final

import trio

from gateway.bus.base import BusError
from gateway.bus.nats.headers import STATUS_CONTROL, HeaderBlock, parse_headers
from gateway.bus.nats.jetstream_api import (
    LAST_CONSUMER_HEADER,
    NANOS,
    STALLED_HEADER,
    JetStreamUnavailable,
    StreamGone,
    StreamMessage,
    parse_ack_subject,
    stream_gone,
)
from gateway.bus.nats.protocol import Msg
from gateway.bus.nats.subscription import MsgSubscription

if TYPE_CHECKING:
    from gateway.bus.nats.jetstream import JetStream

log = logging.getLogger("gateway.bus.nats.jetstream")

HEARTBEAT: Final = 5.0  # the server's idle heartbeat interval, seconds (as the official clients)
MISSED_HEARTBEATS: Final = 2  # that many intervals without anything: recreate
# The server deletes a consumer nobody has listened to for that long (ours, left behind by a
# reset whose delete request was lost, or by a process that died).
INACTIVE_THRESHOLD: Final = 30.0
RETRY_MIN: Final = 0.05  # first pause between two creation attempts; doubles up to RETRY_MAX
RETRY_MAX: Final = 1.0


class OrderedConsumer:
    """See the module docstring. Made by ``JetStream.ordered_consumer``."""

    def __init__(
        self, js: JetStream, stream: str, *, start_seq: int, queue_size: int, heartbeat: float
    ) -> None:
        self._js = js
        self._stream = stream
        self._last_seq = max(start_seq, 1) - 1
        self._read_any = False  # whether ``_last_seq`` is a sequence read from the stream
        self._queue_size = queue_size
        self._heartbeat = heartbeat
        self._created: str | None = None  # the stream's creation time when first looked up
        self._name: str | None = None  # the server's name of the current consumer
        self._subscription: MsgSubscription | None = None
        self._stack = AsyncExitStack()
        self._consumer_seq = 0  # last consumer sequence received from the current consumer
        self._reconnects = 0
        self._stale: str | None = "new"  # why the consumer must be (re)created, None if it is fine
        self.resets = 0  # recreations after the first (diagnostics and tests)
        self._dropped_before = 0  # deliveries the queues of previous consumers dropped

    @property
    def last_seq(self) -> int:
        """The last stream sequence delivered to the caller."""
        return self._last_seq

    @property
    def dropped(self) -> int:
        """Deliveries dropped because the queue was full (each one made the consumer start over)."""
        current = self._subscription.dropped if self._subscription is not None else 0
        return self._dropped_before + current

    async def start(self) -> None:
        await self._recreate()

    async def close(self) -> None:
        """Unsubscribe and ask the server to delete the consumer (no network wait: shielded)."""
        with trio.CancelScope(shield=True):
            await self._drop()

    async def receive_batch(self, limit: int) -> list[StreamMessage]:
        """Wait for at least one message, then return up to ``limit`` of them in stream order."""
        while True:
            if self._stale is not None:
                await self._recreate()
            batch = await self._next_batch(max(1, limit))
            if batch:
                return batch

    # -- one batch -------------------------------------------------------------------------------

    async def _next_batch(self, limit: int) -> list[StreamMessage]:
        subscription = self._subscription
        assert subscription is not None
        received: list[Msg] | None = None
        with trio.move_on_after(MISSED_HEARTBEATS * self._heartbeat):
            received = await subscription.receive_batch(limit)
        if received is None:
            self._mark_stale(f"nothing received for {MISSED_HEARTBEATS} heartbeat intervals")
            return []
        batch: list[StreamMessage] = []
        for msg in received:
            if self._stale is not None:
                break
            await self._take(msg, batch)
        if subscription.reconnects != self._reconnects:
            self._mark_stale("reconnected to NATS")
        elif subscription.dropped and not subscription.lag():
            # Everything queued before the drop is handed over; what follows it is lost (and the
            # server may wait for the answer to a flow-control request that was dropped too).
            self._mark_stale(f"the queue of {self._queue_size} was full: {subscription.dropped} dropped")
        return batch

    async def _take(self, msg: Msg, batch: list[StreamMessage]) -> None:
        headers = _headers(msg)
        if headers.status is not None:
            await self._control(msg, headers)
            return
        meta = parse_ack_subject(msg.reply_to)
        if meta is None:
            return  # not a delivery of a JetStream consumer: nothing of ours
        if meta.consumer_seq != self._consumer_seq + 1:
            self._mark_stale(f"consumer sequence {meta.consumer_seq} after {self._consumer_seq}")
            return
        self._consumer_seq = meta.consumer_seq
        if meta.stream_seq <= self._last_seq:
            return  # already handed over (by a consumer before a reset)
        self._last_seq, self._read_any = meta.stream_seq, True
        batch.append(
            StreamMessage(
                meta.stream_seq, msg.subject, msg.payload, headers.fields, meta.timestamp_ns / NANOS
            )
        )

    async def _control(self, msg: Msg, headers: HeaderBlock) -> None:
        """A heartbeat, a flow-control request, or trouble (any other status)."""
        if headers.status != STATUS_CONTROL:
            self._mark_stale(f"status {headers.status} {headers.description}".strip())
        elif msg.reply_to:  # flow control: the caller has everything sent before it
            await self._answer(msg.reply_to)
        else:
            stalled = headers.fields.get(STALLED_HEADER)
            if stalled:
                await self._answer(stalled)
            last = headers.fields.get(LAST_CONSUMER_HEADER, "")
            if last.isascii() and last.isdigit() and int(last) != self._consumer_seq:
                self._mark_stale(f"heartbeat says consumer sequence {last}, received {self._consumer_seq}")

    async def _answer(self, subject: str) -> None:
        """Answer flow control. Shielded (it only buffers): a cancel here would lose the batch
        already taken from the queue, whose sequences count as handed over."""
        try:
            with trio.CancelScope(shield=True):
                await self._js.bus.publish_msg(subject, b"")
        except BusError as exc:
            self._mark_stale(f"cannot answer flow control: {exc}")

    def _mark_stale(self, reason: str) -> None:
        if self._stale is None:
            self._stale = reason

    # -- (re)creation ----------------------------------------------------------------------------

    async def _recreate(self) -> None:
        """Drop the current consumer, create the next one after ``last_seq``; retry until timeout."""
        reason = self._stale
        deadline = trio.current_time() + self._js.timeout
        delay = RETRY_MIN
        while True:
            await self._drop()
            try:
                with trio.move_on_at(deadline) as scope:
                    await self._create()
                if scope.cancelled_caught:
                    raise JetStreamUnavailable(f"could not create a consumer on {self._stream} in time")
                break
            except JetStreamUnavailable as exc:
                if isinstance(exc, StreamGone) or trio.current_time() + delay >= deadline:
                    raise
                log.debug("creating a consumer on %s failed (%s): retrying", self._stream, exc)
            await trio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX)
        self._stale = None
        if self._created is not None and reason != "new":
            self.resets += 1
            log.info("consumer on stream %s recreated after %d (%s)", self._stream, self._last_seq, reason)

    async def _create(self) -> None:
        info = await self._js.stream_info(self._stream)
        if info is None:
            raise stream_gone(self._stream, "does not exist" if self._created is None else "was deleted")
        if self._created is not None and info.created != self._created:
            raise stream_gone(self._stream, "was deleted and created again: its sequences started over")
        if self._read_any and info.last_seq < self._last_seq:
            # Only a store that lost its last writes (a machine crash) goes back: the next
            # messages would take sequences already handed over.
            how = (
                f"went back to sequence {info.last_seq} after {self._last_seq} was read (store lost writes?)"
            )
            raise stream_gone(self._stream, how, err_code=None)
        self._created = info.created
        deliver = f"_INBOX.{secrets.token_urlsafe(16)}"
        bus = self._js.bus
        subscription = await self._stack.enter_async_context(
            bus.subscribe_msgs(deliver, queue_size=self._queue_size)
        )
        self._subscription, self._reconnects, self._consumer_seq = subscription, subscription.reconnects, 0
        self._name = await self._js.create_ordered(
            self._stream, deliver, start_seq=self._last_seq + 1, heartbeat=self._heartbeat
        )

    async def _drop(self) -> None:
        """Unsubscribe from the current consumer's inbox and ask the server to delete it."""
        if self._subscription is not None:
            self._dropped_before += self._subscription.dropped
        name, self._name, self._subscription = self._name, None, None
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()
        if name:
            await self._js.delete_consumer_soon(self._stream, name)


def _headers(msg: Msg) -> HeaderBlock:
    """The message's headers; a block that is not NATS/1.0 (a publisher's bug) reads as none."""
    if msg.headers is None:
        return HeaderBlock()
    try:
        return parse_headers(msg.headers)
    except ValueError:
        return HeaderBlock()
