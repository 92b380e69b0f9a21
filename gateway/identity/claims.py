"""Claims -> Identity, as the platform shapes its claims (and the gateway's ``workspaces`` claim).
Pure: used by the JWT verifier after checking the signature, and by the admin token endpoint to
check what it would mint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway import paths
from gateway.identity.model import PERMISSIONS, PROFILES, Identity, Workspace
from gateway.protocol import AuthError, ErrorCode, has_lone_surrogate


def identity_from_claims(claims: Mapping[str, Any]) -> Identity:
    """Build the Identity from verified claims, refusing anything malformed."""
    if has_lone_surrogate(dict(claims)):  # no frame could carry it: the reply naming the user failed
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "token claims hold an unpaired surrogate (\\ud800-\\udfff)")
    user = claims.get("name")
    if not isinstance(user, str) or not user.strip():
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "token needs a non-empty 'name' claim (the login)")
    sub = claims.get("sub", user)
    if not isinstance(sub, str) or not sub:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "'sub' claim must be a non-empty string")
    profile = claims.get("profile", "anon")
    if profile not in PROFILES:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"'profile' must be one of {', '.join(PROFILES)}")
    return Identity(
        user=user,
        sub=sub,
        profile=profile,
        roles=_roles(claims.get("roles")),
        workspaces=_workspaces(claims.get("workspaces")),
        expires_at=_expiry(claims.get("exp")),
        email=_optional_str(claims, "email"),
        display_name=_optional_str(claims, "displayName"),
        group_path=_optional_str(claims, "groupPath"),
    )


# Year 9999: an ``exp`` past it is not a time any clock here can hold.
MAX_EXPIRY: Final = 253402300799


def _expiry(raw: object) -> float | None:
    """``exp`` as a number of seconds: a numeric string or an absurd value is refused, not ignored.

    (Verification requires ``exp``; claims checked without it, as some tests do, never expire.)
    """
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_EXPIRY:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "'exp' must be a number of seconds since the epoch")
    return float(raw)


def _roles(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        items: Iterable[object] = raw.split(",")
    elif isinstance(raw, list):
        items = raw
    else:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "'roles' must be a comma-separated string or a list")
    roles = []
    for item in items:
        if not isinstance(item, str):
            raise AuthError(ErrorCode.TOKEN_CLAIMS, "'roles' entries must be strings")
        if item.strip():
            roles.append(item.strip())
    return tuple(dict.fromkeys(roles))


def _workspaces(raw: object) -> tuple[Workspace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise AuthError(ErrorCode.TOKEN_CLAIMS, "'workspaces' must be a list")
    return tuple(_workspace(entry, index) for index, entry in enumerate(raw))


def _workspace(entry: object, index: int) -> Workspace:
    where = f"workspaces[{index}]"
    if not isinstance(entry, dict):
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where} must be an object")
    uuid, slug = entry.get("uuid"), entry.get("slug")
    if not isinstance(uuid, str) or not uuid:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where}.uuid must be a non-empty string")
    if not isinstance(slug, str) or not slug or "/" in slug or slug.startswith("."):
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where}.slug must be a name without '/'")
    raw_roots = entry.get("roots")
    if not isinstance(raw_roots, list) or not raw_roots:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where}.roots must be a non-empty list")
    roots = []
    for root in raw_roots:
        normal = paths.normalize(root) if isinstance(root, str) else None
        if normal is None:
            raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where}.roots holds an invalid path")
        roots.append(normal)
    permissions = entry.get("permissions", "r")
    if permissions not in PERMISSIONS:
        raise AuthError(ErrorCode.TOKEN_CLAIMS, f"{where}.permissions must be r, w or rw")
    return Workspace(uuid, slug, tuple(dict.fromkeys(roots)), permissions)


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None
