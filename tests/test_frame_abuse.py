"""Frame-level abuse closed (issue 13, findings 4 and 5), on real sockets with frames built by hand.

An unfinished fragmented message was kept forever while its sender answered pings (about 255 KB
per session, also before authentication): reassembly now has a deadline, ``fragment_timeout``. A
ping flood bypassed the inbound rate limit (four sockets took a core): control frames now count
against ``rate_limit``/``rate_burst`` like messages.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.events import Pong

from tests.helpers import Harness, make_settings
from tests.test_hostile_input import CONTINUATION, PING, TEXT, frame, raw_client

ENDPOINTS = pytest.mark.parametrize("path", ["/ws", "/chat"])


async def fragment_harness(nursery: trio.Nursery) -> Harness:
    """A 10 s ``fragment_timeout``; no keepalive or subscribe deadline to close the session first."""
    settings = make_settings(fragment_timeout=10.0, ping_interval=3600.0, subscribe_timeout=3600.0)
    return await Harness(nursery, settings).start()


@ENDPOINTS
async def test_an_unfinished_fragmented_message_is_closed_at_fragment_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, path: str
) -> None:
    harness = await fragment_harness(nursery)
    async with raw_client(harness, path) as client:  # not subscribed: before authentication too
        started = trio.current_time()
        await client.stream.send_all(frame(TEXT, b'{"@type": "sub', fin=False))
        for _ in range(8):  # more parts and pings keep the socket busy, not the message alive
            await trio.sleep(1.0)
            await client.stream.send_all(frame(CONTINUATION, b"x" * 1000, fin=False) + frame(PING, b"p"))
        await client.read_until_closed()
        assert client.close_code() == 1008
        assert trio.current_time() - started == pytest.approx(10.0, abs=1.0)
        assert any(isinstance(e, Pong) for e in client.events)  # pings were answered meanwhile
    assert harness.gateway.metrics.fragment_timeouts._value.get() == 1


async def test_a_finished_fragmented_message_is_not_timed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = await fragment_harness(nursery)
    async with raw_client(harness, "/ws") as client:
        await client.stream.send_all(frame(TEXT, b'{"@type":', fin=False))
        await trio.sleep(9.0)
        await client.stream.send_all(frame(CONTINUATION, b' "nonsense"}'))
        await trio.sleep(20.0)  # long after the first part's deadline: the message was done
        await client.stream.send_all(frame(TEXT, b'{"@type":', fin=False))
        await trio.sleep(5.0)
        assert client.close_code() is None
        while not client.texts():
            await client.receive_some()
        assert client.texts()[0]["error"] == "not_subscribed"  # the whole message was read


@ENDPOINTS
async def test_a_ping_flood_is_rate_limited_before_authentication(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, path: str
) -> None:
    harness = await Harness(nursery, make_settings(rate_limit=1e-6, rate_burst=10)).start()
    async with raw_client(harness, path) as client:
        await client.stream.send_all(frame(PING, b"x") * 100)
        with trio.fail_after(10):
            await client.read_until_closed()
    pongs = [e for e in client.events if isinstance(e, Pong)]
    assert len(pongs) == 10  # the burst, then 1008 instead of 90 more answers
    assert client.close_code() == 1008


async def test_unsolicited_pongs_count_too(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = await Harness(nursery, make_settings(rate_limit=1e-6, rate_burst=5)).start()
    async with raw_client(harness, "/ws") as client:
        await client.stream.send_all(frame(0xA, b"") * 50)
        with trio.fail_after(10):
            await client.read_until_closed()
    assert client.close_code() == 1008


async def test_the_deadline_is_each_messages_own(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A message that ends in the same read as the next one begins: the next gets its own time."""
    harness = await fragment_harness(nursery)
    async with raw_client(harness, "/ws") as client:
        await client.stream.send_all(frame(TEXT, b'{"@type":', fin=False))
        await trio.sleep(9.0)
        began = trio.current_time()
        await client.stream.send_all(frame(CONTINUATION, b' "x"}') + frame(TEXT, b'{"@type":', fin=False))
        await client.read_until_closed()
        assert client.close_code() == 1008
        assert trio.current_time() - began == pytest.approx(10.0, abs=1.0)


async def test_a_peer_flooding_after_the_close_is_read_no_further(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """After the 1008, a flooder is read for 1 MiB more (its close frame may be there), then not at
    all until the close deadline: its flood costs no more parsing."""
    harness = await Harness(nursery, make_settings(rate_limit=1e-6, rate_burst=2)).start()
    async with raw_client(harness, "/ws") as client:
        await client.stream.send_all(frame(PING, b"x") * 3)  # over the burst: 1008
        flood = frame(PING, b"x" * 100) * (32 * 1024 * 1024 // 106)
        sent_all = False
        try:
            await client.stream.send_all(flood)
            sent_all = True
        except trio.BrokenResourceError:
            pass  # the connection ended while the rest sat unread
        assert not sent_all
