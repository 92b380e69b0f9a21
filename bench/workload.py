"""What the benchmark publishes.

Every event is an immediate tree event (``UPDATE_PATH``: never debounced) for a distinct node
inside one workspace, so every subscribed session must receive every event exactly once. The
Target's Etag carries the marker of :mod:`loadclient.marker` (phase, sequence number, publish
time), from which the load client checks order and computes publish-to-deliver latency.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from loadclient.marker import marker

TOPIC: Final = "topic.pydio.tree.nodes.changes"
WORKSPACE: Final = {"uuid": "ws-bench", "slug": "bench-files", "roots": ["/ds/bench"], "permissions": "rw"}
PUBLISH_PATH: Final = "/api/v1/publish"


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
