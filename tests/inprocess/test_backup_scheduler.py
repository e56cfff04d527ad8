"""Continuous and scheduled backups on an in-process cluster (real brokers over the memory
network, a memory store): where the scheduler runs, what it takes, the runtime state the
leaders answer, and the store metadata they keep."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Literal

import pytest

from broker.schedule import IntervalSchedule
from broker.scheduler import SchedulerConfig
from storage.backup.api import BackupIdentifierWildcard
from zeebe_sim.ground.backups import BackupState, CheckpointType
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.protocol import BackupRuntimeStateRequest, BackupRuntimeStateResponse
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

CONTINUOUS = SchedulerConfig(
    continuous=True,
    schedule=IntervalSchedule(1000, "PT1S"),
    checkpoint_interval_ms=250,
)


async def runtime_state(
    cluster: InProcessCluster, partition: int, action: Literal["GET", "RESET", "SYNC"] = "GET"
) -> BackupRuntimeStateResponse:
    """The runtime state as the partition's leader answers it over the broker protocol."""
    broker = next(
        b
        for b in cluster.brokers.values()
        if PartitionId(partition) in b.partitions and b.partitions[PartitionId(partition)].leading
    )
    answer = await broker.handle(BackupRuntimeStateRequest(PartitionId(partition), action))
    assert isinstance(answer, BackupRuntimeStateResponse)
    return answer


def running_on(cluster: InProcessCluster) -> list[int]:
    return [n for n, b in cluster.brokers.items() if b.singletons.running]


async def test_the_scheduler_runs_on_the_lowest_live_broker_and_moves_with_it(
    tmp_path: Path,
) -> None:
    """Broker 0 runs the scheduler; when it dies broker 1 takes over and checkpoints go on
    (the partitions' leaders moved too: replication factor 3); when broker 0 returns the
    scheduler goes back to it and stops on broker 1."""
    async with InProcessCluster(
        tmp_path, backup_schedule=CONTINUOUS, replication_factor=3
    ) as cluster:

        async def latest_id() -> int:
            checkpoint = (await runtime_state(cluster, 2)).checkpoint
            return checkpoint.checkpoint_id if checkpoint is not None else 0

        async def advanced_past(before_id: int) -> bool:
            return await latest_id() > before_id

        await eventually(lambda: _equals(running_on(cluster), [0]), timeout_s=30)
        await cluster.kill_broker(0)
        await eventually(lambda: _equals(running_on(cluster), [1]), timeout_s=30)
        handed_over = await eventually(latest_id, timeout_s=30)
        await eventually(lambda: advanced_past(handed_over), timeout_s=30)
        await cluster.start_broker(0)
        await eventually(lambda: _equals(running_on(cluster), [0]), timeout_s=30)
        returned = await eventually(latest_id, timeout_s=30)
        await eventually(lambda: advanced_past(returned), timeout_s=30)


async def test_a_restarted_broker_records_no_backup_for_a_marker(tmp_path: Path) -> None:
    """Markers only: a broker killed and restarted with a marker as its latest checkpoint
    does not record a FAILED "not taken" backup for it (markers take no backup), so the store
    holds no backup at all."""
    markers = SchedulerConfig(checkpoint_interval_ms=250)
    async with InProcessCluster(tmp_path, backup_schedule=markers) as cluster:

        async def marked() -> bool:
            checkpoint = (await runtime_state(cluster, 1)).checkpoint
            return checkpoint is not None and checkpoint.checkpoint_type is CheckpointType.MARKER

        await eventually(marked, timeout_s=30)
        await cluster.kill_broker(0)
        await cluster.start_broker(0)
        await eventually(marked, timeout_s=30)
        # What the restart started in the backup service (the reconcile) has finished.
        await asyncio.wait_for(cluster.brokers[0].backups.wait_idle(), timeout=30)
        assert await cluster.backup_store().list(BackupIdentifierWildcard()) == []


@pytest.mark.parametrize("replication_factor", [1, 3])
async def test_continuous_backups_make_contiguous_ranges_and_store_metadata(
    tmp_path: Path, replication_factor: int
) -> None:
    """Markers and scheduled backups with generated ids (epoch ms): every partition confirms
    its backups into one contiguous range, the leaders answer the runtime state, the store
    metadata holds the same ranges and checkpoints, and the backups carry their type and
    first log position; RESET clears the state and its metadata. With and without
    replication."""
    async with InProcessCluster(
        tmp_path, backup_schedule=CONTINUOUS, replication_factor=replication_factor
    ) as cluster:

        async def three_backups_everywhere() -> bool:
            states = [await runtime_state(cluster, p) for p in (1, 2, 3)]
            return all(
                len(s.ranges) == 1
                and s.backup is not None
                and s.ranges[0][1].checkpoint_id - s.ranges[0][0].checkpoint_id >= 2000
                for s in states
            )

        await eventually(three_backups_everywhere, timeout_s=60, interval_s=0.1)
        topology = cluster.brokers[0].topology()
        assert topology.backup_id_offset == 0

        store = cluster.backup_store()
        for p in (1, 2, 3):
            state = await runtime_state(cluster, p, "SYNC")
            assert state.checkpoint is not None and state.backup is not None
            start, end = state.ranges[0]
            assert start.checkpoint_type is CheckpointType.SCHEDULED_BACKUP
            metadata = await store.read_metadata(PartitionId(p))
            assert metadata is not None
            assert metadata.ranges == [(start.checkpoint_id, end.checkpoint_id)]
            kinds = {c.checkpoint_type for c in metadata.checkpoints}
            assert kinds == {CheckpointType.MARKER, CheckpointType.SCHEDULED_BACKUP}

            statuses = await store.list(BackupIdentifierWildcard(partition_id=PartitionId(p)))
            completed = [s for s in statuses if s.status_code is BackupState.COMPLETED]
            assert completed
            for copy in completed:
                assert copy.descriptor is not None
                assert copy.descriptor.checkpoint_type is CheckpointType.SCHEDULED_BACKUP
                assert copy.descriptor.first_log_position is not None
            # Backups of one range join: each one's log starts at or before the position
            # right after the previous backup's checkpoint.
            by_id = {c.checkpoint_id: c for c in metadata.checkpoints}
            chain = sorted(
                c
                for c in by_id
                if by_id[c].checkpoint_type is CheckpointType.SCHEDULED_BACKUP
                and start.checkpoint_id <= c <= end.checkpoint_id
            )
            for previous, following in itertools.pairwise(chain):
                first = by_id[following].first_log_position
                assert first is not None
                assert first <= by_id[previous].checkpoint_position + 1

        before = (await runtime_state(cluster, 1)).backup
        assert before is not None
        reset = await runtime_state(cluster, 1, "RESET")
        # Scheduling goes on: only a backup taken after the old latest one may be there.
        assert all(end.checkpoint_id > before.checkpoint_id for _, end in reset.ranges)
        assert reset.backup is None or reset.backup.checkpoint_id > before.checkpoint_id


async def _equals(actual: list[int], expected: list[int]) -> bool:
    return actual == expected
