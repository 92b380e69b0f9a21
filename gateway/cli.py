"""Command line: ``main(argv) -> int``; every subcommand is testable in process.

gateway serve [--listen HOST:PORT] [--admin-listen HOST:PORT] [--config FILE] [--bus URL]
              [--db URL] [--log-level LEVEL] [--dev]
gateway token --user NAME [--sub S] [--profile P] [--roles a,b]
              [--workspace UUID:SLUG:/root[:r|w|rw]]... [--ttl SECONDS]
gateway publish --topic T --event JSON|@file [--admin-url URL]
gateway whois --token T [--json]
gateway migrate [--db URL]
gateway check-config [--config FILE]
gateway --version
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

import outcome
import trio

from gateway import __version__, config, logs
from gateway.config import ConfigError, Settings
from gateway.devmode import admin_url, dev_settings, local_address
from gateway.identity import PROFILES, Identity
from gateway.identity.mint import mint_token
from gateway.topics import PUBLISHABLE_TOPICS
from gateway.tuning import tune_garbage_collector

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

GIL_SWITCH_INTERVAL = 0.0005


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway until SIGTERM/SIGINT")
    _add_config_flags(serve)
    serve.add_argument("--listen", help="WebSocket listener HOST:PORT (default [::]:5050)")
    serve.add_argument("--admin-listen", help="admin listener HOST:PORT (default 127.0.0.1:5051)")
    serve.add_argument("--bus", dest="bus_url", help="bus URL: memory:// or nats://HOST:PORT")
    serve.add_argument(
        "--db", dest="db_url", help="chat store URL: sqlite:///PATH or postgresql+psycopg://..."
    )
    serve.add_argument("--log-level", help="debug, info, warning or error")
    serve.add_argument(
        "--dev", action="store_true", help="development mode: generate keys (printed), allow local Origins"
    )

    token = sub.add_parser("token", help="print a signed HS256 token (for trials and tests)")
    _add_config_flags(token)
    token.add_argument("--user", required=True, help="login (the 'name' claim)")
    token.add_argument("--sub", help="subject (user uuid); defaults to the login")
    token.add_argument("--profile", default="standard", choices=PROFILES)
    token.add_argument("--roles", default="", help="comma-separated role uuids")
    token.add_argument(
        "--workspace",
        action="append",
        default=[],
        metavar="UUID:SLUG:/root[:r|w|rw]",
        help="a workspace the user may see; repeat for several",
    )
    token.add_argument("--ttl", type=float, default=3600, help="seconds until the token expires")

    whois = sub.add_parser("whois", help="print who a token is and what its sessions may see")
    _add_config_flags(whois)
    whois.add_argument("--token", required=True, help="the token a browser would send (JWT, opaque, PAT)")
    whois.add_argument("--json", action="store_true", help="print the identity as JSON")

    check = sub.add_parser("check-config", help="validate the configuration and print the effective settings")
    _add_config_flags(check)
    check.add_argument(
        "--reference",
        action="store_true",
        help="print the reference table of every setting (Markdown) instead",
    )

    migrate = sub.add_parser("migrate", help="create or upgrade the chat database schema, then exit")
    _add_config_flags(migrate)
    migrate.add_argument("--db", dest="db_url", help="chat store URL (default: from the configuration)")

    publish = sub.add_parser("publish", help="publish one event through the admin API")
    _add_config_flags(publish)
    publish.add_argument("--topic", required=True, choices=sorted(PUBLISHABLE_TOPICS))
    publish.add_argument("--event", required=True, help="event JSON, or @FILE to read it from a file")
    publish.add_argument("--admin-url", help="admin base URL (default: from admin_listen, admin_tls)")

    watch = sub.add_parser("watch", help="subscribe with a user's token and print what they receive")
    _add_config_flags(watch)
    watch.add_argument("--token", required=True, help="the token a browser would send (JWT, opaque, PAT)")
    watch.add_argument("--url", help="events socket URL (default: ws[s]://127.0.0.1:PORT/ws from listen)")
    watch.add_argument("--origin", help="Origin header to send, when the gateway checks it")
    watch.add_argument("--count", type=int, help="exit after this many messages")
    watch.add_argument("--recover", action="store_true", help="ask for event positions")
    watch.add_argument("--since", metavar="POSITION", help="resume after this position")
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file")


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    commands = {
        "serve": _serve,
        "token": _token,
        "publish": _publish,
        "migrate": _migrate,
        "check-config": _check_config,
        "whois": _whois,
        "watch": _watch,
    }
    try:
        return commands[args.command](args, out)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=err)
        return EXIT_USAGE
    except CliError as exc:
        print(f"gateway: {exc}", file=err)
        return EXIT_ERROR


class CliError(Exception):
    """A command failed in a way the user can act on; the message says how."""


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    return config.load(args.config, os.environ, flags)


# -- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.app import Gateway, serve

    flags = {
        "listen": args.listen,
        "admin_listen": args.admin_listen,
        "bus_url": args.bus_url,
        "db_url": args.db_url,
        "log_level": args.log_level,
    }
    settings = _settings(args, **flags)
    if args.dev:
        settings = dev_settings(settings, out)
    gateway = Gateway(settings)  # refuses to start without keys, before anything listens
    logs.configure(settings.log_level, settings.log_format)
    for notice in settings.notices:
        logging.getLogger("gateway.config").warning("%s", notice)
    # The chat store's worker threads need the GIL for a moment between SQLite calls; with the
    # default 5 ms switch interval they queue behind the event loop during fan-out bursts
    # (measured: +30% durable posts/s with 0.5 ms, no change on the events path, which has no
    # threads).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    tune_garbage_collector()
    try:
        trio.run(serve, gateway)
    except BaseExceptionGroup as group:
        # What start-up finds wrong (a chat database it cannot reach or migrate, a JetStream
        # history that cannot serve) comes out of nested nurseries: report it as the
        # configuration error it is, not as a traceback.
        found, rest = group.split(ConfigError)
        if found is not None and rest is None:
            raise _first_leaf(found) from None
        raise
    return EXIT_OK


def _first_leaf(group: BaseExceptionGroup[ConfigError]) -> ConfigError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


# -- check-config -----------------------------------------------------------------------------


def _check_config(args: argparse.Namespace, out: TextIO) -> int:
    """Validate everything ``serve`` would, without listening; print the result, secrets masked."""
    from gateway.app import Gateway

    if args.reference:
        print(config.reference_markdown(), end="", file=out)
        return EXIT_OK
    settings = _settings(args)
    Gateway(settings)  # builds (and so checks) every service, without starting any
    for notice in settings.notices:
        print(f"# warning: {notice}", file=out)
    for name, value in config.effective(settings).items():
        print(f"{name} = {json.dumps(list(value) if isinstance(value, tuple) else value)}", file=out)
    print("# configuration is valid", file=out)
    return EXIT_OK


# -- migrate ----------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.app import migrate_store
    from gateway.chat import migrate

    settings = _settings(args, db_url=args.db_url)
    trio.run(migrate_store, settings.db_url)
    print(f"chat database at revision {migrate.current(settings.db_url)}", file=out)
    return EXIT_OK


# -- token ------------------------------------------------------------------------------------


def _token(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    if settings.identity == "cells":
        raise ConfigError(
            "identity = cells: sessions use the tokens Cells issues (log in to Cells, or create a personal "
            "access token there); the gateway mints none"
        )
    if not settings.jwt_secret:
        raise ConfigError("gateway token signs with the shared secret: set GATEWAY_JWT_SECRET")
    workspaces = [parse_workspace(spec) for spec in args.workspace]
    token = mint_token(
        settings.jwt_secret,
        user=args.user,
        sub=args.sub,
        profile=args.profile,
        roles=[r for r in args.roles.split(",") if r],
        workspaces=workspaces,
        ttl=args.ttl,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(token, file=out)
    return EXIT_OK


def parse_workspace(spec: str) -> dict[str, Any]:
    """``UUID:SLUG:/root[:r|w|rw]`` -> the ``workspaces`` claim entry."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise CliError(f"--workspace {spec!r}: expected UUID:SLUG:/root[:r|w|rw]")
    uuid, slug, root = parts
    permissions = "rw"
    head, sep, tail = root.rpartition(":")
    if sep and tail in ("r", "w", "rw"):
        root, permissions = head, tail
    return {"uuid": uuid, "slug": slug, "roots": [root], "permissions": permissions}


