"""What users write into chat, made safe to store and to show to others. Pure (nh3 only).

Every field one user sets and other users receive goes through one of these (docs/PROTOCOL.md,
section 4, lists them): the message text and the room label are HTML cleaned by nh3, then bounded
as they are stored and sent, since cleaning may lengthen them (``&`` becomes ``&amp;``, five
bytes); identifiers are checked against a pattern instead, and never cleaned.
"""

from __future__ import annotations

import json
import re
from typing import Final

import nh3

from gateway.protocol import ErrorCode, ProtocolError

# C0 control characters but tab, newline and carriage return, and DEL: no use in chat, six bytes
# each once JSON-escaped, and PostgreSQL refuses NUL in text.
_CONTROLS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CLIENT_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_LABEL: Final = 256  # characters of a cleaned RoomLabel
# An identifier shown as is (a workspace or node uuid, a login, a GLOBAL room's name): no markup.
_NOT_IN_IDENTIFIERS: Final = re.compile("[\x00-\x1f\x7f<>]")


def sent_size(text: str) -> int:
    """Bytes ``text`` takes inside a frame: UTF-8, JSON-escaped (as ``gateway.protocol.encode``)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")) - 2


def clean_text(raw: str, max_bytes: int) -> str:
    """A message's text as stored and sent: unsafe HTML removed (nh3), not empty, and at most
    ``max_bytes`` as sent (after cleaning and escaping)."""
    text = nh3.clean(_CONTROLS.sub("", raw)).strip()
    if not text:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "the message is empty (after removing unsafe HTML)")
    size = sent_size(text)
    if size > max_bytes:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"messages are limited to {max_bytes} bytes as stored and sent; this one takes {size} "
            "once its HTML is made safe (& < > are escaped)",
        )
    return text


def label_text(raw: str) -> str:
    """A RoomLabel without tags (their text kept, scripts dropped) or control characters."""
    return nh3.clean(_CONTROLS.sub("", raw), tags=set()).strip()


def clean_label(raw: str) -> str:
    """A RoomLabel as stored and sent: ``label_text``, at most MAX_LABEL characters."""
    label = label_text(raw)
    if len(label) > MAX_LABEL:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"Room.RoomLabel is longer than {MAX_LABEL} characters once cleaned"
        )
    return label


def check_client_id(value: str) -> str:
    """``Message.ClientMessageId``: 1 to 64 of ``A-Z a-z 0-9 . _ : -``, sent back as is."""
    if CLIENT_ID.fullmatch(value) is None:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, "Message.ClientMessageId must be 1 to 64 of A-Z a-z 0-9 . _ : -"
        )
    return value


def check_identifier(value: str, name: str) -> str:
    """An identifier others see as is (``Room.RoomTypeObject``): no control character, no ``<`` or ``>``."""
    if _NOT_IN_IDENTIFIERS.search(value) is not None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{name} may not hold control characters, < or >")
    return value
