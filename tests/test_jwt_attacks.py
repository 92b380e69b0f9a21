"""JWT attacks end to end through the socket, and no secret or token in the logs.

Each forged, stale or misdirected token is sent in a ``subscribe`` on both sockets of a gateway
configured as in production (an RSA public key file, a secret with audience and issuer, or a JWKS
with rotation): the session gets the documented error code with a message that says what is wrong,
then close 4001 (1009 for a subscribe over the message limit). Then a whole gateway runs with logging
at DEBUG while valid and invalid tokens, re-subscribes, chat requests and admin calls with right and
wrong keys go through it; none of the secrets, tokens or signatures may appear in what was logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.app import Gateway
from gateway.config import Settings
from gateway.logs import JsonFormatter
from gateway.protocol import close_reason
from tests.helpers import (
    ADMIN_KEY,
    COMMON,
    SECRET,
    TREE,
    Harness,
    close_code,
    close_text,
    http_request,
    make_settings,
    recv_json,
    token,
)

Json = dict[str, Any]
ENDPOINTS = pytest.mark.parametrize("path", ["/ws", "/chat"])
AUDIENCE = "cells-frontend"
ISSUER = "https://cells.example.com/oidc"
OTHER_SECRET = "another-secret-of-thirty-two-bytes!!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> Json:
    now = int(time.time())
    base: Json = {"sub": "u-alice", "name": "alice", "profile": "standard", "iat": now, "exp": now + 600,
                  "workspaces": [COMMON]}  # fmt: skip
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def forge(header: Json, body: Json, sign: Callable[[bytes], bytes] = lambda _: b"") -> str:
    """A JWT assembled by hand: any header, any claims, any signature function."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def with_part(token_: str, index: int, part: str) -> str:
    parts = token_.split(".")
    parts[index] = part
    return ".".join(parts)


def flip_a_char(segment: str) -> str:
    """Change one character in the middle (the last one may carry only padding bits)."""
    middle = len(segment) // 2
    return segment[:middle] + ("A" if segment[middle] != "A" else "B") + segment[middle + 1 :]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwks_document(*keys: tuple[str, rsa.RSAPrivateKey]) -> str:
    entries = []
    for kid, key in keys:
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entries.append({**entry, "kid": kid, "alg": "RS256", "use": "sig"})
    return json.dumps({"keys": entries})


# ---------------------------------------------------------------------------------------------
# The attacks, per configuration: (token builder, error code, words the message must contain)

Attack = tuple[Callable[[rsa.RSAPrivateKey, rsa.RSAPrivateKey], str], str, str]


def rs256(key: rsa.RSAPrivateKey, body: Json, **headers: Any) -> str:
    return jwt.encode(body, key, algorithm="RS256", headers=headers or None)


def hs256_with_public_key(key: rsa.RSAPrivateKey, _attacker: rsa.RSAPrivateKey) -> str:
    """The key-confusion attack: HS256 keyed with the server's own public key (which is public)."""
    pem = public_pem(key)
    return forge({"alg": "HS256", "typ": "JWT"}, claims(profile="admin"),
                 lambda data: hmac.new(pem, data, hashlib.sha256).digest())  # fmt: skip


