"""The playground on the admin listener: the page and its headers, its info endpoint, token minting."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.admin.requests import TOKEN_MAX_TTL, TokenRequestError, parse_token_body
from gateway.app import Gateway
from gateway.identity import Workspace
from gateway.identity.jwt import JwtResolver
from tests.helpers import (
    ADMIN_KEY,
    COMMON,
    SECRET,
    TREE,
    admin_publish,
    http_request,
    make_settings,
    recv_json,
    ws_client,
)

ROOT = Path(__file__).resolve().parents[1]
PLAYGROUND = ROOT / "gateway" / "playground"
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def gateway(nursery: trio.Nursery) -> Gateway:
    result: Gateway = await nursery.start(
        Gateway(make_settings(allowed_origins=("http://a.test",), dev=True)).run
    )
    return result


async def mint(port: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, response = await http_request(
        port, "POST", "/api/v1/token", raw, AUTH if headers is None else headers
    )
    return status, json.loads(response)


# -- the page ---------------------------------------------------------------------------------


async def test_playground_page_served_with_strict_headers(gateway: Gateway) -> None:
    status, headers, body = await http_request(gateway.admin_port, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == csp["style-src"] == "'self'"
    assert csp["connect-src"] == f"'self' ws://*:{gateway.ws_port} wss://*:{gateway.ws_port}"
    assert csp["frame-ancestors"] == csp["form-action"] == csp["base-uri"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert b'<script src="/playground/app.js" defer></script>' in body


def test_playground_html_has_no_inline_code() -> None:
    html = (PLAYGROUND / "index.html").read_text()
    assert all(src for src in re.findall(r"<script([^>]*)>", html)), "every script has a src"
    assert not re.search(r"<script[^>]*>[^<]", html), "no inline script body"
    assert not re.search(r"\son[a-z]+=", html), "no inline event handler"
    assert not re.search(r"\sstyle=|<style", html), "no inline style"


def test_playground_js_renders_text_only() -> None:
    js = (PLAYGROUND / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    assert "localStorage" not in js, "the admin key lives in sessionStorage only"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/playground/app.js", "text/javascript; charset=utf-8"),
        ("/playground/style.css", "text/css; charset=utf-8"),
        ("/playground/favicon.svg", "image/svg+xml"),
        ("/client.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_playground_assets_served(gateway: Gateway, path: str, content_type: str) -> None:
    status, headers, body = await http_request(gateway.admin_port, "GET", path)
    assert (status, headers["content-type"]) == (200, content_type)
    assert body == (PLAYGROUND / path.rsplit("/", 1)[1]).read_bytes()
    assert headers["x-content-type-options"] == "nosniff"


async def test_playground_unknown_file_and_method(gateway: Gateway) -> None:
    assert (await http_request(gateway.admin_port, "GET", "/playground/../admin.py"))[0] == 404
    assert (await http_request(gateway.admin_port, "GET", "/playground/nope.js"))[0] == 404
    status, headers, _ = await http_request(gateway.admin_port, "POST", "/")
    assert status == 405 and headers["allow"] == "GET"


def test_playground_files_are_package_data() -> None:
    """Every file the page needs is in pyproject's package data (wheels and one-file builds)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["gateway"]
    for file in PLAYGROUND.iterdir():
        name = f"playground/{file.name}"
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name


async def test_playground_info_names_the_websocket_port(gateway: Gateway) -> None:
    status, _, body = await http_request(gateway.admin_port, "GET", "/api/v1/playground")
    assert status == 200
    assert json.loads(body) == {
        "ws_port": gateway.ws_port,
        "ws_host": "127.0.0.1",
        "ws_tls": False,
        "paths": {"events": "/ws", "chat": "/chat"},
        "token_minting": True,
        "identity": "jwt",
        "publishing": True,
        "allowed_origins": ["http://a.test"],
    }


# -- POST /api/v1/token -----------------------------------------------------------------------


async def test_token_minted_and_accepted_by_the_gateway(gateway: Gateway) -> None:
    body = {"user": "alice", "profile": "admin", "roles": ["r-1"], "workspaces": [COMMON], "ttl": 600}
    before = int(time.time())
    status, reply = await mint(gateway.admin_port, body)
    assert status == 200 and reply["user"] == "alice"
    assert before + 600 <= reply["expiresAt"] <= int(time.time()) + 600
    identity = JwtResolver(secret=SECRET).verify(reply["token"])
    assert (identity.user, identity.profile, identity.roles) == ("alice", "admin", ("r-1",))
    assert identity.workspaces == (Workspace("ws-common", "common-files", ("ds/common",), "rw"),)
    assert identity.expires_at == reply["expiresAt"]
    async with ws_client(f"ws://127.0.0.1:{gateway.ws_port}/ws") as ws:
        await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": reply["token"]}))
        assert (await recv_json(ws))["@type"] == "subscribed"
        event = {"Type": "DELETE", "Source": {"Uuid": "n-1", "Path": "/ds/common/a.txt"}}
        assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": event}))[0] == 202
        assert (await recv_json(ws))["Source"]["Path"] == "common-files/a.txt"


async def test_token_defaults(gateway: Gateway) -> None:
    status, reply = await mint(gateway.admin_port, {"user": "bob", "workspaces": []})
    assert status == 200
    identity = JwtResolver(secret=SECRET).verify(reply["token"])
    assert (identity.profile, identity.roles, identity.workspaces) == ("standard", (), ())
    assert identity.expires_at is not None and identity.expires_at - time.time() > 3500


