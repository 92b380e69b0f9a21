from __future__ import annotations

import pytest
import trio

from gateway.config import Settings
from tests.helpers import Harness, make_settings


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def harness(nursery: trio.Nursery, settings: Settings) -> Harness:
    return await Harness(nursery, settings).start()
