"""Pin the trio-websocket internals gateway/wsconn.py relies on, so an upgrade fails here first."""

from __future__ import annotations

import inspect

from trio_websocket import WebSocketConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from gateway.protocol import text_frame


def test_wsconn_internals_present() -> None:
    source = inspect.getsource(WebSocketConnection.__init__)
    for attribute in ("self._stream ", "self._stream_lock", "self._wsproto", "self._pings"):
        assert attribute in source, attribute
    assert callable(WebSocketConnection._send)
    assert callable(WebSocketConnection._abort_web_socket)
    # answer_parse_failures() moves wsproto's connection state by hand.
    assert "self._state" in inspect.getsource(Connection.__init__)


def test_wsconn_text_frames_decode_as_separate_messages() -> None:
    client = Connection(ConnectionType.CLIENT)  # past the handshake: frames only
    client.receive_data(text_frame('{"a": "é"}') + text_frame("second"))
    messages = [e.data for e in client.events() if isinstance(e, TextMessage)]
    assert messages == ['{"a": "é"}', "second"]
