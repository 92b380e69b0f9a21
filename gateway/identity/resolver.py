"""The one interface the gateway resolves tokens through; ``jwt`` and ``cells`` implement it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from gateway.identity.model import Identity


class Resolver(Protocol):
    """Turns a raw token into an Identity, or raises AuthError (or PlatformUnavailable)."""

    # True when refresh() recomputes access from the platform (sessions then outlive their
    # token's expiry); False when the token itself is the whole truth (JWT claims).
    refreshes: bool

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host whatever the resolver runs in the background; ``started()`` once usable."""
        ...

    async def resolve(self, token: str) -> Identity: ...

    async def refresh(self, identity: Identity, token: str) -> Identity:
        """``identity``'s access as the platform says it is now (AuthError if they are gone)."""
        ...

    def forget(self, concerns: Callable[[Identity], bool]) -> None:
        """Drop cached answers about identities the platform just changed."""
        ...
