"""Stress invariants against a real gateway process (centrifuge's stress_runtime, for this gateway).

Hundreds of sessions of different users and workspaces, thousands of events through the admin API:
every session receives every event meant for it exactly once, in publish order per topic, and
nothing meant for anyone else; once the clients are gone the gateway holds exactly the trio tasks
and file descriptors it held before they came. The short run is part of ``make test``; the long
one (``make stress``) is marked slow.

The resume runs drop connections on purpose: every session subscribes with ``"recover": true``,
drops its TCP connection (no close frame) after a random number of messages, again and again, and
reconnects with ``"since"``; it must still end with every event exactly once and in order, without
a single ``gap`` (docs/PROTOCOL.md, "Resuming").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.metrics import Metrics, count_open_fds, count_trio_tasks
from loadclient.checks import Totals
from loadclient.oracle import PlanCheck
from loadclient.plan import Plan
from loadclient.resume import drop_points
from tests.process import gateway_env, gateway_process
from tests.reliability import (
    Footprint,
    footprint,
    load_client,
    metric,
    plan_tokens,
    publish_plan,
    record,
    scrape,
    settle_footprint,
)

SHORT = Plan(sessions=100, events=2_000, users=34, workspaces=10)
LONG = Plan(sessions=300, events=20_000, users=100, workspaces=30)
# Resume runs: (plan, a drop every N messages of a session on average).
RESUME_SHORT = (Plan(sessions=50, events=1_000, users=17, workspaces=8, seed=2), 20)
RESUME_LONG = (Plan(sessions=200, events=10_000, users=70, workspaces=24, seed=2), 60)


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


def planned_drops(plan: Plan, every: int) -> int:
    """Drops the sessions of ``plan`` make in all (each before its last expected message)."""
    check = PlanCheck(plan, Totals())
    return sum(
        len(drop_points(plan.seed, i, every, check.for_session(i).expected)) for i in range(plan.sessions)
    )


async def run_resume(plan: Plan, every: int, workdir: Path) -> tuple[dict[str, Any], float, float]:
    """Run ``plan`` with sessions that drop and resume; return the report, the gateway's replays and
    gaps (its /metrics), and the seconds from the first publish until every session caught up."""
    # A history that holds the whole run: a resume can always be served, so any gap is a fault.
    env = gateway_env(GATEWAY_HISTORY_SIZE=str(2 * plan.events), GATEWAY_HISTORY_SECONDS="3600")
    async with gateway_process(env=env) as gw:
        url = f"{gw.ws_url}/ws"
        async with load_client(
            url, plan_tokens(plan), workdir, plan=plan, resume=True, drop_every=every
        ) as client:
            assert client.ready is not None and client.ready.subscribed == plan.sessions, client.ready
            started = trio.current_time()
            await publish_plan(gw.admin_port, plan, client)
            # Every event arrived, but a session may still be between its replay and ``recovered``,
            # or have a drop to make (one that waits for the end of a replay): wait for both.
            await client.wait_for(
                lambda: client.progress.drops_left == 0 and client.live == plan.sessions,
                "every session to make its drops and catch up",
            )
            seconds = trio.current_time() - started
            report = await client.report()
            samples = await scrape(gw.admin_port)
            await client.close_sessions()
    gaps = sum(v for (name, _), v in samples.items() if name == "gateway_history_gaps_total")
    return {**report, "gateway_replays": metric(samples, "gateway_history_replays_total")}, gaps, seconds


def assert_resumed(
    report: dict[str, Any], plan: Plan, every: int, gateway_gaps: float, seconds: float
) -> None:
    problems = {k: report[k] for k in ("missing", "duplicates", "disorder", "cross_tenant", "unexpected",
                                       "malformed", "gaps")}  # fmt: skip
    record(f"resume {plan.sessions}x{plan.events}", **report, seconds=round(seconds, 2))
    assert problems == dict.fromkeys(problems, 0), report["examples"]
    assert report["received"] == report["expected"] > plan.events
    assert report["errors"] == {} and report["closes"] == {}, report
    # Deterministic: every planned drop happened, and each was followed by one accepted resume.
    drops = planned_drops(plan, every)
    assert report["drops"] == report["resumes"] == report["gateway_replays"] == drops > 5 * plan.sessions
    assert report["subscriptions"] == plan.sessions + drops and gateway_gaps == 0
    # Most resumes ran to their end (a drop may cut a replay short), and replays carried events;
    # some drops fell between two messages of one event (in two of a session's workspaces: a
    # resume from ``<seq>.<k>``), and the replay brought the rest.
    assert report["recovered"] > drops * 0.6 and report["replayed"] > drops and report["split"] > 0, report


async def test_stress_resume_short_sessions_dropped_at_random_get_every_event_once(tmp_path: Path) -> None:
    plan, every = RESUME_SHORT
    with trio.fail_after(60):
        report, gaps, seconds = await run_resume(plan, every, tmp_path)
    assert_resumed(report, plan, every, gaps, seconds)


@pytest.mark.slow
async def test_stress_resume_long_sessions_dropped_at_random_get_every_event_once(tmp_path: Path) -> None:
    plan, every = RESUME_LONG
    with trio.fail_after(600):
        report, gaps, seconds = await run_resume(plan, every, tmp_path)
    assert_resumed(report, plan, every, gaps, seconds)


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
