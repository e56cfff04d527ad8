"""Requests parked on a partition until what they wait for happens, or their deadline passes.

Theory of operation
-------------------
Two gateway requests wait on a partition without writing anything to its log: a long-polling
job activation (Zeebe parks it until a job of its type becomes activatable, REFERENCE C.3) and a
creation that answers with the instance's result (it waits for the instance to end). The
gateway asks the partition ``await-jobs`` / ``await-instance``; the partition first checks its
state, and only when the answer is not there yet parks a future here under a *topic*
(``("jobs", type)`` or ``("instance", key)``).

The engine reports the topics each command made true (``ProcessingResult.wakeups``); the
partition calls :meth:`Waiters.notify` with them once the records are durable, and
:meth:`Waiters.expire` from its timer with its (injectable) clock. Both are plain synchronous
bookkeeping, so tests drive them with a fake clock and no sleeps. Checking state and parking
happen in one step of the event loop, so no wakeup can fall between them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from broker.engine.state import State
from zeebe_sim.ground.errors import InvalidArgument, NotFound, ResourceExhausted

# Parked requests per partition. Each costs a future and a heap entry; past this the partition
# answers RESOURCE_EXHAUSTED, as Zeebe does when it cannot take more requests.
WAITERS_MAX = 10_000


class Waiters:
    def __init__(self, clock_ms: Callable[[], int], waiters_max: int = WAITERS_MAX) -> None:
        self._clock_ms = clock_ms
        self._waiters_max = waiters_max
        self._by_topic: dict[Hashable, list[asyncio.Future[bool]]] = {}
        # (deadline_ms, sequence, future): the sequence keeps futures out of comparisons
        self._deadlines: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return sum(1 for _, _, f in self._deadlines if not f.done())

    def park(self, topic: Hashable, timeout_ms: int) -> asyncio.Future[bool]:
        """A future that becomes True when ``topic`` is notified, False after ``timeout_ms``.

        Raises:
            ResourceExhausted: too many requests are parked already.
        """
        if len(self._deadlines) >= self._waiters_max:
            self._drop_done()
            if len(self._deadlines) >= self._waiters_max:
                raise ResourceExhausted(
                    f"Expected to park the request, but {self._waiters_max} requests are "
                    "parked already"
                )
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._by_topic.setdefault(topic, []).append(future)
        deadline_ms = self._clock_ms() + max(timeout_ms, 0)
        heapq.heappush(self._deadlines, (deadline_ms, next(self._sequence), future))
        return future

    def notify(self, topics: Iterable[Hashable]) -> None:
        for topic in topics:
            for future in self._by_topic.pop(topic, ()):
                if not future.done():
                    future.set_result(True)

    def expire(self) -> None:
        now_ms = self._clock_ms()
        expired = False
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, _, future = heapq.heappop(self._deadlines)
            if not future.done():
                future.set_result(False)
                expired = True
        if expired:
            self._by_topic = {
                topic: alive
                for topic, futures in self._by_topic.items()
                if (alive := [f for f in futures if not f.done()])
            }

    def _drop_done(self) -> None:
        self._deadlines = [entry for entry in self._deadlines if not entry[2].done()]
        heapq.heapify(self._deadlines)


AWAIT_QUERIES = frozenset({"await-jobs", "await-instance"})


async def answer_await(
    query: str, arguments: dict[str, Any], state: State, waiters: Waiters
) -> Any:
    """Answer a long-held query from the gateway.

    ``await-jobs`` ``{type, timeoutMs}``: True once a job of that type is activatable on this
    partition (at once if one is), False at the timeout. ``await-instance``
    ``{key, timeoutMs}``: the instance once it has ended (at once if it has), or as it is at the
    timeout.

    Raises:
        InvalidArgument: malformed arguments.
        NotFound: ``await-instance`` for an instance this partition does not know.
    """
    timeout_ms = arguments.get("timeoutMs")
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or timeout_ms < 0:
        raise InvalidArgument(f"{query} needs a non-negative integer timeoutMs")
    if query == "await-jobs":
        job_type = arguments.get("type")
        if not isinstance(job_type, str):
            raise InvalidArgument("await-jobs needs a job type")
        if state.activatable_jobs.get(job_type):
            return True
        return await waiters.park(("jobs", job_type), timeout_ms)
    key = arguments.get("key")
    if not isinstance(key, int) or isinstance(key, bool):
        raise InvalidArgument("await-instance needs an integer key")
    instance = state.instances.get(key)
    if instance is None:
        raise NotFound(f"Expected to find process instance with key '{key}', but none found")
    if instance["state"] == "ACTIVE":
        await waiters.park(("instance", key), timeout_ms)
    return state.instances.get(key)
