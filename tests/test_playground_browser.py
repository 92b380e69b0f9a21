"""The playground page end to end in a real headless Chromium, driven over the DevTools protocol.

No browser-automation dependency: Chromium is started with ``--remote-debugging-port=0``, the test
reads the DevTools URL it prints, and speaks CDP (JSON over a WebSocket) with the trio-websocket
client the project already has. Skipped only when no Chromium binary is installed.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.app import Gateway
from tests import engines
from tests.helpers import ADMIN_KEY, TASKS, TREE, admin_publish, make_settings, recv_json, token, ws_client

DEVTOOLS_URL = re.compile(rb"DevTools listening on (ws://\S+)")
STEP_TIMEOUT = 10.0
MAX_CDP_MESSAGE = 64 * 1024 * 1024  # full-page screenshots arrive as one base64 message


CHROMIUM = engines.chromium()
pytestmark = pytest.mark.engine("chromium")


class CdpError(Exception):
    """Chromium answered a DevTools command with an error, or the page failed a check."""


class Cdp:
    """A minimal Chrome DevTools Protocol client: commands on one page session, page problems kept."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.session: str | None = None
        self.problems: list[str] = []  # uncaught exceptions, console errors, CSP violations
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._awaited: dict[str, trio.Event] = {}  # DevTools event name -> set when it arrives

    async def read(self) -> None:
        with suppress(ConnectionClosed):
            while True:
                message = json.loads(await self.ws.get_message())
                if "id" in message:
                    channel = self._waiting.pop(message["id"], None)
                    if channel is not None:
                        channel.send_nowait(message)
                else:
                    self._note(message.get("method", ""), message.get("params", {}))

    def _note(self, method: str, params: dict[str, Any]) -> None:
        if method in self._awaited:
            self._awaited.pop(method).set()
        if method == "Runtime.exceptionThrown":
            self.problems.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.problems.append(f"log: {params['entry'].get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.problems.append(f"console: {params.get('args')}")

    async def call(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> Any:
        ident = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[ident] = send
        command: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if not browser and self.session:
            command["sessionId"] = self.session
        await self.ws.send_message(json.dumps(command))
        with trio.fail_after(STEP_TIMEOUT):
            reply = await receive.receive()
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open_page(self) -> None:
        target = await self.call("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.call(f"{domain}.enable")

    async def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event (scripts with ``defer`` have run by then)."""
        loaded = self._awaited["Page.loadEventFired"] = trio.Event()
        result = await self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"cannot open {url}: {result['errorText']}")
        with trio.fail_after(STEP_TIMEOUT):
            await loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page (awaiting a promise if it returns one); return its JSON value."""
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, condition: str, what: str, within: float = STEP_TIMEOUT) -> Any:
        """Wait until the JavaScript ``condition`` is truthy in the page (checked in the page itself)."""
        poll = f"""new Promise((resolve) => {{
            const check = () => {{ const v = ({condition}); if (v) resolve(v); else setTimeout(check, 20); }};
            check();
        }})"""
        with trio.move_on_after(within):
            return await self.evaluate(poll)
        shown = await self.evaluate("document.body.innerText")
        raise CdpError(f"timed out waiting for {what}; the page shows:\n{shown}")

    async def type_into(self, element_id: str, text: str) -> None:
        """Focus a field, clear it, and type as a user would (through the browser's input pipeline)."""
        await self.evaluate(f"(() => {{ const n = document.getElementById({json.dumps(element_id)});"
                            " n.focus(); n.select(); })()")  # fmt: skip
        await self.call("Input.insertText", {"text": text})

    async def click(self, element_id: str) -> None:
        await self.evaluate(f"document.getElementById({json.dumps(element_id)}).click()")

    async def screenshot(self, path: Path) -> None:
        height = await self.evaluate("Math.ceil(document.documentElement.getBoundingClientRect().height)")
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = await self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Cdp]:
    """A headless Chromium with a fresh profile, and a CDP client on one blank page."""
    assert CHROMIUM is not None
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,1000",
            "about:blank"]  # fmt: skip
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE, start_new_session=True, check=False)  # fmt: skip
        process: trio.Process = await nursery.start(run)
        try:
            url = await _devtools_url(process)
            nursery.start_soon(_drain, process)
            async with _cdp_socket(url) as ws:
                cdp = Cdp(ws)
                nursery.start_soon(cdp.read)
                await cdp.open_page()
                yield cdp
                with suppress(CdpError, ConnectionClosed, trio.TooSlowError):
                    await cdp.call("Browser.close", browser=True)
            with trio.move_on_after(5):
                await process.wait()
        finally:
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # the browser and its helper processes


