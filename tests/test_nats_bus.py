"""NatsBus against a real nats-server (Debian's ``nats-server``), started per test on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.bus.base import BusError
from gateway.bus.nats.bus import NatsBus
from gateway.bus.nats.subscription import NatsSubscription
from gateway.metrics import Metrics
from gateway.topics import TASKS_TOPIC, TREE_TOPIC
from tests.servers import (
    NatsServer,
    StartServer,
    free_port,
    nats_servers,
    requires_nats,
    wait_until,
    wait_until_async,
)

pytestmark = requires_nats


@pytest.fixture
async def nats_factory(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Start nats-server processes (extra CLI args, optional config text); all killed at teardown."""
    async with nats_servers(tmp_path) as start:
        yield start


@pytest.fixture
async def nats_server(nats_factory: StartServer) -> NatsServer:
    return await nats_factory()


@asynccontextmanager
async def running_bus(url: str, **options: Any) -> AsyncIterator[NatsBus]:
    options = {"reconnect_min": 0.02, "reconnect_max": 0.1, "connect_timeout": 2.0, **options}
    bus = NatsBus(url, metrics=options.pop("metrics", Metrics()), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield bus
        nursery.cancel_scope.cancel()


async def receive(subscription: NatsSubscription, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        got += await subscription.receive_batch(count - len(got))
    return got


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def dropped(metrics: Metrics, topic: str, reason: str) -> float:
    return sample(metrics, "gateway_events_dropped_total", topic=topic, reason=reason)


# -- tests -------------------------------------------------------------------------------------


async def test_roundtrip_in_order(nats_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_bus(nats_server.url) as bus, bus.subscribe(TREE_TOPIC) as subscription:
            sent = [b'{"n": %d}' % i for i in range(500)]
            for data in sent:
                await bus.publish(TREE_TOPIC, data)
            assert await receive(subscription, len(sent)) == sent
            assert subscription.lag() == 0


async def test_roundtrip_two_buses_see_each_other(nats_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with (
            running_bus(nats_server.url) as a,
            running_bus(nats_server.url) as b,
            a.subscribe(TASKS_TOPIC) as on_a,
            b.subscribe(TASKS_TOPIC) as on_b,
        ):
            await a.publish(TASKS_TOPIC, b"from-a")
            assert await receive(on_b, 1) == [b"from-a"]
            await b.publish(TASKS_TOPIC, b"from-b")
            assert await receive(on_a, 2) == [b"from-a", b"from-b"]
            assert await receive(on_b, 1) == [b"from-b"]


async def test_connect_declares_name_and_subscriptions(nats_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_bus(nats_server.url, name="gw-test") as bus:
            async with bus.subscribe(TREE_TOPIC):
                (conn,) = (await nats_server.monitor("/connz?subs=1"))["connections"]
                assert (conn["name"], conn["lang"]) == ("gw-test", "python-trio")
                assert conn["subscriptions_list"] == [TREE_TOPIC]
            await bus.flush()
            (conn,) = (await nats_server.monitor("/connz?subs=1"))["connections"]
            assert conn.get("subscriptions_list", []) == []


async def test_publish_over_max_payload_raises(nats_factory: StartServer) -> None:
    server = await nats_factory(config="max_payload: 1024\n")
    with trio.fail_after(10):
        async with running_bus(server.url) as bus, bus.subscribe(TREE_TOPIC) as subscription:
            with pytest.raises(BusError, match="over the broker's limit of 1024"):
                await bus.publish(TREE_TOPIC, b"x" * 1025)
            await bus.publish(TREE_TOPIC, b"y" * 1024)
            assert await receive(subscription, 1) == [b"y" * 1024]
            assert bus.connected


async def test_publish_invalid_topic_raises(nats_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_bus(nats_server.url) as bus:
            with pytest.raises(BusError, match="subject"):
                await bus.publish("bad topic", b"{}")
            with pytest.raises(BusError, match="subject"):
                async with bus.subscribe("a..b"):
                    pass


async def test_reconnect_resubscribes_and_flushes_buffer(nats_server: NatsServer) -> None:
    metrics = Metrics()
    with trio.fail_after(15):
        async with running_bus(nats_server.url, metrics=metrics) as bus, bus.subscribe(TREE_TOPIC) as sub:
            await bus.publish(TREE_TOPIC, b"before")
            assert await receive(sub, 1) == [b"before"]
            assert sample(metrics, "gateway_bus_connected") == 1

            await nats_server.stop()
            await wait_until(lambda: not bus.connected)
            assert sample(metrics, "gateway_bus_connected") == 0
            during = [b"during-%d" % i for i in range(3)]
            for data in during:
                await bus.publish(TREE_TOPIC, data)
            assert sample(metrics, "gateway_bus_buffered_bytes") > 0

            await nats_server.start()
            assert await receive(sub, len(during)) == during
            assert bus.connected
            assert sample(metrics, "gateway_bus_connected") == 1
            assert sample(metrics, "gateway_bus_reconnects_total") == 1
            assert sample(metrics, "gateway_bus_buffered_bytes") == 0
            await bus.publish(TREE_TOPIC, b"after")
            assert await receive(sub, 1) == [b"after"]


async def test_reconnect_buffer_overflow_drops_new_and_counts(nats_server: NatsServer) -> None:
    metrics = Metrics()
    frame = len(b"PUB %s 50\r\n" % TREE_TOPIC.encode()) + 50 + 2
    with trio.fail_after(15):
        async with (
            running_bus(nats_server.url, metrics=metrics, max_buffer_bytes=2 * frame + 10) as bus,
            bus.subscribe(TREE_TOPIC) as sub,
        ):
            await nats_server.stop()
            await wait_until(lambda: not bus.connected)
            kept = [bytes([65 + i]) * 50 for i in range(2)]
            for data in kept:
                await bus.publish(TREE_TOPIC, data)
            with pytest.raises(BusError, match="bus disconnected and its buffer is full"):
                await bus.publish(TREE_TOPIC, b"z" * 50)
            assert dropped(metrics, TREE_TOPIC, "bus_disconnected") == 1
            assert sample(metrics, "gateway_bus_buffered_bytes") == 2 * frame

            await nats_server.start()
            assert await receive(sub, 2) == kept
            await bus.publish(TREE_TOPIC, b"z" * 50)
            assert await receive(sub, 1) == [b"z" * 50]


async def test_reconnect_broker_down_at_start(tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(10):
        started = trio.current_time()
        async with running_bus(f"nats://127.0.0.1:{port}", connect_timeout=0.3) as bus:
            assert trio.current_time() - started < 2
            assert not bus.connected
            async with bus.subscribe(TREE_TOPIC) as sub:  # SUB waits for the connection
                await bus.publish(TREE_TOPIC, b"queued")
                server = NatsServer(tmp_path, [], port=port)
                try:
                    await server.start()
                    assert await receive(sub, 1) == [b"queued"]
                finally:
                    await server.stop()


async def test_reconnect_tries_servers_in_turn(nats_server: NatsServer) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    with trio.fail_after(10):
        async with running_bus(f"{dead},{nats_server.url}") as bus, bus.subscribe(TREE_TOPIC) as sub:
            assert bus.connected
            await bus.publish(TREE_TOPIC, b"x")
            assert await receive(sub, 1) == [b"x"]


async def test_slow_subscriber_drops_without_stalling(nats_factory: StartServer) -> None:
    server = await nats_factory(config='ping_interval: "50ms"\nping_max: 2\n')
    metrics = Metrics()
    with trio.fail_after(10):
        async with (
            running_bus(server.url, metrics=metrics, queue_size=2) as bus,
            bus.subscribe(TREE_TOPIC) as slow,
            bus.subscribe(TASKS_TOPIC) as fast,
        ):
            for i in range(20):
                await bus.publish(TREE_TOPIC, b"%d" % i)
            await bus.flush()  # the PONG comes after the 20 MSGs: the reader went past them
            assert dropped(metrics, TREE_TOPIC, "bus_overflow") == 18
            assert sample(metrics, "gateway_bus_lag", topic=TREE_TOPIC) == 2
            await bus.publish(TASKS_TOPIC, b"other topic")
            assert await receive(fast, 1) == [b"other topic"]
            pings = bus.server_pings
            await wait_until(lambda: bus.server_pings >= pings + 3)  # answered, or it would drop us
            assert bus.connected
            assert sample(metrics, "gateway_bus_reconnects_total") == 0
            assert await receive(slow, 2) == [b"0", b"1"]


async def test_keepalive_detects_a_silent_broker() -> None:
    """A broker that accepts and sends INFO/PONG once, then goes silent: 2 PINGs unanswered."""

    async def silent_broker(stream: trio.SocketStream) -> None:
        await stream.send_all(b'INFO {"max_payload":1024}\r\n')
        received = b""
        while b"PING\r\n" not in received:
            data = await stream.receive_some()
            if not data:
                return
            received += data
        await stream.send_all(b"PONG\r\n")
        await trio.sleep_forever()

    metrics = Metrics()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            (listener,) = await nursery.start(partial(trio.serve_tcp, silent_broker, 0, host="127.0.0.1"))
            port = listener.socket.getsockname()[1]
            async with running_bus(f"nats://127.0.0.1:{port}", metrics=metrics, ping_interval=0.05) as bus:
                assert bus.connected
                await wait_until(lambda: sample(metrics, "gateway_bus_reconnects_total") >= 1)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("user", "password", "ok"), [("gw", "s3cret", True), ("gw", "wrong", False)])
async def test_auth_user_password(
    nats_factory: StartServer, caplog: pytest.LogCaptureFixture, user: str, password: str, ok: bool
) -> None:
    server = await nats_factory("--user", "gw", "--pass", "s3cret")
    url = server.url.replace("nats://", f"nats://{user}:{password}@")
    await _check_auth(url, ok, caplog)


@pytest.mark.parametrize(("token", "ok"), [("t0ken", True), ("other", False)])
async def test_auth_token(
    nats_factory: StartServer, caplog: pytest.LogCaptureFixture, token: str, ok: bool
) -> None:
    server = await nats_factory("--auth", "t0ken")
    await _check_auth(server.url.replace("nats://", f"nats://{token}@"), ok, caplog)


async def _check_auth(url: str, ok: bool, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="gateway.bus.nats"):
        async with running_bus(url, metrics=metrics, connect_timeout=0.5) as bus:
            assert bus.connected is ok
            assert sample(metrics, "gateway_bus_connected") == (1 if ok else 0)
            if ok:
                async with bus.subscribe(TREE_TOPIC) as sub:
                    await bus.publish(TREE_TOPIC, b"authorized")
                    assert await receive(sub, 1) == [b"authorized"]
    secret = url.split("@")[0].rsplit(":", 1)[-1]
    assert ok or "Authorization Violation" in caplog.text
    assert secret not in caplog.text


async def test_run_cancel_closes_connection(nats_server: NatsServer) -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with running_bus(nats_server.url, metrics=metrics) as bus:
            assert len((await nats_server.monitor("/connz"))["connections"]) == 1
        assert not bus.connected
        assert sample(metrics, "gateway_bus_connected") == 0
        with pytest.raises(BusError, match="closed"):
            await bus.publish(TREE_TOPIC, b"late")
        await wait_until_async(lambda: _no_connections(nats_server))


async def _no_connections(server: NatsServer) -> bool:
    return not (await server.monitor("/connz"))["connections"]


# -- TLS ---------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.mark.parametrize("scheme", ["tls", "nats"])
async def test_tls_with_ca_file(nats_factory: StartServer, tmp_path: Path, scheme: str) -> None:
    pytest.importorskip("cryptography")
    ca, cert, key = make_certificates(tmp_path)
    server = await nats_factory("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    url = server.url.replace("nats://", f"{scheme}://")  # nats://: upgraded because INFO requires TLS
    with trio.fail_after(10):
        async with running_bus(url, tls_ca_file=str(ca)) as bus, bus.subscribe(TREE_TOPIC) as sub:
            assert bus.connected
            await bus.publish(TREE_TOPIC, b"secret")
            assert await receive(sub, 1) == [b"secret"]
            (conn,) = (await server.monitor("/connz"))["connections"]
            assert conn["tls_version"].startswith("1.")


async def test_tls_unknown_ca_does_not_connect(nats_factory: StartServer, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    _, cert, key = make_certificates(tmp_path)
    server = await nats_factory("--tls", "--tlscert", str(cert), "--tlskey", str(key))
    with trio.fail_after(10):
        async with running_bus(server.url.replace("nats://", "tls://"), connect_timeout=0.5) as bus:
            assert not bus.connected
