"""Settings: built-in defaults < TOML file < ``GATEWAY_*`` environment < command-line flags.

Every setting is declared once, in :class:`Settings`, with its environment variable, its help text
and whether it is a secret; the configuration reference in ``docs/OPERATIONS.md`` and
``gateway check-config`` are generated from these declarations.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, get_type_hints

ENV_PREFIX: Final = "GATEWAY_"
MIN_SECRET_BYTES: Final = 32
MAX_HISTORY_PAGE: Final = 200  # the most messages one HISTORY page may hold (gateway.chat.protocol)


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
    handshake_timeout: float = setting(10.0, "seconds a TCP client has to finish the HTTP handshake")
    ping_interval: float = setting(30.0, "seconds between keepalive pings")
    ping_timeout: float = setting(10.0, "seconds to wait for a pong before closing with 4002")
    close_timeout: float = setting(5.0, "seconds a closing session gets to flush and say goodbye")
    outbox_max_frames: int = setting(2048, "frames queued for one session before it is a slow consumer")
    outbox_max_bytes: int = setting(4 << 20, "bytes queued for one session before it is a slow consumer")
    rate_limit: float = setting(20.0, "inbound messages per second per session (sustained)")
    rate_burst: int = setting(60, "inbound messages a session may send in a burst")
    max_sessions: int = setting(20000, "open WebSocket connections in all, beyond which 503")
    max_sessions_per_ip: int = setting(1000, "open WebSocket connections per client IP, beyond which 429")
    drain_timeout: float = setting(10.0, "seconds shutdown waits for sessions to close with 1001")
    # Events
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
    node_check_url: str | None = setting(
        None, "URL asked whether a user may see a node, with {uuid}; the user's token is forwarded"
    )
    node_check_open: bool = setting(False, "development only: open every NODE room to every user")
    node_check_cache_seconds: float = setting(30.0, "seconds a node-access answer is cached")
    # Logs
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("auto", "json, text, or auto (text on a terminal, JSON otherwise)")
    # Development mode: generated secrets, permissive local Origins. Never set from a file or env.
    dev: bool = setting(False, "development mode (make run): generated keys", env=False)

    def with_changes(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def load(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers and validate. ``overrides`` holds flags already parsed (None = unset)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_file(Path(config_file)))
    values.update(_from_env(os.environ if env is None else env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = Settings(**values)
    validate(settings)
    return settings


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields() if f.metadata["env"]}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[key] = _coerce(key, value)
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for f in fields():
        if f.metadata["env"] and (raw := env.get(env_name(f.name))) is not None:
            values[f.name] = _coerce(f.name, raw, source=env_name(f.name))
    return values


_HINTS: Final = get_type_hints(Settings)


def _coerce(name: str, value: Any, source: str | None = None) -> Any:
    """Convert a TOML value or an environment string to the setting's type."""
    hint = _HINTS[name]
    where = source or name
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, str):  # str and str | None
        return value
    raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        tuple[str, ...]: "list of strings",
    }.get(hint, "string")


def validate(settings: Settings) -> None:
    """Reject values that cannot work, naming the setting."""
    parse_host_port(settings.listen, "listen")
    parse_host_port(settings.admin_listen, "admin_listen")
    positive = [
        "jwt_leeway", "max_message_bytes", "subscribe_timeout", "handshake_timeout",
        "ping_interval", "ping_timeout", "close_timeout", "outbox_max_frames", "outbox_max_bytes",
        "rate_limit", "rate_burst", "max_sessions", "max_sessions_per_ip", "drain_timeout",
        "debounce_max_pending", "bus_queue_size", "publish_timeout", "admin_max_body",
        "admin_max_batch", "chat_history_page", "chat_max_message_bytes", "chat_max_rooms_per_session",
        "chat_posts_per_second", "chat_post_burst", "chat_presence_timeout", "node_check_cache_seconds",
        "cells_timeout", "cells_cache_seconds", "cells_cache_max_entries",
    ]  # fmt: skip
    for name in positive:
        value = getattr(settings, name)
        if not (value > 0 and math.isfinite(value)) and not (name == "jwt_leeway" and value == 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if not (0 <= settings.debounce_seconds < 3600):
        raise ConfigError(f"debounce_seconds must be between 0 and 3600, got {settings.debounce_seconds}")
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
    if settings.chat_history_page > MAX_HISTORY_PAGE:
        raise ConfigError(
            f"chat_history_page must be at most {MAX_HISTORY_PAGE}, got {settings.chat_history_page}"
        )
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
}


def _validate_choices(settings: Settings) -> None:
    for name, allowed in CHOICES.items():
        if getattr(settings, name) not in allowed:
            raise ConfigError(f"{name} must be {' or '.join(allowed)}, got {getattr(settings, name)!r}")
    if settings.bus_format == "cells" and not settings.bus_url.startswith(("nats://", "tls://")):
        raise ConfigError("bus_format = cells reads Cells' NATS subjects: set bus_url to Cells' broker")
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


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as a plain mapping, secrets masked, for ``check-config`` and startup logs."""
    shown = {}
    for f in fields():
        value = getattr(settings, f.name)
        if f.metadata["secret"] and value:
            value = "***"
        shown[f.name] = value
    return shown


def reference_markdown() -> str:
    """The configuration reference table (docs/OPERATIONS.md embeds it; a test keeps them equal)."""
    rows = ["| setting (TOML key) | environment | default | meaning |", "|---|---|---|---|"]
    for f in fields():
        env = f"`{env_name(f.name)}`" if f.metadata["env"] else "(flag only)"
        default = "unset" if f.default is None else f"`{_show_default(f.default)}`"
        rows.append(f"| `{f.name}` | {env} | {default} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)
