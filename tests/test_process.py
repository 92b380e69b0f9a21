"""The real process on real loopback sockets: serve, deliver, and drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial

import trio
from trio_websocket import ConnectionClosed

from tests.helpers import ADMIN_KEY, SECRET, TREE, admin_publish, recv_json, token, ws_client
from tests.process import gateway_env, gateway_process


async def test_process_delivers_published_event_on_both_event_paths() -> None:
    async with (
        gateway_process() as gw,
        ws_client(f"{gw.ws_url}/ws") as a,
        ws_client(f"{gw.ws_url}/ws/event") as b,
    ):
        for ws in (a, b):
            await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
            assert (await recv_json(ws))["@type"] == "subscribed"
        event = {"Type": "DELETE", "Source": {"Uuid": "n-1", "Path": "/ds/common/old.txt"}}
        assert (await admin_publish(gw.admin_port, {"topic": TREE, "event": event}))[0] == 202
        for ws in (a, b):
            message = await recv_json(ws)
            assert message["Type"] == "DELETE"
            assert message["Source"]["Path"] == "common-files/old.txt"


async def test_process_sigterm_closes_sessions_1001_and_exits_0() -> None:
    async with gateway_process() as gw:
        codes: list[int | None] = []

        async def session(task_status: trio.TaskStatus[None]) -> None:
            async with ws_client(f"{gw.ws_url}/ws") as ws:
                await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
                assert (await recv_json(ws))["@type"] == "subscribed"
                task_status.started()
                try:
                    while True:
                        await ws.get_message()
                except ConnectionClosed as closed:
                    codes.append(closed.reason.code if closed.reason else None)

        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                for _ in range(20):
                    await nursery.start(session)
            gw.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await gw.process.wait() == 0
        assert codes == [1001] * 20
        assert "gateway stopped" in gw.logs()


def test_process_dev_mode_prints_generated_keys_and_refuses_short_secret() -> None:
    env = gateway_env(GATEWAY_JWT_SECRET="short")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--listen", "127.0.0.1:0"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "at least 32 bytes" in result.stderr


async def test_process_dev_mode_announces_itself() -> None:
    env = gateway_env()
    del env["GATEWAY_JWT_SECRET"], env["GATEWAY_ADMIN_KEY"]
    argv = [sys.executable, "-m", "gateway", "serve", "--dev", "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0"]  # fmt: skip
    async with trio.open_nursery() as nursery:
        run = partial(trio.run_process, argv, env=env, stdout=subprocess.PIPE,
                      stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        process: trio.Process = await nursery.start(run)
        assert process.stdout is not None
        out = b""
        with trio.fail_after(30):
            while b"GATEWAY_ADMIN_KEY=" not in out:
                out += await process.stdout.receive_some(4096)
        process.send_signal(signal.SIGTERM)
    text = out.decode()
    assert "DEVELOPMENT MODE" in text and "never use them in production" in text
    assert SECRET not in text and ADMIN_KEY not in text


UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_process_unknown_paths_404() -> None:
    async with gateway_process() as gw:
        for path in ("/", "/wss", "/ws/other", "/chat/x"):
            stream = await trio.open_tcp_stream("127.0.0.1", gw.ws_port)
            async with stream:
                await stream.send_all(UPGRADE.format(path=path).encode())
                with trio.fail_after(5):
                    reply = await stream.receive_some(4096)
            assert reply.startswith(b"HTTP/1.1 404"), path
