"""One gateway instance: every service in one root nursery, and its graceful shutdown.

Start order: chat-store migrations, bus, chat store, dispatcher, chat service, WebSocket listener,
admin listener; ``task_status.started`` hands
back the running :class:`Gateway` (with its bound ports) once all of them accept work. On
:meth:`Gateway.stop` (SIGTERM/SIGINT under :func:`serve`): readiness goes false, debounced events
are routed, every session is closed with 1001 within ``drain_timeout``, then the rest is cancelled.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import trio
from sqlalchemy.exc import SQLAlchemyError

from gateway.admin.server import AdminServer
from gateway.bus.base import Bus
from gateway.bus.memory import MemoryBus
from gateway.bus.nats.bus import NatsBus
from gateway.bus.nats.servers import cells_subject_prefix
from gateway.cells.codec import CellsCodec
from gateway.chat import migrate
from gateway.chat.access import (
    CellsNodeAccess,
    HttpNodeAccess,
    NodeAccess,
    NodeCheckRates,
    NodeRoomsDisabled,
    OpenNodeAccess,
)
from gateway.chat.service import ChatService
from gateway.chat.store import ChatStore
from gateway.commands import Commands
from gateway.config import ConfigError, Settings
from gateway.delivery.log import EventLog
from gateway.dispatch import Dispatcher
from gateway.edge.tls import make_tls
from gateway.endpoints import EndpointHandler, EventsEndpoint
from gateway.events.codec import EventCodec, JsonCodec
from gateway.handshake import CHAT, EVENTS
from gateway.history.backend import JetStreamHistory
from gateway.httpclient import HttpClient
from gateway.hub import Hub
from gateway.identity.cells.access import parse_virtual_roots
from gateway.identity.cells.api import CellsApi
from gateway.identity.cells.resolver import CellsResolver
from gateway.identity.jwt import JwtResolver
from gateway.identity.resolver import Resolver
from gateway.metrics import Metrics
from gateway.refresh import AccessRefresher
from gateway.server import WebSocketServer

log = logging.getLogger("gateway")

BUS_FLUSH_TIMEOUT: Final = 2.0


def make_resolver(settings: Settings, metrics: Metrics, cells: CellsApi | None) -> Resolver:
    """The configured identity resolver; ConfigError when what it needs is missing."""
    if cells is not None:
        return make_cells_resolver(settings, metrics, cells)
    return make_jwt_resolver(settings)


def make_cells_api(settings: Settings, metrics: Metrics, http: HttpClient | None) -> CellsApi | None:
    """Cells' REST API, with ``identity = "cells"``."""
    if settings.identity != "cells":
        return None
    if not settings.cells_url:
        raise ConfigError(
            "identity = cells needs cells_url (GATEWAY_CELLS_URL): the Cells site, e.g. https://cells.example.com"
        )
    assert http is not None
    return CellsApi(settings.cells_url, http, metrics)


def make_jwt_resolver(settings: Settings) -> JwtResolver:
    """The JWT verifier with every key the settings name; ConfigError when none or unreadable."""
    public_key = _read(settings.jwt_public_key_file, "jwt_public_key_file", binary=True)
    jwks = _read(settings.jwks_file, "jwks_file", binary=False)
    if not (settings.jwt_secret or public_key or jwks):
        raise ConfigError(
            "no JWT key configured: set GATEWAY_JWT_SECRET, GATEWAY_JWT_PUBLIC_KEY_FILE or "
            "GATEWAY_JWKS_FILE (or run with --dev for generated development keys; or "
            "GATEWAY_IDENTITY=cells to resolve tokens through Cells)"
        )
    try:
        return JwtResolver(
            secret=settings.jwt_secret,
            public_key_pem=public_key if isinstance(public_key, bytes) else None,
            jwks_json=jwks if isinstance(jwks, str) else None,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
        )
    except ValueError as exc:
        raise ConfigError(f"JWT keys: {exc}") from None


def make_cells_resolver(settings: Settings, metrics: Metrics, cells: CellsApi) -> CellsResolver:
    service_token = _service_token(settings)
    folder_acls = settings.cells_subfolder_acls == "enforce"
    if folder_acls and service_token is None:
        raise ConfigError(
            "identity = cells enforces sub-folder ACLs with a service credential: set "
            "cells_service_token_file to a file holding a personal access token of a Cells admin "
            '(docs/CELLS.md), or set cells_subfolder_acls = "ignore" to leave them unchecked'
        )
    return CellsResolver(
        cells,
        metrics,
        service_token=service_token,
        folder_acls=folder_acls,
        virtual_roots=parse_virtual_roots(settings.cells_virtual_roots),
        timeout=settings.cells_timeout,
        cache_seconds=settings.cells_cache_seconds,
        cache_max_entries=settings.cells_cache_max_entries,
    )


