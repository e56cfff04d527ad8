"""A real cluster whose data directory is a small tmpfs that fills up under load: requests get
503 (never 500 or 504), every acknowledged instance stays, deleting a filler file brings
processing back without a restart, and a restart afterwards recovers everything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS, ORDER_BPMN
from tests.tmpfs import fill, mounted_tmpfs
from zeebe_sim.harness import ApiError, RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

DISK_BYTES = 48 * 1024 * 1024
LOADERS = 4
PADDING = "x" * 2000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", DISK_BYTES) as path:
        yield path


@contextlib.asynccontextmanager
async def disk_cluster(data_dir: Path, *disk_args: str) -> AsyncIterator[RunningCluster]:
    """One broker holding three partitions (all on the one small disk)."""
    async with running_cluster(
        data_dir,
        brokers=1,
        partitions=3,
        broker_args=[*FAST_BROKER_ARGS, "--segment-size", "1MB", *disk_args],
        gateway_args=FAST_GATEWAY_ARGS,
    ) as cluster:
        yield cluster


class Load:
    """Loaders creating instances until told to stop; every answer is either an acknowledged
    instance key or a 503 (anything else fails the test)."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.acknowledged: list[int] = []
        self.refusals: list[ApiError] = []
        self._stop = asyncio.Event()

    async def _loader(self) -> None:
        while not self._stop.is_set():
            try:
                key = await self.cluster.api.create_instance("order-process", {"pad": PADDING})
                self.acknowledged.append(key)
            except ApiError as exc:
                assert exc.status == 503, exc
                self.refusals.append(exc)
                await asyncio.sleep(0.01)  # a client backing off, not waiting for a condition

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        async with asyncio.TaskGroup() as group:
            for _ in range(LOADERS):
                group.create_task(self._loader())
            try:
                yield self
            finally:
                self._stop.set()


async def check_out_of_disk_and_back(cluster: RunningCluster, disk: Path) -> None:
    """The story both tests tell, from a started cluster on ``disk``."""
    api = cluster.api
    await api.deploy(ORDER_BPMN)
    load = Load(cluster)
    async with load.running():
        await eventually(lambda: _true(len(load.acknowledged) >= 20), timeout_s=60)
        filler = await asyncio.to_thread(fill, disk / "filler", 1024 * 1024)
        await eventually(lambda: _true(len(load.refusals) >= 10), timeout_s=60)
    refusal = load.refusals[0]
    # Problem Details with the broker's reason
    assert refusal.body["status"] == 503 and refusal.body["title"] == "RESOURCE_EXHAUSTED"
    assert "disk" in refusal.body["detail"], refusal.body

    # The backup API refuses too, with the actuator's {"message"} shape.
    with pytest.raises(ApiError) as backup:
        await api.take_backup(1)
    assert backup.value.status == 503 and "disk" in backup.value.body["message"]

    for key in load.acknowledged:
        assert (await api.get_instance(key))["state"] == "ACTIVE"

    await asyncio.to_thread(filler.unlink)

    async def resumed() -> int | None:
        try:
            return await api.create_instance("order-process")
        except ApiError as exc:
            assert exc.status == 503, exc
            return None

    load.acknowledged.append(await eventually(resumed, timeout_s=30, interval_s=0.1))
    assert await api.take_backup(2)
    assert (await api.wait_for_backup(2))["state"] == "COMPLETED"

    # A restart afterwards recovers everything acknowledged, and processing goes on.
    cluster.kill_broker(0)
    await cluster.wait_exit(cluster.brokers[0])
    await cluster.start_broker(0)
    await cluster.wait_ready()
    for key in load.acknowledged:
        assert (await api.get_instance(key))["state"] == "ACTIVE"
    assert await api.create_instance("order-process")


async def test_below_the_free_space_threshold_requests_get_503_until_space_is_back(
    small_disk: Path,
) -> None:
    """With Zeebe's watermarks (here 3MB processing, 2MB replication, checked every 100 ms):
    filling the disk below them turns requests into 503s, and freeing space resumes."""
    async with disk_cluster(
        small_disk,
        "--disk-free-space-processing",
        "3MB",
        "--disk-free-space-replication",
        "2MB",
        "--disk-monitoring-interval",
        "100ms",
    ) as cluster:
        await check_out_of_disk_and_back(cluster, small_disk)


async def test_writes_failing_with_enospc_get_503_and_lose_nothing(small_disk: Path) -> None:
    """Monitoring off, so nothing warns: the disk fills until writes fail with ENOSPC. The
    commands of a group that could not be written are answered 503; the partition lives on
    and resumes once space is back."""
    async with disk_cluster(small_disk, "--no-disk-enable-monitoring") as cluster:
        await check_out_of_disk_and_back(cluster, small_disk)


async def _true(value: bool) -> bool | None:
    return value or None
