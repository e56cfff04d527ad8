"""Supervised background loops: a loop that raises is logged, restarted with backoff, reported
as failing until it has run again for as long as it waited, and never dies silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from zeebe_sim.ground.tasks import OwnedTasks
from zeebe_sim.harness import eventually


async def test_a_failing_loop_is_restarted_with_backoff_and_reported_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fails on its first two runs, then keeps running: two restarts, each logged; failing()
    names it with the error while it backs off and after, until it outlasted its backoff."""
    tasks = OwnedTasks("test owner")
    runs: list[int] = []

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise RuntimeError(f"run {len(runs)} broke")
        await asyncio.Event().wait()  # runs until cancelled

    with caplog.at_level(logging.ERROR):
        tasks.supervise("ticker", loop, backoff_initial_s=0.5, backoff_max_s=10)
        await eventually(lambda: _true(len(runs) >= 2), timeout_s=10, interval_s=0.005)
        assert tasks.failing()["ticker"].startswith("RuntimeError: run ")
        await eventually(lambda: _true(len(runs) == 3), timeout_s=10, interval_s=0.005)
        # Restarted, but not yet for as long as it waited (1 s): still reported.
        assert "ticker" in tasks.failing()
        await eventually(lambda: _true(not tasks.failing()), timeout_s=10, interval_s=0.01)
    assert [r.getMessage() for r in caplog.records if "ticker failed" in r.getMessage()] == [
        "test owner: ticker failed, restarting in 0.5 s",
        "test owner: ticker failed, restarting in 1.0 s",
    ]
    assert len(tasks) == 1  # still running
    await tasks.stop()
    assert len(tasks) == 0


async def _true(value: bool) -> bool | None:
    return value or None