def embedded_jwk(_key: rsa.RSAPrivateKey, attacker: rsa.RSAPrivateKey) -> str:
    """Signed by the attacker, whose public key rides in the header (CVE-2018-0114 style)."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    return rs256(attacker, claims(profile="admin"), jwk=jwk, jku="https://evil.example/jwks.json")


def big(n: int) -> Json:
    """Claims that make a token of about ``n`` bytes (a user with very many roles)."""
    roles = (n * 3 // 4 - 300) // 12  # base64 turns 3 bytes into 4; "role-000000," is 12
    return claims(roles=",".join(f"role-{i:06d}" for i in range(roles)))


RSA_ATTACKS: dict[str, Attack] = {
    "alg_none": (lambda k, a: forge({"alg": "none"}, claims(profile="admin")), "token_algorithm", "alg"),
    "alg_None_mixed_case": (lambda k, a: forge({"alg": "None"}, claims()), "token_algorithm", "algorithm"),
    "alg_missing": (lambda k, a: forge({"typ": "JWT"}, claims()), "token_algorithm", "algorithm"),
    "alg_not_a_string": (lambda k, a: forge({"alg": ["RS256"]}, claims()), "token_algorithm", "algorithm"),
    "hs256_signed_with_the_rsa_public_key": (hs256_with_public_key, "token_algorithm", "algorithm"),
    "header_switched_to_hs256": (
        lambda k, a: with_part(rs256(k, claims()), 0, b64(b'{"alg":"HS256","typ":"JWT"}')), "token_algorithm",
        "algorithm"),
    "signed_by_another_key": (lambda k, a: rs256(a, claims()), "token_invalid", "signature"),
    "embedded_jwk_and_jku": (embedded_jwk, "token_invalid", "signature"),
    "tampered_payload": (
        lambda k, a: with_part(rs256(k, claims()), 1, b64(json.dumps(claims(profile="admin")).encode())),
        "token_invalid", "signature"),
    "tampered_signature": (
        lambda k, a: with_part(rs256(k, claims()), 2, flip_a_char(rs256(k, claims()).split(".")[2])),
        "token_invalid", "signature"),
    "signature_stripped": (lambda k, a: with_part(rs256(k, claims()), 2, ""), "token_invalid", "signature"),
    "expired": (lambda k, a: rs256(k, claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
                "token_expired", "expired"),
    "not_yet_valid": (lambda k, a: rs256(k, claims(nbf=int(time.time()) + 3600)), "token_not_yet_valid",
                      "not valid yet"),
    "issued_in_the_future": (lambda k, a: rs256(k, claims(iat=int(time.time()) + 3600)),
                             "token_not_yet_valid", "not valid yet"),
    "no_exp": (lambda k, a: rs256(k, claims(exp=None)), "token_claims", "'exp'"),
    "exp_not_a_number": (lambda k, a: rs256(k, claims(exp="tomorrow")), "token_claims", "(exp)"),
    # PyJWT accepts a numeric string; a session with it would never expire.
    "exp_numeric_string": (lambda k, a: rs256(k, claims(exp=str(int(time.time()) + 3600))),
                           "token_claims", "'exp'"),
    "exp_beyond_any_clock": (lambda k, a: rs256(k, claims(exp=10**400)), "token_claims", "'exp'"),
    # JSON may spell a lone surrogate ("\ud800"); no reply naming the user could be sent (was 1011).
    "name_with_lone_surrogate": (lambda k, a: rs256(k, claims(name="alice\ud800")), "token_claims",
                                 "surrogate"),
    "display_name_with_lone_surrogate": (lambda k, a: rs256(k, claims(displayName="\udfff")), "token_claims",
                                         "surrogate"),
    "no_name": (lambda k, a: rs256(k, claims(name=None)), "token_claims", "'name'"),
    "profile_escalation": (lambda k, a: rs256(k, claims(profile="root")), "token_claims", "'profile'"),
    "root_escape_in_workspaces": (
        lambda k, a: rs256(k, claims(workspaces=[{"uuid": "w", "slug": "s", "roots": ["/ds/../"]}])),
        "token_claims", "roots"),
    "60_KiB_signed_by_another_key": (lambda k, a: rs256(a, big(60 * 1024)), "token_invalid", "signature"),
    "not_a_jwt": (lambda k, a: "not.a.jwt", "token_invalid", "JWT"),
    "bearer_prefix": (lambda k, a: "Bearer " + rs256(k, claims()), "token_invalid", "JWT"),
    "one_segment": (lambda k, a: b64(b'{"alg":"RS256"}'), "token_invalid", "JWT"),
}  # fmt: skip
SECRET_ATTACKS: dict[str, Attack] = {
    "wrong_audience": (lambda k, a: jwt.encode(claims(aud="other-app", iss=ISSUER), SECRET), "token_audience",
                       "audience"),
    "audience_list_without_ours": (lambda k, a: jwt.encode(claims(aud=["a", "b"], iss=ISSUER), SECRET),
                                   "token_audience", "audience"),
    "missing_audience": (lambda k, a: jwt.encode(claims(iss=ISSUER), SECRET), "token_claims", "'aud'"),
    "wrong_issuer": (lambda k, a: jwt.encode(claims(aud=AUDIENCE, iss="https://evil.example"), SECRET),
                     "token_issuer", "issuer"),
    "wrong_secret": (lambda k, a: jwt.encode(claims(aud=AUDIENCE, iss=ISSUER), OTHER_SECRET), "token_invalid",
                     "signature"),
    "rs256_when_only_a_secret_is_configured": (lambda k, a: rs256(k, claims(aud=AUDIENCE, iss=ISSUER)),
                                               "token_algorithm", "algorithm"),
    "expired_beyond_the_leeway": (
        lambda k, a: jwt.encode(claims(aud=AUDIENCE, iss=ISSUER, exp=int(time.time()) - 30), SECRET),
        "token_expired", "expired"),
}  # fmt: skip
JWKS_ATTACKS: dict[str, Attack] = {
    "unknown_kid": (lambda k, a: rs256(a, claims(), kid="gone"), "token_key_unknown", "kid"),
    "kid_path_traversal": (lambda k, a: rs256(a, claims(), kid="../../dev/null"), "token_key_unknown", "kid"),
    "kid_not_a_string": (lambda k, a: forge({"alg": "RS256", "kid": 7}, claims()), "token_invalid", "JWT"),
    "no_kid_with_several_keys": (lambda k, a: rs256(k, claims()), "token_key_unknown", "kid"),
    "known_kid_other_key": (lambda k, a: rs256(a, claims(), kid="old"), "token_invalid", "signature"),
}  # fmt: skip
CONFIGS = {"rsa": RSA_ATTACKS, "secret": SECRET_ATTACKS, "jwks": JWKS_ATTACKS}


def settings_for(config: str, tmp_path: Path, key: rsa.RSAPrivateKey) -> Settings:
    base = make_settings(db_url=f"sqlite:///{tmp_path}/chat.db")
    if config == "rsa":
        pem = tmp_path / "public.pem"
        pem.write_bytes(public_pem(key))
        return base.with_changes(jwt_secret=None, jwt_public_key_file=str(pem))
    if config == "jwks":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks = tmp_path / "jwks.json"
        jwks.write_text(jwks_document(("old", key), ("new", other)))
        return base.with_changes(jwt_secret=None, jwks_file=str(jwks))
    return base.with_changes(jwt_audience=AUDIENCE, jwt_issuer=ISSUER)


def valid_token(config: str, key: rsa.RSAPrivateKey) -> str:
    if config == "secret":
        return jwt.encode(claims(aud=AUDIENCE, iss=ISSUER), SECRET, algorithm="HS256")
    return rs256(key, claims(), **({"kid": "old"} if config == "jwks" else {}))


async def refused(ws: WebSocketConnection, jwt_: str) -> tuple[Json, int, str | None]:
    """Subscribe with ``jwt_``: the error frame, then the close code and reason."""
    await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": jwt_}))
    error = await recv_json(ws)
    with pytest.raises(ConnectionClosed) as closed:
        await recv_json(ws)
    return error, close_code(closed), close_text(closed)


ATTACK_CASES = [
    pytest.param(config, name, id=f"{config}-{name}") for config, table in CONFIGS.items() for name in table
]


@ENDPOINTS
@pytest.mark.parametrize(("config", "name"), ATTACK_CASES)
async def test_jwt_attack_refused_4001(
    nursery: trio.Nursery,
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    attacker_key: rsa.RSAPrivateKey,
    path: str,
    config: str,
    name: str,
) -> None:
    build, code, words = CONFIGS[config][name]
    harness = await Harness(nursery, settings_for(config, tmp_path, rsa_key)).start()
    forged = build(rsa_key, attacker_key)
    with trio.fail_after(10):
        async with harness.connect(path) as ws:
            error, close, reason = await refused(ws, forged)
        assert error["@type"] == "error" and error["error"] == code, error
        assert words.lower() in error["message"].lower(), error["message"]  # says what is wrong
        assert forged not in json.dumps(error)
        assert (close, reason) == (4001, close_reason(error["message"]))
        registry = harness.gateway.metrics.registry
        assert registry.get_sample_value("gateway_auth_failures_total", {"reason": code}) == 1
        assert harness.gateway.hub.sessions == set()
        async with harness.subscribed(valid_token(config, rsa_key), path):  # the right token still works
            pass


@ENDPOINTS
@pytest.mark.parametrize("config", sorted(CONFIGS))
async def test_jwt_valid_token_of_each_configuration_accepted(
    nursery: trio.Nursery, tmp_path: Path, rsa_key: rsa.RSAPrivateKey, path: str, config: str
) -> None:
    harness = await Harness(nursery, settings_for(config, tmp_path, rsa_key)).start()
    with trio.fail_after(10):
        async with harness.subscribed(valid_token(config, rsa_key), path):
            pass


def hmac_token(secret: str, algorithm: str, **changes: Any) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[algorithm]
    return forge({"alg": algorithm, "typ": "JWT"}, claims(**changes),
                 lambda data: hmac.new(secret.encode(), data, digest).digest())  # fmt: skip


@pytest.mark.parametrize(
    ("secret_bytes", "algorithm", "accepted"),
    [
        (32, "HS256", True),
        (38, "HS384", False),
        (48, "HS384", True),
        (63, "HS512", False),
        (64, "HS512", True),
    ],
)
async def test_jwt_hmac_algorithm_needs_a_key_as_long_as_its_hash(
    nursery: trio.Nursery, tmp_path: Path, secret_bytes: int, algorithm: str, accepted: bool
) -> None:
    """RFC 7518 3.2: HS384 and HS512 with a shorter secret are refused as algorithms the key does not cover.

    (PyJWT warns on such keys, which made the first version of the gateway fail with 1011.)
    """
    secret = "k" * secret_bytes
    harness = await Harness(
        nursery, make_settings(db_url=f"sqlite:///{tmp_path}/c.db", jwt_secret=secret)
    ).start()
    signed = hmac_token(secret, algorithm)
    with trio.fail_after(10):
        if accepted:
            async with harness.subscribed(signed):
                pass
            return
        async with harness.connect() as ws:
            error, close, _reason = await refused(ws, signed)
    assert (error["error"], close) == ("token_algorithm", 4001)


async def test_jwt_60_kib_valid_token_accepted(
    nursery: trio.Nursery, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    harness = await Harness(nursery, settings_for("rsa", tmp_path, rsa_key)).start()
    large = rs256(rsa_key, big(60 * 1024))
    assert 60 * 1024 <= len(large) < 64 * 1024 - 100
    with trio.fail_after(10):
        async with harness.subscribed(large) as ws:
            await harness.publish(TREE, {"Target": {"Uuid": "n", "Path": "/ds/common/a.txt"}})
            assert (await recv_json(ws))["Target"]["Path"] == "common-files/a.txt"


async def test_jwt_subscribe_over_the_message_limit_1009(harness: Harness) -> None:
    huge = jwt.encode(big(70 * 1024), SECRET)
    with trio.fail_after(10):
        async with harness.connect() as ws:
            error, close, _reason = await refused(ws, huge)
    assert (error["error"], close) == ("message_too_big", 1009)


async def test_jwt_resubscribe_with_a_forged_token_ends_the_session(harness: Harness) -> None:
    """A session already subscribed does not keep its identity when a bad token follows."""
    forged = with_part(token("alice"), 1, b64(json.dumps(claims(profile="admin")).encode()))
    with trio.fail_after(10):
        async with harness.subscribed(token("alice")) as ws:
            error, close, _reason = await refused(ws, forged)
    assert (error["error"], close) == ("token_invalid", 4001)
    assert harness.gateway.hub.sessions == set()


# ---------------------------------------------------------------------------------------------
# Nothing secret in the logs


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, as JSON lines (extra fields and tracebacks included)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    noisy = logging.getLogger("trio-websocket")
    saved = root.level, noisy.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    noisy.setLevel(logging.DEBUG)  # the frame-level debug output too
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        noisy.setLevel(saved[1])


async def node_check_server(seen: list[str], task_status: trio.TaskStatus[int]) -> None:
    """Answers the gateway's node checks (200), keeping the Authorization headers it received."""
    import h11

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        assert isinstance(event, h11.Request)
        seen.append(dict(event.headers).get(b"authorization", b"").decode())
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[("content-length", "0")])))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def session(url: str, jwt_: str, *frames: Json) -> list[Json]:
    """Subscribe over a real socket, send ``frames``, return whatever came back until the close."""
    got: list[Json] = []
    async with open_websocket_url(url) as ws:
        try:
            await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": jwt_}))
            got.append(await recv_json(ws))
            for frame in frames:
                await ws.send_message(json.dumps(frame))
                got.append(await recv_json(ws))
        except ConnectionClosed:
            pass
        finally:
            await trio.aclose_forcefully(ws._stream)
    return got


