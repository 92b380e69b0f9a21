"""The JetStream history at work: the stream feeds the router, and the fallback when it cannot.

With ``history_backend = "jetstream"`` an instance takes the platform's events from the history
stream instead of plain subscriptions, with an ordered consumer, so it knows each message's stream
sequence; the sequencer decides what is delivered at which sequence (the same on every instance),
the router delivers it at that position, and a timer publishes the release records of the debounce.

At start the consumer reads the whole stream before the gateway accepts sessions (the history a
position resumes from, and the batches still waiting). If JetStream fails later, the instance falls
back to the dispatcher's plain subscriptions: events go out without ``@position`` and every resume
gets a ``gap`` with reason ``unavailable``; it checks the stream again every ``RETRY`` seconds and,
once it answers, follows it again from its end (positions from before are answered with a gap:
what went out meanwhile had none, so a replay could only repeat it).
"""

from __future__ import annotations

import logging
from typing import Final

import trio

from gateway.bus.nats.bus import NatsBus
from gateway.bus.nats.jetstream import (
    JetStream,
    JetStreamError,
    JetStreamUnavailable,
    OrderedConsumer,
    StreamInfo,
    StreamMessage,
)
from gateway.config import ConfigError, Settings
from gateway.delivery.log import UNAVAILABLE, EventLog
from gateway.dispatch import Dispatcher
from gateway.history import records
from gateway.history.sequencer import MARKER, Delivered, Sequencer
from gateway.history.stream import ensure_stream, epoch_of, stream_subjects
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS

log = logging.getLogger("gateway.history")

BATCH: Final = 64
RETRY: Final = 5.0  # seconds between checks of the stream while falling back
# The consumer's idle heartbeat: two missed ones mean the stream or JetStream is gone.
HEARTBEAT: Final = 5.0
# How long a resume waits for this instance to reach a position another instance gave.
CATCH_UP_WAIT: Final = 2.0
# The record an instance publishes when JetStream is back: it follows the stream from there.
RESUMED: Final = records.Release("", MARKER + "resumed", 0, {})


