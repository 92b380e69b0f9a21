"""Values that cannot work are refused at start, with a message naming the setting."""

from __future__ import annotations

import math
import re
from typing import Final

from gateway.chat.protocol import MAX_PAGE
from gateway.config.settings import ConfigError, Settings
from gateway.edge.proxies import parse_network

MIN_SECRET_BYTES: Final = 32


def validate(settings: Settings) -> None:
    """Reject values that cannot work, naming the setting."""
    parse_host_port(settings.listen, "listen")
    parse_host_port(settings.admin_listen, "admin_listen")
    positive = [
        "jwt_leeway", "max_message_bytes", "subscribe_timeout", "handshake_timeout",
        "ping_interval", "ping_timeout", "close_timeout", "slow_consumer_lag_bytes", "write_stall_seconds",
        "history_size", "history_seconds",
        "rate_limit", "rate_burst", "max_sessions", "max_sessions_per_ip", "drain_timeout",
        "max_pending_connections", "max_pending_per_ip", "fragment_timeout",
        "debounce_max_pending", "bus_queue_size", "publish_timeout", "admin_max_body",
        "admin_max_batch", "chat_history_page", "chat_max_message_bytes", "chat_max_rooms_per_session",
        "chat_posts_per_second", "chat_post_burst", "chat_presence_timeout", "node_check_cache_seconds",
        "node_checks_per_second", "node_check_burst",
        "chat_rooms_created_per_hour", "chat_empty_room_ttl", "chat_history_page_bytes",
        "cells_timeout", "cells_cache_seconds", "cells_cache_max_entries", "nats_max_buffer_bytes",
        "nats_ping_interval", "nats_connect_timeout", "nats_reconnect_min", "nats_reconnect_max",
    ]  # fmt: skip
    for name in positive:
        value = getattr(settings, name)
        if not (value > 0 and math.isfinite(value)) and not (name == "jwt_leeway" and value == 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not (0 <= settings.debounce_seconds < 3600):
        raise ConfigError(f"debounce_seconds must be between 0 and 3600, got {settings.debounce_seconds}")
    if not 1 <= settings.ipv6_prefix_length <= 128:
        raise ConfigError(f"ipv6_prefix_length must be between 1 and 128, got {settings.ipv6_prefix_length}")
    if settings.log_level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log_level must be debug, info, warning or error, got {settings.log_level!r}")
    if settings.log_format not in {"auto", "json", "text"}:
        raise ConfigError(f"log_format must be auto, json or text, got {settings.log_format!r}")
    if not settings.bus_url.startswith(("memory://", "nats://", "tls://")):
        raise ConfigError(f"bus_url must be memory:// or nats://HOST:PORT, got {settings.bus_url!r}")
    if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"jwt_secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section 3.2); "
            "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    _validate_choices(settings)
    _validate_edge(settings)
    if settings.chat_history_page > MAX_PAGE:
        raise ConfigError(f"chat_history_page must be at most {MAX_PAGE}, got {settings.chat_history_page}")
    if not settings.db_url.startswith(("sqlite:", "postgresql")):
        raise ConfigError(
            f"db_url must be sqlite:///PATH or postgresql+psycopg://..., got {settings.db_url!r}"
        )
    if settings.node_check_url is not None and "{uuid}" not in settings.node_check_url:
        raise ConfigError("node_check_url must contain {uuid}, where the node uuid goes")
    for origin in settings.allowed_origins:
        if origin != "*" and "://" not in origin:
            raise ConfigError(f"allowed_origins: {origin!r} is not an origin like https://host[:port]")


CHOICES: Final = {
    "identity": ("jwt", "cells"),
    "bus_format": ("gateway", "cells"),
    "cells_subfolder_acls": ("enforce", "ignore"),
    "forwarded_header": ("x-forwarded-for", "forwarded"),
    "history_backend": ("memory", "jetstream"),
}
# A JetStream stream name: no whitespace, dots, wildcards or path separators (NATS' rule).
_STREAM_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _validate_edge(settings: Settings) -> None:
    """TLS files come in pairs; proxies are networks; a PROXY header is expected only from them."""
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigError("tls_cert_file and tls_key_file go together: set both (wss://) or neither")
    if settings.admin_tls and not settings.tls_cert_file:
        raise ConfigError("admin_tls serves the admin listener with tls_cert_file and tls_key_file: set them")
    for entry in settings.trusted_proxies:
        try:
            parse_network(entry)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None
    if settings.proxy_protocol and not settings.trusted_proxies:
        raise ConfigError(
            "proxy_protocol expects the PROXY header from trusted_proxies only: list your proxies there"
        )


def _validate_choices(settings: Settings) -> None:
    for name, allowed in CHOICES.items():
        if getattr(settings, name) not in allowed:
            raise ConfigError(f"{name} must be {' or '.join(allowed)}, got {getattr(settings, name)!r}")
    if settings.bus_format == "cells" and not settings.bus_url.startswith(("nats://", "tls://")):
        raise ConfigError("bus_format = cells reads Cells' NATS subjects: set bus_url to Cells' broker")
    if settings.history_backend == "jetstream" and not settings.bus_url.startswith(("nats://", "tls://")):
        raise ConfigError(
            "history_backend = jetstream keeps the history in NATS: set bus_url to a NATS broker"
        )
    if not _STREAM_NAME.fullmatch(settings.history_stream):
        raise ConfigError(
            f"history_stream must be 1-64 letters, digits, '-' or '_', got {settings.history_stream!r}"
        )
    if settings.cells_url is not None and not settings.cells_url.startswith(("http://", "https://")):
        raise ConfigError(f"cells_url must be an http:// or https:// URL, got {settings.cells_url!r}")
    for entry in settings.cells_virtual_roots:
        root, sep, template = entry.partition("=")
        if not sep or not root or not template:
            raise ConfigError(
                f"cells_virtual_roots: {entry!r} is not ROOT=PATH (e.g. my-files=personal/{{login}})"
            )


def parse_host_port(value: str, name: str = "address") -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` -> (host, port); host '' means all interfaces."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name}: {value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{name}: IPv6 addresses need brackets, e.g. [::1]:5050, got {value!r}")
    return host, int(port_text)
