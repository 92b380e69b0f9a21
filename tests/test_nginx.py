"""The reverse-proxy configuration docs/OPERATIONS.md gives operators, run by a real nginx.

The test reads the nginx block from the document, replaces only its ports and certificate paths,
and puts nginx on loopback in front of a gateway that trusts it. Clients connect to nginx over TLS
from their own loopback addresses (127.0.0.2, 127.0.0.3): the gateway must see those, taken from
the ``X-Forwarded-For`` nginx appends, for its per-address limit and its sessions; a header a
client sends straight to the gateway, or writes itself for nginx to pass on, must change nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from gateway.app import Gateway
from tests import engines
from tests.certificates import Authority, Issued
from tests.helpers import TREE, admin_publish, leaves, make_settings, recv_json, token
from tests.servers import free_port

pytestmark = pytest.mark.engine("nginx")

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- tests/test_nginx.py reads the next block -->"
START_TIMEOUT = 5.0


def documented_config() -> str:
    """The nginx block of docs/OPERATIONS.md that follows the marker, as operators copy it."""
    after = (ROOT / "docs" / "OPERATIONS.md").read_text().split(MARKER, 1)[1]
    assert after.lstrip().startswith("```nginx\n"), "the marker must sit right above the nginx block"
    return after.split("```nginx\n", 1)[1].split("```", 1)[0]


def replace_once(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the documented nginx block no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def nginx_conf(workdir: Path, site: str) -> str:
    """The documented site inside the smallest nginx.conf that runs unprivileged in ``workdir``."""
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nmaster_process off;\npid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n    {temp}\n{site}\n}}\n"
    )


@asynccontextmanager
async def nginx(workdir: Path, site: str, port: int) -> AsyncIterator[None]:
    binary = engines.nginx()
    assert binary is not None
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, site))
    error_log = workdir / "error.log"
    command = [binary, "-p", str(workdir), "-e", str(error_log), "-c", str(conf)]
    with (workdir / "nginx.out").open("wb") as out:
        process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        with trio.fail_after(START_TIMEOUT):
            while not await _accepts(port):
                assert process.returncode is None, error_log.read_text() if error_log.exists() else ""
                await trio.sleep(0.01)
        yield
    finally:
        process.kill()
        with trio.CancelScope(shield=True), trio.fail_after(START_TIMEOUT):
            await process.wait()


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


@asynccontextmanager
async def websocket_from(
    source: str,
    port: int,
    path: str,
    authority: Authority | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to 127.0.0.1:``port`` from the loopback address ``source`` (TLS with ``authority``)."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream: trio.abc.Stream = trio.SocketStream(sock)
    if authority is not None:
        stream = trio.SSLStream(stream, authority.client_context(), server_hostname="127.0.0.1")
    try:
        async with trio.open_nursery() as nursery:
            # trio-websocket types its stream as a socket or TLS stream over a socket: this is one.
            client = cast(trio.SocketStream, stream)
            ws = await wrap_client_stream(nursery, client, "cells.example.com", path, extra_headers=headers)
            try:
                yield ws
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def refused_status(source: str, port: int, path: str, authority: Authority) -> int | None:
    """The HTTP status of a refused handshake, or None when it was accepted."""
    statuses: list[int] = []
    try:
        async with websocket_from(source, port, path, authority):
            pass
    except* ConnectionRejected as group:
        statuses += [refused.status_code for refused in leaves(group, ConnectionRejected)]
    return statuses[0] if statuses else None


def remotes(gateway: Gateway) -> list[str]:
    return sorted(session.remote for session in gateway.hub.sessions)


async def subscribed(ws: WebSocketConnection) -> None:
    await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
    assert (await recv_json(ws))["@type"] == "subscribed"


@pytest.fixture
async def behind_nginx(
    nursery: trio.Nursery, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, int, Authority]]:
    """A gateway trusting 127.0.0.1 (nginx), and the documented nginx in front of it."""
    authority = Authority()
    issued: Issued = authority.issue(tmp_path, "cells.example.com")
    settings = make_settings(
        trusted_proxies=("127.0.0.1",), max_sessions_per_ip=1, db_url=f"sqlite:///{tmp_path}/chat.db"
    )
    gateway: Gateway = await nursery.start(Gateway(settings).run)
    port = free_port()
    site = replace_once(
        documented_config(),
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
            "/etc/ssl/certs/cells.example.com.pem": str(issued.cert_file),
            "/etc/ssl/private/cells.example.com.key": str(issued.key_file),
            "http://127.0.0.1:5050": f"http://127.0.0.1:{gateway.ws_port}",
        },
    )
    async with nginx(tmp_path, site, port):
        yield gateway, port, authority


async def test_nginx_documented_config_serves_both_sockets_with_each_clients_address(
    behind_nginx: tuple[Gateway, int, Authority],
) -> None:
    gateway, port, authority = behind_nginx
    forged = [(b"X-Forwarded-For", b"203.0.113.66")]  # written by the client: nginx appends to it
    with trio.fail_after(15):
        async with websocket_from("127.0.0.2", port, "/ws/event", authority, forged) as events:
            await subscribed(events)
            assert remotes(gateway) == ["127.0.0.2"]
            event = {"Target": {"Uuid": "n-1", "Path": "/ds/common/through-nginx.txt", "Type": "LEAF"}}
            assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": event}))[0] == 202
            assert (await recv_json(events))["Target"]["Path"] == "common-files/through-nginx.txt"
            async with websocket_from("127.0.0.3", port, "/ws/chat", authority) as chat:
                await subscribed(chat)
                assert remotes(gateway) == ["127.0.0.2", "127.0.0.3"]
                # max_sessions_per_ip = 1 counts each client, not nginx, which all of them share.
                assert await refused_status("127.0.0.2", port, "/ws/chat", authority) == 429
                assert remotes(gateway) == ["127.0.0.2", "127.0.0.3"]


async def test_nginx_forwarding_headers_from_an_untrusted_peer_are_ignored(
    behind_nginx: tuple[Gateway, int, Authority],
) -> None:
    gateway, _, _ = behind_nginx
    claim = [(b"X-Forwarded-For", b"127.0.0.9")]
    with trio.fail_after(15):
        async with websocket_from("127.0.0.2", gateway.ws_port, "/ws/event", headers=claim) as ws:
            await subscribed(ws)
            assert remotes(gateway) == ["127.0.0.2"]
