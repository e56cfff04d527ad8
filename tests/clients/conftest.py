"""A real cluster for the client-library tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.conftest import FAST_BROKER_ARGS
from zeebe_sim.harness import RunningCluster, running_cluster


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RunningCluster]:
    """Three brokers, three partitions and a gateway, as real processes on OS-chosen ports."""
    async with running_cluster(tmp_path / "data", broker_args=FAST_BROKER_ARGS) as running:
        yield running
