"""Supervised background loops: a loop that raises is logged, restarted with backoff, reported
as failing until it has run again for as long as it waited, and never dies silently."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from zeebe_sim.ground.tasks import OwnedTasks, in_thread
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


async def test_stopping_an_owner_waits_for_the_thread_its_task_started() -> None:
    """A task cancelled while its in_thread call runs ends only after that call has: stop()
    returns once nothing the owner started still runs (a thread cannot be cancelled)."""
    tasks = OwnedTasks("test owner")
    started, release = threading.Event(), threading.Event()
    wrote: list[str] = []

    def slow_write() -> None:
        started.set()
        release.wait(timeout=30)
        wrote.append("done")

    async def work() -> None:
        await in_thread(slow_write)
        wrote.append("after the thread")  # never: the task was cancelled meanwhile

    tasks.spawn(work())
    await eventually(lambda: _true(started.is_set()), timeout_s=10, interval_s=0.005)
    stopping = asyncio.ensure_future(tasks.stop())
    done, _ = await asyncio.wait([stopping], timeout=0.2)
    assert not done and wrote == []  # the thread still runs, so stop() has not returned
    release.set()
    await asyncio.wait_for(stopping, timeout=10)
    assert wrote == ["done"] and len(tasks) == 0
