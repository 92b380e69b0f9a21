"""Cells' bus payloads -> the gateway's event model (the JSON Cells' websocket service derives). Pure.

A payload is unwrapped from its framing (:mod:`gateway.cells.envelope`), parsed as the topic's
protobuf message with the project's own schema (``gateway/cells/schema``), and printed with Go
protojson's rules (:mod:`gateway.cells.protojson`). The result is routed exactly like an event of
the gateway's own JSON format.
"""

from __future__ import annotations

from typing import Final

from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError, Message

from gateway.cells import envelope, protojson
from gateway.cells.schema import activity_pb2, chat_pb2, idm_pb2, jobs_pb2, tree_pb2
from gateway.events.codec import BadEvent, JsonObject
from gateway.topics import ACTIVITY_TOPIC, CHAT_TOPIC, IDM_TOPIC, META_TOPIC, TASKS_TOPIC, TREE_TOPIC

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    TREE_TOPIC: tree_pb2.NodeChangeEvent,
    META_TOPIC: tree_pb2.NodeChangeEvent,
    TASKS_TOPIC: jobs_pb2.TaskChangeEvent,
    IDM_TOPIC: idm_pb2.ChangeEvent,
    ACTIVITY_TOPIC: activity_pb2.PostActivityEvent,
    CHAT_TOPIC: chat_pb2.ChatEvent,
}


class CellsCodec:
    """Decodes the payloads Cells publishes on its NATS subjects."""

    def decode(self, topic: str, payload: bytes) -> JsonObject:
        message_type = MESSAGE_TYPES.get(topic)
        if message_type is None:
            raise BadEvent(f"no Cells message type is known for {topic}")
        framed = envelope.unwrap(payload)
        body = _unwrap_any(framed.body, message_type) if framed.may_be_any else framed.body
        try:
            message = message_type.FromString(body)
            return protojson.to_json(message)
        except (DecodeError, protojson.ProtoJsonError) as exc:
            raise BadEvent(
                f"not a {message_type.DESCRIPTOR.full_name} ({framed.framing} framing): {exc}"
            ) from None


def _unwrap_any(body: bytes, message_type: type[Message]) -> bytes:
    """The message inside a ``google.protobuf.Any`` naming ``message_type``; else the body itself."""
    try:
        wrapper = AnyMessage.FromString(body)
    except DecodeError:
        return body
    if wrapper.type_url.rpartition("/")[2] == message_type.DESCRIPTOR.full_name:
        return wrapper.value
    return body
