"""The JetStream history end to end: two gateways on one nats-server with JetStream, on loopback.

A client that moves from one instance to the other resumes without a gap (also while publishing
goes on); both instances give the same positions, debounced events included; a start without
JetStream, or with a stream of other subjects, fails with the fix in the message; JetStream lost
at run time means events without positions and a ``gap`` with reason ``unavailable`` until the
stream is back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from gateway.app import Gateway
from gateway.bus.nats.jetstream import JetStream
from gateway.config import ConfigError
from gateway.history import backend
from tests.helpers import TREE, admin_publish, make_settings, recv_json, token, ws_client
from tests.process import gateway_env
from tests.servers import NatsServer, nats_servers, requires_nats, wait_until

pytestmark = requires_nats

STREAM = "GATEWAY_HISTORY"
Json = dict[str, Any]


@pytest.fixture
async def nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    async with nats_servers(tmp_path) as start:
        yield await start("-js", "-sd", str(tmp_path / "js"))


def settings(nats: NatsServer, **changes: Any) -> Any:
    return make_settings(bus_url=nats.url, history_backend="jetstream", **changes)


@asynccontextmanager
async def instances(nats: NatsServer, count: int = 2, **changes: Any) -> AsyncIterator[list[Gateway]]:
    async with trio.open_nursery() as nursery:
        started = []
        for _ in range(count):
            started.append(await nursery.start(Gateway(settings(nats, **changes)).run))
        yield started
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def subscribed(
    gateway: Gateway, **fields: Any
) -> AsyncIterator[tuple[WebSocketConnection, dict[str, Any]]]:
    async with ws_client(f"ws://127.0.0.1:{gateway.ws_port}/ws") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": token(), **fields}))
        yield ws, await recv_json(ws)


def deleted(name: str) -> dict[str, Any]:
    return {"Type": "DELETE", "Source": {"Uuid": name, "Path": f"/ds/common/{name}.txt", "Type": "LEAF"}}


async def publish(gateway: Gateway, *events: dict[str, Any]) -> None:
    status, answer = await admin_publish(
        gateway.admin_port, {"events": [{"topic": TREE, "event": e} for e in events]}
    )
    assert status == 202, answer


async def events(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    return [await recv_json(ws) for _ in range(count)]


def names(messages: list[dict[str, Any]]) -> list[str]:
    assert all("Source" in m for m in messages), messages
    return [m["Source"]["Uuid"] for m in messages]


async def test_a_client_moving_to_another_instance_recovers_without_gap(nats: NatsServer) -> None:
    async with instances(nats) as (a, b):
        async with subscribed(a, recover=True) as (ws, reply):
            assert reply["position"] == b.log.current_position  # one history, one position
            await publish(a, deleted("a"))
            last = (await recv_json(ws))["@position"]
        await publish(b, deleted("b"), deleted("c"))
        seen = int(last.split(":")[1])
        await until(lambda: b.log.seq >= seen + 2)  # b has read them: they are replayed
        async with subscribed(b, since=last) as (ws, reply):
            missed = await events(ws, 2)
            assert names(missed) == ["b", "c"]
            recovered = await recv_json(ws)
            assert recovered == {"@type": "recovered", "position": missed[-1]["@position"], "replayed": 2}
            await publish(a, deleted("d"))
            assert names([await recv_json(ws)]) == ["d"]


async def test_failover_while_publishing_goes_on_loses_and_repeats_nothing(nats: NatsServer) -> None:
    total = 80
    async with instances(nats) as (a, b), trio.open_nursery() as nursery:

        async def publisher() -> None:
            for n in range(total):
                await publish(a if n % 2 else b, deleted(f"n{n}"))

        seen: list[dict[str, Any]] = []
        async with subscribed(a, recover=True) as (ws, _):
            nursery.start_soon(publisher)
            while len(seen) < total // 3:
                seen.append(await recv_json(ws))
        async with subscribed(b, since=seen[-1]["@position"]) as (ws, _):
            while len(seen) < total:
                message = await recv_json(ws)
                assert message.get("@type") != "gap", message
                if message.get("@type") != "recovered":
                    seen.append(message)
    assert sorted(names(seen)) == sorted(f"n{n}" for n in range(total))  # each exactly once
    offsets = [int(m["@position"].split(":")[1]) for m in seen]
    assert offsets == sorted(set(offsets))  # strictly increasing across the move


async def test_both_instances_debounce_alike_at_the_same_positions(nats: NatsServer) -> None:
    node = {"Uuid": "n1", "Path": "/ds/common/new.txt", "Type": "LEAF"}
    created = {"Type": "CREATE", "Target": {**node, "Size": "1"}}
    updated = {"Type": "UPDATE_CONTENT", "Target": {**node, "Size": "9"}}
    async with (
        instances(nats, debounce_seconds=1.0) as (a, b),
        subscribed(a, recover=True) as (on_a, _),
        subscribed(b, recover=True) as (on_b, _),
    ):
        await publish(a, created, updated)  # within one quiet period
        await publish(b, deleted("x"))  # another node: not held back by the batch
        from_a, from_b = await events(on_a, 2), await events(on_b, 2)
    assert from_a == from_b
    merged = next(m for m in from_a if m.get("Target", {}).get("Uuid") == "n1")
    assert merged["Target"]["Size"] == "9" and "Type" not in merged  # one CREATE, the merge of both
    offsets = [int(m["@position"].split(":")[1]) for m in from_a]
    assert offsets == sorted(set(offsets))


async def test_a_restarted_instance_serves_the_history_it_did_not_see(nats: NatsServer) -> None:
    async with instances(nats, count=1) as (a,):
        async with subscribed(a, recover=True) as (ws, _):
            await publish(a, deleted("a"))
            last = (await recv_json(ws))["@position"]
        await publish(a, deleted("b"))
        await until(lambda: a.log.current_position != last)
    async with instances(nats, count=1) as (fresh,), subscribed(fresh, since=last) as (ws, _):
        assert names([await recv_json(ws)]) == ["b"]
        assert (await recv_json(ws))["@type"] == "recovered"


async def test_start_without_jetstream_names_the_fix(tmp_path: Path) -> None:
    async with nats_servers(tmp_path) as start:
        plain = await start()
        with pytest.raises(BaseExceptionGroup) as caught:
            async with instances(plain, count=1):
                pass
    leaf = _leaf(caught.value)
    assert isinstance(leaf, ConfigError) and "enable JetStream" in str(leaf)


async def test_start_with_a_stream_of_other_subjects_names_the_fix(nats: NatsServer) -> None:
    async with instances(nats, count=1) as (a,):
        js = JetStream(a.bus, timeout=5)  # type: ignore[arg-type]
        await js.create_stream("OTHER", ["something.else"], max_msgs=10, max_age=60, duplicate_window=10)
    async with trio.open_nursery() as nursery:
        gateway = Gateway(settings(nats, history_stream="OTHER"))
        with pytest.raises(BaseExceptionGroup) as caught:
            await nursery.start(gateway.run)
    leaf = _leaf(caught.value)
    assert isinstance(leaf, ConfigError) and "nats stream rm OTHER" in str(leaf)


async def test_jetstream_lost_at_run_time_gives_gap_until_it_is_back(
    nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "RETRY", 0.2)
    monkeypatch.setattr(backend, "HEARTBEAT", 0.2)
    async with instances(nats, count=1) as (a,):
        async with subscribed(a, recover=True) as (ws, _):
            await publish(a, deleted("a"))
            last = (await recv_json(ws))["@position"]
            js = JetStream(a.bus, timeout=5)  # type: ignore[arg-type]
            await delete_stream(js, STREAM)
            await until(lambda: a.log.suspended is not None)
            await publish(a, deleted("b"))  # plain subscriptions now
            live = await recv_json(ws)
            assert names([live]) == ["b"] and "@position" not in live
            async with subscribed(a, since=last) as (other, reply):
                assert "position" not in reply
                gap = await recv_json(other)
                assert gap == {"@type": "gap", "since": last, "position": None, "reason": "unavailable"}
            await until(lambda: a.log.suspended is None)  # the stream was created again
            await publish(a, deleted("c"))
            back = await recv_json(ws)
            assert names([back]) == ["c"] and back["@position"].split(":")[0] != last.split(":")[0]
        assert a.metrics.history_gaps.labels("unavailable")._value.get() == 1


async def delete_stream(js: JetStream, name: str) -> None:
    assert await js.delete_stream(name)


async def until(condition: Callable[[], bool], within: float = 10) -> None:
    with trio.fail_after(within):
        await wait_until(condition)


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def test_serve_without_jetstream_exits_with_the_fix(tmp_path: Path) -> None:
    async with nats_servers(tmp_path) as start:
        plain = await start()
        env = gateway_env(GATEWAY_HISTORY_BACKEND="jetstream", GATEWAY_BUS_URL=plain.url)
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        result = await trio.run_process(argv, env=env, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert b"configuration error" in result.stderr and b"enable JetStream" in result.stderr
    assert b"Traceback" not in result.stderr
