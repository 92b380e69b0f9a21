"""HS256 tokens shaped like the platform's claims, for trials, tests and the playground.

Used by ``gateway token`` and, in development mode only, by the admin API's token endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt


def mint_token(
    secret: str,
    *,
    user: str,
    sub: str | None = None,
    profile: str = "standard",
    roles: Iterable[str] = (),
    workspaces: Iterable[Mapping[str, Any]] = (),
    ttl: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """Sign an HS256 token the way the platform shapes its claims (for trials and tests)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub or user,
        "name": user,
        "profile": profile,
        "roles": ",".join(roles),
        "workspaces": [dict(ws) for ws in workspaces],
        "iat": issued,
        "exp": issued + int(ttl),
    }
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
