"""Smoke test of the one-file binary (``make binary`` -> dist/gateway; ``make smoke`` runs this).

The binary runs from a temporary working directory with its own TMPDIR, so it can only work with
what it carries: its Python, its libraries and its bundled migrations. ``GATEWAY_TEST_BINARY`` points
the suite at another build, such as an installed /usr/local/bin/cells-ws-gateway.
"""

from __future__ import annotations

import ctypes.util
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from gateway import __version__
from gateway.admin.playground import PLAYGROUND_FILES
from gateway.chat import migrate
from tests.helpers import TREE, admin_publish, http_request, recv_json, token, ws_client
from tests.process import GatewayProcess, gateway_env, gateway_process
from tests.servers import new_pg_database, postgres_admin_url
from tests.test_packaging import directives

BINARY = Path(
    os.environ.get("GATEWAY_TEST_BINARY") or Path(__file__).resolve().parents[1] / "dist" / "gateway"
)
GLOBAL_ROOM = {"Type": "GLOBAL", "RoomTypeObject": "lobby"}
STOP_TIMEOUT = 20
RUN_TIMEOUT = 60  # the first start of a fresh build may be slow on a busy machine

pytestmark = [
    pytest.mark.binary,
    pytest.mark.skipif(not BINARY.is_file(), reason=f"{BINARY} not found: build it with `make binary`"),
]


@dataclass
class RunDirs:
    """Where one run of the binary lives: working directory, unpack directory (TMPDIR), database."""

    root: Path

    def __post_init__(self) -> None:
        self.workdir.mkdir()
        self.unpack.mkdir()

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def unpack(self) -> Path:
        return self.root / "tmp"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.root / 'chat.db'}"

    def env(self) -> dict[str, str]:
        return gateway_env(GATEWAY_DB_URL=self.db_url, GATEWAY_CHAT_HISTORY_ON_JOIN="false",
                           TMPDIR=str(self.unpack))  # fmt: skip

    def unpacked(self) -> list[str]:
        return sorted(path.name for path in self.unpack.iterdir())


# -- the session flows ----------------------------------------------------------------------------


async def subscribe(ws: WebSocketConnection) -> None:
    await ws.send_message(json.dumps({"@type": "subscribe", "ack": True, "jwt": token()}))
    reply = await recv_json(ws)
    assert reply["@type"] == "subscribed", reply


async def chat(ws: WebSocketConnection, kind: str, room: dict[str, Any], message: Any = None) -> None:
    frame = {"@type": kind, "Room": room, **({"Message": message} if message is not None else {})}
    await ws.send_message(json.dumps(frame))


async def join(ws: WebSocketConnection) -> str:
    await chat(ws, "JOIN", GLOBAL_ROOM)
    reply = await recv_json(ws)
    assert reply["@type"] == "ROOM_UPDATE", reply
    return str(reply["Room"]["Uuid"])


async def deliver_event(gw: GatewayProcess) -> None:
    """A session on /ws receives an event published through the admin API."""
    async with ws_client(f"{gw.ws_url}/ws") as ws:
        await subscribe(ws)
        event = {"Type": "DELETE", "Source": {"Uuid": "n-1", "Path": "/ds/common/old.txt"}}
        assert (await admin_publish(gw.admin_port, {"topic": TREE, "event": event}))[0] == 202
        received = await recv_json(ws)
        assert received["Type"] == "DELETE" and received["Source"]["Path"] == "common-files/old.txt"


async def serve_playground(gw: GatewayProcess) -> None:
    """The admin listener serves the playground files, which the binary carries as package data."""
    for path, (name, content_type) in PLAYGROUND_FILES.items():
        status, headers, body = await http_request(gw.admin_port, "GET", path)
        assert (status, headers.get("content-type")) == (200, content_type), name
        assert body, name


async def post_message(gw: GatewayProcess, text: str) -> tuple[str, dict[str, Any]]:
    """JOIN a GLOBAL room on /chat and POST; return the room and the acknowledgement (own copy)."""
    async with ws_client(f"{gw.ws_url}/chat") as ws:
        await subscribe(ws)
        room = await join(ws)
        await chat(ws, "POST", GLOBAL_ROOM, {"RoomUuid": room, "Message": text})
        with trio.fail_after(10):
            while True:
                frame = await recv_json(ws)
                assert frame.get("@type") != "error", frame
                if frame.get("Author") == "alice":
                    return room, frame


