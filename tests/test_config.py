"""Settings layers (defaults < file < env < flags), coercion and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config import ConfigError, Settings

GOOD_SECRET = "s" * 32


def test_config_defaults() -> None:
    settings = config.load(env={})
    assert settings.listen == "[::]:5050"
    assert settings.admin_listen == "127.0.0.1:5051"
    assert settings.jwt_secret is None and settings.admin_key is None
    assert settings.max_message_bytes == 65536


def test_config_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('listen = "127.0.0.1:1"\nadmin_listen = "127.0.0.1:2"\nping_interval = 7\n')
    env = {"GATEWAY_LISTEN": "127.0.0.1:3", "GATEWAY_PING_INTERVAL": "8.5"}
    settings = config.load(file, env, {"listen": "127.0.0.1:4", "admin_listen": None})
    assert settings.listen == "127.0.0.1:4"
    assert settings.admin_listen == "127.0.0.1:2"
    assert settings.ping_interval == 8.5


def test_config_env_lists_and_numbers() -> None:
    env = {
        "GATEWAY_ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "GATEWAY_RATE_BURST": "9",
        "GATEWAY_JWT_SECRET": GOOD_SECRET,
    }
    settings = config.load(env=env)
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.rate_burst == 9


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_RATE_BURST": "many"}, "GATEWAY_RATE_BURST"),
        ({"GATEWAY_LISTEN": "nowhere"}, "listen"),
        ({"GATEWAY_LISTEN": "::1:5050"}, "brackets"),
        ({"GATEWAY_PING_TIMEOUT": "0"}, "ping_timeout"),
        ({"GATEWAY_PING_TIMEOUT": "nan"}, "ping_timeout"),
        ({"GATEWAY_JWT_SECRET": "short"}, "32 bytes"),
        ({"GATEWAY_ALLOWED_ORIGINS": "cells.example.com"}, "allowed_origins"),
        ({"GATEWAY_LOG_LEVEL": "loud"}, "log_level"),
        ({"GATEWAY_BUS_URL": "redis://x"}, "bus_url"),
    ],
)
def test_config_invalid_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env=env)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad, {})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('lisen = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'lisen'"):
        config.load(unknown, {})
    dev = tmp_path / "dev.toml"
    dev.write_text("dev = true\n")
    with pytest.raises(ConfigError, match="unknown setting 'dev'"):
        config.load(dev, {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[::]:5050", ("::", 5050)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":80", ("", 80)),
        ("localhost:5051", ("localhost", 5051)),
    ],
)
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert config.parse_host_port(value) == expected


def test_effective_masks_secrets() -> None:
    shown = config.effective(Settings(jwt_secret=GOOD_SECRET, admin_key="k"))
    assert shown["jwt_secret"] == "***" and shown["admin_key"] == "***"
    assert shown["listen"] == "[::]:5050"
