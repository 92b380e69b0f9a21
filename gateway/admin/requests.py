"""The admin API's request bodies, parsed and checked. Pure: bytes in, values or an error out.

``POST /api/v1/publish``: ``{"topic", "event"}`` or ``{"events": [...]}``. ``POST /api/v1/token``
(development mode): ``{"user", "profile"?, "roles"?, "workspaces", "ttl"?}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from gateway.identity.claims import identity_from_claims
from gateway.identity.model import PROFILES
from gateway.protocol import AuthError, has_lone_surrogate
from gateway.topics import PUBLISHABLE_TOPICS

TOKEN_DEFAULT_TTL: Final = 3600
TOKEN_MAX_TTL: Final = 24 * 3600
TOKEN_MAX_ITEMS: Final = 50  # roles, workspaces, roots per workspace
TOKEN_MAX_NAME: Final = 256
_TOKEN_FIELDS: Final = frozenset({"user", "profile", "roles", "workspaces", "ttl"})
_WORKSPACE_FIELDS: Final = frozenset({"uuid", "slug", "roots", "permissions"})


class PublishError(ValueError):
    """A publish body was refused; the message says what is wrong."""


def parse_publish_body(body: bytes, max_batch: int) -> list[tuple[str, dict[str, Any]]]:
    """``{"topic", "event"}`` or ``{"events": [...]}`` -> [(topic, event)]; sans-IO, fuzzed."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise PublishError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise PublishError("body must be a JSON object")
    if has_lone_surrogate(doc):  # accepted, it could be sent to nobody: refused before it is published
        raise PublishError("body holds an unpaired surrogate escape (\\ud800-\\udfff)")
    if "events" in doc:
        if set(doc) != {"events"}:
            raise PublishError('a batch body has only the "events" field')
        items = doc["events"]
        if not isinstance(items, list) or not items:
            raise PublishError('"events" must be a non-empty list')
        if len(items) > max_batch:
            raise PublishError(f"a batch holds at most {max_batch} events")
        return [_publish_item(item, f"events[{i}]") for i, item in enumerate(items)]
    return [_publish_item(doc, "body")]


def _publish_item(item: object, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict):
        raise PublishError(f"{where} must be an object")
    if set(item) != {"topic", "event"}:
        raise PublishError(f'{where} must have exactly the fields "topic" and "event"')
    topic, event = item["topic"], item["event"]
    if not isinstance(topic, str) or topic not in PUBLISHABLE_TOPICS:  # a list would not even hash
        raise PublishError(f"{where}.topic must be one of: {', '.join(sorted(PUBLISHABLE_TOPICS))}")
    if not isinstance(event, dict):
        raise PublishError(f"{where}.event must be a JSON object")
    return topic, event


class TokenRequestError(ValueError):
    """A token request body was refused; the message says what is wrong."""


@dataclass(frozen=True)
class TokenRequest:
    user: str
    profile: str
    roles: tuple[str, ...]
    workspaces: tuple[dict[str, Any], ...]
    ttl: int


def parse_token_body(body: bytes) -> TokenRequest:
    """``{"user", "profile"?, "roles"?, "workspaces", "ttl"?}`` -> TokenRequest; sans-IO.

    The claims also go through the gateway's own claim parser, so a minted token is always one
    that this gateway accepts.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise TokenRequestError("body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise TokenRequestError("body must be a JSON object")
    unknown = set(doc) - _TOKEN_FIELDS
    if unknown:
        raise TokenRequestError(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "workspaces" not in doc:
        raise TokenRequestError('"workspaces" is required (a list, possibly empty)')
    roles = _items(doc.get("roles", []), "roles")
    workspaces = _items(doc["workspaces"], "workspaces")
    request = TokenRequest(
        user=_name(doc.get("user"), "user"),
        profile=_profile(doc.get("profile", "standard")),
        roles=tuple(_role(role, f"roles[{i}]") for i, role in enumerate(roles)),
        workspaces=tuple(_token_workspace(ws, f"workspaces[{i}]") for i, ws in enumerate(workspaces)),
        ttl=_ttl(doc.get("ttl", TOKEN_DEFAULT_TTL)),
    )
    claims = {
        "name": request.user,
        "profile": request.profile,
        "roles": list(request.roles),
        "workspaces": list(request.workspaces),
    }
    try:
        identity_from_claims(claims)
    except AuthError as exc:
        raise TokenRequestError(exc.message) from None
    return request


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise TokenRequestError(f"{where} must be a non-empty string without surrounding spaces")
    if len(value) > TOKEN_MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise TokenRequestError(f"{where} must be at most {TOKEN_MAX_NAME} printable characters")
    return value


def _role(value: object, where: str) -> str:
    role = _name(value, where)
    if "," in role:
        raise TokenRequestError(f"{where} must not contain ',' (the claim is comma-separated)")
    return role


def _profile(value: object) -> str:
    if not isinstance(value, str) or value not in PROFILES:
        raise TokenRequestError(f"profile must be one of {', '.join(PROFILES)}")
    return value


def _items(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TokenRequestError(f"{where} must be a list")
    if len(value) > TOKEN_MAX_ITEMS:
        raise TokenRequestError(f"{where} holds at most {TOKEN_MAX_ITEMS} entries")
    return value


def _token_workspace(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TokenRequestError(f"{where} must be an object")
    if set(value) - _WORKSPACE_FIELDS or not {"uuid", "slug", "roots"} <= set(value):
        raise TokenRequestError(f'{where} needs "uuid", "slug" and "roots", and may have "permissions"')
    roots = _items(value["roots"], f"{where}.roots")
    permissions = value.get("permissions", "r")
    if permissions not in ("r", "w", "rw"):
        raise TokenRequestError(f"{where}.permissions must be r, w or rw")
    return {
        "uuid": _name(value["uuid"], f"{where}.uuid"),
        "slug": _name(value["slug"], f"{where}.slug"),
        "roots": [_name(root, f"{where}.roots[{i}]") for i, root in enumerate(roots)],
        "permissions": permissions,
    }


def _ttl(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= TOKEN_MAX_TTL:
        raise TokenRequestError(f"ttl must be an integer number of seconds from 1 to {TOKEN_MAX_TTL}")
    return value
