"""Every setting, declared once: its default, its environment variable, its help, whether secret."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final

ENV_PREFIX: Final = "GATEWAY_"


# Settings that are no longer read: accepted in files and the environment, with a notice naming
# what replaced them.
REPLACED: Final = {
    "outbox_max_frames": "slow_consumer_lag_bytes (bytes, not frames) and write_stall_seconds",
    "outbox_max_bytes": "slow_consumer_lag_bytes",
}


class ConfigError(Exception):
    """A setting is missing, malformed or inconsistent; the message names it."""


def setting(default: Any, help: str, *, secret: bool = False, env: bool = True) -> Any:
    """Declare one setting: its default, one line of help, and whether to mask it when shown."""
    meta = {"help": help, "secret": secret, "env": env}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be told. Field names are the TOML keys."""

    # Listeners
    listen: str = setting("[::]:5050", "WebSocket listener HOST:PORT (paths /ws, /ws/event, /chat)")
    admin_listen: str = setting("127.0.0.1:5051", "admin HTTP listener HOST:PORT (health, metrics, publish)")
    allowed_origins: tuple[str, ...] = setting(
        (),
        "browser Origins allowed to connect; requests without Origin always pass; '*' allows all",
    )
    # The edge: TLS on the listeners, the client's address behind proxies (docs/OPERATIONS.md)
    tls_cert_file: str | None = setting(
        None, "PEM certificate chain: the listener serves wss:// (with tls_key_file); reloaded on SIGHUP"
    )
    tls_key_file: str | None = setting(
        None, "PEM private key of tls_cert_file (unencrypted); reloaded on SIGHUP"
    )
    admin_tls: bool = setting(False, "serve the admin listener over HTTPS too, with the same certificate")
    trusted_proxies: tuple[str, ...] = setting(
        (), "proxy addresses or CIDRs whose forwarding header (and PROXY header) name the client"
    )
    forwarded_header: str = setting(
        "x-forwarded-for", "header the trusted proxies name the client in: x-forwarded-for or forwarded"
    )
    proxy_protocol: bool = setting(
        False, "connections from trusted_proxies start with a PROXY protocol v1/v2 header (HAProxy)"
    )
    # Identity
    identity: str = setting(
        "jwt", "who resolves tokens: jwt (verified locally) or cells (asked to Cells' REST API)"
    )
    jwt_secret: str | None = setting(None, "shared secret for HS256/384/512 tokens", secret=True)
    jwt_public_key_file: str | None = setting(None, "PEM public key for RS*/PS*/ES*/EdDSA tokens")
    jwks_file: str | None = setting(None, "JWKS file (several keys chosen by 'kid', for rotation)")
    jwt_audience: str | None = setting(None, "required 'aud' claim, when set")
    jwt_issuer: str | None = setting(None, "required 'iss' claim, when set")
    jwt_leeway: float = setting(5.0, "seconds of clock skew tolerated on exp/nbf")
    close_at_token_expiry: bool = setting(
        True, "jwt identity: close a session with 4001 when its token expires"
    )
    cells_url: str | None = setting(
        None, "cells identity: the Cells site URL, e.g. https://cells.example.com"
    )
    cells_timeout: float = setting(5.0, "cells identity: seconds a Cells REST answer may take (then 1013)")
    cells_cache_seconds: float = setting(
        60.0, "cells identity: seconds a token's resolved identity is reused"
    )
    cells_cache_max_entries: int = setting(10000, "cells identity: tokens whose identity is cached at most")
    cells_service_token_file: str | None = setting(
        None, "cells identity: file holding a personal access token of a Cells admin (sub-folder ACLs)"
    )
    cells_subfolder_acls: str = setting(
        "enforce", "cells identity: enforce sub-folder ACLs (needs the service token) or ignore them"
    )
    cells_virtual_roots: tuple[str, ...] = setting(
        ("my-files=personal/{login}", "cells=cellsdata/{login}"),
        "cells identity: virtual workspace roots as ROOT=PATH, {login} replaced by the user's login",
    )
    cells_ca_file: str | None = setting(None, "cells identity: CA bundle to verify Cells' certificate")
    admin_key: str | None = setting(None, "bearer key of the admin publish API", secret=True)
    # Sessions
    max_message_bytes: int = setting(65536, "largest inbound client message, in bytes")
    subscribe_timeout: float = setting(10.0, "seconds a new connection has to send a valid subscribe")
    handshake_timeout: float = setting(
        10.0, "seconds from connect to a complete upgrade request (PROXY header and TLS included)"
    )
    ping_interval: float = setting(30.0, "seconds between keepalive pings")
    ping_timeout: float = setting(10.0, "seconds to wait for a pong before closing with 4002")
    close_timeout: float = setting(5.0, "seconds a closing session gets to flush and say goodbye")
    slow_consumer_lag_bytes: int = setting(
        16 << 20, "bytes a session may lag behind what it was sent before it is closed with 4008"
    )
    write_stall_seconds: float = setting(
        10.0, "seconds a session's socket may take nothing while data waits, before 4008"
    )
    rate_limit: float = setting(20.0, "inbound messages per second per session (sustained)")
    rate_burst: int = setting(60, "inbound messages a session may send in a burst")
    max_sessions: int = setting(20000, "subscribed sessions in all, beyond which new connections get 503")
    max_sessions_per_ip: int = setting(1000, "subscribed sessions per client address, beyond which 429")
    max_pending_connections: int = setting(
        2000, "connections not subscribed yet (handshake, then until subscribe), beyond which 503"
    )
    max_pending_per_ip: int = setting(
        100, "connections not subscribed yet per client address, beyond which 429"
    )
    ipv6_prefix_length: int = setting(
        64, "IPv6 clients are counted per prefix of this length (per-address limits)"
    )
    fragment_timeout: float = setting(10.0, "seconds a client has to finish a fragmented message, else 1008")
    drain_timeout: float = setting(10.0, "seconds shutdown waits for sessions to close with 1001")
    # Events
    history_size: int = setting(10000, "events kept in the shared log, across all topics")
    history_seconds: float = setting(600.0, "seconds an event is kept in the shared log")
    history_backend: str = setting(
        "memory", "where positions resume from: memory (this process) or jetstream (shared, NATS bus)"
    )
    history_stream: str = setting(
        "GATEWAY_HISTORY", "jetstream history: the stream's name (created if missing)"
    )
    debounce_seconds: float = setting(1.0, "quiet period per node before a tree event is sent")
    debounce_max_pending: int = setting(10000, "nodes held by the debouncer before the oldest is flushed")
    # Bus
    bus_url: str = setting("memory://", "event bus: memory:// (in process) or nats://host:4222")
    bus_format: str = setting(
        "gateway", "event payloads: gateway (JSON, admin API) or cells (Cells' own NATS messages)"
    )
    bus_subject_prefix: str | None = setting(
        None, "cells bus format: subject prefix, by default the bus URL's host[:port] as written"
    )
    bus_queue_size: int = setting(10000, "events buffered per topic between the bus and the router")
    publish_timeout: float = setting(5.0, "seconds a publish waits for room on the bus before 503")
    nats_name: str = setting(
        "cells-ws-gateway", "NATS bus: the client name the broker shows for this gateway"
    )
    nats_max_buffer_bytes: int = setting(
        8 << 20, "NATS bus: bytes of outbound messages kept while the broker is unreachable"
    )
    nats_ping_interval: float = setting(20.0, "NATS bus: seconds between keepalive PINGs to the broker")
    nats_connect_timeout: float = setting(5.0, "NATS bus: seconds to connect (and to wait for it at start)")
    nats_reconnect_min: float = setting(0.1, "NATS bus: shortest wait before reconnecting (backoff)")
    nats_reconnect_max: float = setting(5.0, "NATS bus: longest wait before reconnecting (backoff)")
    nats_tls_ca_file: str | None = setting(None, "NATS bus: CA bundle to verify the broker (tls:// URLs)")
    # Admin API
    admin_max_body: int = setting(1 << 20, "largest admin API request body, beyond which 413")
    admin_max_batch: int = setting(10000, "most events in one batch publish")
    # Chat
    db_url: str = setting("sqlite:///gateway.db", "chat store: sqlite:///PATH or postgresql+psycopg://...")
    chat_history_on_join: bool = setting(
        False, "send the latest page of history after a JOIN (Cells' client asks with HISTORY itself)"
    )
    chat_history_page: int = setting(40, "messages in the history page sent after a JOIN")
    chat_max_message_bytes: int = setting(8192, "longest chat message, in bytes")
    chat_max_rooms_per_session: int = setting(50, "rooms one chat session may join")
    chat_posts_per_second: float = setting(5.0, "posts per second per user (sustained)")
    chat_post_burst: int = setting(20, "posts a user may send in a burst")
    chat_presence_timeout: float = setting(20.0, "seconds without a PING before a user leaves a room")
    chat_rooms_created_per_hour: int = setting(20, "chat rooms one user may create in an hour")
    chat_empty_room_ttl: float = setting(
        3600.0, "seconds a chat room with no member and no message is kept before it is deleted"
    )
    chat_history_page_bytes: int = setting(
        1 << 20, "most bytes of messages in one chat history page (a page cut short says where to go on)"
    )
    node_check_url: str | None = setting(
        None, "URL asked whether a user may see a node, with {uuid}; the user's token is forwarded"
    )
    node_check_open: bool = setting(False, "development only: open every NODE room to every user")
    node_check_cache_seconds: float = setting(30.0, "seconds a node-access answer is cached")
    node_checks_per_second: float = setting(1.0, "node-access checks sent per second per user (sustained)")
    node_check_burst: int = setting(10, "node-access checks one user may cause in a burst")
    # Logs
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("auto", "json, text, or auto (text on a terminal, JSON otherwise)")
    # Development mode: generated secrets, permissive local Origins. Never set from a file or env.
    dev: bool = setting(False, "development mode (make run): generated keys", env=False)
    notices: tuple[str, ...] = setting((), "what loading had to say (replaced settings)", env=False)

    def with_changes(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()
