"""The layers merged: built-in defaults < TOML file < ``GATEWAY_*`` environment < flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, get_type_hints

from gateway.config.checks import validate
from gateway.config.settings import REPLACED, ConfigError, Settings, env_name, fields


def load(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers and validate. ``overrides`` holds flags already parsed (None = unset)."""
    values: dict[str, Any] = {}
    notices: list[str] = []
    if config_file is not None:
        values.update(_from_file(Path(config_file), notices))
    values.update(_from_env(os.environ if env is None else env, notices))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = Settings(**values, notices=tuple(notices))
    validate(settings)
    return settings


def _replaced(name: str, where: str) -> str:
    return f"{where} is no longer read: use {REPLACED[name]} instead"


def _from_file(path: Path, notices: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in fields() if f.metadata["env"]}
    values = {}
    for key, value in raw.items():
        if key in REPLACED:
            notices.append(_replaced(key, f"config file {path}: {key}"))
            continue
        if key not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[key] = _coerce(key, value)
    return values


def _from_env(env: Mapping[str, str], notices: list[str]) -> dict[str, Any]:
    values = {}
    for name in REPLACED:
        if env_name(name) in env:
            notices.append(_replaced(name, env_name(name)))
    for f in fields():
        if f.metadata["env"] and (raw := env.get(env_name(f.name))) is not None:
            values[f.name] = _coerce(f.name, raw, source=env_name(f.name))
    return values


_HINTS: Final = get_type_hints(Settings)


def _coerce(name: str, value: Any, source: str | None = None) -> Any:
    """Convert a TOML value or an environment string to the setting's type."""
    hint = _HINTS[name]
    where = source or name
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, str):  # str and str | None
        return value
    raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        tuple[str, ...]: "list of strings",
    }.get(hint, "string")
