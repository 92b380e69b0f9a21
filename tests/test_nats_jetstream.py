"""JetStream over NatsBus against a real nats-server (``-js -sd <tmp>``), started per test on loopback."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.bus.nats.bus import NatsBus
from gateway.bus.nats.jetstream import (
    JetStream,
    JetStreamError,
    JetStreamUnavailable,
    OrderedConsumer,
    StreamGone,
    StreamMessage,
)
from gateway.bus.nats.requests import NoResponders, RequestTimeout
from gateway.metrics import Metrics
from tests.servers import NatsServer, StartServer, nats_servers, requires_nats, wait_until

pytestmark = requires_nats

STREAM = "EVENTS"
SUBJECTS = ["ev.>"]
DAY = 86400.0


@pytest.fixture
async def nats_factory(tmp_path: Path) -> AsyncIterator[StartServer]:
    async with nats_servers(tmp_path) as start:
        yield start


@pytest.fixture
async def js_server(nats_factory: StartServer, tmp_path: Path) -> NatsServer:
    return await nats_factory("-js", "-sd", str(tmp_path / "store"))


@asynccontextmanager
async def running_js(url: str, *, js_timeout: float = 5.0, **options: Any) -> AsyncIterator[JetStream]:
    options = {"reconnect_min": 0.02, "reconnect_max": 0.1, "connect_timeout": 2.0, **options}
    bus = NatsBus(url, metrics=Metrics(), **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield JetStream(bus, timeout=js_timeout)
        nursery.cancel_scope.cancel()


async def create(js: JetStream, **limits: Any) -> None:
    limits = {"max_msgs": 1000, "max_age": DAY, "duplicate_window": 60.0, **limits}
    await js.create_stream(STREAM, SUBJECTS, **limits)


def has_at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


async def receive(consumer: OrderedConsumer, count: int) -> list[StreamMessage]:
    got: list[StreamMessage] = []
    while len(got) < count:
        got += await consumer.receive_batch(count - len(got))
    return got


# -- streams and publishing ----------------------------------------------------------------------


async def test_js_stream_info_none_for_a_missing_stream(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            assert await js.stream_info("NOPE") is None
            assert await js.delete_stream("NOPE") is False


async def test_js_create_stream_then_info(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            created = await js.create_stream(
                STREAM, ["ev.>", "other"], max_msgs=500, max_age=3600, duplicate_window=30
            )
            info = await js.stream_info(STREAM)
            assert info == created
            assert info.name == STREAM
            assert info.subjects == ("ev.>", "other")
            assert (info.max_msgs, info.max_age, info.duplicate_window) == (500, 3600.0, 30.0)
            assert (info.first_seq, info.last_seq) == (0, 0)
            assert info.created
            # Same configuration again: accepted, the same stream; another one: refused.
            again = await js.create_stream(
                STREAM, ["ev.>", "other"], max_msgs=500, max_age=3600, duplicate_window=30
            )
            assert again.created == info.created
            with pytest.raises(JetStreamError, match="10058"):
                await js.create_stream(STREAM, ["ev.>"], max_msgs=9, max_age=3600, duplicate_window=30)


async def test_js_publish_increasing_seqs_and_msg_id_deduplicated(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            await create(js)
            assert [await js.publish("ev.a", b"%d" % i) for i in range(3)] == [1, 2, 3]
            first = await js.publish("ev.b", b"once", msg_id="m-1")
            assert await js.publish("ev.b", b"once", msg_id="m-1") == first == 4
            assert await js.publish("ev.b", b"next", msg_id="m-2") == 5
            info = await js.stream_info(STREAM)
            assert info is not None and (info.first_seq, info.last_seq) == (1, 5)
            async with js.ordered_consumer(STREAM, start_seq=4) as consumer:
                assert [m.data for m in await receive(consumer, 2)] == [b"once", b"next"]


async def test_js_publish_on_a_subject_no_stream_captures(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            with pytest.raises(JetStreamUnavailable, match="no stream captures it"):
                await js.publish("nowhere", b"x")


# -- ordered consumer ----------------------------------------------------------------------------


async def test_js_ordered_consumer_from_start_seq_in_order(js_server: NatsServer) -> None:
    with trio.fail_after(15):
        async with running_js(js_server.url) as js:
            await create(js)
            before = time.time()
            for i in range(1, 11):
                await js.publish(f"ev.{i % 3}", b"m%d" % i, msg_id=f"id-{i}")
            after = time.time()
            async with js.ordered_consumer(STREAM, start_seq=4) as consumer:
                got = await receive(consumer, 7)
                assert [m.seq for m in got] == list(range(4, 11))
                assert [m.data for m in got] == [b"m%d" % i for i in range(4, 11)]
                assert [m.subject for m in got] == [f"ev.{i % 3}" for i in range(4, 11)]
                assert all(m.headers["Nats-Msg-Id"] == f"id-{m.seq}" for m in got)
                assert all(before - 1 <= m.timestamp <= after + 1 for m in got)
                assert [m.timestamp for m in got] == sorted(m.timestamp for m in got)
                assert consumer.last_seq == 10
                # Live: plain core NATS publishes on a captured subject are stored and delivered.
                await js.bus.publish("ev.core", b"core")
                (live,) = await receive(consumer, 1)
                assert (live.seq, live.subject, live.data, dict(live.headers)) == (11, "ev.core", b"core", {})
                assert consumer.resets == 0


async def test_js_ordered_consumer_start_before_first_gets_from_first(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            await create(js, max_msgs=5)
            for i in range(1, 11):
                await js.publish("ev.x", b"%d" % i)
            info = await js.stream_info(STREAM)
            assert info is not None and (info.first_seq, info.last_seq) == (6, 10)
            for start in (0, 1, 3):
                async with js.ordered_consumer(STREAM, start_seq=start) as consumer:
                    assert [m.seq for m in await receive(consumer, 5)] == [6, 7, 8, 9, 10]


async def test_js_ordered_consumer_start_past_the_end_waits_for_that_sequence(js_server: NatsServer) -> None:
    """Started past the last sequence, it delivers from ``start_seq`` on, also across a restart
    (a position not yet read is not a stream gone back)."""
    with trio.fail_after(15):
        async with running_js(js_server.url) as js:
            await create(js)
            for i in range(1, 4):
                await js.publish("ev.x", b"%d" % i)
            got: list[int] = []
            async with js.ordered_consumer(STREAM, start_seq=6) as consumer, trio.open_nursery() as nursery:
                assert consumer.last_seq == 5

                async def follow() -> None:
                    got.extend(m.seq for m in await receive(consumer, 2))

                await js_server.stop(graceful=True)
                await js_server.start()
                nursery.start_soon(follow)
                await wait_until(lambda: consumer.resets == 1)  # recreated while the stream ends at 3
                for i in range(4, 8):
                    await js.publish("ev.x", b"%d" % i)
            assert got == [6, 7]


async def test_js_ordered_consumer_recovers_from_dropped_messages(js_server: NatsServer) -> None:
    """A queue too small for a burst drops deliveries: the consumer-sequence gap makes it start over
    after the last message handed over, so the caller still sees every sequence once, in order."""
    with trio.fail_after(20):
        async with running_js(js_server.url) as js:
            await create(js)
            for i in range(1, 201):
                await js.bus.publish("ev.burst", b"%d" % i)
            await js.bus.flush()
            async with js.ordered_consumer(STREAM, start_seq=1, queue_size=8) as consumer:
                await wait_until(lambda: consumer.dropped > 0)  # the server overflowed the queue
                got = await receive(consumer, 200)
                assert [m.seq for m in got] == list(range(1, 201))
                assert consumer.resets >= 1


async def test_js_ordered_consumer_survives_a_server_restart(js_server: NatsServer) -> None:
    with trio.fail_after(30):
        async with running_js(js_server.url) as js:
            await create(js)
            for i in range(1, 6):
                await js.publish("ev.r", b"%d" % i)
            async with js.ordered_consumer(STREAM, start_seq=1) as consumer:
                assert [m.seq for m in await receive(consumer, 5)] == [1, 2, 3, 4, 5]
                await js_server.stop(graceful=True)
                await js_server.start()  # same port, same store
                # Published while the consumer has not noticed yet: waits for the reconnect.
                for i in range(6, 11):
                    assert await js.publish("ev.r", b"%d" % i) == i
                got = await receive(consumer, 5)
                assert [m.seq for m in got] == [6, 7, 8, 9, 10]
                assert [m.data for m in got] == [b"%d" % i for i in range(6, 11)]
                assert consumer.resets >= 1


async def test_js_ordered_consumer_waiting_through_restarts_misses_nothing(js_server: NatsServer) -> None:
    """A reader blocked in receive_batch (as a history follower is) while the server restarts twice,
    messages published before, between and after: every sequence once, in order."""
    got: list[int] = []
    with trio.fail_after(30):
        async with running_js(js_server.url) as js, trio.open_nursery() as nursery:
            await create(js)
            async with js.ordered_consumer(STREAM, start_seq=1) as consumer:

                async def follow() -> None:
                    while True:
                        got.extend(m.seq for m in await consumer.receive_batch(100))

                nursery.start_soon(follow)
                seq = 0
                for _ in range(3):
                    for _ in range(20):
                        seq = await js.publish("ev.w", b"x")
                    await wait_until(partial(has_at_least, got, seq))
                    await js_server.stop(graceful=True)
                    await js_server.start()
                nursery.cancel_scope.cancel()
            assert got == list(range(1, seq + 1))
            assert consumer.resets >= 2


async def test_js_ordered_consumer_stream_gone_back_to_an_older_store(
    js_server: NatsServer, tmp_path: Path
) -> None:
    """A store restored from an older copy (or that lost its last writes) would give sequences
    already handed over to new messages: the consumer says so instead of skipping them."""
    store = tmp_path / "store"
    with trio.fail_after(20):
        async with running_js(js_server.url) as js:
            await create(js)
            for i in range(1, 4):
                await js.publish("ev.o", b"%d" % i)
            await js_server.stop(graceful=True)
            shutil.copytree(store, tmp_path / "old")
            await js_server.start()
            async with js.ordered_consumer(STREAM, start_seq=1) as consumer:
                for i in range(4, 7):
                    await js.publish("ev.o", b"%d" % i)
                assert [m.seq for m in await receive(consumer, 6)] == [1, 2, 3, 4, 5, 6]
                await js_server.stop(graceful=True)
                shutil.rmtree(store)
                shutil.copytree(tmp_path / "old", store)
                await js_server.start()
                with pytest.raises(StreamGone, match="went back to sequence 3 after 6"):
                    await consumer.receive_batch(10)


@pytest.mark.parametrize(
    ("create_again", "message"),
    [
        (False, f"^stream {STREAM} was deleted$"),
        (True, "was deleted and created again: its sequences started over"),
    ],
)
async def test_js_ordered_consumer_stream_deleted_while_consuming(
    js_server: NatsServer, create_again: bool, message: str
) -> None:
    with trio.fail_after(15):
        async with running_js(js_server.url, js_timeout=2.0) as js:
            await create(js)
            await js.publish("ev.d", b"1")
            async with js.ordered_consumer(STREAM, start_seq=1, heartbeat=0.2) as consumer:
                assert [m.seq for m in await receive(consumer, 1)] == [1]
                assert await js.delete_stream(STREAM) is True
                if create_again:
                    await create(js)
                with pytest.raises(StreamGone, match=message) as caught:
                    await consumer.receive_batch(10)
                assert caught.value.err_code == 10059
                # Asking again says the same, and does not hang.
                with pytest.raises(JetStreamUnavailable, match=message):
                    await consumer.receive_batch(10)


async def test_js_ordered_consumer_on_a_missing_stream(js_server: NatsServer) -> None:
    with trio.fail_after(10):
        async with running_js(js_server.url) as js:
            with pytest.raises(JetStreamUnavailable, match="stream NOPE does not exist"):
                async with js.ordered_consumer("NOPE", start_seq=1):
                    pass


# -- JetStream off -------------------------------------------------------------------------------


async def test_js_disabled_on_the_server_is_unavailable(nats_factory: StartServer) -> None:
    server = await nats_factory()  # no -js
    with trio.fail_after(10):
        async with running_js(server.url, js_timeout=1.0) as js:
            with pytest.raises(JetStreamUnavailable, match="JetStream is not enabled"):
                await js.stream_info(STREAM)
            with pytest.raises(JetStreamUnavailable, match="JetStream is not enabled"):
                await create(js)
            with pytest.raises(JetStreamUnavailable, match="JetStream is not enabled"):
                async with js.ordered_consumer(STREAM, start_seq=1):
                    pass
            with pytest.raises(JetStreamUnavailable, match="no responders"):
                await js.publish("ev.a", b"x")


async def test_js_not_connected_is_unavailable_within_the_timeout(nats_factory: StartServer) -> None:
    server = await nats_factory("-js")
    with trio.fail_after(10):
        async with running_js(server.url, js_timeout=0.5) as js:
            await server.stop()
            start = trio.current_time()
            with pytest.raises(JetStreamUnavailable, match="not connected to NATS"):
                await js.stream_info(STREAM)
            assert trio.current_time() - start < 2


# -- the bus underneath: request/reply, whole messages --------------------------------------------


async def test_bus_request_reply_headers_and_no_responders(nats_factory: StartServer) -> None:
    server = await nats_factory()
    with trio.fail_after(10):
        async with running_js(server.url) as js:
            bus = js.bus
            with pytest.raises(NoResponders):
                await bus.request("svc.none", b"", max_wait=2)
            async with bus.subscribe_msgs("svc.echo") as service, trio.open_nursery() as nursery:

                async def answer() -> None:
                    (msg,) = await service.receive_batch(1)
                    assert msg.reply_to is not None
                    await bus.publish_msg(msg.reply_to, msg.payload.upper(), headers={"X-Seen": "yes"})

                nursery.start_soon(answer)
                reply = await bus.request("svc.echo", b"ping", max_wait=2, headers={"X-Id": "1"})
                assert reply.payload == b"PING"
                assert reply.headers is not None and b"X-Seen: yes" in reply.headers
            async with bus.subscribe_msgs("svc.mute"):
                with pytest.raises(RequestTimeout, match=r"no reply within 0\.2 s"):
                    await bus.request("svc.mute", b"", max_wait=0.2)
