"""Topic subscription tasks: bus -> codec -> (debounce, for tree topics) -> pure routing -> hub fan-out.

One task per topic reads its subscription in batches, decodes each payload with the configured
codec (the gateway's JSON, or Cells' own protobuf messages) and routes each event without awaiting
any session; a batch is fanned out completely before the next checkpoint, so each writer then
flushes everything queued for its session in one write. Tree topics also run a timer task that
releases debounced events when their quiet period ends. Identity events also go to ``on_idm``
(access recomputation) once routed. A payload that does not decode costs itself only: counted,
logged at most once a minute per topic, never a stall of the topic or of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from gateway.bus.base import Bus
from gateway.config import Settings
from gateway.events import route
from gateway.events.codec import BadEvent, EventCodec
from gateway.events.debounce import Debouncer
from gateway.events.model import JsonObject
from gateway.hub import Hub
from gateway.logs import Throttle
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS, IDM_TOPIC, TREE_TOPICS

log = logging.getLogger("gateway.dispatch")

# Events routed per wake-up. Writers run only between batches, so this bounds the latency a
# burst adds (about 1 ms per event at 1,000 recipients) while still batching their writes.
BATCH: Final = 32
BAD_EVENT_LOG_INTERVAL: Final = 60.0


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        hub: Hub,
        metrics: Metrics,
        codec: EventCodec,
        *,
        on_idm: Callable[[JsonObject], None] | None = None,
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._metrics = metrics
        self._codec = codec
        self._on_idm = on_idm
        self._bad_event_log = Throttle(BAD_EVENT_LOG_INTERVAL)
        self._debouncers = {
            topic: Debouncer(settings.debounce_seconds, settings.debounce_max_pending)
            for topic in TREE_TOPICS
        }
        self._timer_wakeups = {topic: trio.Event() for topic in TREE_TOPICS}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for topic in EVENT_TOPICS:
                await nursery.start(self._consume, topic)
            for topic in TREE_TOPICS:
                nursery.start_soon(self._release_debounced, topic)
            task_status.started()

    def flush(self) -> None:
        """Route every debounced event now (at shutdown, so none is lost with the sessions)."""
        for topic, debouncer in self._debouncers.items():
            self._route_all(topic, debouncer.flush())
            self._metrics.debounce_pending.set(self._pending())

    async def _consume(
        self, topic: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        received = self._metrics.events_received.labels(topic)
        lag = self._metrics.bus_lag.labels(topic)
        async with self._bus.subscribe(topic) as subscription:
            task_status.started()
            while True:
                batch = await subscription.receive_batch(BATCH)
                received.inc(len(batch))
                lag.set(subscription.lag())
                for data in batch:
                    event = self.decode(topic, data)
                    if event is not None:
                        self._accept(topic, event)

    def decode(self, topic: str, data: bytes) -> JsonObject | None:
        """The event a payload holds, or None (counted and logged) when it does not decode."""
        try:
            return self._codec.decode(topic, data)
        except BadEvent as exc:
            self._metrics.events_dropped.labels(topic, "bad_event").inc()
            if self._bad_event_log.allow(topic, trio.current_time()):
                log.warning(
                    "dropped a payload of %d bytes on subject %s: %s (at most one such message a minute "
                    "per topic; gateway_events_dropped_total counts them all)",
                    len(data),
                    self._bus.subject(topic),
                    exc,
                )
            return None

    def _accept(self, topic: str, event: JsonObject) -> None:
        debouncer = self._debouncers.get(topic)
        if debouncer is None:
            self.deliver(topic, event)
            return
        had_deadline = debouncer.next_deadline()
        self._route_all(topic, debouncer.add(event, trio.current_time()))
        self._metrics.debounce_pending.set(self._pending())
        if debouncer.next_deadline() != had_deadline:
            self._timer_wakeups[topic].set()

    def _route_all(self, topic: str, events: list[JsonObject]) -> None:
        for event in events:
            self.deliver(topic, event)

    def deliver(self, topic: str, event: JsonObject, seq: int | None = None) -> None:
        """Route one event to the sessions (at stream sequence ``seq`` with a JetStream history);
        identity events then go to ``on_idm``."""
        try:
            self._hub.fan_out(topic, route(topic, event, self._hub.covering), event, seq)
        except Exception:
            # A routing bug must cost one event, not the topic: count it, log it, go on.
            self._metrics.events_dropped.labels(topic, "route_error").inc()
            log.exception("failed to route an event on %s", topic)
        if topic == IDM_TOPIC and self._on_idm is not None:
            self._on_idm(event)

    async def _release_debounced(self, topic: str) -> None:
        debouncer = self._debouncers[topic]
        while True:
            deadline = debouncer.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 3600):
                await self._timer_wakeups[topic].wait()
            self._timer_wakeups[topic] = trio.Event()
            self._route_all(topic, debouncer.due(trio.current_time()))
            self._metrics.debounce_pending.set(self._pending())

    def _pending(self) -> int:
        return sum(len(d) for d in self._debouncers.values())
