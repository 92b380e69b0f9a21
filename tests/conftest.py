from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.config import Settings
from tests import engines
from tests.helpers import Harness, make_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(db_url=f"sqlite:///{tmp_path}/chat.db")


@pytest.fixture
async def harness(nursery: trio.Nursery, settings: Settings) -> Harness:
    return await Harness(nursery, settings).start()


@pytest.fixture
def thread_autojump_clock() -> trio.testing.MockClock:
    """Virtual time for tests whose code also waits on worker threads (the chat store).

    The plain ``autojump_clock`` jumps the moment every task is blocked, including while a
    database call runs in a thread; this one jumps only after 50 ms of real idleness.
    """
    return trio.testing.MockClock(autojump_threshold=0.05)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.engine("nats")``: skip without the engine; fail under CI=true (tests/engines.py)."""
    for mark in item.iter_markers("engine"):
        for engine in mark.args:
            engines.require(engine)


@pytest.fixture(autouse=True)
def no_error_logged(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A test that makes the gateway log at ERROR fails, unless it declares it expects that
    (``@pytest.mark.logs_errors``): an error in the logs is a failure nobody asserted on."""
    yield
    if request.node.get_closest_marker("logs_errors") is not None:
        return
    records = [r for when in ("setup", "call", "teardown") for r in caplog.get_records(when)]
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("logged at ERROR without declaring it:\n" + "\n".join(errors[:5]), pytrace=False)
