"""The events socket end to end over in-memory streams: sessions, delivery, errors, timers."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from gateway.identity.mint import mint_token
from tests.helpers import (
    TREE,
    Harness,
    RawClient,
    close_code,
    expect_nothing,
    make_settings,
    recv_json,
    socket_pair,
    token,
)


def tree_event(path: str, uuid: str = "n-1", kind: str | None = None) -> dict[str, object]:
    node = {"Uuid": uuid, "Path": path, "Type": "LEAF"}
    event: dict[str, object] = {"Target": node}
    if kind:
        event["Type"] = kind
    return event


async def test_subscribe_then_receive_event(harness: Harness) -> None:
    async with harness.subscribed(token()) as ws:
        await harness.publish(TREE, tree_event("/ds/common/report.txt"))
        message = await recv_json(ws)
    assert message["Target"]["Path"] == "common-files/report.txt"
    assert json.loads(message["Target"]["MetaStore"]["EventWorkspaceId"]) == "ws-common"


async def test_events_outside_workspaces_not_delivered(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token()) as ws:
        await harness.publish(TREE, tree_event("/ds/other/secret.txt"))
        await expect_nothing(ws)


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"no": "type"}', "bad_message"),
        ('{"@type": "dance"}', "not_subscribed"),
    ],
)
async def test_bad_frames_get_error_and_session_goes_on(harness: Harness, frame: str, error: str) -> None:
    async with harness.connect() as ws:
        await ws.send_message(frame)
        reply = await recv_json(ws)
        assert reply == {"@type": "error", "error": error, "message": reply["message"]}
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
        assert (await recv_json(ws))["@type"] == "subscribed"


async def test_unknown_type_after_subscribe(harness: Harness) -> None:
    async with harness.subscribed(token()) as ws:
        await ws.send_message('{"@type": "dance"}')
        assert (await recv_json(ws))["error"] == "unknown_type"


@pytest.mark.parametrize(
    ("jwt", "error"),
    [
        ("", "token_missing"),
        ("garbage", "token_invalid"),
        (mint_token("another-secret-of-thirty-two-bytes!!", user="alice"), "token_invalid"),
        (token(ttl=-100), "token_expired"),
    ],
)
async def test_bad_token_closes_4001(harness: Harness, jwt: str, error: str) -> None:
    async with harness.connect() as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": jwt}))
        reply = await recv_json(ws)
        assert reply["error"] == error
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 4001


async def test_unknown_path_rejected_404(harness: Harness) -> None:
    refused = await harness.refusal("/nope")
    assert refused.status_code == 404
    assert json.loads(refused.body or b"")["error"] == "not_found"


async def test_subscribe_timeout_closes_4001(harness: Harness, autojump_clock: object) -> None:
    async with harness.connect() as ws:
        reply = await recv_json(ws, within=30)
        assert reply["error"] == "subscribe_timeout"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 4001


async def test_token_expiry_closes_4001(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token(ttl=60)) as ws:
        with trio.fail_after(120):
            reply = await recv_json(ws, within=120)
        assert reply["error"] == "token_expired"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 4001


async def test_resubscribe_with_fresh_token_replaces_identity(harness: Harness) -> None:
    other = {"uuid": "ws-other", "slug": "other", "roots": ["/ds/other"], "permissions": "r"}
    async with harness.subscribed(token()) as ws:
        await ws.send_message(
            json.dumps({"@type": "subscribe", "ack": True, "jwt": token(workspaces=[other])})
        )
        assert (await recv_json(ws))["@type"] == "subscribed"
        await harness.publish(TREE, tree_event("/ds/common/a.txt", "n-a"))
        await harness.publish(TREE, tree_event("/ds/other/b.txt", "n-b"))
        message = await recv_json(ws)
    assert message["Target"]["Path"] == "other/b.txt"


async def test_resubscribe_as_another_user_closes_4003(harness: Harness) -> None:
    async with harness.subscribed(token("alice")) as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token("bob")}))
        assert (await recv_json(ws))["error"] == "identity_changed"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 4003


async def test_unsubscribe_stops_delivery_and_keeps_socket(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token()) as ws:
        await ws.send_message('{"@type": "unsubscribe"}')
        assert (await recv_json(ws))["@type"] == "unsubscribed"
        await harness.publish(TREE, tree_event("/ds/common/a.txt"))
        await expect_nothing(ws, harness.gateway.settings.subscribe_timeout / 2)
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        await harness.publish(TREE, tree_event("/ds/common/b.txt", "n-b"))
        assert (await recv_json(ws))["Target"]["Path"] == "common-files/b.txt"


async def test_unsubscribed_session_must_subscribe_again_in_time(
    harness: Harness, autojump_clock: object
) -> None:
    async with harness.subscribed(token()) as ws:
        await ws.send_message('{"@type": "unsubscribe"}')
        assert (await recv_json(ws))["@type"] == "unsubscribed"
        start = trio.current_time()
        assert (await recv_json(ws, 60))["error"] == "subscribe_timeout"
        assert trio.current_time() - start <= harness.gateway.settings.subscribe_timeout + 1
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert close_code(closed) == 4001


async def test_resubscribe_extends_token_expiry(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token(ttl=60)) as ws:
        await trio.sleep(50)
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token(ttl=3600)}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        await expect_nothing(ws, 100)  # past the first token's expiry: still open


async def test_keepalive_answered_keeps_session(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token()) as ws:
        await expect_nothing(ws, 300)
        await harness.publish(TREE, tree_event("/ds/common/a.txt"))
        assert (await recv_json(ws))["Target"]["Path"] == "common-files/a.txt"


async def test_keepalive_unanswered_closes_4002(harness: Harness, autojump_clock: object) -> None:
    client_stream, server_stream = socket_pair()
    async with client_stream, trio.open_nursery() as nursery:
        nursery.start_soon(harness.gateway.websocket.serve_stream, server_stream, "local")
        client = RawClient(client_stream)
        await client.handshake()
        await client.send_json({"@type": "subscribe", "ack": True, "jwt": token()})
        start = trio.current_time()
        with trio.fail_after(120):
            while len(harness.gateway.hub.sessions) == 1 and await client.receive_some():
                pass  # read, but never answer the pings
    assert client.close_code() == 4002
    assert [m.get("error") for m in client.texts()][-1] == "ping_timeout"
    assert 40 <= trio.current_time() - start <= 46  # ping at 30 s, 10 s to answer, then close


async def test_slow_consumer_closed_4008_without_delaying_others(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    # The healthy session's writer runs between dispatch batches, so its queue stays short; the
    # stuck one's writer is blocked in its first write, so everything piles up there.
    harness = await Harness(nursery, make_settings(slow_consumer_lag_bytes=100_000, close_timeout=5)).start()
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    # Leaving this nursery waits for the stuck connection: it is aborted after close_timeout.
    with trio.fail_after(30):
        async with trio.open_nursery() as stuck_connection:
            stuck_connection.start_soon(harness.gateway.websocket.serve_stream, server_stream, "stuck")
            stuck = RawClient(client_stream)
            await stuck.handshake()
            await stuck.send_json({"@type": "subscribe", "ack": True, "jwt": token("stuck")})
            async with harness.subscribed(token("healthy")) as healthy:
                start = trio.current_time()
                for i in range(1000):
                    await harness.publish(TREE, tree_event(f"/ds/common/f{i}.txt", f"n-{i}"))
                for i in range(1000):
                    assert (await recv_json(healthy))["Target"]["Path"] == f"common-files/f{i}.txt"
                assert trio.current_time() - start < 0.1  # never waited for the stuck session
    metrics = harness.gateway.metrics
    assert metrics.registry.get_sample_value("gateway_slow_consumer_closes_total") == 1
    assert metrics.registry.get_sample_value("gateway_session_closes_total", {"code": "4008"}) == 1
    assert len(harness.gateway.hub.sessions) == 0


async def test_rate_limit_closes_1008(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings(rate_limit=1, rate_burst=5)).start()
    async with harness.subscribed(token()) as ws:
        for _ in range(5):
            await ws.send_message('{"@type": "dance"}')
        replies = [await recv_json(ws) for _ in range(5)]
        assert replies[-1]["error"] == "rate_limited"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 1008


async def test_binary_frame_closes_1003(harness: Harness) -> None:
    async with harness.subscribed(token()) as ws:
        await ws.send_message(b"\x00\x01")
        assert (await recv_json(ws))["error"] == "binary_not_supported"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 1003


async def test_oversized_message_gets_error_and_1009(harness: Harness) -> None:
    async with harness.subscribed(token()) as ws:
        await ws.send_message(json.dumps({"@type": "x", "pad": "a" * 70_000}))
        assert (await recv_json(ws))["error"] == "message_too_big"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 1009


async def test_huge_message_cut_off_with_1009(harness: Harness) -> None:
    # In memory: over a socket, the server's abort resets the client while it still writes the
    # rest of the message, and the close frame may be lost with it.
    async with harness.connect(memory=True) as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        await ws.send_message("a" * (1 << 20))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 1009


async def test_large_token_accepted(harness: Harness) -> None:
    many = [
        {"uuid": f"ws-{i}", "slug": f"s{i}", "roots": [f"/ds/folder-number-{i}"], "permissions": "r"}
        for i in range(120)
    ]
    jwt = token(workspaces=[*many, {"uuid": "ws-common", "slug": "common-files", "roots": ["/ds/common"]}])
    assert len(jwt) > 8000
    async with harness.subscribed(jwt) as ws:
        await harness.publish(TREE, tree_event("/ds/common/a.txt"))
        assert (await recv_json(ws))["Target"]["Path"] == "common-files/a.txt"


@pytest.mark.parametrize(
    ("allowed", "origin", "accepted"),
    [
        ((), None, True),
        ((), "https://evil.example", False),
        (("https://cells.example.com",), "https://cells.example.com", True),
        (("https://cells.example.com",), "https://CELLS.example.com/", True),
        (("https://cells.example.com",), "https://cells.example.com.evil.example", False),
        (("https://cells.example.com",), "null", False),
        (("*",), "https://anything.example", True),
    ],
)
async def test_origin_allow_list(
    nursery: trio.Nursery, allowed: tuple[str, ...], origin: str | None, accepted: bool
) -> None:
    harness = await Harness(nursery, make_settings(allowed_origins=allowed)).start()
    headers = [(b"Origin", origin.encode())] if origin else []
    if accepted:
        async with harness.connect(headers=headers) as ws:
            await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
            assert (await recv_json(ws))["@type"] == "subscribed"
    else:
        refused = await harness.refusal(headers=headers)
        assert refused.status_code == 403


async def test_session_limits_refused_at_handshake(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings(max_sessions=3, max_sessions_per_ip=2)).start()
    async with (
        harness.subscribed(token("a"), remote="10.0.0.1"),
        harness.subscribed(token("b"), remote="10.0.0.1"),
    ):
        assert (await harness.refusal(remote="10.0.0.1")).status_code == 429
        async with harness.subscribed(token("c"), remote="10.0.0.2"):
            assert (await harness.refusal(remote="10.0.0.3")).status_code == 503


async def test_drain_closes_sessions_1001(harness: Harness) -> None:
    async with harness.subscribed(token()) as ws:
        await harness.publish(TREE, tree_event("/ds/common/a.txt"))
        await trio.testing.wait_all_tasks_blocked()  # routed and queued, maybe not yet written
        harness.gateway.websocket.drain()
        assert (await recv_json(ws))["Target"]["Path"] == "common-files/a.txt"  # flushed first
        assert (await recv_json(ws))["error"] == "shutting_down"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert close_code(closed) == 1001


@pytest.mark.logs_errors
async def test_handler_error_closes_only_that_session_1011(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    async with harness.subscribed(token()) as bystander, harness.subscribed(token()) as victim:
        monkeypatch.setattr(harness.gateway.commands.handlers["events"], "handle", broken)
        await victim.send_message('{"@type": "dance"}')
        assert (await recv_json(victim))["error"] == "internal_error"
        with pytest.raises(ConnectionClosed) as closed:
            await victim.get_message()
        assert close_code(closed) == 1011
        await harness.publish(TREE, tree_event("/ds/common/a.txt"))
        assert (await recv_json(bystander))["Target"]["Path"] == "common-files/a.txt"
    assert harness.gateway.metrics.registry.get_sample_value("gateway_handler_errors_total") == 1


async def test_session_limit_holds_for_concurrent_handshakes(nursery: trio.Nursery) -> None:
    # Handshakes that complete together must not all pass the per-address check before any of
    # them is counted: with one connection open (not subscribed: pending) and a limit of two, one
    # of two more gets in.
    harness = await Harness(nursery, make_settings(max_pending_per_ip=2)).start()
    outcomes: list[str] = []
    release = trio.Event()

    async def attempt() -> None:
        try:
            async with harness.connect(remote="10.9.9.9"):
                outcomes.append("accepted")
                await release.wait()
        except* ConnectionRejected:
            outcomes.append("refused")

    async with harness.connect(remote="10.9.9.9"), trio.open_nursery() as clients:
        for _ in range(2):
            clients.start_soon(attempt)
        with trio.fail_after(5):
            while len(outcomes) < 2:
                await trio.testing.wait_all_tasks_blocked()
        assert sorted(outcomes) == ["accepted", "refused"]
        assert harness.gateway.hub.count_from("10.9.9.9") == 2
        release.set()


async def test_keepalive_closes_a_peer_that_cannot_even_take_the_ping(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    harness = await Harness(nursery, make_settings(close_timeout=5)).start()
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    # Leaving the nursery waits for the connection: closed by keepalive, then aborted.
    with trio.fail_after(60):
        async with trio.open_nursery() as connection:
            connection.start_soon(harness.gateway.websocket.serve_stream, server_stream, "stuck")
            client = RawClient(client_stream)
            await client.handshake()
            await client.send_json({"@type": "subscribe", "ack": True, "jwt": token()})
            while not client.texts():
                await client.receive_some()
            # From now on the client reads nothing: the keepalive ping itself cannot be written.
    assert not harness.gateway.hub.sessions
    closes = harness.gateway.metrics.registry.get_sample_value(
        "gateway_session_closes_total", {"code": "4002"}
    )
    assert closes == 1


async def test_pending_handshakes_capped_per_address(nursery: trio.Nursery) -> None:
    harness = await Harness(nursery, make_settings(max_pending_per_ip=1)).start()
    first_client, first_server = socket_pair()
    second_client, second_server = socket_pair()
    third_client, third_server = socket_pair()
    async with first_client, second_client, third_client, trio.open_nursery() as connections:
        connections.start_soon(harness.gateway.websocket.serve_stream, first_server, "10.1.1.1")
        await trio.testing.wait_all_tasks_blocked()  # the first sits in its handshake
        connections.start_soon(harness.gateway.websocket.serve_stream, second_server, "10.1.1.1")
        with trio.fail_after(5):
            assert await second_client.receive_some() == b""  # closed at once
        connections.start_soon(harness.gateway.websocket.serve_stream, third_server, "10.2.2.2")
        await RawClient(third_client).handshake()  # another address is not affected
        connections.cancel_scope.cancel()
    metric = harness.gateway.metrics.registry.get_sample_value
    assert metric("gateway_connections_refused_total", {"reason": "handshake_backlog"}) == 1
