"""What the benchmark publishes, and how a receiver recognises it without decoding JSON.

Every event is an immediate tree event (``UPDATE_PATH``: never debounced) for a distinct node
inside one workspace, so every subscribed session must receive every event exactly once. The
Target's Etag carries a marker ``bm:<phase>:<seq>:<published µs since the epoch>``: the load
client finds it with one ``bytes.rfind`` and computes publish-to-deliver latency from it. The
gateway keeps Etags untouched and the peer forwards the event as published, so both servers carry
the marker to the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

TOPIC: Final = "topic.pydio.tree.nodes.changes"
WORKSPACE: Final = {"uuid": "ws-bench", "slug": "bench-files", "roots": ["/ds/bench"], "permissions": "rw"}
MARKER: Final = b'"bm:'
PUBLISH_PATH: Final = "/api/v1/publish"


def marker(phase: int, seq: int, published_us: int) -> str:
    return f"bm:{phase}:{seq}:{published_us}"


def parse_marker(data: bytes, start: int, stop: int) -> tuple[int, int, int] | None:
    """``(phase, seq, published_us)`` from the marker inside ``data[start:stop]``, if there is one."""
    begin = data.rfind(MARKER, start, stop)  # from the end: the marker is in the last node
    if begin < 0:
        return None
    end = data.find(b'"', begin + len(MARKER), stop)
    if end < 0:
        return None
    fields = data[begin + len(MARKER) : end].split(b":")
    if len(fields) != 3:
        return None
    return int(fields[0]), int(fields[1]), int(fields[2])


def tree_event(phase: int, seq: int, published_us: int) -> dict[str, Any]:
    """A file moved from ``inbox/`` to ``archive/`` in the bench workspace (~600 bytes of JSON)."""
    name = f"report-{phase}-{seq:07d}.pdf"
    uuid = f"bench-node-{phase}-{seq:07d}"
    meta = {
        "name": json.dumps(name),
        "mime": json.dumps("application/pdf"),
        "pydio:meta-data-source-name": json.dumps("pydiods1"),
    }
    common = {"Uuid": uuid, "Type": "LEAF", "Size": "482113", "MTime": "1764000000", "MetaStore": meta}
    source = {**common, "Path": f"/ds/bench/inbox/{name}", "Etag": "5d41402abc4b2a76b9719d911017c592"}
    target = {**common, "Path": f"/ds/bench/archive/{name}", "Etag": marker(phase, seq, published_us)}
    return {"Type": "UPDATE_PATH", "Source": source, "Target": target}


def publish_body(phase: int, seqs: Iterable[int], published_us: int) -> bytes:
    """The admin API's batch body: ``{"events": [{"topic", "event"}, ...]}``."""
    events = [{"topic": TOPIC, "event": tree_event(phase, seq, published_us)} for seq in seqs]
    return json.dumps({"events": events}).encode()
