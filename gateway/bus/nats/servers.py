"""Where the NATS brokers are and how to introduce ourselves to them. Pure: no I/O.

``nats://[user:pass@|token@]host[:port]`` URLs (several, comma-separated), the CONNECT options we
declare, and the prefix of Cells' subjects for a broker URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from gateway.bus.nats.protocol import DEFAULT_PORT, Info


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One broker to try: where, whether to use TLS, and the credentials from its URL."""

    host: str
    port: int
    tls: bool = False
    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """For logs: scheme, host and port, never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls' if self.tls else 'nats'}://{host}:{self.port}"


def parse_servers(url: str) -> list[ServerAddress]:
    """``nats://[user:pass@|token@]host[:port]`` or ``tls://...``, or a comma-separated list."""
    servers = [_parse_server(part.strip()) for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers


def _parse_server(url: str) -> ServerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls"):
        raise ValueError(f"a NATS URL starts with nats:// or tls://, got {_redact(url)!r}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid port in NATS URL {_redact(url)!r}") from None
    if not host:
        raise ValueError(f"no host in NATS URL {_redact(url)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a NATS URL has no path, query or fragment: {_redact(url)!r}")
    user = unquote(parts.username) if parts.username else None
    if parts.password is not None:
        return ServerAddress(host, port, parts.scheme == "tls", user=user, password=unquote(parts.password))
    return ServerAddress(host, port, parts.scheme == "tls", token=user)


def cells_subject_prefix(url: str) -> str:
    """The prefix of Cells' subjects for its broker URL: the host[:port] exactly as written.

    Cells builds a topic's subject as ``path.Join(u.Host, topic)``: user and password are not part
    of it, the port only when the URL writes one, and ``localhost`` is not ``127.0.0.1``.
    """
    first = url.split(",")[0].strip()
    return urlsplit(first).netloc.rpartition("@")[2]


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


def connect_options(
    info: Info, server: ServerAddress, *, name: str, version: str, tls: bool
) -> dict[str, object]:
    """What we declare in CONNECT: no +OK acks, no echo suppression, headers only if supported.

    ``no_responders`` (a request nobody listens to gets an immediate 503 status instead of a
    timeout) needs headers, so it goes with them.
    """
    headers = info.flag("headers")
    options: dict[str, object] = {
        "verbose": False,
        "pedantic": False,
        "tls_required": tls,
        "name": name,
        "lang": "python-trio",
        "version": version,
        "protocol": 1,
        "headers": headers,
        "no_responders": headers,
    }
    if server.user is not None:
        options["user"] = server.user
        options["pass"] = server.password or ""
    elif server.token is not None:
        options["auth_token"] = server.token
    return options
