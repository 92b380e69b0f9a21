"""Admin HTTP listener: health, readiness, metrics, the publish API and its refusals."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
import trio

from gateway.admin.requests import PublishError, parse_publish_body
from gateway.app import Gateway
from tests.helpers import TREE, admin_publish, http_request, make_settings, recv_json, token, ws_client


@pytest.fixture
async def gateway(nursery: trio.Nursery) -> Gateway:
    result: Gateway = await nursery.start(Gateway(make_settings(admin_max_body=4096, admin_max_batch=3)).run)
    return result


async def test_admin_health_and_ready(gateway: Gateway) -> None:
    status, _, body = await http_request(gateway.admin_port, "GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = await http_request(gateway.admin_port, "GET", "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})


async def test_admin_not_ready_while_draining(gateway: Gateway) -> None:
    gateway.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert gateway.readiness()[0] is False


async def test_admin_metrics_exposes_counters(gateway: Gateway) -> None:
    assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": {}}))[0] == 202
    await trio.testing.wait_all_tasks_blocked()
    status, headers, body = await http_request(gateway.admin_port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert f'gateway_events_received_total{{topic="{TREE}"}} 1.0' in text
    for name in ("gateway_sessions", "gateway_auth_failures_total", "gateway_bus_lag",
                 "gateway_slow_consumer_closes_total", "gateway_events_dropped_total"):  # fmt: skip
        assert f"# TYPE {name}" in text


async def test_admin_publish_single_and_batch(gateway: Gateway) -> None:
    assert await admin_publish(gateway.admin_port, {"topic": TREE, "event": {"Type": "DELETE"}}) == (
        202,
        {"published": 1},
    )
    batch = {"events": [{"topic": TREE, "event": {}}, {"topic": TREE, "event": {}}]}
    assert await admin_publish(gateway.admin_port, batch) == (202, {"published": 2})


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": "Basic dGVzdA=="}, {"authorization": "Bearer"}],
)
async def test_admin_publish_requires_key(gateway: Gateway, headers: dict[str, str]) -> None:
    body = json.dumps({"topic": TREE, "event": {}}).encode()
    status, response_headers, response = await http_request(
        gateway.admin_port, "POST", "/api/v1/publish", body, headers
    )
    assert status == 401
    assert response_headers["www-authenticate"].startswith("Bearer")
    assert json.loads(response)["error"] == "unauthorized"


async def test_admin_publish_bad_bodies_400(gateway: Gateway) -> None:
    for body in [b"not json", b"[]", {"topic": "nope", "event": {}}, {"events": []},
                 {"events": [{"topic": TREE, "event": {}}] * 4}]:  # fmt: skip
        status, response = await admin_publish(gateway.admin_port, body)
        assert status == 400, body
        assert response["error"] == "bad_request" and response["message"]


async def test_admin_publish_body_limit_413(gateway: Gateway) -> None:
    body = {"topic": TREE, "event": {"pad": "x" * 5000}}
    status, response = await admin_publish(gateway.admin_port, body)
    assert status == 413 and response["error"] == "body_too_large"


async def test_admin_unknown_path_and_method(gateway: Gateway) -> None:
    assert (await http_request(gateway.admin_port, "GET", "/nope"))[0] == 404
    status, headers, _ = await http_request(gateway.admin_port, "GET", "/api/v1/publish")
    assert status == 405 and headers["allow"] == "POST"


async def test_admin_malformed_http_400(gateway: Gateway) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.admin_port)
    async with stream:
        await stream.send_all(b"GARBAGE\r\n\r\n")
        with trio.fail_after(5):
            reply = await stream.receive_some(4096)
    assert reply.startswith(b"HTTP/1.1 400")


async def test_admin_keep_alive_serves_several_requests(gateway: Gateway) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.admin_port)
    async with stream:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send_all(request * 2)
        received = b""
        with trio.fail_after(5):
            while received.count(b"HTTP/1.1 200") < 2:
                received += await stream.receive_some(4096)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"1", "JSON object"),
        (b'{"topic": "topic.pydio.tree.nodes.changes"}', "exactly the fields"),
        (b'{"topic": "topic.pydio.chat.event", "event": {}}', "topic must be one of"),
        (b'{"topic": "topic.pydio.tree.nodes.changes", "event": []}', "event must be a JSON object"),
        (b'{"events": {}}', "non-empty list"),
        (b'{"events": [1]}', "events[0] must be an object"),
        (b'{"events": [], "topic": "x"}', 'only the "events" field'),
        (b'{"topic": "topic.pydio.tree.nodes.changes", "event": {"Path": "a\\ud800"}}', "unpaired surrogate"),
        (b'{"topic": "topic.pydio.tree.nodes.changes", "event": {"\\udc00": 1}}', "unpaired surrogate"),
        (
            b'{"topic": "topic.pydio.tree.nodes.changes", "event": {"Path": "\xed\xa0\x80"}}',
            "unpaired surrogate",
        ),
    ],
)
def test_parse_publish_body_refusals(body: bytes, fragment: str) -> None:
    with pytest.raises(PublishError, match=re.escape(fragment)):
        parse_publish_body(body, 10)


def test_parse_publish_body_accepts_both_forms() -> None:
    event: dict[str, Any] = {"Type": "DELETE"}
    single = json.dumps({"topic": TREE, "event": event}).encode()
    assert parse_publish_body(single, 10) == [(TREE, event)]
    batch = json.dumps({"events": [{"topic": TREE, "event": event}] * 2}).encode()
    assert parse_publish_body(batch, 10) == [(TREE, event), (TREE, event)]


async def test_admin_idle_connection_closed_quietly(
    gateway: Gateway, autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection that sends nothing (a TCP probe, or a keep-alive client gone quiet after its
    # first answer) is closed at the request timeout: no error, no answer replayed.
    stream = await trio.open_tcp_stream("127.0.0.1", gateway.admin_port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(60):
            while chunk := await stream.receive_some(4096):
                received += chunk
    assert received.count(b"HTTP/1.1 200") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_admin_publish_of_a_lone_surrogate_refused_400(gateway: Gateway) -> None:
    # It was answered 202, then dropped for everyone: no frame can carry such a path.
    node = {"Uuid": "n-1", "Path": "/ds/common/a\ud800.txt"}  # json.dumps spells it "\\ud800"
    fine = {"topic": TREE, "event": {"Type": "DELETE", "Source": {"Uuid": "n-2", "Path": "/ds/common/b.txt"}}}
    async with ws_client(f"ws://127.0.0.1:{gateway.ws_port}/ws") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "jwt": token()}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        status, answer = await admin_publish(
            gateway.admin_port, {"events": [fine, {"topic": TREE, "event": {"Target": node}}]}
        )
        assert (status, answer["error"]) == (400, "bad_request") and "surrogate" in answer["message"]
        assert await admin_publish(gateway.admin_port, fine) == (202, {"published": 1})
        assert (await recv_json(ws))["Source"]["Path"] == "common-files/b.txt"  # the batch published nothing
    assert gateway.metrics.registry.get_sample_value("gateway_events_received_total", {"topic": TREE}) == 1
