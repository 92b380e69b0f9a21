"""``identity = "jwt"``: tokens verified locally with PyJWT, workspaces read from their claims.

Keys: an HMAC secret, a PEM public key, a JWKS file (several keys chosen by ``kid``). Claims as the
platform shapes them (``name`` = login, ``profile``, ``roles``), plus the gateway's ``workspaces``
claim for standalone use (see DESIGN §2 and docs/PROTOCOL.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import jwt
import trio
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.identity.claims import identity_from_claims
from gateway.identity.model import Identity
from gateway.protocol import AuthError, ErrorCode

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS: Final = frozenset({"ES256", "ES384", "ES512"})
OKP_ALGORITHMS: Final = frozenset({"EdDSA"})


@dataclass(frozen=True, eq=False)  # keyed by identity: a public key object is not hashable
class _Key:
    key: Any
    algorithms: frozenset[str]
    kid: str | None = None


class JwtResolver:
    """Verifies JWTs with the configured keys (HMAC secret, PEM public key, JWKS file)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_pem: bytes | None = None,
        jwks_json: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys: list[_Key] = []
        if secret:
            self._keys.append(_Key(secret, _hmac_algorithms(secret.encode())))
        if public_key_pem:
            self._keys.append(_pem_key(public_key_pem))
        if jwks_json:
            self._keys.extend(_jwks_keys(jwks_json))
        if not self._keys:
            raise ValueError("JwtResolver needs a secret, a public key or a JWKS")
        self._prepared: dict[tuple[_Key, str], jwt.PyJWK] = {}
        self._audience = audience
        self._issuer = issuer
        self.leeway = leeway
        self._clock = clock

    refreshes = False  # the claims are the whole truth: nothing to ask anyone again

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def refresh(self, identity: Identity, token: str) -> Identity:
        return identity

    def forget(self, concerns: Callable[[Identity], bool]) -> None:
        pass

    @property
    def algorithms(self) -> frozenset[str]:
        return frozenset().union(*(k.algorithms for k in self._keys))

    async def resolve(self, token: str) -> Identity:
        # Verification is CPU-only and short (HS256: microseconds, RS256: ~55 us).
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        key, algorithm = self._select_key(token)
        claims = self._decode(token, self._prepared_key(key, algorithm), algorithm)
        return identity_from_claims(claims)

    def _prepared_key(self, key: _Key, algorithm: str) -> jwt.PyJWK:
        """The key as PyJWT uses it, made once: given a raw key, PyJWT prepares it on every decode
        (for an HMAC secret, pattern checks that it is not a PEM key: a tenth of a subscribe)."""
        prepared = self._prepared.get((key, algorithm))
        if prepared is None:
            as_jwk = jwt.get_algorithm_by_name(algorithm).to_jwk(key.key, as_dict=True)
            prepared = self._prepared[key, algorithm] = jwt.PyJWK(as_jwk, algorithm)
        return prepared

    def _select_key(self, token: str) -> tuple[_Key, str]:
        header = _unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise AuthError(
                ErrorCode.TOKEN_ALGORITHM,
                f"token algorithm {str(algorithm)[:20]!r} is not accepted by this gateway",
            )
        candidates = [k for k in self._keys if algorithm in k.algorithms]
        kid = header.get("kid")
        keyed = [k for k in candidates if k.kid is not None]
        if kid is not None and keyed:
            match = [k for k in keyed if k.kid == kid]
            if not match:
                raise AuthError(ErrorCode.TOKEN_KEY_UNKNOWN, "token 'kid' names no configured key")
            return match[0], algorithm
        unkeyed = [k for k in candidates if k.kid is None]
        if unkeyed:
            return unkeyed[0], algorithm
        if len(keyed) == 1:
            return keyed[0], algorithm
        raise AuthError(ErrorCode.TOKEN_KEY_UNKNOWN, "token has no 'kid' and several keys could apply")

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(ErrorCode.TOKEN_CLAIMS, f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            code, message = _refusal(exc)
            raise AuthError(code, message) from None
        except (OverflowError, ValueError):  # a numeric claim no clock can hold (exp = 10**400)
            raise AuthError(ErrorCode.TOKEN_CLAIMS, "token has a time claim out of range") from None


# PyJWT's errors, most specific first (several derive from others), and what the client is told.
_REFUSALS: Final[tuple[tuple[type[jwt.PyJWTError], ErrorCode, str], ...]] = (
    (jwt.ExpiredSignatureError, ErrorCode.TOKEN_EXPIRED, "token has expired"),
    (jwt.ImmatureSignatureError, ErrorCode.TOKEN_NOT_YET_VALID, "token is not valid yet (nbf/iat)"),
    (jwt.InvalidAudienceError, ErrorCode.TOKEN_AUDIENCE, "token audience (aud) is not accepted"),
    (jwt.InvalidIssuerError, ErrorCode.TOKEN_ISSUER, "token issuer (iss) is not accepted"),
    (jwt.InvalidSignatureError, ErrorCode.TOKEN_INVALID, "token signature does not verify"),
    (jwt.InvalidKeyError, ErrorCode.TOKEN_ALGORITHM, "token algorithm does not fit the key"),
)


def _refusal(exc: jwt.InvalidTokenError) -> tuple[ErrorCode, str]:
    for kind, code, message in _REFUSALS:
        if isinstance(exc, kind):
            return code, message
    if "must be an integer" in str(exc) or "must be a number" in str(exc):
        return ErrorCode.TOKEN_CLAIMS, f"token claim malformed: {str(exc)[:80]}"
    return ErrorCode.TOKEN_INVALID, "token is malformed"


def _unverified_header(token: str) -> dict[str, Any]:
    """The token's header, to choose the key. Read here, not with PyJWT, which would decode the
    whole token twice (a third of a subscribe's cost); PyJWT's decode then checks all of it."""
    head, dot, _ = token.partition(".")
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))) if dot else None
    except (ValueError, binascii.Error):
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("kid", ""), str):
        raise AuthError(ErrorCode.TOKEN_INVALID, "token is not a well-formed JWT")
    return header


def _hmac_algorithms(secret: bytes) -> frozenset[str]:
    """The HMAC algorithms a secret covers: a key at least as long as the hash (RFC 7518 3.2)."""
    return frozenset(alg for alg in HMAC_ALGORITHMS if len(secret) * 8 >= int(alg[2:]))


def _pem_key(pem: bytes) -> _Key:
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return _Key(key, RSA_ALGORITHMS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _Key(key, EC_ALGORITHMS)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return _Key(key, OKP_ALGORITHMS)
    raise ValueError(f"unsupported public key type {type(key).__name__}")


_KTY_ALGORITHMS: Final = {
    "RSA": RSA_ALGORITHMS,
    "EC": EC_ALGORITHMS,
    "OKP": OKP_ALGORITHMS,
    "oct": HMAC_ALGORITHMS,
}


def _jwks_keys(jwks_json: str) -> list[_Key]:
    try:
        document = json.loads(jwks_json)
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError("'keys' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a JWKS document: {exc}") from None
    keys = []
    for entry in entries:
        try:
            jwk = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWKError as exc:
            raise ValueError(f"JWKS key {entry.get('kid')!r} is unusable: {exc}") from None
        allowed = _KTY_ALGORITHMS.get(jwk.key_type or "", frozenset())
        if isinstance(jwk.key, bytes):  # an "oct" (HMAC) key
            allowed = allowed & _hmac_algorithms(jwk.key)
        if "alg" in entry:
            allowed = allowed & {entry["alg"]}
        keys.append(_Key(jwk.key, frozenset(allowed), jwk.key_id))
    return keys
