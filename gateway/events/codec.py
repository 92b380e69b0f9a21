"""How bus payloads become events: one codec per bus format. Pure.

``bus_format = "gateway"`` carries the platform's JSON as the admin API publishes it
(:class:`JsonCodec`); ``bus_format = "cells"`` carries Cells' own protobuf payloads
(:class:`gateway.cells.codec.CellsCodec`). Both give the same event model, routed the same way.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

JsonObject = dict[str, Any]


class BadEvent(ValueError):
    """A payload that is not an event of the configured format; the message says why."""


class EventCodec(Protocol):
    def decode(self, topic: str, payload: bytes) -> JsonObject:
        """The event a payload carries, or BadEvent."""
        ...


class JsonCodec:
    """The gateway's own format: one JSON object per message."""

    def decode(self, topic: str, payload: bytes) -> JsonObject:
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            raise BadEvent("not valid JSON") from None
        if not isinstance(event, dict):
            raise BadEvent("not a JSON object")
        return event
