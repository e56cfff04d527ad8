"""Background tasks that have an owner (the asyncio shells' nursery).

Every background task of a partition, a broker or the backup service is spawned here: it is
tracked (so nothing runs unowned), its failure is logged instead of vanishing, and the owner's
``stop()`` cancels and awaits all of them.

A long-lived loop (timers and retries, gossip) is *supervised*: if it raises, the error is
logged, the loop is restarted after a backoff (doubling up to a maximum, back to the start once
a run outlasted its backoff) and :meth:`OwnedTasks.failing` reports it until the restarted loop
has run as long as it waited. The owner shows that in its health: a loop never dies silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import attrs

log = logging.getLogger(__name__)

RESTART_BACKOFF_INITIAL_S = 0.1
RESTART_BACKOFF_MAX_S = 30.0

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread``, except that a cancelled caller ends only once the thread has.

    A thread cannot be cancelled: with plain ``to_thread`` an owner's ``stop()`` returns while
    its thread still writes (a snapshot, a marker file, a log flush racing the close). Here the
    cancellation waits for the call to finish, then goes on; so when ``stop()`` returns, nothing
    the owner started still touches its files. For bounded local work only (file I/O), never
    for a call that may wait on the network.
    """
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([work])
        raise


@attrs.define
class _Failure:
    reason: str
    # monotonic time from which the loop counts as recovered (inf: not restarted yet)
    recovered_at_s: float = math.inf


class OwnedTasks:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failures: dict[str, _Failure] = {}

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def supervise(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, Any]],
        *,
        backoff_initial_s: float = RESTART_BACKOFF_INITIAL_S,
        backoff_max_s: float = RESTART_BACKOFF_MAX_S,
    ) -> asyncio.Task[Any]:
        """Run the loop ``run()`` and restart it whenever it raises (see the module docstring)."""
        return self.spawn(self._supervise(name, run, backoff_initial_s, backoff_max_s))

    async def _supervise(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, Any]],
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        backoff_s = backoff_initial_s
        while True:
            started_s = time.monotonic()
            try:
                await run()
            except Exception as exc:  # CancelledError is not an Exception: stop() still works
                if time.monotonic() - started_s > backoff_s:
                    backoff_s = backoff_initial_s  # it ran fine for a while: a fresh failure
                log.error(
                    "%s: %s failed, restarting in %.1f s", self.owner, name, backoff_s, exc_info=exc
                )
                failure = _Failure(f"{type(exc).__name__}: {exc}")
                self._failures[name] = failure
                await asyncio.sleep(backoff_s)
                failure.recovered_at_s = time.monotonic() + backoff_s
                backoff_s = min(backoff_s * 2, backoff_max_s)
            else:
                self._failures.pop(name, None)
                return

    def failing(self) -> dict[str, str]:
        """Supervised loops that failed and have not recovered yet: name -> the error."""
        now_s = time.monotonic()
        return {
            name: failure.reason
            for name, failure in self._failures.items()
            if now_s < failure.recovered_at_s
        }

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.owner, exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until every task (and every task they spawn meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
