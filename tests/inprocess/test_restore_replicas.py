"""Restore with replication: every broker gets every replica it hosts (round-robin placement
with the replication factor), all from the same backup, and `verify` checks that the replicas
agree, naming the first disagreement when one replica's files are changed."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from storage.backup.memory import InMemoryBackupStore
from storage.log import SegmentedLog
from zeebe_sim.ground import layout
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.records import decode_records, encode_records
from zeebe_sim.inprocess import InProcessCluster
from zeebe_sim.restore import RestoreRequest, restore
from zeebe_sim.verify import check, load_data_dir

pytestmark = pytest.mark.inprocess

DEMO_BPMN = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"


async def test_every_replica_is_restored_from_one_backup_and_verify_agrees(
    tmp_path: Path,
) -> None:
    """A backup of 3 partitions restored into 3 brokers with replication factor 3: each
    broker holds all 3 partitions, the replicas' logs are byte for byte the same, verify
    passes with 9 replicas and the cut at the backup's checkpoint. With factor 2, broker 0
    holds partitions 1 and 3 (round-robin). Changing the last entry of one replica makes
    verify fail, naming that index and the broker."""
    async with InProcessCluster(tmp_path / "data") as cluster:
        assert cluster.backups is not None
        medium = cluster.backups
        await cluster.api.deploy(DEMO_BPMN)
        for i in range(6):
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})
        await cluster.api.take_backup(300)
        assert (await cluster.api.wait_for_backup(300))["state"] == "COMPLETED"

    async def restore_with(data_dir: Path, replication_factor: int) -> list[str]:
        progress: list[str] = []
        store = InMemoryBackupStore(medium=medium)
        try:
            await restore(
                store,
                data_dir=data_dir,
                request=RestoreRequest((300,)),
                cluster_size=3,
                partition_count=3,
                node_ids=[NodeId(0), NodeId(1), NodeId(2)],
                progress=progress.append,
                replication_factor=replication_factor,
            )
        finally:
            await store.close()
        return progress

    restored = tmp_path / "rf3"
    progress = await restore_with(restored, 3)
    assert sum("log truncated right after checkpoint position" in p for p in progress) == 9
    hosted = {(d.parent.parent.name, int(d.name)) for d in layout.partition_dirs(restored)}
    assert hosted == {(f"broker-{n}", p) for n in range(3) for p in (1, 2, 3)}
    for partition in (1, 2, 3):
        logs = {
            n: b"".join(
                f.read_bytes()
                for f in sorted(
                    (layout.partition_dir(restored / f"broker-{n}", PartitionId(partition)))
                    .joinpath(layout.LOG_DIR)
                    .iterdir()
                )
            )
            for n in range(3)
        }
        assert logs[0] == logs[1] == logs[2]
    report = check(load_data_dir(restored))
    assert report.ok and report.checkpoint == 300, report.render()
    assert (report.partitions, report.replicas) == (3, 9)

    two = tmp_path / "rf2"
    await restore_with(two, 2)
    assert sorted(int(d.name) for d in (two / "broker-0" / layout.PARTITIONS_DIR).iterdir()) == [
        1,
        3,
    ]
    assert check(load_data_dir(two)).ok

    # One replica's last entry rewritten with another timestamp: same index and term, other
    # bytes (in an older term it would pass for a deposed leader's uncommitted tail).
    log_dir = layout.partition_dir(restored / "broker-2", PartitionId(2)) / layout.LOG_DIR
    log = SegmentedLog.open(log_dir)
    try:
        last = list(log.entries_from(1))[-1]
        records = list(decode_records(last.payload))
        log.truncate_after(last.first_position - 1)
        changed = [attrs.evolve(r, timestamp_ms=r.timestamp_ms + 1) for r in records]
        log.append(last.first_position, last.record_count, encode_records(changed), last.term)
        log.flush()
    finally:
        log.close()
    report = check(load_data_dir(restored))
    assert [v.invariant for v in report.violations] == ["replicas agree"]
    assert report.violations[0].partition_id == 2
    assert f"disagree first at log index {last.index}" in report.violations[0].detail
    assert "broker 2 has" in report.violations[0].detail
