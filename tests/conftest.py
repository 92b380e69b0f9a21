from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.config import Settings
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