async def test_token_carries_configured_audience_and_issuer(nursery: trio.Nursery) -> None:
    settings = make_settings(jwt_audience="cells", jwt_issuer="https://cells.test", dev=True)
    gateway: Gateway = await nursery.start(Gateway(settings).run)
    status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": []})
    assert status == 200
    resolver = JwtResolver(secret=SECRET, audience="cells", issuer="https://cells.test")
    assert resolver.verify(reply["token"]).user == "alice"


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {ADMIN_KEY}"}],
)
async def test_token_requires_the_admin_key(gateway: Gateway, headers: dict[str, str]) -> None:
    status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": []}, headers)
    assert (status, reply["error"]) == (401, "unauthorized")


async def test_token_without_secret_409(nursery: trio.Nursery) -> None:
    settings = make_settings(jwt_secret=None, dev=True)
    gateway: Gateway = await nursery.start(Gateway(settings, resolver=JwtResolver(secret=SECRET)).run)
    status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": []})
    assert (status, reply["error"]) == (409, "token_minting_unavailable")
    assert "jwt_secret" in reply["message"]
    _, _, body = await http_request(gateway.admin_port, "GET", "/api/v1/playground")
    assert json.loads(body)["token_minting"] is False


async def test_token_refused_outside_development_mode(nursery: trio.Nursery) -> None:
    # In production the admin key must not turn into a way to forge user tokens.
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": []})
    assert (status, reply["error"]) == (409, "token_minting_unavailable")
    assert "development mode" in reply["message"]
    _, _, body = await http_request(gateway.admin_port, "GET", "/api/v1/playground")
    assert json.loads(body)["token_minting"] is False


async def test_token_bad_body_400(gateway: Gateway) -> None:
    status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": [], "ttl": 10**9})
    assert (status, reply["error"]) == (400, "bad_request")
    assert "ttl" in reply["message"]
    assert (await mint(gateway.admin_port, b"{"))[0] == 400


async def test_token_never_logged(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        status, reply = await mint(gateway.admin_port, {"user": "alice", "workspaces": [COMMON]})
    assert status == 200
    assert "minted a token" in caplog.text and "'alice'" in caplog.text
    assert reply["token"] not in caplog.text
    assert reply["token"].split(".")[2] not in caplog.text


WS = {"uuid": "ws-1", "slug": "files", "roots": ["/ds/a"]}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (b"{", "not valid JSON"),
        ([], "JSON object"),
        ({"workspaces": []}, "user must be"),
        ({"user": "", "workspaces": []}, "user must be"),
        ({"user": " alice", "workspaces": []}, "surrounding spaces"),
        ({"user": "a\nb", "workspaces": []}, "printable"),
        ({"user": "a" * 300, "workspaces": []}, "printable"),
        ({"user": 1, "workspaces": []}, "user must be"),
        ({"user": "alice"}, '"workspaces" is required'),
        ({"user": "alice", "workspaces": [], "sub": "x"}, "unknown field(s): sub"),
        ({"user": "alice", "workspaces": [], "profile": "root"}, "profile must be one of"),
        ({"user": "alice", "workspaces": [], "profile": ["admin"]}, "profile must be one of"),
        ({"user": "alice", "workspaces": [], "roles": "a,b"}, "roles must be a list"),
        ({"user": "alice", "workspaces": [], "roles": ["a,b"]}, "must not contain ','"),
        ({"user": "alice", "workspaces": [], "roles": [""]}, "roles[0] must be"),
        ({"user": "alice", "workspaces": [], "roles": ["r"] * 51}, "at most 50"),
        ({"user": "alice", "workspaces": {}}, "workspaces must be a list"),
        ({"user": "alice", "workspaces": [1]}, "workspaces[0] must be an object"),
        ({"user": "alice", "workspaces": [{"uuid": "w", "slug": "s"}]}, 'needs "uuid", "slug" and "roots"'),
        ({"user": "alice", "workspaces": [{**WS, "extra": 1}]}, 'needs "uuid", "slug" and "roots"'),
        ({"user": "alice", "workspaces": [{**WS, "roots": []}]}, "roots must be a non-empty list"),
        ({"user": "alice", "workspaces": [{**WS, "roots": "/ds/a"}]}, "roots must be a list"),
        ({"user": "alice", "workspaces": [{**WS, "roots": ["/ds/../etc"]}]}, "invalid path"),
        ({"user": "alice", "workspaces": [{**WS, "slug": "a/b"}]}, "slug must be a name"),
        ({"user": "alice", "workspaces": [{**WS, "permissions": "x"}]}, "permissions must be r, w or rw"),
        ({"user": "alice", "workspaces": [{**WS, "permissions": []}]}, "permissions must be r, w or rw"),
        ({"user": "alice", "workspaces": [], "ttl": 0}, "ttl must be"),
        ({"user": "alice", "workspaces": [], "ttl": TOKEN_MAX_TTL + 1}, "ttl must be"),
        ({"user": "alice", "workspaces": [], "ttl": 60.5}, "ttl must be"),
        ({"user": "alice", "workspaces": [], "ttl": True}, "ttl must be"),
    ],
)
def test_parse_token_body_refusals(doc: Any, fragment: str) -> None:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(TokenRequestError, match=re.escape(fragment)):
        parse_token_body(body)


def test_parse_token_body_accepts_a_full_request() -> None:
    doc = {"user": "alice", "profile": "shared", "roles": ["r-1", "r-2"], "workspaces": [WS],
           "ttl": TOKEN_MAX_TTL}  # fmt: skip
    wanted = parse_token_body(json.dumps(doc).encode())
    assert (wanted.user, wanted.profile, wanted.roles, wanted.ttl) == (
        "alice",
        "shared",
        ("r-1", "r-2"),
        86400,
    )
    assert wanted.workspaces == ({**WS, "permissions": "r"},)
