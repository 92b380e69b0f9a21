"""``gateway watch``: what a user's browser would receive, printed one message per line."""

from __future__ import annotations

import io
import json

import pytest
import trio

from gateway.app import Gateway
from gateway.cli import main
from gateway.watch import WatchError, WatchOptions, subscribe_message, watch
from tests.helpers import COMMON, TREE, admin_publish, make_settings, token


class Lines(io.StringIO):
    """An output that says when a line has been printed (watch runs in this test's trio loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_line = trio.Event()

    def write(self, text: str) -> int:
        if "\n" in text:
            self.first_line.set()
        return super().write(text)


async def test_watch_prints_the_reply_then_the_users_events(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    out = Lines()
    done = trio.Event()

    async def watching() -> None:
        await watch(WatchOptions(f"ws://127.0.0.1:{gateway.ws_port}/ws", token("alice"), count=2), out)
        done.set()

    nursery.start_soon(watching)
    with trio.fail_after(10):
        await out.first_line.wait()  # subscribed: events published from now on reach it
        hidden = {"Type": "CREATE", "Target": {"Uuid": "x", "Path": "/ds/elsewhere/x.txt", "Type": "LEAF"}}
        path = f"{COMMON['roots'][0]}/a.txt"
        seen = {"Type": "CREATE", "Target": {"Uuid": "n1", "Path": path, "Type": "LEAF"}}
        for event in (hidden, seen):
            assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": event}))[0] == 202
        await done.wait()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["@type"] == "subscribed" and lines[0]["user"] == "alice"
    assert lines[1]["Target"]["Uuid"] == "n1"  # the event of another workspace was not shown


async def test_watch_says_why_the_gateway_closed(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    url = f"ws://127.0.0.1:{gateway.ws_port}/ws"
    code, out, err = await trio.to_thread.run_sync(run, ["watch", "--url", url, "--token", "not-a-token"])
    assert code == 1 and "closed the session: 4001" in err, (out, err)


async def test_watch_reports_a_refused_connection(nursery: trio.Nursery) -> None:
    gateway: Gateway = await nursery.start(Gateway(make_settings()).run)
    url = f"ws://127.0.0.1:{gateway.ws_port}/nowhere"
    with pytest.raises(WatchError, match="HTTP 404"):
        await watch(WatchOptions(url, token("alice"), count=1), io.StringIO())


def test_watch_asks_for_positions_when_told() -> None:
    assert json.loads(subscribe_message(WatchOptions("ws://x/ws", "T"))) == {"@type": "subscribe", "jwt": "T"}
    recover = json.loads(subscribe_message(WatchOptions("ws://x/ws", "T", recover=True)))
    assert recover["recover"] is True
    since = json.loads(subscribe_message(WatchOptions("ws://x/ws", "T", since="e:5")))
    assert since["since"] == "e:5" and "recover" not in since


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()
