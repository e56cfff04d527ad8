"""One partition running out of disk, in process: below the threshold it refuses commands and
resumes by itself; on a real tmpfs that fills mid-write it refuses the group it was writing,
keeps everything acknowledged, resumes once space is back, and recovers it all after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.disk import MIB, DiskConfig, DiskMonitor
from broker.engine.processor import Send
from broker.partition import Partition, PartitionConfig
from broker.replica import ReplicaConfig
from tests.scenarios.bpmn_samples import process_xml
from tests.tmpfs import fill, mounted_tmpfs
from zeebe_sim.ground.errors import ResourceExhausted
from zeebe_sim.ground.ids import NodeId
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import eventually

THRESHOLDS = DiskConfig(
    free_space_processing_bytes=200 * MIB,
    free_space_replication_bytes=100 * MIB,
    monitoring_interval_s=0.05,
)


class LocalPartition:
    """A single-partition cluster whose disk verdict comes from ``monitor``."""

    def __init__(self, directory: Path, monitor: DiskMonitor, replicated: bool = False) -> None:
        """``replicated``: a Raft replica (alone in its group) instead of the plain partition."""
        self.partition = Partition(
            1,
            1,
            directory,
            PartitionConfig(snapshot_period_s=3600, segment_bytes_max=64 * 1024),
            self._deliver,
            disk=monitor,
            replication=ReplicaConfig(NodeId(0), (NodeId(0),), 1, 1) if replicated else None,
            send_to_peer=lambda node, message: None,
        )

    async def start(self) -> None:
        await self.partition.start()

        async def leading() -> bool:
            return self.partition.leading

        await eventually(leading, timeout_s=30)

    def _deliver(self, send: Send, checkpoint_id: int) -> None:
        self.partition.receive(send.value_type, send.intent, send.key, send.value, checkpoint_id)

    async def deploy(self) -> None:
        resource = {"resourceName": "p.bpmn", "resource": process_xml("p", message=None)}
        response = await self.partition.submit(
            ValueType.DEPLOYMENT, "CREATE", -1, {"resources": [resource]}
        )
        assert response.rejection_type is None, response

    async def create(self, padding: str = "") -> int:
        response = await self.partition.submit(
            ValueType.PROCESS_INSTANCE_CREATION,
            "CREATE",
            -1,
            {"bpmnProcessId": "p", "variables": {"padding": padding}},
        )
        assert response.rejection_type is None, response
        return response.key


class FakeDisk:
    def __init__(self) -> None:
        self.free_bytes = 1000 * MIB

    def read(self, directory: Path) -> int:
        return self.free_bytes


async def test_below_the_threshold_commands_are_refused_until_space_is_back(
    tmp_path: Path,
) -> None:
    """With less free space than the processing threshold, every command is answered
    RESOURCE_EXHAUSTED at once (none waits for a timeout); with space back, processing resumes
    without a restart and what was acknowledged before is still there."""
    disk = FakeDisk()
    monitor = DiskMonitor(THRESHOLDS, tmp_path, free_bytes=disk.read)
    node = LocalPartition(tmp_path / "p1", monitor)
    await node.partition.start()
    try:
        await node.deploy()
        before = await node.create()
        disk.free_bytes = 150 * MIB
        monitor.check()
        with pytest.raises(ResourceExhausted, match=r"150\.0MB free"):
            await node.create()
        # A burst while refused: all answered, all refused, none processed.
        outcomes = await asyncio.gather(*(node.create() for _ in range(20)), return_exceptions=True)
        assert all(isinstance(o, ResourceExhausted) for o in outcomes), outcomes
        disk.free_bytes = 500 * MIB
        monitor.check()
        after = await node.create()
        instances = node.partition.state.instances
        assert set(instances) == {before, after}
    finally:
        await node.partition.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", 4 * MIB) as path:
        yield path


@pytest.fixture
async def monitor_task(small_disk: Path) -> AsyncIterator[DiskMonitor]:
    """A monitor of the tmpfs that only learns of a full disk from failed writes
    (monitoring off, the case where nothing warns before the disk is full)."""
    config = DiskConfig(
        free_space_processing_bytes=2,
        free_space_replication_bytes=1,
        monitoring_interval_s=0.05,
        enable_monitoring=False,
    )
    monitor = DiskMonitor(config, small_disk)
    task = asyncio.get_running_loop().create_task(monitor.run())
    yield monitor
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("replicated", [False, True], ids=["plain", "raft"])
async def test_a_write_that_fails_for_lack_of_space_refuses_its_group_and_loses_nothing(
    small_disk: Path, monitor_task: DiskMonitor, replicated: bool
) -> None:
    """The disk fills while bursts of commands are written: the commands whose group could not
    be written get RESOURCE_EXHAUSTED (and leave no trace in the state), every acknowledged
    instance is there, processing goes on once a filler file is deleted, and a restart
    recovers exactly the acknowledged instances."""
    directory = small_disk / "p1"
    node = LocalPartition(directory, monitor_task, replicated)
    await node.start()
    acknowledged: set[int] = set()
    refused = 0
    filler = fill(small_disk / "filler", leave_bytes=256 * 1024)
    try:
        await node.deploy()
        padding = "x" * 1000
        while refused == 0:
            outcomes = await asyncio.gather(
                *(node.create(padding) for _ in range(10)), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, int):
                    acknowledged.add(outcome)
                else:
                    assert isinstance(outcome, ResourceExhausted), outcome
                    refused += 1
        assert acknowledged, "the disk filled before anything was written"
        assert set(node.partition.state.instances) == acknowledged

        filler.unlink()

        async def resumed() -> int | None:
            try:
                return await node.create()
            except ResourceExhausted:
                return None

        acknowledged.add(await eventually(resumed, timeout_s=30, interval_s=0.05))
        assert set(node.partition.state.instances) == acknowledged
    finally:
        await node.partition.stop()

    node = LocalPartition(directory, monitor_task, replicated)
    await node.start()
    try:
        assert set(node.partition.state.instances) == acknowledged
        acknowledged.add(await node.create())
        assert set(node.partition.state.instances) == acknowledged
    finally:
        await node.partition.stop()
