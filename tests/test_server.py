"""The events socket end to end over in-memory streams: sessions, delivery, errors, timers."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed

from gateway.auth import mint_token
from tests.helpers import TREE, Harness, expect_nothing, recv_json, token


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
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": token()}))
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
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": jwt}))
        reply = await recv_json(ws)
        assert reply["error"] == error
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 4001


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
    assert closed.value.reason.code == 4001


async def test_token_expiry_closes_4001(harness: Harness, autojump_clock: object) -> None:
    async with harness.subscribed(token(ttl=60)) as ws:
        with trio.fail_after(120):
            reply = await recv_json(ws, within=120)
        assert reply["error"] == "token_expired"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 4001
