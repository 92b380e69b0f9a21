"""The benchmark's event marker, found in a delivered frame without decoding its JSON. Pure.

A benchmark event carries ``bm:<phase>:<seq>:<published µs since the epoch>`` in a string (the
Target's Etag): the load client finds it with one ``bytes.rfind`` and computes publish-to-deliver
latency from it. Both the gateway and the peers deliver Etags untouched.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = b'"bm:'


def marker(phase: int, seq: int, published_us: int) -> str:
    return f"bm:{phase}:{seq}:{published_us}"


def parse_marker(data: bytes, start: int = 0, stop: int | None = None) -> tuple[int, int, int] | None:
    """``(phase, seq, published_us)`` from the marker inside ``data[start:stop]``, if there is one."""
    stop = len(data) if stop is None else stop
    begin = data.rfind(PREFIX, start, stop)  # from the end: the marker is in the last node
    if begin < 0:
        return None
    end = data.find(b'"', begin + len(PREFIX), stop)
    if end < 0:
        return None
    fields = data[begin + len(PREFIX) : end].split(b":")
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        return None
    return int(fields[0]), int(fields[1]), int(fields[2])
