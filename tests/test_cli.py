"""The command line, in process: main(argv) -> exit code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jwt
import pytest
import trio

from gateway import __version__
from gateway.app import Gateway
from gateway.cli import main, parse_workspace
from tests.helpers import ADMIN_KEY, SECRET, TREE, make_settings


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_JWT_SECRET", SECRET)
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN_KEY)


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GATEWAY_JWT_SECRET",
        "GATEWAY_ADMIN_KEY",
        "GATEWAY_JWT_PUBLIC_KEY_FILE",
        "GATEWAY_JWKS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"gateway {__version__}"


def test_cli_token_mints_platform_claims(keys: None) -> None:
    code, out, _ = run(["token", "--user", "alice", "--sub", "u-1", "--profile", "admin", "--roles", "r1,r2",
                        "--workspace", "ws-1:common-files:/ds/common:r", "--ttl", "120"])  # fmt: skip
    assert code == 0
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"])
    assert claims["name"] == "alice" and claims["sub"] == "u-1" and claims["profile"] == "admin"
    assert claims["roles"] == "r1,r2"
    assert claims["workspaces"] == [
        {"uuid": "ws-1", "slug": "common-files", "roots": ["/ds/common"], "permissions": "r"}
    ]
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("w:s:/a/b", {"uuid": "w", "slug": "s", "roots": ["/a/b"], "permissions": "rw"}),
        ("w:s:/a:b:w", {"uuid": "w", "slug": "s", "roots": ["/a:b"], "permissions": "w"}),
    ],
)
def test_cli_parse_workspace(spec: str, expected: dict[str, object]) -> None:
    assert parse_workspace(spec) == expected


def test_cli_token_needs_secret(no_keys: None) -> None:
    code, _, err = run(["token", "--user", "alice"])
    assert code == 2 and "GATEWAY_JWT_SECRET" in err


def test_cli_token_bad_workspace(keys: None) -> None:
    code, _, err = run(["token", "--user", "alice", "--workspace", "only-uuid"])
    assert code == 1 and "UUID:SLUG:/root" in err


def test_cli_serve_refuses_without_keys(no_keys: None) -> None:
    code, _, err = run(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    assert code == 2 and "no JWT key configured" in err and "--dev" in err


def test_cli_serve_refuses_without_admin_key(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_JWT_SECRET", SECRET)
    code, _, err = run(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    assert code == 2 and "no admin key configured" in err


def test_cli_config_error_is_reported(keys: None) -> None:
    code, _, err = run(["serve", "--listen", "nowhere"])
    assert code == 2 and "listen" in err


async def test_cli_publish_through_admin_api(keys: None, nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    url = f"http://127.0.0.1:{gateway.admin_port}"
    event = json.dumps({"Type": "DELETE", "Source": {"Uuid": "n", "Path": "/ds/common/x"}})
    code, out, err = await trio.to_thread.run_sync(
        run, ["publish", "--topic", TREE, "--event", event, "--admin-url", url]
    )
    assert (code, json.loads(out)) == (0, {"published": 1}), err
    code, _, err = await trio.to_thread.run_sync(
        run, ["publish", "--topic", TREE, "--event", "[1]", "--admin-url", url]
    )
    assert code == 1 and "JSON object" in err


async def test_cli_publish_wrong_key_reports_401(
    keys: None, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", "wrong-key")
    url = f"http://127.0.0.1:{gateway.admin_port}"
    code, _, err = await trio.to_thread.run_sync(
        run, ["publish", "--topic", TREE, "--event", "{}", "--admin-url", url]
    )
    assert code == 1 and "401" in err


def test_cli_publish_unreachable(keys: None) -> None:
    code, _, err = run(["publish", "--topic", TREE, "--event", "{}", "--admin-url", "http://127.0.0.1:9"])
    assert code == 1 and "cannot reach" in err


def test_cli_publish_event_from_file(keys: None, tmp_path: object) -> None:
    code, _, err = run(["publish", "--topic", TREE, "--event", "@/nonexistent/file.json"])
    assert code == 1 and "No such file" in err


def test_cli_check_config_masks_secrets(keys: None, tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('listen = "127.0.0.1:6000"\nallowed_origins = ["https://cells.example.com"]\n')
    code, out, _ = run(["check-config", "--config", str(file)])
    assert code == 0
    assert 'listen = "127.0.0.1:6000"' in out
    assert 'allowed_origins = ["https://cells.example.com"]' in out
    assert 'jwt_secret = "***"' in out and 'admin_key = "***"' in out
    assert SECRET not in out and ADMIN_KEY not in out
    assert out.strip().endswith("# configuration is valid")


def test_cli_check_config_reports_problems(keys: None, tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text("ping_timeout = -1\n")
    code, _, err = run(["check-config", "--config", str(file)])
    assert code == 2 and "ping_timeout" in err
    missing_key = tmp_path / "rsa.toml"
    missing_key.write_text('jwt_public_key_file = "/nonexistent.pem"\n')
    code, _, err = run(["check-config", "--config", str(missing_key)])
    assert code == 2 and "cannot read /nonexistent.pem" in err


def test_cli_dev_origins_follow_the_admin_listener(no_keys: None) -> None:
    from gateway.config import Settings
    from gateway.devmode import dev_settings

    out = io.StringIO()
    settings = dev_settings(Settings(admin_listen="127.0.0.1:6061"), out)
    assert "http://127.0.0.1:6061" in settings.allowed_origins
    assert "http://localhost:6061" in settings.allowed_origins
    assert "http://127.0.0.1:6061/" in out.getvalue()


def test_cli_dev_ignores_configured_keys_and_never_prints_them(no_keys: None) -> None:
    """Finding 13.9: --dev printed the configured secret and admin key as "generated", and minted
    admin tokens with the real secret."""
    from gateway.config import Settings
    from gateway.devmode import dev_settings

    out = io.StringIO()
    real = Settings(
        jwt_secret="real-production-secret-0123456789abcdef", admin_key="real-admin-key-0123456789"
    )
    settings = dev_settings(real, out)
    assert settings.jwt_secret not in (None, real.jwt_secret) and settings.admin_key != real.admin_key
    printed = out.getvalue()
    assert "real-production-secret" not in printed and "real-admin-key" not in printed
    assert "ignores the configured jwt_secret, admin_key" in printed
    assert f"GATEWAY_JWT_SECRET={settings.jwt_secret}" in printed  # generated: the only one that mints


# -- cells identity ---------------------------------------------------------------------------------


@pytest.fixture
def cells_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from tests.fakecells import SERVICE_TOKEN

    service = tmp_path / "service-token"
    service.write_text(SERVICE_TOKEN)
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    monkeypatch.setenv("GATEWAY_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("GATEWAY_IDENTITY", "cells")
    monkeypatch.setenv("GATEWAY_CELLS_SERVICE_TOKEN_FILE", str(service))
    return service


async def test_cli_whois_prints_what_the_gateway_resolves(
    cells_env: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    from tests.fakecells import WS_COMMON, site

    cells = site()
    await nursery.start(cells.run)
    monkeypatch.setenv("GATEWAY_CELLS_URL", cells.url)
    code, out, err = await trio.to_thread.run_sync(run, ["whois", "--token", "opaque-alice"])
    assert code == 0, err
    assert "user      alice" in out and "profile   standard" in out
    assert "common-files" in out and "root pydiods1/...  shown as common-files/..." in out
    code, out, _ = await trio.to_thread.run_sync(run, ["whois", "--token", "pat-alice", "--json"])
    described = json.loads(out)
    assert described["user"] == "alice"
    assert {ws["uuid"] for ws in described["workspaces"]} >= {WS_COMMON}
    code, _, err = await trio.to_thread.run_sync(run, ["whois", "--token", "nobody"])
    assert code == 1 and "token_invalid" in err


def test_cli_token_refuses_in_cells_identity(cells_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CELLS_URL", "https://cells.example.com")
    code, _, err = run(["token", "--user", "alice"])
    assert code == 2 and "Cells issues" in err


def test_cli_check_config_of_cells_identity(cells_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CELLS_URL", "https://cells.example.com")
    code, out, _ = run(["check-config"])
    assert code == 0 and 'identity = "cells"' in out
    monkeypatch.delenv("GATEWAY_CELLS_SERVICE_TOKEN_FILE")
    code, _, err = run(["check-config"])
    assert code == 2 and "cells_subfolder_acls" in err
