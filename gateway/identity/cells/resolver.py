"""``identity = "cells"``: any token Cells issued (opaque, JWT, personal access token), resolved by
asking Cells with it, as ``docs/CELLS.md`` describes.

On subscribe, with the browser's token: who it is (``/oidc/userinfo``, or ``/a/frontend/state``
for personal access tokens, which userinfo refuses), the user's profile and roles in order
(``/a/user/{login}``), the workspaces they may open and with what access (``/a/graph/state/ws``,
Cells' own access list) and where their roots are (``POST /a/workspace``). With the service
credential: the ACLs of the user's roles (``POST /a/acl``) and the paths of the folders they name
(``POST /a/tree/admin/stat``), for the sub-folder rules. Answers are cached per token.

When an identity event touches a connected user, :meth:`refresh` recomputes their access with the
service credential alone (``/a/user``, ``/a/acl``, ``/a/workspace``), as Cells flattens it; without
one, with the session's own token. Cells' own service never re-checks a session.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Final, TypeVar

import trio

from gateway import paths
from gateway.identity.cache import SingleFlightCache
from gateway.identity.cells import access
from gateway.identity.cells.api import CellsApi, NotFound, Unauthorized
from gateway.identity.cells.records import Acl, CellsUser, Listing, WorkspaceGrant
from gateway.identity.model import Identity, Workspace
from gateway.metrics import Metrics
from gateway.protocol import AuthError, ErrorCode, PlatformUnavailable

log = logging.getLogger("gateway.identity.cells")

T = TypeVar("T")

# Folder paths looked up per resolution at most; past it, a denying folder hides its workspace.
MAX_NODE_LOOKUPS: Final = 256
NODE_LOOKUPS_IN_FLIGHT: Final = 8
MAX_REPORTED: Final = 10000  # unplaceable denies remembered, so each is logged once


class CellsResolver:
    """Resolves tokens through Cells' REST API; see the module docstring."""

    refreshes = True  # access is recomputed on identity events, not bounded by the token's expiry

    def __init__(
        self,
        api: CellsApi,
        metrics: Metrics,
        *,
        service_token: str | None,
        folder_acls: bool,
        virtual_roots: Mapping[str, str],
        timeout: float,
        cache_seconds: float,
        cache_max_entries: int,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._service_token = service_token
        # Sub-folder ACLs need the service credential to read other roles' ACLs and folder paths.
        self._folder_acls = folder_acls and service_token is not None
        self._virtual_roots = dict(virtual_roots)
        self._timeout = timeout
        self._tokens: SingleFlightCache[str, Identity] = SingleFlightCache(
            ttl=cache_seconds, max_entries=cache_max_entries
        )
        # Recomputations after identity events: shared by a user's sessions, never kept.
        self._refreshes: SingleFlightCache[tuple[str, str], Identity] = SingleFlightCache(
            ttl=0, max_entries=1
        )
        self._node_paths: SingleFlightCache[str, str | None] = SingleFlightCache(
            ttl=cache_seconds, max_entries=cache_max_entries
        )
        self._reported: set[str] = set()
        metrics.watch_cache("identity", lambda: len(self._tokens))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for cache in (self._tokens, self._refreshes, self._node_paths):
                await nursery.start(cache.run)
            task_status.started()

    # -- the Resolver interface -------------------------------------------------------------------

    async def resolve(self, token: str) -> Identity:
        lookups = self._tokens.lookups
        identity = await self._tokens.get(token, partial(self._bounded, self._lookup, token))
        self._metrics.identity_cache.labels("miss" if self._tokens.lookups > lookups else "hit").inc()
        return identity

    async def refresh(self, identity: Identity, token: str) -> Identity:
        """The user's access as it is now; AuthError if the user is gone (or, without a service
        credential, if their token no longer works)."""
        key = (identity.user, "" if self._service_token else token)
        return await self._refreshes.get(key, partial(self._bounded, self._recompute, identity.user, token))

    def forget(self, concerns: Callable[[Identity], bool]) -> None:
        """Drop cached identities the platform just changed (an identity event touched them)."""
        self._tokens.forget(lambda _token, identity: concerns(identity))
        self._refreshes.forget()  # a recomputation in flight may have read the old state

    # -- resolution -------------------------------------------------------------------------------

    async def _bounded(self, lookup: Callable[..., Awaitable[T]], *args: object) -> T:
        with trio.move_on_after(self._timeout):
            return await lookup(*args)
        raise PlatformUnavailable(f"Cells did not answer within {self._timeout:g} s; retry")

    async def _lookup(self, token: str) -> Identity:
        """Everything with the browser's own token (plus ACLs with the service credential)."""
        login = await self._login(token)
        try:
            user = await self._api.user(login, token)
            grants = await self._api.graph_state(token)
        except (Unauthorized, NotFound):
            raise AuthError(ErrorCode.TOKEN_INVALID, "Cells does not know this token's user") from None
        return await self._identity(user, grants, token)

    async def _login(self, token: str) -> str:
        try:
            _, login = await self._api.userinfo(token)
        except (Unauthorized, NotFound):
            login = None  # personal access tokens are refused by userinfo: ask the frontend state
        if login is None:
            try:
                login = await self._api.frontend_login(token)
            except (Unauthorized, NotFound):
                login = None
        if not login:
            raise AuthError(ErrorCode.TOKEN_INVALID, "Cells refused the token (invalid or expired)")
        return login

    async def _recompute(self, login: str, token: str) -> Identity:
        if self._service_token is None:
            try:
                return await self._lookup(token)
            except AuthError:
                raise AuthError(
                    ErrorCode.TOKEN_EXPIRED, "access changed and the token no longer works; reconnect"
                ) from None
        service = self._service_token
        try:
            user = await self._api.user(login, service)
        except NotFound:
            raise AuthError(ErrorCode.TOKEN_INVALID, "this user no longer exists in Cells") from None
        except Unauthorized:
            raise _service_refused() from None
        acls = await self._acls(user.roles)
        masks = access.flatten(acls, user.roles)
        grants = list(access.granted_workspaces(acls, masks).values())
        return await self._identity(user, grants, service, acls)

    async def _identity(
        self, user: CellsUser, grants: Sequence[WorkspaceGrant], token: str, acls: list[Acl] | None = None
    ) -> Identity:
        try:
            listing = await self._api.workspaces([g.uuid for g in grants], token)
        except (Unauthorized, NotFound):
            raise AuthError(ErrorCode.TOKEN_INVALID, "Cells refused the token (invalid or expired)") from None
        roots = self._root_paths(user.login, grants, listing)
        folders = access.FolderAccess()
        if self._folder_acls:
            acls = acls if acls is not None else await self._acls(user.roles)
            masks = access.flatten(acls, user.roles)
            paths = {**roots, **await self._node_paths_of([n for n in masks if n not in roots])}
            folders = access.folder_access(masks, paths, acls, grants)
            self._report_unplaced(user.login, folders.unresolved)
        return access.identity(user, self._workspaces(user.login, grants, listing, folders))

    def _root_paths(
        self, login: str, grants: Iterable[WorkspaceGrant], listing: Listing
    ) -> dict[str, str | None]:
        """Root id -> internal path, for every root of every granted workspace."""
        found: dict[str, str | None] = {}
        for grant in grants:
            nodes = listing.get(grant.uuid, ("", {}))[1]
            for root_id in grant.root_ids:
                found[root_id] = access.root_path(root_id, nodes.get(root_id), login, self._virtual_roots)
        return found

    def _workspaces(
        self,
        login: str,
        grants: Iterable[WorkspaceGrant],
        listing: Listing,
        folders: access.FolderAccess,
    ) -> list[Workspace]:
        found = []
        for grant in grants:
            if grant.uuid in folders.hidden_workspaces:
                continue
            slug, nodes = listing.get(grant.uuid, (grant.slug, {}))
            ws = access.workspace(grant, slug or grant.slug, nodes, login, self._virtual_roots, folders.rules)
            if ws is None or not ws.slug:
                log.warning("workspace %s of %s: Cells told no root or slug; not shown", grant.uuid, login)
                continue
            found.append(ws)
        return found

    # -- with the service credential -------------------------------------------------------------

    async def _acls(self, roles: Sequence[str]) -> list[Acl]:
        assert self._service_token is not None
        try:
            return await self._api.acls(roles, self._service_token)
        except (Unauthorized, NotFound):
            raise _service_refused() from None

    async def _node_paths_of(self, nodes: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = dict.fromkeys(nodes[MAX_NODE_LOOKUPS:])
        limiter = trio.CapacityLimiter(NODE_LOOKUPS_IN_FLIGHT)

        async def look_up(node: str) -> None:
            async with limiter:
                try:
                    found[node] = await self._node_paths.get(node, partial(self._node_path, node))
                except PlatformUnavailable:
                    found[node] = None  # not cached: asked again next time

        async with trio.open_nursery() as nursery:
            for node in nodes[:MAX_NODE_LOOKUPS]:
                nursery.start_soon(look_up, node)
        return found

    async def _node_path(self, node: str) -> str | None:
        assert self._service_token is not None
        try:
            path = await self._api.node_path(node, self._service_token)
        except NotFound:
            return None
        except Unauthorized:
            raise _service_refused() from None
        return paths.normalize(path) or None

    def _report_unplaced(self, login: str, nodes: Iterable[str]) -> None:
        for node in nodes:
            if node in self._reported or len(self._reported) >= MAX_REPORTED:
                continue
            self._reported.add(node)
            self._metrics.cells_unplaced_denies.inc()
            log.warning(
                "a deny ACL on node %s cannot be placed (no path): the workspaces it may fall in are "
                "hidden from %s and every user with the same roles",
                node,
                login,
            )


def _service_refused() -> PlatformUnavailable:
    log.error("Cells refused the service credential (cells_service_token_file): renew the token")
    return PlatformUnavailable("the gateway's service credential was refused by Cells; retry later")