async def _devtools_url(process: trio.Process) -> str:
    """Read Chromium's stderr until it says where its DevTools endpoint listens."""
    assert process.stderr is not None
    seen = b""
    with trio.move_on_after(STEP_TIMEOUT):
        while (match := DEVTOOLS_URL.search(seen)) is None:
            chunk = await process.stderr.receive_some(65536)
            if not chunk:
                break
            seen += chunk
    if match is None:
        raise AssertionError(f"Chromium did not open its DevTools endpoint:\n{seen.decode(errors='replace')}")
    return match.group(1).decode()


async def _drain(process: trio.Process) -> None:
    """Keep reading Chromium's chatty stderr so that it never blocks on a full pipe."""
    assert process.stderr is not None
    async for _ in process.stderr:
        pass


@asynccontextmanager
async def _cdp_socket(url: str) -> AsyncIterator[WebSocketConnection]:
    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(url, max_message_size=MAX_CDP_MESSAGE) as ws:
            connection = ws
            yield ws
    finally:
        if connection is not None:
            await trio.aclose_forcefully(connection._stream)


def free_port() -> int:
    """A loopback port for the admin listener, known before start: it is the page's Origin."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_playground_in_chromium(nursery: trio.Nursery, tmp_path: Path) -> None:
    with trio.fail_after(40):
        await _scenario(nursery, tmp_path)


async def _scenario(nursery: trio.Nursery, tmp_path: Path) -> None:
    admin_port = free_port()
    origin = f"http://127.0.0.1:{admin_port}"
    settings = make_settings(admin_listen=f"127.0.0.1:{admin_port}", allowed_origins=(origin,), dev=True)
    gateway: Gateway = await nursery.start(Gateway(settings).run)
    chat_url = f"ws://127.0.0.1:{gateway.ws_port}/chat"

    # Bob is in the lobby already and has said something: the page must show him and his message.
    async with ws_client(chat_url) as bob:
        await bob.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token("bob")}))
        assert (await recv_json(bob))["@type"] == "subscribed"
        await bob.send_message(
            json.dumps({"@type": "JOIN", "Room": {"Type": "GLOBAL", "RoomTypeObject": "lobby"}})
        )
        lobby = (await recv_json(bob))["Room"]["Uuid"]
        await bob.send_message(
            json.dumps({"@type": "POST", "Message": {"RoomUuid": lobby, "Message": "hi from bob"}})
        )
        assert (await recv_json(bob))["Message"] == "hi from bob"

        async with chromium(tmp_path / "profile") as page:
            await _drive(page, gateway, origin, bob, tmp_path)


async def _drive(page: Cdp, gateway: Gateway, origin: str, bob: WebSocketConnection, tmp_path: Path) -> None:
    await page.navigate(f"{origin}/")
    await page.wait_for("document.getElementById('info').dataset.kind === 'ok'", "the page to load its info")
    assert await page.evaluate("document.getElementById('origin-warning').hidden") is True

    # 1. the admin key, kept in sessionStorage
    await page.type_into("admin-key", ADMIN_KEY)
    await page.click("key-save")
    await page.wait_for("document.getElementById('key-status').dataset.kind === 'ok'", "the key to be set")
    assert await page.evaluate("sessionStorage.getItem('cells-ws-gateway.admin-key')") == ADMIN_KEY

    # 2. mint a token for alice with one workspace
    workspaces = [{"uuid": "ws-1", "slug": "common-files", "roots": ["/ds/common"], "permissions": "rw"}]
    await page.type_into("mint-user", "alice")
    await page.type_into("mint-workspaces", json.dumps(workspaces))
    await page.click("mint")
    await page.wait_for("document.getElementById('token').value.startsWith('eyJ')", "a minted token")

    # 3. events: connect; text from events is never markup
    await page.click("events-connect")
    await page.wait_for(
        "document.getElementById('events-status').textContent.startsWith('subscribed as alice')", "subscribed"
    )
    hostile = {"Type": "DELETE", "Source": {"Uuid": "n-x", "Path": "/ds/common/<img src=x onerror=alert(1)>"}}
    assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": hostile}))[0] == 202
    await _wait_event(page, "tree", "DELETE", "common-files/<img src=x onerror=alert(1)>")
    assert await page.evaluate("document.querySelectorAll('#event-list img').length") == 0

    # connecting again resumes after the last event shown: what was missed, then "recovered 1"
    await page.click("events-disconnect")
    missed = {"Type": "DELETE", "Source": {"Uuid": "n-missed", "Path": "/ds/common/missed.txt"}}
    assert (await admin_publish(gateway.admin_port, {"topic": TREE, "event": missed}))[0] == 202
    await page.click("events-connect")
    await page.wait_for(
        "document.getElementById('events-status').textContent.startsWith('recovered 1 ')", "recovered"
    )
    await _wait_event(page, "tree", "DELETE", "common-files/missed.txt")
    await page.click("events-clear")

    # publish from the page's form and from the admin API: both rendered with their rewritten paths
    from_page = {"Target": {"Uuid": "n-page", "Path": "/ds/common/from-page.txt", "Type": "LEAF"}}
    await page.type_into("publish-event", json.dumps(from_page))
    await page.click("publish")
    await page.wait_for("document.getElementById('publish-status').textContent === 'published 1'", "publish")
    await _wait_event(page, "tree", "CREATE", "common-files/from-page.txt")
    moved = {
        "Type": "UPDATE_PATH",
        "Source": {"Uuid": "n-api", "Path": "/ds/common/report.txt", "Type": "LEAF"},
        "Target": {"Uuid": "n-api", "Path": "/ds/common/2026/report.txt", "Type": "LEAF"},
    }
    task = {
        "TaskUpdated": {"ID": "t-1", "JobID": "job-1", "Status": "Running", "StatusMessage": "Copying files",
                        "Progress": 0.5, "TriggerOwner": "alice"},
        "Job": {"ID": "job-1", "Label": "Copy files"},
    }  # fmt: skip
    batch = {"events": [{"topic": TREE, "event": moved}, {"topic": TASKS, "event": task}]}
    assert (await admin_publish(gateway.admin_port, batch))[0] == 202
    await _wait_event(page, "tree", "UPDATE_PATH", "common-files/report.txt -> common-files/2026/report.txt")
    await _wait_event(page, "task", "Running", "Copy files - Copying files - 50%")

    # 4. chat: join the lobby (members and history), post, see it rendered (and Bob receives it)
    await page.click("join")
    members = "[...document.querySelectorAll('#member-list li')].map(n => n.textContent).sort().join()"
    await page.wait_for(f"{members} === 'alice,bob'", "alice and bob as members of the lobby")
    await _wait_message(page, "bob", "hi from bob")
    await page.type_into("post-text", "hello from the playground <b>bold?</b>")
    await page.click("post")
    await _wait_message(page, "alice", "hello from the playground <b>bold?</b>")
    assert await page.evaluate("document.querySelectorAll('#message-list b').length") == 0
    with trio.fail_after(STEP_TIMEOUT):
        while (frame := await recv_json(bob)).get("Author") != "alice":
            pass
    assert frame["Message"] == "hello from the playground <b>bold?</b>"

    await page.screenshot(tmp_path / "playground.png")
    assert (tmp_path / "playground.png").read_bytes().startswith(b"\x89PNG")
    assert page.problems == [], page.problems

    # the Content-Security-Policy is in force: an injected inline script does not run
    violated = await page.evaluate(INJECT_INLINE_SCRIPT)
    assert violated == "script-src-elem"
    assert await page.evaluate("window.injected === undefined") is True


INJECT_INLINE_SCRIPT = """new Promise((resolve) => {
    document.addEventListener("securitypolicyviolation", (e) => resolve(e.effectiveDirective), {once: true});
    const script = document.createElement("script");
    script.textContent = "window.injected = 1";
    document.body.append(script);
})"""


async def _wait_event(page: Cdp, kind: str, type_: str, detail: str) -> None:
    await page.wait_for(
        f"""[...document.querySelectorAll('#event-list li')].some(li =>
            li.dataset.kind === {json.dumps(kind)} &&
            li.querySelector('.type').textContent === {json.dumps(type_)} &&
            li.querySelector('.detail').textContent === {json.dumps(detail)})""",
        f"the {type_} event of {detail} in the event list",
    )


async def _wait_message(page: Cdp, author: str, text: str) -> None:
    await page.wait_for(
        f"""[...document.querySelectorAll('#message-list li')].some(li =>
            li.querySelector('.author').textContent === {json.dumps(author)} &&
            li.querySelector('.text').textContent === {json.dumps(text)})""",
        f"{author}'s message {text!r} in the chat",
    )