def _service_token(settings: Settings) -> str | None:
    raw = _read(settings.cells_service_token_file, "cells_service_token_file", binary=False)
    if raw is None:
        return None
    token = str(raw).strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError("cells_service_token_file must hold one token (a Cells personal access token)")
    return token


def _read(path: str | None, name: str, *, binary: bool) -> bytes | str | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes() if binary else Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def make_node_access(settings: Settings, http: HttpClient | None, cells: CellsApi | None) -> NodeAccess:
    if settings.node_check_url and settings.node_check_open:
        raise ConfigError("set node_check_url or node_check_open, not both")
    fallback: NodeAccess = NodeRoomsDisabled()
    rates = NodeCheckRates(settings.node_checks_per_second, settings.node_check_burst)
    if settings.node_check_url:
        assert http is not None
        fallback = HttpNodeAccess(
            settings.node_check_url, http, rates=rates, cache_seconds=settings.node_check_cache_seconds
        )
    elif settings.node_check_open:
        log.warning("node_check_open is set: every user may open every NODE room (development only)")
        fallback = OpenNodeAccess()
    if cells is None:
        return fallback
    assert http is not None and settings.cells_url is not None
    return CellsNodeAccess(
        settings.cells_url,
        cells.version,
        http,
        fallback,
        rates=rates,
        cache_seconds=settings.node_check_cache_seconds,
    )


def make_http(settings: Settings) -> HttpClient | None:
    """The pooled client for calls to the platform, when anything calls it."""
    if settings.identity == "cells" or settings.node_check_url:
        return HttpClient(timeout=settings.cells_timeout, ca_file=settings.cells_ca_file)
    return None


def make_codec(settings: Settings) -> EventCodec:
    return CellsCodec() if settings.bus_format == "cells" else JsonCodec()


async def migrate_store(url: str) -> None:
    """Apply the chat store's migrations (in a worker thread); ConfigError if it cannot be reached."""
    try:
        await trio.to_thread.run_sync(migrate.upgrade, url)
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"db_url: cannot prepare the chat database: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None


def make_history(
    settings: Settings, bus: Bus, log_: EventLog, dispatcher: Dispatcher, metrics: Metrics
) -> JetStreamHistory | None:
    """The shared history when ``history_backend = "jetstream"`` (on a NATS bus), else None."""
    if settings.history_backend != "jetstream":
        return None
    assert isinstance(bus, NatsBus)  # the settings checks refuse jetstream without NATS
    return JetStreamHistory(settings, bus, log_, dispatcher, metrics)


def make_bus(settings: Settings, metrics: Metrics) -> Bus:
    if settings.bus_url.startswith("memory://"):
        return MemoryBus(settings.bus_queue_size)
    prefix = None
    if settings.bus_format == "cells":
        prefix = settings.bus_subject_prefix or cells_subject_prefix(settings.bus_url)
    try:
        return NatsBus(
            settings.bus_url,
            metrics=metrics,
            queue_size=settings.bus_queue_size,
            max_buffer_bytes=settings.nats_max_buffer_bytes,
            name=settings.nats_name,
            ping_interval=settings.nats_ping_interval,
            connect_timeout=settings.nats_connect_timeout,
            reconnect_min=settings.nats_reconnect_min,
            reconnect_max=settings.nats_reconnect_max,
            tls_ca_file=settings.nats_tls_ca_file,
            cells_subject_prefix=prefix,
        )
    except (ValueError, OSError) as exc:  # a malformed URL, an unreadable CA file
        raise ConfigError(f"bus_url: {exc}") from None


