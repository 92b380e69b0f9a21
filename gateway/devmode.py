"""Development mode (``serve --dev``, ``make run``): generated keys, local Origins, a loud banner;
and how to reach the listeners from this machine."""

from __future__ import annotations

import secrets
from typing import TextIO

from gateway import config
from gateway.config import Settings

# Keys `--dev` replaces with its own: the configured ones are for production, and development
# mode must neither print them nor mint tokens they would verify.
DEV_IGNORED_KEYS = ("jwt_secret", "jwt_public_key_file", "jwks_file", "admin_key")


def dev_settings(settings: Settings, out: TextIO) -> Settings:
    """Generated keys (configured ones ignored) and local Origins; say loudly that this is for development."""
    ignored = [name for name in DEV_IGNORED_KEYS if getattr(settings, name)]
    if ignored:
        # Only the names: the values are secrets, and this goes to a terminal or a log.
        print(f"development mode ignores the configured {', '.join(ignored)} and uses its own keys", file=out)
    secret = secrets.token_urlsafe(32)
    admin_key = secrets.token_urlsafe(32)
    origins = settings.allowed_origins or dev_origins(settings)
    print(
        "\n*** DEVELOPMENT MODE: keys generated for this run; never use them in production. ***\n"
        f"Playground (live events and chat in a browser): {admin_url(settings)}/\n"
        "To mint tokens and publish from another shell:\n"
        f"  export GATEWAY_JWT_SECRET={secret}\n"
        f"  export GATEWAY_ADMIN_KEY={admin_key}\n"
        "  .venv/bin/gateway token --user alice --workspace ws-1:common-files:/ds/common\n"
        "  .venv/bin/gateway publish --topic topic.pydio.tree.nodes.changes "
        '--event \'{"Target":{"Uuid":"n1","Path":"/ds/common/hello.txt","Type":"LEAF"}}\'\n',
        file=out,
        flush=True,
    )
    return settings.with_changes(
        jwt_secret=secret,
        jwt_public_key_file=None,
        jwks_file=None,
        admin_key=admin_key,
        allowed_origins=origins,
        dev=True,
    )


def dev_origins(settings: Settings) -> tuple[str, ...]:
    """In development, the playground's own origins (the admin listener, by every loopback name)."""
    _, port = config.parse_host_port(settings.admin_listen, "admin_listen")
    return tuple(f"http://{host}:{port}" for host in ("127.0.0.1", "localhost", "[::1]"))


def admin_url(settings: Settings) -> str:
    scheme = "https" if settings.admin_tls else "http"
    return f"{scheme}://{local_address(settings.admin_listen, 'admin_listen')}"


def local_address(listen: str, setting: str = "listen") -> str:
    """HOST:PORT to reach a listener from this machine (a wildcard address means loopback)."""
    host, port = config.parse_host_port(listen, setting)
    if host in ("", "0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
