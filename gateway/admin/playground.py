"""The playground page the admin listener serves (package data in ``gateway/playground``): files,
their Content-Security-Policy, and what the page needs to know about this gateway."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources
from typing import Final

from gateway.config import ConfigError, parse_host_port

# The playground: URL path -> (file in gateway/playground, content type).
PLAYGROUND_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),  # the resuming client, to copy
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
    "/playground/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


@functools.cache
def playground_asset(name: str) -> bytes | None:
    """A file of the playground, read once from the package (works from a one-file build too)."""
    try:
        return (resources.files("gateway") / "playground" / name).read_bytes()
    except OSError:
        return None


def playground_csp(ws_ports: Sequence[int]) -> str:
    """No inline code, nothing from elsewhere; the page may only talk to this listener and the WS port."""
    sockets = " ".join(f"ws://*:{p} wss://*:{p}" for p in ws_ports) or "ws: wss:"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {sockets}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def specific_host(listen: str) -> str | None:
    """The WebSocket listener's host when it is one address, or None for all interfaces."""
    try:
        host, _ = parse_host_port(listen, "listen")
    except ConfigError:
        return None
    return None if host in ("", "0.0.0.0", "::") else host
