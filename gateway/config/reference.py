"""The settings as people read them: masked for logs and ``check-config``, a table for the docs."""

from __future__ import annotations

from typing import Any

from gateway.config.settings import Settings, env_name, fields


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as a plain mapping, secrets masked, for ``check-config`` and startup logs."""
    shown = {}
    for f in fields():
        if f.name == "notices":
            continue
        value = getattr(settings, f.name)
        if f.metadata["secret"] and value:
            value = "***"
        shown[f.name] = value
    return shown


def reference_markdown() -> str:
    """The configuration reference table (docs/OPERATIONS.md embeds it; a test keeps them equal)."""
    rows = ["| setting (TOML key) | environment | default | meaning |", "|---|---|---|---|"]
    for f in fields():
        if f.name == "notices":
            continue
        env = f"`{env_name(f.name)}`" if f.metadata["env"] else "(flag only)"
        default = "unset" if f.default is None else f"`{_show_default(f.default)}`"
        rows.append(f"| `{f.name}` | {env} | {default} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)
