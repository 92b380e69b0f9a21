"""The front of a connection: what comes before its HTTP request, and who its client is.

Between accept and the HTTP request: the PROXY protocol header, when a trusted proxy sends one
(read exactly, so that what follows is untouched), then the TLS handshake; both before the
handshake deadline. After the request: the client a trusted proxy names in its forwarding header.
Every client address the gateway goes by (per-address limits, logs) comes from here, in one
spelling (:func:`gateway.edge.proxies.canonical`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from gateway.config import Settings
from gateway.edge import proxy_protocol
from gateway.edge.proxies import TrustedProxies, canonical, forwarded_client
from gateway.edge.proxy_protocol import ProxyHeader, ProxyHeaderError
from gateway.edge.tls import ServerTls
from gateway.logs import Throttle

log = logging.getLogger("gateway.edge")

LOG_INTERVAL: Final = 60.0  # seconds between two log lines about the same kind of refusal


class Quiet(Exception):
    """The peer closed before sending a byte: a TCP health check, not worth a log line."""


@dataclass(frozen=True, slots=True)
class Opened:
    stream: trio.abc.Stream  # ready for HTTP: TLS, when configured, is established
    address: str  # the peer, or the client its trusted proxy's PROXY header names


class Front:
    def __init__(
        self,
        *,
        tls: ServerTls | None = None,
        trusted: TrustedProxies | None = None,
        proxy_protocol: bool = False,
        forwarded_header: str = "x-forwarded-for",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.tls = tls
        self.trusted = trusted or TrustedProxies()
        self.proxy_protocol = proxy_protocol
        self.forwarded_header = forwarded_header
        self._on_refused = on_refused  # counts refusals by reason (a metrics label)
        self._throttle = Throttle(LOG_INTERVAL)

    @classmethod
    def for_listener(
        cls, settings: Settings, tls: ServerTls | None, on_refused: Callable[[str], None] | None = None
    ) -> Front:
        """The WebSocket listener's front, as the settings describe it (validated already)."""
        return cls(
            tls=tls,
            trusted=TrustedProxies.parse(settings.trusted_proxies),
            proxy_protocol=settings.proxy_protocol,
            forwarded_header=settings.forwarded_header,
            on_refused=on_refused,
        )

    async def open(self, stream: trio.abc.Stream, peer: str, deadline: float) -> Opened | None:
        """The connection ready for HTTP and its address; None when refused (counted, logged when
        the operator has something to fix) or not done by ``deadline``."""
        address = canonical(peer)
        with trio.move_on_at(deadline):
            try:
                if self.proxy_protocol and self.trusted.trusts(address):
                    header = await read_proxy_header(stream)
                    address = canonical(header.client) if header.client is not None else address
                if self.tls is not None:
                    stream = self.tls.wrap(stream)
                    await stream.do_handshake()
            except Quiet:
                return None
            except ProxyHeaderError as exc:
                self._refused("proxy_header", address, "closed a connection from trusted proxy %s: %s", exc)
                return None
            except trio.BrokenResourceError as exc:
                self._tls_failed(address, exc.__cause__)
                return None
            return Opened(stream, address)
        self._refused("handshake_timeout", address)
        return None

    def client(self, address: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
        """The client behind ``address``: the one its forwarding header names, when it is trusted."""
        return canonical(forwarded_client(address, headers, self.trusted, self.forwarded_header))

    def _tls_failed(self, address: str, cause: BaseException | None) -> None:
        if isinstance(cause, ssl.SSLError) and cause.reason == "HTTP_REQUEST":
            # A proxy_pass http:// (or a ws:// URL) aimed at the TLS listener: say so where operators look.
            self._refused(
                "tls_handshake",
                address,
                "%s spoke plain HTTP to the TLS listener (use wss://, or https:// in the proxy): %s",
                cause,
            )
            return
        self._refused("tls_handshake", address)
        log.debug("TLS handshake with %s failed: %s", address, cause or "connection closed")

    def _refused(self, reason: str, address: str, message: str = "", detail: object = None) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)
        if message and self._throttle.allow(reason, trio.current_time()):
            log.warning(message + " (at most one such line a minute)", address, detail)


async def read_proxy_header(stream: trio.abc.Stream) -> ProxyHeader:
    """Read exactly one PROXY protocol header (never a byte past it) and parse it."""
    data = b""
    while wanted := proxy_protocol.bytes_wanted(data):
        try:
            chunk = await stream.receive_some(wanted)
        except trio.BrokenResourceError:  # reset by the peer
            chunk = b""
        if not chunk:
            if not data:
                raise Quiet
            raise ProxyHeaderError(f"the connection ended inside the PROXY header ({len(data)} bytes)")
        data += chunk
    return proxy_protocol.parse(data)
