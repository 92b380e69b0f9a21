"""Node-access checks for NODE chat rooms: bounded per user, refusals cached.

Finding 12 of the adversarial test: 20 sessions joining fresh NODE rooms sent the platform 352
requests a second, one per JOIN, without any bound.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from gateway.chat.access import HttpNodeAccess, NodeCheckRates
from gateway.httpclient import HttpClient, HttpResponse
from gateway.identity import Identity
from gateway.identity.claims import identity_from_claims
from gateway.protocol import ErrorCode, ProtocolError
from tests.helpers import Harness, make_settings
from tests.test_chat import GLOBAL_ROOM, ChatClient, _node_check_server, chatter

RATE, BURST, CACHE = 2.0, 5, 30.0


class FakePlatform:
    """Answers node checks: 403 for nodes named ``...n-no``, 200 for the others; counts the asks."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def request(self, method: str, url: str, *, token: str | None = None) -> HttpResponse:
        self.asked.append(url.rsplit("/", 1)[1])
        return HttpResponse(403 if url.endswith("n-no") else 200, b"")


def user(name: str) -> Identity:
    return identity_from_claims({"name": name, "profile": "standard"})


def node_access(platform: FakePlatform, clock: Callable[[], float]) -> HttpNodeAccess:
    rates = NodeCheckRates(RATE, BURST)
    return HttpNodeAccess("http://cells/n/{uuid}", cast(HttpClient, platform), rates=rates,
                          cache_seconds=CACHE, clock=clock)  # fmt: skip


async def test_node_check_refusal_asked_once_within_the_cache_time() -> None:
    platform, now = FakePlatform(), [0.0]
    access = node_access(platform, lambda: now[0])
    for now[0] in (0.0, 1.0, 10.0, 29.9):
        assert await access.allowed(user("alice"), "t", "secret-n-no") is False
    assert platform.asked == ["secret-n-no"]
    now[0] = 30.1
    assert await access.allowed(user("alice"), "t", "secret-n-no") is False
    assert platform.asked == ["secret-n-no"] * 2


async def test_node_checks_per_user_at_most_burst_plus_rate() -> None:
    platform, now = FakePlatform(), [0.0]
    access = node_access(platform, lambda: now[0])
    refusals: list[ProtocolError] = []
    for i in range(100):  # 100 fresh nodes over 10 s
        now[0] = i / 10
        try:
            await access.allowed(user("alice"), "t", f"fresh-{i}")
        except ProtocolError as exc:
            refusals.append(exc)
    assert len(platform.asked) <= BURST + RATE * now[0] + 1
    assert len(refusals) == 100 - len(platform.asked) > 0
    assert {(exc.code, exc.close_code) for exc in refusals} == {(ErrorCode.NODE_CHECK_RATE_LIMITED, None)}
    assert await access.allowed(user("alice"), "t", "fresh-0")  # answered from the cache: no cost
    assert await access.allowed(user("bob"), "t", "fresh-200")  # another user has their own bound


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[[str], Any]:
    def build(url: str) -> Any:
        return make_settings(db_url=f"sqlite:///{tmp_path}/chat.db", node_check_url=url,
                             node_checks_per_second=RATE, node_check_burst=BURST,
                             rate_limit=1000.0, rate_burst=1000)  # fmt: skip

    return build


async def test_node_room_joins_bounded_per_user_and_sessions_stay_open(
    nursery: trio.Nursery, settings_for: Callable[[str], Any], thread_autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[tuple[str, str]] = []
    port = await nursery.start(_node_check_server, seen)
    harness = await Harness(nursery, settings_for(f"http://127.0.0.1:{port}/a/node/{{uuid}}")).start()
    errors: list[str] = []
    async with chatter(harness) as first, chatter(harness) as second:  # one user, two sessions
        start = trio.current_time()
        for i in range(60):  # fresh NODE rooms, as fast as the sessions may send, in three rounds
            if i % 20 == 0:
                await trio.sleep(2 if i else 0)
            client: ChatClient = (first, second)[i % 2]
            await client.send("JOIN", {"Type": "NODE", "RoomTypeObject": f"fresh-{i}-n-no"})
            errors.append((await client.error())["error"])
        assert len(seen) <= BURST + RATE * (trio.current_time() - start) + 1
        assert set(errors) == {"room_forbidden", "node_check_rate_limited"}
        assert errors.count("room_forbidden") == len(seen)
        for client in (first, second):  # both sessions go on
            assert (await client.join(GLOBAL_ROOM))["Type"] == "GLOBAL"