async def exercise(
    gateway: Gateway, rsa_key: rsa.RSAPrivateKey, tokens: list[str], node_checks: list[str]
) -> None:
    """Valid and invalid sessions on both sockets, and the admin API with right and wrong keys."""

    def keep(t: str) -> str:
        tokens.append(t)
        return t

    events, chat = f"ws://127.0.0.1:{gateway.ws_port}/ws", f"ws://127.0.0.1:{gateway.ws_port}/chat"
    with trio.fail_after(30):
        # Valid sessions: subscribe, re-subscribe (fresh token), change user (4003), chat with a node check.
        alice, fresh, bob = keep(token("alice")), keep(token("alice", ttl=7200)), keep(token("bob"))
        got = await session(
            events,
            alice,
            {"@type": "subscribe", "ack": True, "jwt": fresh},
            {"@type": "subscribe", "ack": True, "jwt": bob},
        )
        assert [m.get("error", m["@type"]) for m in got] == ["subscribed", "subscribed", "identity_changed"]
        join = {"@type": "JOIN", "Room": {"Type": "NODE", "RoomTypeObject": "n-1"}}
        got = await session(chat, keep(token("carol")), join)
        assert got[-1]["@type"] == "ROOM_UPDATE", got
        assert node_checks == [f"Bearer {tokens[-1]}"]  # the token did travel: the check is real
        # Invalid tokens: each refused; the admin key and the secret themselves as tokens too.
        for bad in [
            keep(token("alice", ttl=-3600)),
            keep(jwt.encode(claims(), OTHER_SECRET)),
            keep(forge({"alg": "none"}, claims())),
            keep(with_part(token("alice"), 1, b64(json.dumps(claims(profile="admin")).encode()))),
            keep(rs256(rsa_key, claims())),
            keep(ADMIN_KEY),
            keep(SECRET),
            keep("garbage." + SECRET),
        ]:
            got = await session(events, bad)
            assert got[0]["@type"] == "error" and got[0]["error"].startswith("token_"), got
        # The admin API: right key, wrong keys (among them the JWT secret and a token), a minted token.
        publish = json.dumps({"topic": TREE, "event": {"Target": {"Uuid": "n", "Path": "/ds/common/x"}}})
        for key, status in [(ADMIN_KEY, 202), ("wrong-key", 401), (SECRET, 401), (alice, 401)]:
            answer = await http_request(gateway.admin_port, "POST", "/api/v1/publish", publish.encode(),
                                        {"authorization": f"Bearer {key}"})  # fmt: skip
            assert answer[0] == status
        answer = await http_request(gateway.admin_port, "POST", "/api/v1/publish", b'{"topic": [],',
                                    {"authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
        assert answer[0] == 400
        minted = await http_request(gateway.admin_port, "POST", "/api/v1/token",
                                    json.dumps({"user": "dave", "workspaces": []}).encode(),
                                    {"authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip
        if minted[0] == 200:  # the development token endpoint, when this build has it
            got = await session(events, keep(json.loads(minted[2])["token"]))
            assert got[0]["@type"] == "subscribed"


async def test_jwt_secrets_and_tokens_never_logged(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    tokens: list[str] = []  # every token sent, valid or not
    node_checks: list[str] = []
    with captured_logs() as logs:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(node_check_server, node_checks)
            settings = make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", dev=True,
                                     node_check_url=f"http://127.0.0.1:{port}/node/{{uuid}}")  # fmt: skip
            async with trio.open_nursery() as services:
                gateway: Gateway = await services.start(Gateway(settings).run)
                await exercise(gateway, rsa_key, tokens, node_checks)
                gateway.stop()
            nursery.cancel_scope.cancel()
    text = logs.getvalue()
    assert "closing <Session" in text and "token" in text  # the run was logged, at DEBUG too
    assert "gateway ready" in text and "gateway stopped" in text
    secrets = {"jwt secret": SECRET, "admin key": ADMIN_KEY}
    for i, t in enumerate(tokens):
        secrets[f"token {i}"] = t
        signature = t.split(".")[-1] if t.count(".") == 2 else ""
        if len(signature) >= 16:
            secrets[f"signature of token {i}"] = signature
    leaked = [name for name, value in secrets.items() if value in text]
    assert leaked == [], f"found in the logs: {leaked}"
