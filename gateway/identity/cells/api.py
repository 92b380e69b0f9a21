"""The Cells REST calls identity resolution makes, and how their failures are reported.

Every call carries a bearer token: the browser's own (what Cells lets that user see) or the
service credential (a personal access token of an admin, for ACLs and node paths). Outcomes:
2xx with the documented shape -> parsed records; 401 -> :class:`Unauthorized`; 404 ->
:class:`NotFound`; anything else (no answer in time, 5xx, another status, a 2xx of the wrong
shape) -> :class:`PlatformUnavailable`, which closes the session with 1013 so the client retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from gateway.httpclient import HttpClient, HttpError, HttpResponse
from gateway.identity.cells import records
from gateway.identity.cells.access import ACCESS_ACTIONS
from gateway.metrics import Metrics
from gateway.protocol import PlatformUnavailable

log = logging.getLogger("gateway.identity.cells")

T = TypeVar("T")


class Unauthorized(Exception):
    """Cells refused the token (401)."""


class NotFound(Exception):
    """Cells knows no such object (404)."""


class CellsApi:
    """Typed calls to one Cells site (``cells_url``), through a pooled HTTP client."""

    def __init__(self, base_url: str, http: HttpClient, metrics: Metrics) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._metrics = metrics

    # -- identification (the browser's token) --------------------------------------------------

    async def userinfo(self, token: str) -> tuple[str, str | None]:
        return await self._call("userinfo", "GET", "/oidc/userinfo", token, records.userinfo)

    async def frontend_login(self, token: str) -> str | None:
        response = await self._send("frontend_state", "GET", "/a/frontend/state", token)
        try:
            return records.frontend_login(response.body)
        except records.ShapeError as exc:
            self._metrics.cells_requests.labels("frontend_state", "bad_shape").inc()
            raise _unavailable("frontend_state", str(exc)) from None

    # -- who the user is and what they may open -------------------------------------------------

    async def user(self, login: str, token: str) -> records.CellsUser:
        return await self._call("user", "GET", f"/a/user/{quote(login, safe='')}", token, records.user)

    async def graph_state(self, token: str) -> list[records.WorkspaceGrant]:
        return await self._call("graph_state", "GET", "/a/graph/state/ws", token, records.graph_state)

    async def workspaces(self, uuids: Sequence[str], token: str) -> records.Listing:
        if not uuids:
            return {}
        body = {"Queries": [{"uuid": uuid} for uuid in uuids], "Operation": "OR"}
        return await self._call("workspace", "POST", "/a/workspace", token, records.workspaces, body)

    # -- with the service credential ----------------------------------------------------------

    async def acls(self, roles: Sequence[str], token: str) -> list[records.Acl]:
        if not roles:
            return []
        body = {"Queries": [{"RoleIDs": list(roles), "Actions": [{"Name": a} for a in ACCESS_ACTIONS]}]}
        return await self._call("acl", "POST", "/a/acl", token, records.acls, body)

    async def node_path(self, node_uuid: str, token: str) -> str:
        body = {"Node": {"Uuid": node_uuid}}
        return await self._call("stat", "POST", "/a/tree/admin/stat", token, records.stat_path, body)

    async def version(self) -> str | None:
        """Cells' version from its public discovery document, or None if it does not say."""
        try:
            doc = await self._call("discovery", "GET", "/a/config/discovery", None, lambda d: d)
        except (Unauthorized, NotFound):
            return None
        value = doc.get("Version") if isinstance(doc, dict) else None
        return value if isinstance(value, str) and value else None

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(
        self,
        name: str,
        method: str,
        path: str,
        token: str | None,
        parse: Callable[[Any], T],
        body: Any = None,
    ) -> T:
        response = await self._send(name, method, path, token, body)
        try:
            return parse(json.loads(response.body))
        except (ValueError, RecursionError) as exc:  # ShapeError is a ValueError
            self._metrics.cells_requests.labels(name, "bad_shape").inc()
            raise _unavailable(name, f"unexpected answer: {str(exc)[:160]}") from None

    async def _send(
        self, name: str, method: str, path: str, token: str | None, body: Any = None
    ) -> HttpResponse:
        try:
            response = await self._http.request(method, self.base_url + path, token=token, json_body=body)
        except HttpError as exc:
            self._metrics.cells_requests.labels(name, "no_answer").inc()
            raise _unavailable(name, str(exc)) from None
        status = response.status
        self._metrics.cells_requests.labels(name, _status_class(status)).inc()
        if 200 <= status < 300:
            return response
        if status == 401:
            raise Unauthorized(name)
        if status == 404:
            raise NotFound(name)
        if status < 500:
            log.warning("Cells answered %d to %s %s: check the gateway's access to it", status, method, path)
        raise _unavailable(name, f"Cells answered {status}")


def _unavailable(name: str, detail: str) -> PlatformUnavailable:
    return PlatformUnavailable(f"Cells could not resolve the token now ({name}: {detail[:200]}); retry")


def _status_class(status: int) -> str:
    return f"{status // 100}xx"
