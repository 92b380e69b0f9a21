"""How bus payloads become events: one codec per bus format. Pure.

``bus_format = "gateway"`` carries the platform's JSON as the admin API publishes it
(:class:`JsonCodec`); ``bus_format = "cells"`` carries Cells' own protobuf payloads
(:class:`gateway.cells.codec.CellsCodec`). Both give the same event model, routed the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Protocol

from gateway.protocol import has_lone_surrogate

JsonObject = dict[str, Any]

# A surrogate spelled as a JSON escape, or encoded in the bytes (json.loads decodes those with
# "surrogatepass"): only then is the decoded event walked.
_SURROGATE: Final = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


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
        if _SURROGATE.search(payload) and has_lone_surrogate(event):
            raise BadEvent("holds an unpaired surrogate escape (\\ud800-\\udfff), which no frame can carry")
        return event
