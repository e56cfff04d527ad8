"""Restore (zeebe_sim/restore.py) from backups the in-process cluster took into its memory
store: the restored cluster is the consistent cut and works on; refusals and failures touch
nothing (REFERENCE.md §5). The CLI's exit codes, the filesystem and S3 stores and restarted
processes are proven by tests/e2e/test_backups.py and test_s3.py."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from storage.backup.memory import InMemoryBackupStore, MemoryObjects
from tests.inprocess.helpers import restart_during_upload
from zeebe_sim.harness import ApiError, eventually
from zeebe_sim.inprocess import InProcessCluster
from zeebe_sim.restore import RestoreError, RestoreRequest, restore
from zeebe_sim.verify import check, load_data_dir

pytestmark = pytest.mark.inprocess

DEMO_BPMN = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"


async def restore_into(
    medium: MemoryObjects, data_dir: Path, backup_id: int, partitions: int = 3
) -> list[str]:
    """Restore every broker of a 3-broker cluster; the progress lines."""
    progress: list[str] = []
    store = InMemoryBackupStore(medium=medium)
    try:
        await restore(
            store,
            data_dir=data_dir,
            request=RestoreRequest((backup_id,)),
            cluster_size=3,
            partition_count=partitions,
            node_ids=[0, 1, 2],
            progress=progress.append,
        )
    finally:
        await store.close()
    return progress


def tree(directory: Path) -> list[Path]:
    return sorted(p.relative_to(directory) for p in directory.rglob("*"))


async def test_a_restored_cluster_is_the_cut_and_works_on(tmp_path: Path) -> None:
    """Backup 200 taken while messages are published: the restore cuts every log at the
    checkpoint and verify holds; the restarted cluster has every instance created before the
    checkpoint and none created after, reports backup 200 as it was, refuses id 200 again and
    completes a backup 201."""
    keys = [f"order-{i}" for i in range(20)]
    async with InProcessCluster(tmp_path / "data") as cluster:
        assert cluster.backups is not None
        medium = cluster.backups
        await cluster.api.deploy(DEMO_BPMN)
        before = [
            await cluster.api.create_instance("demo-process", {"correlationKey": k}) for k in keys
        ]
        publishing = asyncio.gather(*(cluster.api.publish("demo-message", k) for k in keys))
        await cluster.api.take_backup(200)
        after = await cluster.api.create_instance("demo-process", {"correlationKey": "late"})
        await publishing
        taken = await cluster.api.wait_for_backup(200)
        assert taken["state"] == "COMPLETED", taken

    restored = tmp_path / "restored"
    progress = await restore_into(medium, restored, 200)
    assert progress[0] == "Backup 200 is COMPLETED on all 3 partitions"
    assert sum("log truncated right after checkpoint position" in line for line in progress) == 3
    report = check(load_data_dir(restored))
    assert report.ok and report.checkpoint == 200, report.render()

    async with InProcessCluster(restored, backups=medium) as cluster:

        async def none_running() -> bool:
            return all(
                b.backups.running(p) == 0
                for b in cluster.brokers.values()
                for p in (1, 2, 3)
                if p in b.partitions
            )

        await eventually(none_running, timeout_s=10, interval_s=0.01)
        assert (await cluster.api.backup(200))["details"] == taken["details"]
        partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
        assert {p["checkpointId"] for p in partitions.values()} == {200}
        with pytest.raises(ApiError) as missing:
            await cluster.api.get_instance(after)
        assert missing.value.status == 404
        for key in before:
            assert (await cluster.api.get_instance(key))["state"] == "ACTIVE"
        with pytest.raises(ApiError) as conflict:
            await cluster.api.take_backup(200)
        assert conflict.value.status == 409
        await cluster.api.take_backup(201)
        assert (await cluster.api.wait_for_backup(201))["state"] == "COMPLETED"


async def test_restore_refuses_and_touches_nothing(tmp_path: Path) -> None:
    """A non-empty data directory, an unknown backup, a FAILED one, another partition count:
    each refused with a reason naming it, and no directory is created or changed."""
    data = tmp_path / "data"
    async with InProcessCluster(data, backup_upload_delay_s=1.0) as cluster:
        assert cluster.backups is not None
        medium = cluster.backups
        await cluster.api.take_backup(3)
        assert (await cluster.api.wait_for_backup(3))["state"] == "COMPLETED"
        await cluster.api.take_backup(4)
        # backup 4 of partition 1: FAILED once broker 0 is back
        await restart_during_upload(cluster, 4, partition=1, node=0)
        assert (await cluster.api.wait_for_backup(4))["state"] == "FAILED"

    before = tree(data)
    with pytest.raises(RestoreError, match="is not empty"):
        await restore_into(medium, data, 3)
    assert tree(data) == before
    empty = tmp_path / "empty"
    with pytest.raises(RestoreError, match="partition 1 is DOES_NOT_EXIST"):
        await restore_into(medium, empty, 5)
    with pytest.raises(RestoreError, match="partition 1 is FAILED"):
        await restore_into(medium, empty, 4)
    with pytest.raises(RestoreError, match="3 partitions"):
        await restore_into(medium, empty, 3, partitions=4)
    assert not empty.exists() or tree(empty) == []


async def test_a_second_restore_into_the_same_directory_meanwhile_is_refused(
    tmp_path: Path,
) -> None:
    """While one restore holds the data directory (its lock is on the directory itself, as
    another `zeebe-sim restore` process would hold it), a second is refused by name and
    changes nothing; once the first lets go, the restore runs."""
    async with InProcessCluster(tmp_path / "data") as cluster:
        assert cluster.backups is not None
        medium = cluster.backups
        await cluster.api.take_backup(2)
        assert (await cluster.api.wait_for_backup(2))["state"] == "COMPLETED"
    target = tmp_path / "restored"
    target.mkdir()
    holder = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(RestoreError, match=r"Another restore into .* is running"):
            await restore_into(medium, target, 2)
        assert tree(target) == []
    finally:
        os.close(holder)
    await restore_into(medium, target, 2)
    assert sorted(p.name for p in target.iterdir()) == ["broker-0", "broker-1", "broker-2"]


async def test_a_corrupt_file_in_the_store_fails_the_restore_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """One byte flipped in a partition's backed-up segment: the checksum fails the restore,
    and neither staging nor any broker directory is left behind."""
    async with InProcessCluster(tmp_path / "data") as cluster:
        assert cluster.backups is not None
        medium = cluster.backups
        await cluster.api.deploy(DEMO_BPMN)
        await cluster.api.take_backup(9)
        assert (await cluster.api.wait_for_backup(9))["state"] == "COMPLETED"
    segments = sorted(k for k in medium.objects if k.startswith("3/9/") and "/segments/" in k)
    assert segments, "no segment found: did the store's key layout change?"
    corrupt = bytearray(medium.objects[segments[-1]])
    corrupt[len(corrupt) // 2] ^= 0xFF
    medium.objects[segments[-1]] = bytes(corrupt)
    target = tmp_path / "restored"
    with pytest.raises(RestoreError, match="nothing was restored"):
        await restore_into(medium, target, 9)
    assert not target.exists() or tree(target) == []