class Gateway:
    """All services of one instance, wired together."""

    def _history_age(self) -> float:
        oldest = self.log.oldest_appended_at
        return 0.0 if oldest is None else trio.current_time() - oldest

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None) -> None:
        self.metrics = Metrics()
        self.http = make_http(settings)
        cells = make_cells_api(settings, self.metrics, self.http)
        self.resolver = resolver or make_resolver(settings, self.metrics, cells)
        if not settings.admin_key:
            raise ConfigError(
                "no admin key configured: set GATEWAY_ADMIN_KEY (or run with --dev for a generated one)"
            )
        self.settings = settings
        self.log = EventLog(max_entries=settings.history_size, max_age=settings.history_seconds)
        self.hub = Hub(self.metrics, self.log, trio.current_time)
        self.metrics.watch_history(lambda: len(self.log), self._history_age)
        self.bus = make_bus(settings, self.metrics)
        self.refresher = AccessRefresher(self.resolver, self.hub, self.metrics)
        self.dispatcher = Dispatcher(
            settings,
            self.bus,
            self.hub,
            self.metrics,
            make_codec(settings),
            on_idm=self.refresher.on_idm_event,
        )
        self.history = make_history(settings, self.bus, self.log, self.dispatcher, self.metrics)
        self.store = ChatStore(settings.db_url)
        self.metrics.watch_store(self.store)
        self.nodes = make_node_access(settings, self.http, cells)
        self.chat = ChatService(settings, self.store, self.bus, self.nodes, self.metrics)
        handlers: dict[str, EndpointHandler] = {EVENTS: EventsEndpoint(), CHAT: self.chat}
        self.commands = Commands(settings, self.hub, self.resolver, handlers, self.metrics)
        self.tls = make_tls(settings.tls_cert_file, settings.tls_key_file)  # ConfigError: unreadable
        self.websocket = WebSocketServer(settings, self.hub, self.commands, self.metrics, self.tls)
        self.refresher.after_change = self.commands.identity_changed
        if self.history is not None:
            self.commands.history_reached = self.history.reached
        self.admin = AdminServer(
            settings,
            self.metrics,
            self.bus,
            self.readiness,
            ws_ports=lambda: self.websocket.ports,
            tls=self.tls if settings.admin_tls else None,
        )
        self._stop = trio.Event()
        self._running = False

    @property
    def ws_port(self) -> int:
        return self.websocket.ports[0]

    @property
    def admin_port(self) -> int:
        return self.admin.ports[0]

    def readiness(self) -> tuple[bool, str]:
        if not self._running:
            return False, "starting" if not self._stop.is_set() else "shutting down"
        if not self.bus.connected:
            return False, "bus disconnected"
        return True, ""

    def stop(self) -> None:
        self._stop.set()

    async def reload(self) -> None:
        """SIGHUP: read the TLS certificate and key again (sessions keep theirs); logs the outcome."""
        if self.tls is None:
            log.info("SIGHUP: nothing to reload (no tls_cert_file configured)")
            return
        await self.tls.reload()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run_services(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every service but the listeners, in start order; ``started()`` once all accept work.

        ``run`` adds the listeners on top; the tests use this alone and connect sessions directly.
        The chat database must have been migrated (``migrate_store``).
        """
        try:
            async with trio.open_nursery() as services:
                await services.start(self.resolver.run)
                await services.start(self.refresher.run)
                if isinstance(self.nodes, CellsNodeAccess):
                    await self.nodes.prepare()
                await services.start(self.bus.run)
                await services.start(self.store.run)
                await services.start(self.dispatcher.run if self.history is None else self.history.run)
                await services.start(self.chat.run)
                await services.start(self.websocket.run_housekeeping)
                task_status.started()
        finally:
            if self.http is not None:
                with trio.CancelScope(shield=True):
                    await self.http.aclose()

    async def run(self, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED) -> None:
        await migrate_store(self.settings.db_url)
        async with trio.open_nursery() as services:
            await services.start(self.run_services)
            async with trio.open_nursery() as listener:
                await listener.start(self.websocket.run)
                await services.start(self.admin.run)
                self._running = True
                log.info(
                    "gateway ready: websocket %s (port %d), admin %s (port %d), bus %s",
                    self.settings.listen,
                    self.ws_port,
                    self.settings.admin_listen,
                    self.admin_port,
                    self.settings.bus_url,
                )
                if self.tls is not None:
                    log.info("TLS certificate: %s", self.tls.summary)
                task_status.started(self)
                await self._stop.wait()
                self._running = False
                log.info("shutting down: closing %d sessions", len(self.hub.sessions))
                self.dispatcher.flush()
                self.websocket.drain()
            with trio.move_on_after(BUS_FLUSH_TIMEOUT):
                await self.bus.flush()  # chat events of the last moments reach the other instances
            services.cancel_scope.cancel()
        log.info("gateway stopped")


async def serve(
    gateway: Gateway, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a gateway until SIGTERM or SIGINT, then drain; a second signal aborts the drain.

    SIGHUP reloads the TLS certificate and key (in its own task: a stop is never held up by it).
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, gateway, nursery)
            await gateway.run(task_status=task_status)
            nursery.cancel_scope.cancel()


async def _watch_signals(signals: AsyncIterator[int], gateway: Gateway, nursery: trio.Nursery) -> None:
    scope = nursery.cancel_scope
    async for signum in signals:
        if signum == signal.SIGHUP:
            nursery.start_soon(gateway.reload)
            continue
        if gateway.stopping:
            log.warning("second %s: aborting the drain", signal.Signals(signum).name)
            scope.cancel()
            return
        log.info("received %s: draining", signal.Signals(signum).name)
        gateway.stop()
