"""Topic subscription tasks: bus -> (debounce, for tree topics) -> pure routing -> hub fan-out.

One task per topic reads its subscription in batches and routes each event without awaiting any
session; a batch is fanned out completely before the next checkpoint, so each writer then flushes
everything queued for its session in one write. Tree topics also run a timer task that releases
debounced events when their quiet period ends.
"""

from __future__ import annotations

import json
import logging
from typing import Final

import trio

from gateway.bus import Bus
from gateway.config import Settings
from gateway.events import route
from gateway.events.debounce import Debouncer
from gateway.events.model import JsonObject
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.topics import EVENT_TOPICS, TREE_TOPICS

log = logging.getLogger("gateway.dispatch")

# Events routed per wake-up. Writers run only between batches, so this bounds the latency a
# burst adds (about 1 ms per event at 1,000 recipients) while still batching their writes.
BATCH: Final = 32


class Dispatcher:
    def __init__(self, settings: Settings, bus: Bus, hub: Hub, metrics: Metrics) -> None:
        self._bus = bus
        self._hub = hub
        self._metrics = metrics
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
                    event = self._decode(topic, data)
                    if event is not None:
                        self._accept(topic, event)

    def _decode(self, topic: str, data: bytes) -> JsonObject | None:
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            self._metrics.events_dropped.labels(topic, "bad_event").inc()
            log.warning("dropped an event on %s that is not a JSON object", topic)
            return None
        return event

    def _accept(self, topic: str, event: JsonObject) -> None:
        debouncer = self._debouncers.get(topic)
        if debouncer is None:
            self._route_all(topic, [event])
            return
        had_deadline = debouncer.next_deadline()
        self._route_all(topic, debouncer.add(event, trio.current_time()))
        self._metrics.debounce_pending.set(self._pending())
        if debouncer.next_deadline() != had_deadline:
            self._timer_wakeups[topic].set()

    def _route_all(self, topic: str, events: list[JsonObject]) -> None:
        for event in events:
            try:
                self._hub.fan_out(topic, route(topic, event, self._hub.covering))
            except Exception:
                # A routing bug must cost one event, not the topic: count it, log it, go on.
                self._metrics.events_dropped.labels(topic, "route_error").inc()
                log.exception("failed to route an event on %s", topic)

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
