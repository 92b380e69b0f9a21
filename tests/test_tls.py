"""TLS on the gateway's own listeners: wss:// and HTTPS with a certificate the test makes, the
version and ALPN policy, one deadline for the whole handshake, the reload on SIGHUP (open sessions
go on, new handshakes see the new certificate, a failed reload keeps the old one), and the
configuration errors at start."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import warnings
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

from gateway.app import Gateway, serve
from gateway.config import ConfigError, Settings, load
from tests.certificates import Authority, Issued, common_name
from tests.helpers import (
    TREE,
    Harness,
    admin_publish,
    make_settings,
    read_response,
    recv_json,
    token,
    ws_client,
)
from tests.servers import wait_until


@pytest.fixture
def authority() -> Authority:
    return Authority()


@pytest.fixture
def issued(tmp_path: Path, authority: Authority) -> Issued:
    return authority.issue(tmp_path, "first")


def tls_settings(tmp_path: Path, issued: Issued, **changes: object) -> Settings:
    return make_settings(
        tls_cert_file=str(issued.cert_file),
        tls_key_file=str(issued.key_file),
        db_url=f"sqlite:///{tmp_path}/chat.db",
        **changes,
    )


async def tls_open(port: int, context: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def https_get(port: int, path: str, authority: Authority) -> tuple[int, bytes]:
    stream = await tls_open(port, authority.client_context())
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target=path, headers=[("host", "127.0.0.1")])
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, _, body = await read_response(conn, stream)
    return status, body


async def presented(port: int, authority: Authority) -> str:
    """The common name of the certificate a new handshake on ``port`` is shown."""
    stream = await tls_open(port, authority.client_context())
    async with stream:
        return common_name(stream.getpeercert())


async def subscribe(ws: object) -> None:
    from trio_websocket import WebSocketConnection

    assert isinstance(ws, WebSocketConnection)
    await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
    assert (await recv_json(ws))["@type"] == "subscribed"


async def publish_and_receive(gateway: Gateway, ws: object, name: str) -> None:
    from trio_websocket import WebSocketConnection

    assert isinstance(ws, WebSocketConnection)
    event = {"Target": {"Uuid": name, "Path": f"/ds/common/{name}.txt", "Type": "LEAF"}}
    status, _ = await admin_publish(gateway.admin_port, {"topic": TREE, "event": event})
    assert status == 202
    assert (await recv_json(ws))["Target"]["Path"] == f"common-files/{name}.txt"


# ---------------------------------------------------------------------------------------------
# Serving


async def test_tls_wss_session_subscribes_and_receives_events(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, authority: Authority
) -> None:
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued)).run)
    with trio.fail_after(10):
        url = f"wss://127.0.0.1:{gateway.ws_port}/ws"
        async with ws_client(url, authority.client_context()) as ws:
            await subscribe(ws)
            await publish_and_receive(gateway, ws, "over-tls")


async def test_tls_policy_is_tls12_or_newer_with_alpn_http11_and_no_compression(
    nursery: trio.Nursery,
    tmp_path: Path,
    issued: Issued,
    authority: Authority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.edge")
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued)).run)
    with trio.fail_after(10):
        modern = authority.client_context()
        modern.set_alpn_protocols(["h2", "http/1.1"])
        stream = await tls_open(gateway.ws_port, modern)
        async with stream:
            assert stream.selected_alpn_protocol() == "http/1.1"  # never h2: the upgrade is HTTP/1.1
            assert stream.version() == "TLSv1.3"
            assert stream.compression() is None
        tls12 = authority.client_context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        async with await tls_open(gateway.ws_port, tls12) as stream:
            assert stream.version() == "TLSv1.2"
            assert "GCM" in stream.cipher()[0] or "CHACHA20" in stream.cipher()[0]
        # TLS 1.2 without forward-secret AEAD (a CBC suite) is refused.
        cbc = authority.client_context()
        cbc.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256")
        with pytest.raises(trio.BrokenResourceError):
            await tls_open(gateway.ws_port, cbc)
        # A client that offers TLS 1.1 at most (its own policy relaxed to allow it) is refused.
        old = authority.client_context()
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # Python deprecates the very versions this client offers
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(trio.BrokenResourceError) as refused:
            await tls_open(gateway.ws_port, old)
        assert isinstance(refused.value.__cause__, ssl.SSLError)
    assert gateway.metrics.connections_refused.labels("tls_handshake")._value.get() == 2
    failures = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert len(failures) == 2, failures
    assert "NO_SHARED_CIPHER" in failures[0] and "UNSUPPORTED_PROTOCOL" in failures[1], failures


async def test_tls_handshake_and_request_share_one_handshake_timeout(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, authority: Authority, autojump_clock: object
) -> None:
    """A client silent before its ClientHello, or after its TLS handshake, is cut off
    handshake_timeout seconds after it connected, not later."""
    harness = await Harness(nursery, tls_settings(tmp_path, issued, handshake_timeout=10.0)).start()
    serve_stream = harness.gateway.websocket.serve_stream
    # Silent from the start.
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    nursery.start_soon(serve_stream, server, "10.0.0.1")
    assert await client.receive_some() == b""
    assert trio.current_time() - start == pytest.approx(10.0)
    # TLS done at 6 s, then no request: closed at 10 s, counted once as a handshake timeout.
    client, server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    nursery.start_soon(serve_stream, server, "10.0.0.1")
    await trio.sleep(6.0)
    tls = trio.SSLStream(client, authority.client_context(), server_hostname="127.0.0.1")
    await tls.do_handshake()
    assert await _drain(tls) == b""
    assert trio.current_time() - start == pytest.approx(10.0)
    assert harness.gateway.metrics.connections_refused.labels("handshake_timeout")._value.get() == 2


async def test_tls_plain_http_to_the_tls_listener_is_refused_and_explained(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.edge")
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued)).run)
    with trio.fail_after(10):
        for _ in range(2):
            stream = await trio.open_tcp_stream("127.0.0.1", gateway.ws_port)
            async with stream:
                await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await _drain(stream) == b""  # no HTTP answer: this port speaks TLS
    lines = [r.getMessage() for r in caplog.records if "plain HTTP to the TLS listener" in r.getMessage()]
    assert len(lines) == 1 and "wss://" in lines[0]  # once a minute
    assert gateway.metrics.connections_refused.labels("tls_handshake")._value.get() == 2


async def _drain(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:
        return b""


async def test_tls_admin_listener_serves_https_with_admin_tls(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, authority: Authority
) -> None:
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued, admin_tls=True)).run)
    with trio.fail_after(10):
        status, body = await https_get(gateway.admin_port, "/healthz", authority)
        assert status == 200 and json.loads(body) == {"status": "ok"}
        plain = await trio.open_tcp_stream("127.0.0.1", gateway.admin_port)
        async with plain:
            await plain.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await _drain(plain) == b""
        # The playground page connects with wss:// to a listener that serves TLS.
        status, body = await https_get(gateway.admin_port, "/api/v1/playground", authority)
        assert status == 200 and json.loads(body)["ws_tls"] is True


# ---------------------------------------------------------------------------------------------
# Reload


async def test_tls_reload_keeps_sessions_and_new_handshakes_see_the_new_certificate(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, authority: Authority
) -> None:
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued)).run)
    with trio.fail_after(10):
        async with ws_client(f"wss://127.0.0.1:{gateway.ws_port}/ws", authority.client_context()) as ws:
            await subscribe(ws)
            assert await presented(gateway.ws_port, authority) == "first"
            authority.issue(tmp_path, "second")  # renewed in place, as certbot or an operator does
            await gateway.reload()
            assert await presented(gateway.ws_port, authority) == "second"
            await publish_and_receive(gateway, ws, "after-reload")  # the session opened before goes on


@pytest.mark.logs_errors
async def test_tls_failed_reload_keeps_the_certificate_in_use_and_says_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    issued: Issued,
    authority: Authority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway: Gateway = await nursery.start(Gateway(tls_settings(tmp_path, issued)).run)
    with trio.fail_after(10):
        other = authority.issue(tmp_path, "second", stem="other")
        issued.key_file.write_bytes(other.key_file.read_bytes())  # a half-done renewal: wrong key
        assert gateway.tls is not None
        assert not await gateway.tls.reload()
        assert await presented(gateway.ws_port, authority) == "first"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("TLS reload failed" in e and "does not match" in e for e in errors), errors


async def test_tls_sighup_reloads_the_certificate(
    nursery: trio.Nursery, tmp_path: Path, issued: Issued, authority: Authority
) -> None:
    """The signal itself, sent to this process while ``serve`` (the command's main) runs."""
    gateway = Gateway(tls_settings(tmp_path, issued))
    await nursery.start(serve, gateway)
    with trio.fail_after(10):
        authority.issue(tmp_path, "second")
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(lambda: gateway.tls is not None and "CN=second" in gateway.tls.summary)
        assert await presented(gateway.ws_port, authority) == "second"
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_TLS_CERT_FILE": "/etc/c.pem"}, "tls_cert_file and tls_key_file go together"),
        ({"GATEWAY_TLS_KEY_FILE": "/etc/k.pem"}, "tls_cert_file and tls_key_file go together"),
        ({"GATEWAY_ADMIN_TLS": "true"}, "admin_tls serves the admin listener with tls_cert_file"),
    ],
)
def test_tls_settings_come_in_pairs(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)


def test_tls_unreadable_or_wrong_files_are_clear_errors_at_start(
    tmp_path: Path, issued: Issued, authority: Authority
) -> None:
    other = authority.issue(tmp_path, "other", stem="other")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    cases = [
        (tmp_path / "missing.crt", issued.key_file, "tls_cert_file: cannot read .*missing.crt: No such file"),
        (issued.cert_file, tmp_path / "missing.key", "tls_key_file: cannot read .*missing.key"),
        (issued.key_file, issued.key_file, "holds no PEM certificate"),
        (issued.cert_file, issued.cert_file, "holds no PEM private key"),
        (issued.cert_file, other.key_file, "the key does not match the certificate"),
        (issued.cert_file, encrypted, "is encrypted"),
    ]
    for cert, key, message in cases:
        settings = make_settings(tls_cert_file=str(cert), tls_key_file=str(key))
        with pytest.raises(ConfigError, match=message):
            Gateway(settings)
