"""Stress invariants against a real gateway process (centrifuge's stress_runtime, for this gateway).

Hundreds of sessions of different users and workspaces, thousands of events through the admin API:
every session receives every event meant for it exactly once, in publish order per topic, and
nothing meant for anyone else; once the clients are gone the gateway holds exactly the trio tasks
and file descriptors it held before they came. The short run is part of ``make test``; the long
one (``make stress``) is marked slow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.metrics import Metrics, count_open_fds, count_trio_tasks
from loadclient.plan import Plan
from tests.process import gateway_process
from tests.reliability import (
    Footprint,
    footprint,
    load_client,
    plan_tokens,
    publish_plan,
    record,
    settle_footprint,
)

SHORT = Plan(sessions=100, events=2_000, users=34, workspaces=10)
LONG = Plan(sessions=300, events=20_000, users=100, workspaces=30)


async def run_stress(plan: Plan, workdir: Path) -> tuple[dict[str, Any], Footprint, Footprint]:
    """Run ``plan`` against a fresh gateway; return the client's report and the footprint before/after."""
    async with gateway_process() as gw:
        pid = gw.process.pid
        before = await footprint(gw.admin_port, pid)
        async with load_client(f"{gw.ws_url}/ws", plan_tokens(plan), workdir, plan=plan) as client:
            assert client.ready is not None and client.ready.subscribed == plan.sessions, client.ready
            during = await footprint(gw.admin_port, pid)
            # The gauges see the sessions (a socket and a reader task each), so a leak would show.
            assert during.sessions == plan.sessions, during
            assert during.fds >= before.fds + plan.sessions and during.tasks >= before.tasks + plan.sessions
            await publish_plan(gw.admin_port, plan, client)
            report = await client.report()
            await client.close_sessions()
        after = await settle_footprint(gw.admin_port, pid, before)
    return report, before, after


def assert_invariants(report: dict[str, Any], plan: Plan, before: Footprint, after: Footprint) -> None:
    problems = {k: report[k] for k in ("missing", "duplicates", "disorder", "cross_tenant", "unexpected",
                                       "malformed")}  # fmt: skip
    record(f"stress {plan.sessions}x{plan.events}", **report, before=str(before), after=str(after))
    assert problems == dict.fromkeys(problems, 0), report["examples"]
    assert report["received"] == report["expected"] > plan.events
    assert report["errors"] == {} and report["closes"] == {}, report
    assert (after.sessions, after.tasks, after.fds) == (0, before.tasks, before.fds), f"{before} -> {after}"


async def test_stress_short_every_session_gets_its_events_once_in_order_and_nothing_leaks(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        report, before, after = await run_stress(SHORT, tmp_path)
    assert_invariants(report, SHORT, before, after)


@pytest.mark.slow
async def test_stress_long_every_session_gets_its_events_once_in_order_and_nothing_leaks(
    tmp_path: Path,
) -> None:
    with trio.fail_after(600):
        report, before, after = await run_stress(LONG, tmp_path)
    assert_invariants(report, LONG, before, after)


async def test_stress_debug_metrics_count_trio_tasks_and_fds() -> None:
    with trio.fail_after(5):
        rendered = Metrics().render().decode()
        assert "gateway_trio_tasks " in rendered and "gateway_open_fds " in rendered
        baseline = count_trio_tasks()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            assert count_trio_tasks() == baseline + 3
            nursery.cancel_scope.cancel()
        assert count_trio_tasks() == baseline
        fds = count_open_fds()
        with trio.socket.socket():
            assert count_open_fds() == fds + 1


def test_stress_debug_task_gauge_is_nan_outside_trio() -> None:
    assert math.isnan(count_trio_tasks())
