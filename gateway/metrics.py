"""Prometheus metrics of one gateway instance, on its own registry (tests run several at once)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Final, Protocol

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
FD_DIR: Final = "/proc/self/fd"


class Metrics:
    """Every metric the gateway exports. Counters are bumped once per event, never per session."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("gateway_sessions", "Open WebSocket sessions.", ["endpoint"], registry=r)
        self.connections_refused = Counter(
            "gateway_connections_refused_total",
            "WebSocket handshakes refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.events_received = Counter(
            "gateway_events_received_total", "Events read from the bus.", ["topic"], registry=r
        )
        self.events_delivered = Counter(
            "gateway_events_delivered_total",
            "Messages queued to sessions (one per session per event).",
            ["topic"],
            registry=r,
        )
        self.events_dropped = Counter(
            "gateway_events_dropped_total",
            "Events or messages not delivered, by reason (bad_event, route_error, "
            "bus_disconnected, bus_overflow, bus_too_large).",
            ["topic", "reason"],
            registry=r,
        )
        self.fragment_timeouts = Counter(
            "gateway_fragment_timeouts_total",
            "Sessions closed with 1008: a fragmented message not finished within fragment_timeout.",
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            "gateway_slow_consumer_closes_total",
            "Sessions closed with 4008: too far behind (slow_consumer_lag_bytes) or not reading.",
            registry=r,
        )
        self.session_closes = Counter(
            "gateway_session_closes_total",
            "Sessions closed by the server, by close code.",
            ["code"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures_total", "Tokens refused, by error code.", ["reason"], registry=r
        )
        self.bus_lag = Gauge(
            "gateway_bus_lag",
            "Events waiting between the bus and the router.",
            ["topic"],
            registry=r,
        )
        self.bus_connected = Gauge(
            "gateway_bus_connected", "1 while the bus engine is connected, else 0.", registry=r
        )
        self.bus_reconnects = Counter(
            "gateway_bus_reconnects_total",
            "Times a remote bus connection was re-established.",
            registry=r,
        )
        self.bus_buffered_bytes = Gauge(
            "gateway_bus_buffered_bytes",
            "Bytes of outbound bus messages buffered while the broker is unreachable.",
            registry=r,
        )
        self.debounce_pending = Gauge(
            "gateway_debounce_pending", "Tree nodes waiting out their debounce period.", registry=r
        )
        self.publish_requests = Counter(
            "gateway_publish_requests_total",
            "Admin publish requests, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.handler_errors = Counter(
            "gateway_handler_errors_total",
            "Unexpected errors caught in a connection handler (each closed one session only).",
            registry=r,
        )
        self.cells_requests = Counter(
            "gateway_cells_requests_total",
            "Calls to Cells' REST API (identity, node checks), by call and outcome "
            "(2xx, 4xx, 5xx, no_answer, bad_shape).",
            ["call", "outcome"],
            registry=r,
        )
        self.identity_cache = Counter(
            "gateway_identity_cache_total",
            "Token resolutions answered from the identity cache (hit) or by a lookup (miss).",
            ["result"],
            registry=r,
        )
        self.cached = Gauge("gateway_cache_entries", "Entries held by each cache.", ["cache"], registry=r)
        self.cells_unplaced_denies = Counter(
            "gateway_cells_unplaced_denies_total",
            "Deny ACLs whose folder could not be placed (their workspaces hidden instead), each once.",
            registry=r,
        )
        self.access_refreshes = Counter(
            "gateway_access_refreshes_total",
            "Sessions whose access was recomputed after an identity event, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.presence_dropped = Counter(
            "gateway_chat_presence_dropped_total",
            "Chat presence changes not queued (queue full): a departure (presence expiry removes the "
            "member within the timeout instead) or a return (the session's next PING instead).",
            ["kind"],
            registry=r,
        )
        self.chat_refusals = Counter(
            "gateway_chat_refusals_total",
            "Chat requests refused without an error frame (subscribed without ack), by error code.",
            ["error"],
            registry=r,
        )
        self.history_replays = Counter(
            "gateway_history_replays_total",
            "Resumes served from the history (subscribe with since).",
            registry=r,
        )
        self.history_replayed_events = Counter(
            "gateway_history_replayed_events_total", "Events sent again to resuming sessions.", registry=r
        )
        self.history_gaps = Counter(
            "gateway_history_gaps_total",
            "Resumes answered with a gap, by cause (malformed, epoch, expired, unavailable).",
            ["cause"],
            registry=r,
        )
        self.history_events = Gauge("gateway_history_events", "Events kept in the history.", registry=r)
        self.history_available = Gauge(
            "gateway_history_available",
            "1 while positions are given and resumes served (0: JetStream history unreachable).",
            registry=r,
        )
        self.history_available.set(1)
        self.history_age = Gauge(
            "gateway_history_age_seconds",
            "Age of the oldest event in the history (0 when empty).",
            registry=r,
        )
        # Debug gauges, computed at scrape time: the stress suite compares them before and after a run
        # to find leaked tasks and sockets.
        self.trio_tasks = Gauge("gateway_trio_tasks", "Trio tasks alive in the process.", registry=r)
        self.trio_tasks.set_function(count_trio_tasks)
        self.open_fds = Gauge(
            "gateway_open_fds", "File descriptors open in the process (NaN without /proc).", registry=r
        )
        self.open_fds.set_function(count_open_fds)

    def watch_cache(self, name: str, size: Callable[[], float]) -> None:
        """Export a cache's size, read at scrape time."""
        self.cached.labels(name).set_function(size)

    def watch_history(self, events: Callable[[], float], age: Callable[[], float]) -> None:
        """Export the history's size and age, read at scrape time."""
        self.history_events.set_function(events)
        self.history_age.set_function(age)

    def watch_store(self, store: StoreCounters) -> None:
        """Export the chat store's own counters, read at scrape time."""
        self.registry.register(_StoreCollector(store))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoreCounters(Protocol):
    commits: int
    written: int
    failed_batches: int

    @property
    def queue_depth(self) -> int: ...


class _StoreCollector:
    def __init__(self, store: StoreCounters) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store
        yield CounterMetricFamily(
            "gateway_chat_commits", "Chat store transactions committed (each holds a batch).", store.commits
        )
        yield CounterMetricFamily("gateway_chat_writes", "Chat store writes committed.", store.written)
        yield CounterMetricFamily(
            "gateway_chat_failed_batches", "Chat store batches that failed to commit.", store.failed_batches
        )
        yield GaugeMetricFamily(
            "gateway_chat_write_queue", "Chat writes waiting for the writer.", store.queue_depth
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())


def count_trio_tasks() -> float:
    """Every task of the calling thread's trio run, walked down from its root task (NaN outside trio)."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return math.nan
    if root is None:
        return math.nan
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return float(count)


def count_open_fds() -> float:
    """File descriptors open in this process (the one listing the folder included), NaN without /proc."""
    try:
        return float(len(os.listdir(FD_DIR)))
    except OSError:
        return math.nan