async def read_history(gw: GatewayProcess, room: str) -> dict[str, Any]:
    """JOIN the room again and read its history with HISTORY; return the one message it holds."""
    async with ws_client(f"{gw.ws_url}/chat") as ws:
        await subscribe(ws)
        assert await join(ws) == room
        await chat(ws, "HISTORY", {"Uuid": room}, {"Message": json.dumps({"Offset": 0, "Limit": 10})})
        update = await recv_json(ws)
        assert update["@type"] == "ROOM_UPDATE" and update["Room"]["Uuid"] == room, update
        return await recv_json(ws)


async def stop(gw: GatewayProcess) -> None:
    """SIGTERM -> exit 0. Check the log once gateway_process has closed: only then is it complete."""
    gw.process.send_signal(signal.SIGTERM)
    with trio.fail_after(STOP_TIMEOUT):
        code = await gw.process.wait()
    assert code == 0, gw.logs()


# -- tests ----------------------------------------------------------------------------------------


def test_binary_prints_its_version(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([str(BINARY), "--version"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, f"gateway {__version__}"), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_binary_migrates_with_its_bundled_scripts_from_any_directory(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    for _ in range(2):  # creates, then finds the schema at head
        result = subprocess.run([str(BINARY), "migrate"], cwd=dirs.workdir, env=dirs.env(),
                                capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"chat database at revision {migrate.head()}"
    assert dirs.unpacked() == []


async def test_binary_serves_events_and_chat_and_keeps_history_across_restarts(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    start: dict[str, Any] = {
        "command": [str(BINARY)],
        "env": dirs.env(),
        "cwd": dirs.workdir,
        "start_timeout": RUN_TIMEOUT,
    }
    async with gateway_process(**start) as gw:
        assert [name[:4] for name in dirs.unpacked()] == ["_MEI"]  # TMPDIR is where it unpacks
        await deliver_event(gw)
        await serve_playground(gw)
        room, posted = await post_message(gw, "hello from the binary")
        await stop(gw)
    assert "gateway stopped" in gw.logs()
    assert dirs.unpacked() == []
    async with gateway_process(**start) as gw:
        stored = await read_history(gw, room)
        await stop(gw)
    assert "gateway stopped" in gw.logs()
    assert stored["Uuid"] == posted["Uuid"]
    assert (stored["Message"], stored["Author"]) == ("hello from the binary", "alice")
    assert dirs.unpacked() == []


def test_binary_migrates_postgresql_with_its_bundled_driver(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with postgres_admin_url() as admin_url:
        url = new_pg_database(admin_url)
        result = subprocess.run([str(BINARY), "migrate", "--db", url], cwd=dirs.workdir, env=dirs.env(),
                                capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chat database at revision {migrate.head()}"
    assert dirs.unpacked() == []


# -- under the systemd unit's seccomp filters -----------------------------------------------------

# Installs with libseccomp the filters systemd derives from the unit's SystemCallFilter=,
# SystemCallErrorNumber=, MemoryDenyWriteExecute= and RestrictAddressFamilies=, then execs the
# binary: the rest of the sandbox (mounts, users) needs systemd, these only need the kernel.
SECCOMP_LAUNCHER = r"""
import ctypes, ctypes.util, errno, json, os, sys

rules, argv = json.loads(sys.argv[1]), sys.argv[2:]
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                       ctypes.c_void_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

ALLOW, KILL_PROCESS, EQ, GE, MASKED_EQ = 0x7FFF0000, 0x80000000, 4, 5, 7
def refuse(code): return 0x00050000 | code

def add(ctx, action, name, arg=None, op=0, value=0):
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number == -1:  # not a system call of this architecture
        return
    cmp = Cmp(arg, op, value, value) if arg is not None else None
    result = lib.seccomp_rule_add_array(ctx, action, number, int(cmp is not None),
                                        ctypes.byref(cmp) if cmp is not None else None)
    assert result == 0, (name, result)

allow_list = lib.seccomp_init(refuse(rules["errno"]) if rules["errno"] else KILL_PROCESS)
for name in rules["allow"]:
    add(allow_list, ALLOW, name)
extra = lib.seccomp_init(ALLOW)
if rules["mdwe"]:
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
    add(extra, refuse(errno.EPERM), "mmap", 2, MASKED_EQ, PROT_WRITE | PROT_EXEC)
    add(extra, refuse(errno.EPERM), "mprotect", 2, MASKED_EQ, PROT_EXEC)
    add(extra, refuse(errno.EPERM), "pkey_mprotect", 2, MASKED_EQ, PROT_EXEC)
    add(extra, refuse(errno.EPERM), "shmat", 2, MASKED_EQ, SHM_EXEC)
AF_MAX = 64
for family in range(AF_MAX):
    if family not in rules["families"]:
        add(extra, refuse(errno.EAFNOSUPPORT), "socket", 0, EQ, family)
add(extra, refuse(errno.EAFNOSUPPORT), "socket", 0, GE, AF_MAX)
for ctx in (extra, allow_list):  # the allow list last: it may not allow seccomp() itself
    assert lib.seccomp_load(ctx) == 0
os.execv(argv[0], argv)
"""


def syscall_group(name: str) -> set[str]:
    """The system calls of a systemd group such as ``@system-service``, nested groups expanded."""
    assert SYSTEMD_ANALYZE is not None
    listing = subprocess.run([SYSTEMD_ANALYZE, "syscall-filter", name],
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    members = [line.strip() for line in listing.splitlines()[1:]]
    calls: set[str] = set()
    for member in members:
        if member.startswith("@"):
            calls |= syscall_group(member)
        elif member and not member.startswith("#"):
            calls.add(member)
    return calls


def unit_seccomp_rules() -> dict[str, Any]:
    unit = directives()
    allowed: set[str] = set()
    for value in unit["SystemCallFilter"]:
        deny = value.startswith("~")
        calls = set().union(
            *(syscall_group(n) if n.startswith("@") else {n} for n in value.lstrip("~").split())
        )
        allowed = allowed - calls if deny else allowed | calls
    (families,) = unit["RestrictAddressFamilies"]
    (errno_name,) = unit.get("SystemCallErrorNumber", [""])
    return {
        "allow": sorted(allowed),
        "errno": getattr(errno, errno_name) if errno_name else None,
        "mdwe": unit["MemoryDenyWriteExecute"] == ["yes"],
        "families": [int(getattr(socket, name)) for name in families.split()],
    }


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
LIBSECCOMP = ctypes.util.find_library("seccomp")
requires_seccomp = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or LIBSECCOMP is None,
    reason="needs systemd-analyze and libseccomp (Debian: apt-get install systemd libseccomp2)",
)
PROBE = """
import ctypes, mmap, socket
print(ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)())  # a libffi closure, as `import ctypes` makes
for attempt in (lambda: mmap.mmap(-1, 4096, prot=7), lambda: socket.socket(socket.AF_NETLINK)):
    try:
        attempt()
    except OSError as exc:
        print(exc.errno)
"""


@requires_seccomp
def test_binary_seccomp_launcher_refuses_what_the_unit_refuses() -> None:
    """Writable+executable memory and netlink sockets are refused, libffi closures still work."""
    launcher = [sys.executable, "-c", SECCOMP_LAUNCHER, json.dumps(unit_seccomp_rules())]
    result = subprocess.run([*launcher, sys.executable, "-c", PROBE],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", str(errno.EPERM), str(errno.EAFNOSUPPORT)]


@requires_seccomp
async def test_binary_runs_under_the_units_seccomp_filters(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    launcher = [sys.executable, "-c", SECCOMP_LAUNCHER, json.dumps(unit_seccomp_rules()), str(BINARY)]
    async with gateway_process(command=launcher, env=dirs.env(), cwd=dirs.workdir,
                               start_timeout=RUN_TIMEOUT) as gw:  # fmt: skip
        await deliver_event(gw)
        await post_message(gw, "hello from the sandbox")
        await stop(gw)
    assert "gateway stopped" in gw.logs()
    assert dirs.unpacked() == []