# -- publish ----------------------------------------------------------------------------------


def _publish(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(args)
    if not settings.admin_key:
        raise ConfigError("gateway publish needs the admin key: set GATEWAY_ADMIN_KEY")
    event = _event_argument(args.event)
    base = args.admin_url or admin_url(settings)
    body = json.dumps({"topic": args.topic, "event": event}).encode()
    request = urllib.request.Request(
        base.rstrip("/") + "/api/v1/publish",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {settings.admin_key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode().strip(), file=out)
    except urllib.error.HTTPError as exc:
        raise CliError(f"publish refused ({exc.code}): {exc.read().decode().strip()}") from None
    except urllib.error.URLError as exc:
        raise CliError(f"cannot reach the admin API at {base}: {exc.reason}") from None
    return EXIT_OK


def _event_argument(value: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise CliError(f"--event {value}: {exc.strerror}") from None
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--event is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise CliError("--event must be a JSON object")
    return event


# -- whois ------------------------------------------------------------------------------------


def _whois(args: argparse.Namespace, out: TextIO) -> int:
    """Resolve a token with the configured resolver, once, and print what the gateway sees."""
    from gateway.app import Gateway
    from gateway.identity.describe import describe, describe_json
    from gateway.protocol import ProtocolError

    gateway = Gateway(_settings(args))
    logs.configure("warning", "text")

    async def resolve() -> outcome.Outcome[Identity]:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.resolver.run)
            result = await outcome.acapture(gateway.resolver.resolve, args.token.strip())
            nursery.cancel_scope.cancel()
        if gateway.http is not None:
            await gateway.http.aclose()
        return result

    try:
        identity = trio.run(resolve).unwrap()
    except ProtocolError as exc:
        raise CliError(f"token refused: {exc.code}: {exc.message}") from None
    print(json.dumps(describe_json(identity), indent=2) if args.json else describe(identity), file=out)
    return EXIT_OK


def _watch(args: argparse.Namespace, out: TextIO) -> int:
    from gateway.watch import WatchError, WatchOptions, watch

    settings = _settings(args)
    url = args.url or f"{'wss' if settings.tls_cert_file else 'ws'}://{local_address(settings.listen)}/ws"
    options = WatchOptions(url, args.token, args.count, args.origin, recover=args.recover, since=args.since)
    try:
        trio.run(watch, options, out)
    except WatchError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return EXIT_OK
