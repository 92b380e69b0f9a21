"""A fake Cells for tests: a real HTTP server on loopback answering the REST endpoints the gateway
calls, with the shapes Cells documents (docs/CELLS.md, IDENTITY.md §2): protojson field names,
zero values omitted, 401 for a token it does not know, 404 for a user it does not know.

Faults are set per test: ``statuses`` (path prefix -> status), ``shapes`` (path prefix -> a body of
the wrong shape), ``delay`` (seconds before every answer), ``down`` (every connection dropped).
``calls`` counts requests per path, for single-flight and cache tests.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote

import h11
import trio

WS_COMMON = "0c7bd2ad-1a7d-4b45-9b56-6a9d1b6e1f10"  # the fixtures' workspace
WS_PERSONAL = "personal-files-ws"
ROLE_MARKETING = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f"  # the fixtures' role
ALICE_UUID = "7f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910"  # the fixtures' user uuid
SERVICE_TOKEN = "service-pat-of-admin"


@dataclass
class CellsUser:
    login: str
    uuid: str
    profile: str = "standard"
    roles: list[str] = field(default_factory=list)
    workspaces: dict[str, str] = field(default_factory=dict)  # uuid -> "read", "write", "read,write"
    readable_nodes: set[str] = field(default_factory=set)  # /a/n/node/{uuid} answers 200


@dataclass
class FakeCells:
    tokens: dict[str, str] = field(default_factory=dict)  # OIDC access token -> login
    pats: dict[str, str] = field(default_factory=dict)  # personal access token -> login
    users: dict[str, CellsUser] = field(default_factory=dict)
    workspaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # uuid -> protojson Workspace
    acls: list[dict[str, Any]] = field(default_factory=list)  # protojson ACLs
    node_paths: dict[str, str] = field(default_factory=dict)  # node uuid -> internal path (admin stat)
    version: str | None = "5.0.2"
    statuses: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    down: bool = False
    calls: Counter[str] = field(default_factory=Counter)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- setting up a site ----------------------------------------------------------------------

    def add_user(self, login: str, token: str, *, uuid: str | None = None, pat: str | None = None,
                 **fields: Any) -> CellsUser:  # fmt: skip
        user = CellsUser(login, uuid or f"uuid-{login}", **fields)
        self.users[login] = user
        self.tokens[token] = login
        if pat is not None:
            self.pats[pat] = login
        return user

    def add_workspace(self, uuid: str, slug: str, roots: dict[str, dict[str, Any] | None]) -> None:
        """``roots``: root id -> its RootNodes entry (None: the id names no node, e.g. DATASOURCE:x)."""
        self.workspaces[uuid] = {
            "UUID": uuid,
            "Label": slug.title(),
            "Slug": slug,
            "Scope": "ADMIN",
            "RootUUIDs": list(roots),
            "RootNodes": {k: v for k, v in roots.items() if v is not None},
        }

    def grant(self, login: str, uuid: str, access: str = "read,write", *, role: str | None = None) -> None:
        """Open a workspace to a user, with the ACLs Cells would hold for it (on ``role``)."""
        self.users[login].workspaces[uuid] = access
        role = role or self.users[login].uuid
        for root in self.workspaces[uuid]["RootUUIDs"]:
            for action in access.split(","):
                self.acls.append(_acl(role, action, root, uuid))

    def deny_folder(self, role: str, node: str, path: str | None) -> None:
        """A sub-folder deny on ``role`` (``path`` None: a node admin stat cannot find)."""
        self.acls.append(_acl(role, "deny", node))
        if path is not None:
            self.node_paths[node] = path

    # -- serving --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_listeners, self._serve, listeners))
            task_status.started(self.port)

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self.down:
                return
            conn = h11.Connection(h11.SERVER)
            try:
                while True:
                    request, body = await _read_request(conn, stream)
                    if request is None:
                        return
                    if self.delay:
                        await trio.sleep(self.delay)
                    status, payload, content_type = self._answer(request, body)
                    await _send(conn, stream, status, payload, content_type)
                    if conn.our_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    def _answer(self, request: h11.Request, body: bytes) -> tuple[int, bytes, str]:
        path = request.target.decode().split("?")[0]
        self.calls[path] += 1
        for prefix, status in self.statuses.items():
            if path.startswith(prefix):
                return status, b'{"Title":"fault"}', "application/json"
        for prefix, shape in self.shapes.items():
            if path.startswith(prefix):
                return 200, json.dumps(shape).encode(), "application/json"
        token = _bearer(request)
        method = request.method.decode()
        try:
            status, obj = self._route(method, path, token, json.loads(body) if body else None)
        except (KeyError, TypeError, ValueError):
            return 400, b'{"Title":"bad request"}', "application/json"
        if isinstance(obj, bytes):
            return status, obj, "text/xml"
        return status, json.dumps(obj).encode(), "application/json"

    def _route(self, method: str, path: str, token: str | None, body: Any) -> tuple[int, Any]:
        if path == "/a/config/discovery":
            return 200, {"PackageType": "CellsHome", "Version": self.version} if self.version else {}
        if path == "/oidc/userinfo":
            login = self.tokens.get(token or "")
            if login is None:
                return 401, {"error": "request_unauthorized"}
            known = self.users.get(login)
            return 200, {
                "sub": known.uuid if known else f"uuid-{login}",
                "name": login,
                "iss": self.url + "/oidc/",
            }
        caller = self._caller(token)
        if caller is None:
            return 401, {"Title": "Unauthorized."}
        if path == "/a/frontend/state":
            return 200, _frontend_state(caller)
        if path.startswith("/a/user/"):
            return self._user(unquote(path.removeprefix("/a/user/")))
        if caller not in self.users:
            return 404, {"Title": "User not found"}
        if path == "/a/graph/state/ws":
            return 200, self._graph_state(caller)
        if path == "/a/workspace" and method == "POST":
            wanted = [q["uuid"] for q in body["Queries"]]
            found = [self.workspaces[u] for u in wanted if u in self.workspaces]
            return 200, {"Workspaces": found, "Total": len(found)}
        if path.startswith("/a/n/node/"):
            node = unquote(path.removeprefix("/a/n/node/"))
            if node in self.users[caller].readable_nodes:
                return 200, {"Uuid": node, "Path": "common-files/x"}
            return 404, {"Title": "Not Found"}
        if caller != "admin":
            return 403, {"Title": "Forbidden"}
        return self._admin(path, body)

    def _admin(self, path: str, body: Any) -> tuple[int, Any]:
        if path == "/a/acl":
            roles = set(body["Queries"][0]["RoleIDs"])
            actions = {a["Name"] for a in body["Queries"][0]["Actions"]}
            found = [a for a in self.acls if a["RoleID"] in roles and a["Action"]["Name"] in actions]
            return 200, {"ACLs": found, "Total": len(found)}
        if path == "/a/tree/admin/stat":
            node = body["Node"]["Uuid"]
            if node not in self.node_paths:
                return 404, {"Title": "Not Found"}
            return 200, {"Success": True, "Node": {"Uuid": node, "Path": self.node_paths[node]}}
        return 404, {"Title": "no such route"}

    def _caller(self, token: str | None) -> str | None:
        if token == SERVICE_TOKEN:
            return "admin"
        return self.tokens.get(token or "") or self.pats.get(token or "")

    def _user(self, login: str) -> tuple[int, Any]:
        user = self.users.get(login)
        if user is None:
            return 404, {"Title": "User not found"}
        roles = [
            {"Uuid": r, "Label": r, **({"GroupRole": True} if r == "ROOT_GROUP" else {})} for r in user.roles
        ]
        return 200, {
            "Uuid": user.uuid,
            "Login": user.login,
            "GroupPath": "/",
            "Attributes": {"profile": user.profile, "displayName": user.login.title()},
            "Roles": roles,
        }

    def _graph_state(self, login: str) -> dict[str, Any]:
        user = self.users[login]
        listed = [self.workspaces[u] for u in user.workspaces if u in self.workspaces]
        return {
            "Workspaces": [{k: v for k, v in ws.items() if k != "RootNodes"} for ws in listed],
            "WorkspacesAccesses": {**user.workspaces, "homepage": "read"},
        }


def _acl(role: str, action: str, node: str, workspace: str = "") -> dict[str, Any]:
    acl = {"ID": f"acl-{role}-{action}-{node}", "Action": {"Name": action, "Value": "1"}, "RoleID": role,
           "NodeID": node}  # fmt: skip
    if workspace:
        acl["WorkspaceID"] = workspace
    return acl


def _frontend_state(login: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><tree><user id="' + login + '"><active_repo id="x" write="1"/>'
        '<repositories><repo id="x" repositorySlug="common-files" acl="rw"/></repositories></user></tree>'
    ).encode()


def _bearer(request: h11.Request) -> str | None:
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode().partition(" ")
            return token if scheme.lower() == "bearer" else None
    return None


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    chunks = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return request, b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes, kind: str) -> None:
    headers = [("content-type", kind), ("content-length", str(len(body)))]
    data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


def site(logins: Iterable[str] = ("alice", "bob")) -> FakeCells:
    """A Cells site like the fixtures assume: workspace common-files on DATASOURCE:pydiods1,
    personal-files on my-files; alice holds the marketing role and both workspaces."""
    cells = FakeCells()
    cells.add_workspace(WS_COMMON, "common-files", {"DATASOURCE:pydiods1": None})
    my_files = {"Uuid": "my-files", "Path": "my-files", "MetaStore": {"resolution": '"personal"'}}
    cells.add_workspace(WS_PERSONAL, "personal-files", {"my-files": my_files})
    cells.add_user(
        "admin", "token-admin", uuid="uuid-admin", profile="admin", roles=["ROOT_GROUP", "uuid-admin"]
    )
    for login in logins:
        uuid = ALICE_UUID if login == "alice" else f"uuid-{login}"
        roles = ["ROOT_GROUP", *([ROLE_MARKETING] if login == "alice" else []), uuid]
        cells.add_user(login, f"opaque-{login}", uuid=uuid, pat=f"pat-{login}", roles=roles)
        cells.grant(login, WS_PERSONAL)
    cells.grant("alice", WS_COMMON, role=ROLE_MARKETING)
    return cells