class JetStreamHistory:
    def __init__(
        self, settings: Settings, bus: NatsBus, log_: EventLog, dispatcher: Dispatcher, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._js = JetStream(bus, timeout=settings.nats_connect_timeout)
        self._log = log_
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._name = settings.history_stream
        self._records = records.record_subject(self._name)
        self._topics = {bus.subject(topic): topic for topic in EVENT_TOPICS}
        self._subjects = stream_subjects(list(self._topics), self._name)
        self._sequencer = self._new_sequencer()
        self._published: set[str] = set()  # records published and not yet back
        self._wakeup = trio.Event()  # the release timer has something new to look at
        self._advanced = trio.Event()  # the log reached a newer sequence
        self._failure: JetStreamError | None = None  # why following the stream stopped

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Catch up with the stream, then follow it; ConfigError at start when it cannot serve."""
        info = await ensure_stream(self._js, self._settings, self._subjects)
        self._log.restart(epoch_of(info), max(0, info.first_seq - 1))
        start, head = info.first_seq, info.last_seq
        while True:
            try:
                consumer_at = self._js.ordered_consumer(self._name, start_seq=start, heartbeat=HEARTBEAT)
                async with consumer_at as consumer:
                    await self._catch_up(consumer, head)
                    task_status.started()
                    task_status = trio.TASK_STATUS_IGNORED
                    await self._follow(consumer)
            except JetStreamError as exc:
                if task_status is not trio.TASK_STATUS_IGNORED:  # not even caught up once
                    raise ConfigError(
                        f"history_backend = jetstream: cannot read the stream {self._name} ({exc}); "
                        "check that JetStream is enabled and has room, or set history_backend = memory"
                    ) from None
                log.warning("the JetStream history failed (%s): plain subscriptions, no positions", exc)
                info, marker = await self._fall_back()
                start, head = marker + 1, marker
                self._sequencer = self._new_sequencer()
                # Positions up to the marker cannot be resumed from (a gap, never a replay that
                # skips what went out without a position meanwhile); the epoch stays the stream's.
                self._log.restart(epoch_of(info), marker)
                log.info("the JetStream history is back: positions from %s", self._log.position())

    def _new_sequencer(self) -> Sequencer:
        return Sequencer(self._settings.debounce_seconds, self._settings.debounce_max_pending)

    async def reached(self, position: str) -> None:
        """Wait (bounded) until this instance has read as far as ``position`` when another
        instance gave it: a client that fails over must get what it missed, not a gap."""
        with trio.move_on_after(CATCH_UP_WAIT):
            while self._log.suspended is None and self._log.is_ahead(position):
                await self._advanced.wait()

    # -- following the stream ----------------------------------------------------------------

    async def _catch_up(self, consumer: OrderedConsumer, head: int) -> None:
        """Read the stream up to ``head`` before taking sessions (none are there to deliver to).
        A quiet consumer means the rest expired meanwhile."""
        while consumer.last_seq < head:
            with trio.move_on_after(self._settings.nats_connect_timeout) as quiet:
                self._take(await consumer.receive_batch(BATCH))
            if quiet.cancelled_caught:
                break
        log.info("JetStream history %s read up to sequence %d", self._name, consumer.last_seq)

    async def _follow(self, consumer: OrderedConsumer) -> None:
        """Deliver what the stream brings and publish release records until JetStream fails."""
        self._failure = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._release_timer, nursery.cancel_scope)
            try:
                while True:
                    self._take(await consumer.receive_batch(BATCH))
            except JetStreamError as exc:
                self._failure = exc
                nursery.cancel_scope.cancel()
        raise self._failure or JetStreamUnavailable("the consumer stopped")

    def _take(self, batch: list[StreamMessage]) -> None:
        now = trio.current_time()
        deadline = self._sequencer.next_deadline()
        for message in batch:
            for delivered in self._sequence(message, now):
                self._dispatcher.deliver(delivered.topic, delivered.event, delivered.seq)
        if self._sequencer.outbox() or self._sequencer.next_deadline() != deadline:
            self._wakeup.set()  # records to publish, or the release timer must look again
        self._advanced.set()
        self._advanced = trio.Event()
        self._metrics.debounce_pending.set(self._sequencer.pending())

    def _sequence(self, message: StreamMessage, now: float) -> list[Delivered]:
        if message.subject == self._records:
            try:
                release = records.decode(message.data)
            except records.BadRecord as exc:
                self._metrics.events_dropped.labels("history", "bad_event").inc()
                log.warning("skipped stream message %d on %s: %s", message.seq, message.subject, exc)
                return []
            self._published.discard(release.msg_id)
            return self._sequencer.record(message.seq, release)
        topic = self._topics.get(message.subject)
        if topic is None:
            return []
        self._metrics.events_received.labels(topic).inc()
        event = self._dispatcher.decode(topic, message.data)
        return [] if event is None else self._sequencer.raw(message.seq, topic, event, now)

    async def _release_timer(self, scope: trio.CancelScope) -> None:
        """Publish release records: when a quiet period ends, and when a message released some."""
        try:
            await self._publish_releases()
        except JetStreamError as exc:
            self._failure = exc
            scope.cancel()

    async def _publish_releases(self) -> None:
        while True:
            deadline = self._sequencer.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 3600):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._sequencer.due(trio.current_time())
            for release in self._sequencer.outbox():
                # Skip what is back already (another instance's copy may land while we publish).
                if release.msg_id in self._published or not self._sequencer.waiting(release.msg_id):
                    continue
                self._published.add(release.msg_id)
                await self._js.publish(self._records, records.encode(release), msg_id=release.msg_id)
            self._published = {m for m in self._published if self._sequencer.waiting(m)}

    # -- without the stream ----------------------------------------------------------------

    async def _fall_back(self) -> tuple[StreamInfo, int]:
        """Plain subscriptions until the stream answers again (created again if it was removed);
        returns its state then and the sequence of the marker this instance follows it from."""
        self._log.suspend(UNAVAILABLE)
        self._metrics.history_available.set(0)
        for topic, event in self._sequencer.flush():
            self._dispatcher.deliver(topic, event)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._dispatcher.run)
            while True:
                await trio.sleep(RETRY)
                try:
                    info = await ensure_stream(self._js, self._settings, self._subjects)
                    marker = await self._js.publish(self._records, records.encode(RESUMED))
                except (ConfigError, JetStreamError) as exc:
                    log.debug("the JetStream history is still unavailable: %s", exc)
                    continue
                break
            self._dispatcher.flush()  # what the plain subscriptions' debounce holds goes now
            nursery.cancel_scope.cancel()
        self._published.clear()
        self._metrics.history_available.set(1)
        return info, marker
