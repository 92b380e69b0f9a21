"""Who may open a connection: two budgets, per address key and in all.

- Pending: connections in their HTTP handshake, and upgraded ones that have not subscribed (yet,
  or again after an unsubscribe): ``max_pending_connections`` / ``max_pending_per_ip``. Nobody
  has proved who they are, so they never take a session's place.
- Sessions: subscribed ones, ``max_sessions`` / ``max_sessions_per_ip``.

Addresses are counted by key (``gateway.edge.keys``: an IPv6 client by its prefix). The hub
counts the upgraded connections; this module the handshakes in progress.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.config import Settings
from gateway.edge.keys import address_key
from gateway.hub import Hub


class Admission:
    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self._handshakes = 0
        self._handshakes_from: Counter[str] = Counter()

    def key(self, address: str) -> str:
        return address_key(address, self.settings.ipv6_prefix_length)

    @contextmanager
    def handshake(self, key: str | None) -> Iterator[bool]:
        """Count one handshake while inside; yields False (nothing counted) past the bounds.
        ``key`` None: a trusted proxy, whose handshakes are its clients' (only the total counts)."""
        s = self.settings
        if self._handshakes >= s.max_pending_connections or (
            key is not None and self._handshakes_from[key] >= s.max_pending_per_ip
        ):
            yield False
            return
        self._handshakes += 1
        if key is not None:
            self._handshakes_from[key] += 1
        try:
            yield True
        finally:
            self._handshakes -= 1
            if key is not None:
                self._handshakes_from[key] -= 1
                if self._handshakes_from[key] <= 0:
                    del self._handshakes_from[key]

    def capacity(self, key: str) -> dict[str, Any]:
        """The capacity flags of ``gateway.handshake.refusal`` for one more connection from ``key``
        (out of the handshake count, not a session yet)."""
        s, hub = self.settings, self.hub
        return {
            "at_capacity": hub.subscribed_count >= s.max_sessions,
            "address_at_capacity": hub.subscribed_from(key) >= s.max_sessions_per_ip,
            "pending_at_capacity": self._handshakes + hub.pending_count >= s.max_pending_connections,
            "pending_address_at_capacity": (
                self._handshakes_from[key] + hub.pending_from(key) >= s.max_pending_per_ip
            ),
        }
