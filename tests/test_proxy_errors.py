"""A reverse proxy that drops the Upgrade headers: 426 in plain text naming them, counted, logged
once a minute (what users of such gateways most often report as "websocket disconnected")."""

from __future__ import annotations

import logging

import pytest
import trio

from gateway.app import Gateway
from tests.helpers import http_request, make_settings


async def test_a_socket_path_without_upgrade_headers_gets_426_naming_them(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    caplog.set_level(logging.WARNING, logger="gateway.server")
    for path in ("/ws", "/chat", "/ws/event"):
        status, headers, body = await http_request(gateway.ws_port, "GET", path)
        assert status == 426 and headers["upgrade"] == "websocket", (status, headers)
        assert headers["content-type"].startswith("text/plain")
        text = body.decode()
        assert "Upgrade: websocket and Connection: Upgrade" in text and "proxy_set_header" in text
    # Only the Connection header dropped (a proxy that forwards Upgrade but sets Connection: close).
    status, _, body = await http_request(gateway.ws_port, "GET", "/ws", headers={"upgrade": "websocket"})
    assert status == 426 and "without Connection: Upgrade" in body.decode()
    refused = gateway.metrics.connections_refused.labels("upgrade_required")._value.get()
    assert refused == 4
    lines = [r for r in caplog.records if "without the WebSocket upgrade headers" in r.getMessage()]
    assert len(lines) == 1 and "426" in lines[0].getMessage()  # once a minute, not once per request
