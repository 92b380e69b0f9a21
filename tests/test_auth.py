"""JWT verification and claims: every way a token can be wrong gets its own error code."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.identity import Identity, Workspace
from gateway.identity.claims import identity_from_claims
from gateway.identity.jwt import JwtResolver
from gateway.identity.mint import mint_token
from gateway.protocol import AuthError
from tests.helpers import SECRET

# Module-level for the parametrize tables below: tokens are built at collection time, so they get
# a lifetime far beyond any suite's duration.
NOW = time.time()


def claims(**extra: Any) -> dict[str, Any]:
    base = {"sub": "u-1", "name": "alice", "profile": "standard", "exp": NOW + 86400}
    return {**base, **extra}


def refused(resolver: JwtResolver, token: str) -> str:
    with pytest.raises(AuthError) as info:
        resolver.verify(token)
    return str(info.value.code)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_auth_hs256_round_trip() -> None:
    identity = JwtResolver(secret=SECRET).verify(jwt.encode(claims(roles="r1, r2,"), SECRET))
    assert identity.user == "alice"
    assert identity.sub == "u-1"
    assert identity.roles == ("r1", "r2")
    assert identity.expires_at == pytest.approx(NOW + 86400)


@pytest.mark.parametrize(
    ("token_claims", "error"),
    [
        (claims(exp=NOW - 60), "token_expired"),
        (claims(nbf=NOW + 86400), "token_not_yet_valid"),
        ({k: v for k, v in claims().items() if k != "exp"}, "token_claims"),
        (claims(name=""), "token_claims"),
        (claims(profile="root"), "token_claims"),
        (claims(roles=7), "token_claims"),
        (claims(workspaces={"uuid": "x"}), "token_claims"),
        (claims(workspaces=[{"uuid": "w", "slug": "s", "roots": []}]), "token_claims"),
        (claims(workspaces=[{"uuid": "w", "slug": "a/b", "roots": ["/x"]}]), "token_claims"),
        (claims(workspaces=[{"uuid": "w", "slug": "s", "roots": ["/x/../y"]}]), "token_claims"),
        (
            claims(workspaces=[{"uuid": "w", "slug": "s", "roots": ["/x"], "permissions": "x"}]),
            "token_claims",
        ),
    ],
)
def test_auth_bad_claims_refused(token_claims: dict[str, Any], error: str) -> None:
    assert refused(JwtResolver(secret=SECRET, leeway=0), jwt.encode(token_claims, SECRET)) == error


def test_auth_leeway_tolerates_small_skew() -> None:
    token = jwt.encode(claims(exp=time.time() - 3), SECRET)
    assert JwtResolver(secret=SECRET, leeway=5).verify(token).user == "alice"


def test_auth_alg_none_refused() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    token = (header + b"." + body + b".").decode()
    assert refused(JwtResolver(secret=SECRET), token) == "token_algorithm"


def test_auth_hs256_signed_with_rsa_public_key_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    # The classic confusion attack: sign HS256 with the public key bytes as the HMAC secret.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(pem, header + b"." + body, hashlib.sha256).digest())
    token = (header + b"." + body + b"." + signature.rstrip(b"=")).decode()
    assert refused(JwtResolver(public_key_pem=pem), token) == "token_algorithm"


def test_auth_rs256_with_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert JwtResolver(public_key_pem=public_pem(rsa_key)).verify(token).user == "alice"


def test_auth_es256_and_eddsa_with_pem() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    assert (
        JwtResolver(public_key_pem=public_pem(ec_key))
        .verify(jwt.encode(claims(), ec_key, algorithm="ES256"))
        .user
        == "alice"
    )
    assert (
        JwtResolver(public_key_pem=public_pem(ed_key))
        .verify(jwt.encode(claims(), ed_key, algorithm="EdDSA"))
        .user
        == "alice"
    )


def test_auth_hs_token_refused_when_only_rsa_configured(rsa_key: rsa.RSAPrivateKey) -> None:
    assert refused(JwtResolver(public_key_pem=public_pem(rsa_key)), mint_token(SECRET, user="a")) == (
        "token_algorithm"
    )


def jwks(*keys: tuple[str, Any]) -> str:
    entries = []
    for kid, key in keys:
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entry.update(kid=kid, alg="RS256", use="sig")
        entries.append(entry)
    return json.dumps({"keys": entries})


def test_auth_jwks_rotation_by_kid(rsa_key: rsa.RSAPrivateKey) -> None:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    resolver = JwtResolver(jwks_json=jwks(("old", rsa_key), ("new", new_key)))
    for kid, key in (("old", rsa_key), ("new", new_key)):
        token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": kid})
        assert resolver.verify(token).user == "alice"
    wrong = jwt.encode(claims(), new_key, algorithm="RS256", headers={"kid": "old"})
    assert refused(resolver, wrong) == "token_invalid"
    unknown = jwt.encode(claims(), new_key, algorithm="RS256", headers={"kid": "gone"})
    assert refused(resolver, unknown) == "token_key_unknown"
    no_kid = jwt.encode(claims(), new_key, algorithm="RS256")
    assert refused(resolver, no_kid) == "token_key_unknown"


def test_auth_audience_and_issuer() -> None:
    resolver = JwtResolver(secret=SECRET, audience="cells-frontend", issuer="https://cells/oidc")
    good = jwt.encode(claims(aud="cells-frontend", iss="https://cells/oidc"), SECRET)
    assert resolver.verify(good).user == "alice"
    assert refused(resolver, jwt.encode(claims(aud="other", iss="https://cells/oidc"), SECRET)) == (
        "token_audience"
    )
    assert refused(resolver, jwt.encode(claims(aud="cells-frontend", iss="evil"), SECRET)) == ("token_issuer")
    assert refused(resolver, jwt.encode(claims(iss="https://cells/oidc"), SECRET)) == "token_claims"


def test_auth_audience_ignored_when_not_configured() -> None:
    token = jwt.encode(claims(aud="cells-frontend"), SECRET)
    assert JwtResolver(secret=SECRET).verify(token).user == "alice"


@pytest.mark.parametrize("part", [0, 1, 2])
def test_auth_tampered_token_refused(part: int) -> None:
    pieces = jwt.encode(claims(), SECRET).split(".")
    if part == 1:
        pieces[1] = base64.urlsafe_b64encode(json.dumps(claims(name="admin")).encode()).decode().rstrip("=")
    else:
        pieces[part] = pieces[part][:-2] + ("AA" if not pieces[part].endswith("AA") else "BB")
    assert refused(JwtResolver(secret=SECRET), ".".join(pieces)) in {"token_invalid", "token_algorithm"}


def test_auth_huge_token_refused_cleanly() -> None:
    token = jwt.encode(claims(pad="x" * 60_000), "another-secret-of-thirty-two-bytes!!")
    assert len(token) > 60_000
    assert refused(JwtResolver(secret=SECRET), token) == "token_invalid"


@pytest.mark.parametrize("garbage", ["", "a", "a.b", "a.b.c", "...", "e30.e30.", "\x00\xff"])
def test_auth_garbage_refused(garbage: str) -> None:
    assert refused(JwtResolver(secret=SECRET), garbage) in {"token_invalid", "token_algorithm"}


def test_identity_workspaces_normalised_and_subjects() -> None:
    identity = identity_from_claims(
        claims(
            profile="admin",
            roles=["r1"],
            workspaces=[
                {"uuid": "w", "slug": "s", "roots": ["//ds/common/", "ds/common"], "permissions": "rw"}
            ],
        )
    )
    assert identity.workspaces == (Workspace("w", "s", ("ds/common",), "rw"),)
    assert identity.policy_subjects == frozenset(
        {"*", "user:alice", "profile:anon", "profile:shared", "profile:standard", "profile:admin", "role:r1"}
    )


def test_identity_profile_order() -> None:
    shared = Identity(user="a", sub="a", profile="shared")
    assert shared.has_profile("anon") and shared.has_profile("shared")
    assert not shared.has_profile("standard")


def test_identity_missing_profile_is_least_privilege() -> None:
    identity = identity_from_claims({"name": "alice", "exp": NOW + 60})
    assert identity.profile == "anon"
    assert identity.sub == "alice"
