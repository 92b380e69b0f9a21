"""``identity = "cells"``: tokens resolved through a (fake, real-HTTP) Cells; pure access rules.

The fake Cells (``tests/fakecells.py``) answers the documented endpoints with the documented
shapes. Timers run on a mock clock that jumps only after 50 ms of real idleness, so a Cells slower
than ``cells_timeout`` is a deterministic case, not a real wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from gateway.httpclient import HttpClient
from gateway.identity import FolderRule, Identity, Workspace
from gateway.identity.cells import access, records
from gateway.identity.cells.api import CellsApi
from gateway.identity.cells.records import Acl, RootNode, WorkspaceGrant
from gateway.identity.cells.resolver import CellsResolver
from gateway.metrics import Metrics
from gateway.protocol import AuthError, ErrorCode, PlatformUnavailable
from tests.fakecells import ALICE_UUID, ROLE_MARKETING, SERVICE_TOKEN, WS_COMMON, WS_PERSONAL, FakeCells, site

VIRTUAL = {"my-files": "personal/{login}", "cells": "cellsdata/{login}"}


@asynccontextmanager
async def resolver_for(
    cells: FakeCells, *, service: bool = True, folder_acls: bool = True, cells_timeout: float = 5.0
) -> AsyncIterator[tuple[CellsResolver, Metrics]]:
    metrics = Metrics()
    http = HttpClient(timeout=cells_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(cells.run)
        resolver = CellsResolver(
            CellsApi(cells.url, http, metrics),
            metrics,
            service_token=SERVICE_TOKEN if service else None,
            folder_acls=folder_acls,
            virtual_roots=VIRTUAL,
            timeout=cells_timeout,
            cache_seconds=60,
            cache_max_entries=100,
        )
        await nursery.start(resolver.run)
        try:
            yield resolver, metrics
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await http.aclose()


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


# -- resolving a browser's token --------------------------------------------------------------


async def test_cells_opaque_token_resolves_user_roles_and_workspaces() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
    assert (alice.user, alice.sub, alice.profile) == ("alice", ALICE_UUID, "standard")
    assert alice.roles == ("ROOT_GROUP", ROLE_MARKETING, ALICE_UUID)  # Cells' order: the last wins
    assert alice.expires_at is None  # access follows identity events instead
    by_uuid = {ws.uuid: ws for ws in alice.workspaces}
    assert by_uuid[WS_COMMON].roots == ("pydiods1",) and by_uuid[WS_COMMON].slug == "common-files"
    assert by_uuid[WS_PERSONAL].roots == ("personal/alice",)  # the virtual root, per login
    assert by_uuid[WS_COMMON].permissions == "rw"


async def test_cells_personal_access_token_falls_back_to_the_frontend_state() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, _):
        alice = await resolver.resolve("pat-alice")
    assert alice.user == "alice" and alice.sub == ALICE_UUID
    assert cells.calls["/oidc/userinfo"] == 1 and cells.calls["/a/frontend/state"] == 1


async def test_cells_unknown_token_is_token_invalid() -> None:
    async with resolver_for(site()) as (resolver, _):
        with pytest.raises(AuthError) as refused:
            await resolver.resolve("no-such-token")
    assert refused.value.code == ErrorCode.TOKEN_INVALID


async def test_cells_user_unknown_to_the_user_service_is_token_invalid() -> None:
    cells = site()
    del cells.users["bob"]  # the token still works (OIDC knows it), the user service says 404
    async with resolver_for(cells) as (resolver, _):
        with pytest.raises(AuthError) as refused:
            await resolver.resolve("opaque-bob")
    assert refused.value.code == ErrorCode.TOKEN_INVALID


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"statuses": {"/a/user/": 502}}, id="5xx"),
        pytest.param({"statuses": {"/a/graph": 403}}, id="unexpected_4xx"),
        pytest.param({"shapes": {"/a/user/": ["not", "an", "object"]}}, id="wrong_shape"),
        pytest.param({"shapes": {"/a/graph/state": {"Workspaces": "nope"}}}, id="wrong_field_type"),
        pytest.param({"down": True}, id="connection_dropped"),
    ],
)
async def test_cells_failure_is_platform_unavailable(fault: dict[str, Any]) -> None:
    cells = site()
    for name, value in fault.items():
        setattr(cells, name, value)
    async with resolver_for(cells) as (resolver, metrics):
        with pytest.raises(PlatformUnavailable) as refused:
            await resolver.resolve("opaque-alice")
    assert refused.value.code == ErrorCode.PLATFORM_UNAVAILABLE
    [requests] = metrics.cells_requests.collect()
    assert sum(s.value for s in requests.samples if s.name.endswith("_total")) > 0


async def test_cells_unreachable_is_platform_unavailable() -> None:
    metrics = Metrics()
    http = HttpClient(timeout=5)
    async with trio.open_nursery() as nursery:
        api = CellsApi("http://127.0.0.1:9", http, metrics)  # discard port: nothing listens
        resolver = CellsResolver(api, metrics, service_token=None, folder_acls=False, virtual_roots={},
                                 timeout=5, cache_seconds=60, cache_max_entries=10)  # fmt: skip
        await nursery.start(resolver.run)
        with pytest.raises(PlatformUnavailable):
            await resolver.resolve("opaque-alice")
        nursery.cancel_scope.cancel()
    await http.aclose()


async def test_cells_slower_than_the_timeout_is_platform_unavailable(
    thread_autojump_clock: trio.testing.MockClock,
) -> None:
    cells = site()
    cells.delay = 30
    async with resolver_for(cells, cells_timeout=5) as (resolver, _):
        start = trio.current_time()
        with pytest.raises(PlatformUnavailable, match=r"within 5 s|no answer"):
            await resolver.resolve("opaque-alice")
        assert trio.current_time() - start <= 5.5


async def test_cells_answers_are_cached_per_token() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, metrics):
        first = await resolver.resolve("opaque-alice")
        calls = sum(cells.calls.values())
        assert await resolver.resolve("opaque-alice") == first
        assert sum(cells.calls.values()) == calls
    assert sample(metrics, "gateway_identity_cache_total", {"result": "hit"}) == 1


async def test_cells_concurrent_subscribes_with_one_token_make_one_lookup() -> None:
    cells = site()
    cells.delay = 0.05  # every request in flight long enough for all 100 to pile up on it
    identities: list[Identity] = []
    async with resolver_for(cells) as (resolver, _):

        async def subscribe() -> None:
            identities.append(await resolver.resolve("opaque-alice"))

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(subscribe)
    assert len(identities) == 100 and len(set(identities)) == 1
    assert cells.calls["/oidc/userinfo"] == 1 and cells.calls["/a/user/alice"] == 1


async def test_cells_a_waiter_that_leaves_does_not_cancel_the_lookup() -> None:
    cells = site()
    cells.delay = 0.05
    async with resolver_for(cells) as (resolver, _):
        with trio.move_on_after(0.01):
            await resolver.resolve("opaque-alice")  # this subscriber gives up at once
        alice = await resolver.resolve("opaque-alice")
    assert alice.user == "alice" and cells.calls["/oidc/userinfo"] == 1


async def test_cells_forget_drops_what_an_identity_event_changed() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, _):
        await resolver.resolve("opaque-alice")
        await resolver.resolve("opaque-bob")
        resolver.forget(lambda identity: identity.user == "alice")
        await resolver.resolve("opaque-alice")
        await resolver.resolve("opaque-bob")
    assert cells.calls["/a/user/alice"] == 2 and cells.calls["/a/user/bob"] == 1


# -- sub-folder ACLs ---------------------------------------------------------------------------


async def test_cells_subfolder_deny_becomes_a_folder_rule() -> None:
    cells = site()
    cells.deny_folder(ROLE_MARKETING, "folder-secret", "pydiods1/Secret")
    async with resolver_for(cells) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
    common = alice.workspace(WS_COMMON)
    assert common is not None
    assert FolderRule("pydiods1/Secret", deny=True, read=False) in common.folder_rules
    assert not common.can_read("pydiods1/Secret/plan.txt") and common.can_read("pydiods1/Open/a.txt")


async def test_cells_unplaceable_deny_hides_the_workspace_and_is_counted_once() -> None:
    cells = site()
    cells.deny_folder(ROLE_MARKETING, "folder-gone", None)  # admin stat cannot find it
    async with resolver_for(cells) as (resolver, metrics):
        alice = await resolver.resolve("opaque-alice")
        resolver.forget(lambda identity: True)
        await resolver.resolve("opaque-alice")
    assert alice.workspace(WS_COMMON) is None  # fail closed: the role's workspace is hidden
    assert alice.workspace(WS_PERSONAL) is not None  # granted by another role: unaffected
    assert sample(metrics, "gateway_cells_unplaced_denies_total") == 1


async def test_cells_subfolder_acls_ignored_when_told_so() -> None:
    cells = site()
    cells.deny_folder(ROLE_MARKETING, "folder-gone", None)
    async with resolver_for(cells, service=False, folder_acls=False) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
    assert alice.workspace(WS_COMMON) is not None and cells.calls["/a/acl"] == 0


# -- recomputation after identity events --------------------------------------------------------


async def test_cells_refresh_recomputes_access_with_the_service_credential() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
        cells.acls = [a for a in cells.acls if a.get("WorkspaceID") != WS_COMMON]  # common-files revoked
        cells.tokens.clear()  # the browser's token has expired meanwhile: not needed
        fresh = await resolver.refresh(alice, "opaque-alice")
    assert fresh.workspace(WS_COMMON) is None and fresh.workspace(WS_PERSONAL) is not None
    assert fresh.workspace(WS_PERSONAL) == alice.workspace(WS_PERSONAL)


async def test_cells_refresh_of_a_deleted_user_is_token_invalid() -> None:
    cells = site()
    async with resolver_for(cells) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
        del cells.users["alice"]
        with pytest.raises(AuthError) as refused:
            await resolver.refresh(alice, "opaque-alice")
    assert refused.value.code == ErrorCode.TOKEN_INVALID


async def test_cells_refresh_without_service_credential_uses_the_session_token() -> None:
    cells = site()
    async with resolver_for(cells, service=False, folder_acls=False) as (resolver, _):
        alice = await resolver.resolve("opaque-alice")
        del cells.users["alice"].workspaces[WS_COMMON]
        assert (await resolver.refresh(alice, "opaque-alice")).workspace(WS_COMMON) is None
        cells.tokens.clear()
        with pytest.raises(AuthError) as refused:
            await resolver.refresh(alice, "opaque-alice")
    assert refused.value.code == ErrorCode.TOKEN_EXPIRED  # the client reconnects with a fresh token


# -- pure rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root_id", "node", "path"),
    [
        ("my-files", None, "personal/alice"),
        ("cells", RootNode("cells", "cells", virtual=True), "cellsdata/alice"),
        ("DATASOURCE:pydiods1", None, "pydiods1"),
        ("f-1", RootNode("f-1", "/pydiods1/Projects/", "Projects"), "pydiods1/Projects"),
        ("f-2", None, None),  # a folder root Cells told no path for: not placed
        ("template-x", RootNode("template-x", "x", virtual=True), None),  # virtual, not configured
    ],
)
def test_access_root_paths(root_id: str, node: RootNode | None, path: str | None) -> None:
    assert access.root_path(root_id, node, "alice", VIRTUAL) == path


def test_access_root_keys_as_cells_makes_them() -> None:
    assert access.root_key("DATASOURCE:pydiods1", None, "pydiods1") == "pydiods1"
    assert (
        access.root_key("my-files", RootNode("my-files", "my-files", virtual=True), "x")
        == "template-my-files"
    )
    # the first 8 hex digits of md5("f-1"), then the root's name
    assert access.root_key("f-1", RootNode("f-1", "pydiods1/Projects", "Projects"), "pydiods1/Projects") == (
        "276d37b6-Projects"
    )


def test_access_flatten_last_role_wins_per_node() -> None:
    acls = [
        Acl("r1", "deny", "n1"),
        Acl("r2", "read", "n1"),
        Acl("r1", "read", "n2"),
        Acl("r2", "lock", "n3"),
    ]
    assert access.flatten(acls, ["r1", "r2"]) == {"n1": {"read"}, "n2": {"read"}}
    assert access.flatten(acls, ["r2", "r1"]) == {"n1": {"deny"}, "n2": {"read"}}


def test_access_granted_workspaces_drop_denied_roots() -> None:
    acls = [Acl("r", "read", "a", "w1"), Acl("r", "write", "a", "w1"), Acl("r", "read", "b", "w2"),
            Acl("r2", "deny", "b")]  # fmt: skip
    masks = access.flatten(acls, ["r", "r2"])
    assert access.granted_workspaces(acls, masks) == {"w1": WorkspaceGrant("w1", "", ("a",), "rw")}


def test_access_multi_root_workspace_gets_root_keys() -> None:
    grant = WorkspaceGrant("w", "shared", ("DATASOURCE:ds1", "f-1"), "r")
    nodes = {"f-1": RootNode("f-1", "ds2/Team", "Team")}
    ws = access.workspace(
        grant, "shared", nodes, "alice", VIRTUAL, [FolderRule("ds1/x", deny=True, read=False)]
    )
    assert ws == Workspace("w", "shared", ("ds1", "ds2/Team"), "r", ("ds1", "276d37b6-Team"),
                           (FolderRule("ds1/x", deny=True, read=False),))  # fmt: skip


def test_records_refuse_wrong_shapes() -> None:
    with pytest.raises(records.ShapeError):
        records.user({"Login": "alice"})  # no Uuid
    with pytest.raises(records.ShapeError):
        records.frontend_login(b"<tree><user")
    assert records.frontend_login(b"<tree><anon/></tree>") is None
    assert records.user({"Uuid": "u", "Login": "a", "Attributes": {"profile": "root"}}).profile == "anon"
