"""Prometheus metrics of one gateway instance, on its own registry (tests run several at once)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


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
            "Events or messages not delivered, by reason (bad_event, invalid_path, "
            "slow_consumer, bus_disconnected, bus_overflow).",
            ["topic", "reason"],
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            "gateway_slow_consumer_closes_total",
            "Sessions closed with 4008 because their outbound queue overflowed.",
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
