"""NATS message headers, sans-IO: the header block of ``HMSG``/``HPUB`` parsed and built.

A header block is an HTTP-like preamble (https://docs.nats.io/reference/reference-protocols/
nats-protocol#hpub)::

    NATS/1.0[ <status>[ <description>]]\\r\\n
    Key: Value\\r\\n
    ...
    \\r\\n

A status line without a code is an ordinary message with headers; with a code it is a message
from the server itself: ``503`` (no responders to a request), ``100 Idle Heartbeat`` and
``100 FlowControl Request`` (JetStream push consumers), ``409 ...`` (a consumer's trouble).

Headers of a message come from whoever published it: a block that is not NATS/1.0 raises
``ValueError`` and the caller decides (the ordered consumer treats it as no headers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

VERSION: Final = b"NATS/1.0"
CRLF: Final = b"\r\n"
STATUS_NO_RESPONDERS: Final = 503
STATUS_CONTROL: Final = 100  # heartbeats and flow-control requests of JetStream push consumers

_NAME: Final = re.compile(r"[!-9;-~]+")  # printable ASCII but ':' (as in HTTP field names)
_STATUS: Final = re.compile(rb"[ \t]*(\d{3})(?:[ \t]+(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """One parsed header block: the status (None for an ordinary message) and the fields.

    A key given twice keeps its first value (as Go's ``Header.Get`` reads it).
    """

    status: int | None = None
    description: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


def parse_headers(block: bytes) -> HeaderBlock:
    """Parse a header block; raise ValueError when it does not start with ``NATS/1.0``."""
    lines = block.split(CRLF)
    first = lines[0]
    if not first.startswith(VERSION):
        raise ValueError("a header block starts with NATS/1.0")
    status, description = _parse_status(first[len(VERSION) :])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.decode(errors="replace").partition(":")
        name = name.strip()
        if colon and _NAME.fullmatch(name):
            fields.setdefault(name, value.strip())
    return HeaderBlock(status, description, fields)


def _parse_status(rest: bytes) -> tuple[int | None, str]:
    if not rest.strip(b" \t"):
        return None, ""
    match = _STATUS.fullmatch(rest)
    if match is None:
        raise ValueError(f"invalid status in header block: {rest[:32]!r}")
    description = (match.group(2) or b"").decode(errors="replace").strip()
    return int(match.group(1)), description


def encode_headers(fields: Mapping[str, str]) -> bytes:
    """The header block of an ``HPUB`` (no status); ValueError for a name or value that cannot go."""
    parts = [VERSION, CRLF]
    for name, value in fields.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} holds a line break")
        parts += [f"{name}: {value}".encode(), CRLF]
    parts.append(CRLF)
    return b"".join(parts)
