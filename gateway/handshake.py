"""Who may open a WebSocket: the checks made on the upgrade request, and their answers. Pure.

Refused handshakes get an HTTP status and a JSON body (docs/PROTOCOL.md section 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

EVENTS: Final = "events"
CHAT: Final = "chat"
ENDPOINT_PATHS: Final = {"/ws": EVENTS, "/ws/event": EVENTS, "/chat": CHAT, "/ws/chat": CHAT}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error: str
    message: str


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def allowed_origins(configured: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_normalize_origin(o) for o in configured)


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """Non-browser clients send no Origin and pass; browsers must be on the allow-list."""
    if origin is None:
        return True
    return "*" in allowed or _normalize_origin(origin) in allowed


def refusal(
    path: str,
    origin: str | None,
    *,
    allowed: frozenset[str],
    draining: bool,
    at_capacity: bool,
    address_at_capacity: bool,
    pending_at_capacity: bool = False,
    pending_address_at_capacity: bool = False,
) -> Refusal | None:
    """Why an upgrade request is refused, or None to accept it (first reason wins)."""
    if path not in ENDPOINT_PATHS:
        return Refusal(404, "not_found", f"no WebSocket endpoint at {path[:100]!r}; use /ws or /chat")
    if not origin_allowed(origin, allowed):
        return Refusal(403, "origin_forbidden", "this Origin is not in the gateway's allowed_origins")
    if draining:
        return Refusal(503, "shutting_down", "the gateway is shutting down; retry shortly")
    if at_capacity:
        return Refusal(503, "too_many_sessions", "the gateway is at its session limit; retry later")
    if pending_at_capacity:
        return Refusal(503, "too_many_pending", "too many connections waiting to subscribe; retry later")
    if address_at_capacity:
        return Refusal(429, "too_many_sessions_from_ip", "too many sessions from this address")
    if pending_address_at_capacity:
        return Refusal(
            429, "too_many_pending_from_ip", "too many connections from this address waiting to subscribe"
        )
    return None
