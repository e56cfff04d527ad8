"""Long polling on a partition: a parked request wakes when what it waits for happens (a job of
its type becomes activatable, an instance ends) and ends empty at its timeout. The clock is a
variable the test moves; nothing sleeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.engine.processor import Send
from broker.partition import Partition, PartitionConfig
from broker.waiters import Waiters, answer_await
from tests.clients.bpmn import service_task_bpmn
from zeebe_sim.ground.errors import ResourceExhausted
from zeebe_sim.ground.records import ValueType


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


async def test_parked_requests_wake_on_their_topic_only() -> None:
    """notify wakes exactly the requests parked on that topic, with True."""
    clock = FakeClock()
    waiters = Waiters(clock)
    jobs_a = waiters.park(("jobs", "a"), 10_000)
    jobs_b = waiters.park(("jobs", "b"), 10_000)
    waiters.notify([("jobs", "a")])
    assert jobs_a.done() and jobs_a.result() is True
    assert not jobs_b.done() and len(waiters) == 1


async def test_parked_request_ends_with_false_exactly_at_its_deadline() -> None:
    """expire resolves a request with False once the clock reaches its deadline, not before."""
    clock = FakeClock()
    waiters = Waiters(clock)
    parked = waiters.park(("jobs", "a"), 500)
    clock.now_ms += 499
    waiters.expire()
    assert not parked.done()
    clock.now_ms += 1
    waiters.expire()
    assert parked.done() and parked.result() is False
    waiters.notify([("jobs", "a")])  # a late wakeup finds nobody
    assert len(waiters) == 0


async def test_parking_is_bounded() -> None:
    """Past the limit a request is refused (RESOURCE_EXHAUSTED), and room is made again as
    parked requests finish."""
    waiters = Waiters(FakeClock(), waiters_max=2)
    first = waiters.park("t", 1000)
    waiters.park("t", 1000)
    with pytest.raises(ResourceExhausted):
        waiters.park("t", 1000)
    first.cancel()  # the gateway gave up on it
    waiters.park("t", 1000)


class _Node:
    """One real partition on real files with a fake clock; sends go to itself."""

    def __init__(self, directory: Path, clock: FakeClock) -> None:
        self.partition = Partition(
            1,
            1,
            directory,
            PartitionConfig(snapshot_period_s=3600),
            self._deliver,
            clock_ms=clock,
        )

    def _deliver(self, send: Send, checkpoint_id: int) -> None:
        self.partition.receive(send.value_type, send.intent, send.key, send.value, checkpoint_id)

    async def command(self, value_type: str, intent: str, key: int = -1, **value: object) -> dict:
        response = await self.partition.submit(value_type, intent, key, dict(value))
        assert response.rejection_type is None, response
        return {"key": response.key, **response.value}

    def await_query(self, query: str, **arguments: object) -> asyncio.Task[object]:
        partition = self.partition
        return asyncio.get_running_loop().create_task(
            answer_await(query, dict(arguments), partition.state, partition.waiters)
        )


async def test_parked_activation_wakes_when_a_job_appears_and_ends_empty_at_timeout(
    tmp_path: Path,
) -> None:
    """await-jobs parks while no job of the type is activatable; creating one wakes it with
    True. Another parked request ends with False when the partition's timer sees the fake clock
    pass its deadline; one for a type that has jobs answers at once."""
    clock = FakeClock()
    node = _Node(tmp_path, clock)
    await node.partition.start()
    try:
        resource = {"resourceName": "p.bpmn", "resource": service_task_bpmn("p", "work")}
        await node.command(ValueType.DEPLOYMENT, "CREATE", resources=[resource])
        woken = node.await_query("await-jobs", type="work", timeoutMs=60_000)
        timed_out = node.await_query("await-jobs", type="other", timeoutMs=1_000)
        await asyncio.sleep(0)  # both are parked now (one loop step, no waiting)
        assert not woken.done() and len(node.partition.waiters) == 2
        await node.command(ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p")
        assert await asyncio.wait_for(woken, 30) is True
        assert not timed_out.done()
        clock.now_ms += 1_000
        assert await asyncio.wait_for(timed_out, 30) is False  # the partition's timer expired it
        at_once = node.await_query("await-jobs", type="work", timeoutMs=60_000)
        assert await asyncio.wait_for(at_once, 30) is True
    finally:
        await node.partition.stop()


async def test_await_instance_answers_when_the_instance_completes(tmp_path: Path) -> None:
    """await-instance parks until the instance ends, then answers it with its variables."""
    node = _Node(tmp_path, FakeClock())
    await node.partition.start()
    try:
        resource = {"resourceName": "p.bpmn", "resource": service_task_bpmn("p", "work")}
        await node.command(ValueType.DEPLOYMENT, "CREATE", resources=[resource])
        created = await node.command(
            ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p", variables={"a": 1}
        )
        result = node.await_query("await-instance", key=created["key"], timeoutMs=60_000)
        batch = await node.command(
            ValueType.JOB_BATCH,
            "ACTIVATE",
            type="work",
            worker="w",
            timeout=60_000,
            maxJobsToActivate=1,
        )
        assert not result.done()
        [job] = batch["jobs"]
        await node.command(ValueType.JOB, "COMPLETE", job["jobKey"], variables={"b": 2})
        instance = await asyncio.wait_for(result, 30)
        assert isinstance(instance, dict)
        assert instance["state"] == "COMPLETED" and instance["variables"] == {"a": 1, "b": 2}
    finally:
        await node.partition.stop()
