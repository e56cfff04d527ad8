"""Every accepted backup ends COMPLETED or FAILED, in process on real files: the checkpoint is
durable before the reply that makes the 202; after a restart a checkpoint whose backup never
reached the store is recorded FAILED, unless the store had it (then it was deleted and stays
so); a failure the store refused is written once it accepts, unless the backup was deleted.

The store refuses writes through a regular file where its ``manifests`` directory must be (the
tests run as root: a chmod would not stop anything)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from broker.backup import NOT_TAKEN, RECORDED_FILE, BackupService
from broker.core import BackupPlan, Release
from broker.partition import Partition, PartitionConfig
from storage.backup.api import Backup, BackupDescriptor, BackupIdentifier
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import eventually

NODE = 0
PARTITION = 1


def backup_id(checkpoint: int) -> BackupIdentifier:
    return BackupIdentifier(NodeId(NODE), PartitionId(PARTITION), BackupId(checkpoint))


async def test_the_checkpoint_is_durable_when_the_partition_replies(tmp_path: Path) -> None:
    """At the instant CHECKPOINT CREATE's reply is given (what the gateway turns into the
    202), the log's durable part already holds the checkpoint position."""
    partition = Partition(
        PARTITION, 1, tmp_path, PartitionConfig(snapshot_period_s=3600), lambda send, c: None
    )
    await partition.start()
    try:
        durable_at_reply: list[int] = []
        reply = partition.submit(ValueType.CHECKPOINT, "CREATE", 5, {"checkpointId": 5})
        reply.add_done_callback(
            lambda _: durable_at_reply.append(
                max(s.last_position for s in partition.log.segments())
            )
        )
        response = await reply
        assert response.intent == "CREATED", response
        assert partition.state.checkpoint_id == 5
        # everything written by then, the CHECKPOINT command and its CREATED event
        assert durable_at_reply == [partition.log.last_position]
        assert partition.log.last_position > partition.state.checkpoint_position
    finally:
        await partition.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FilesystemBackupStore]:
    store = FilesystemBackupStore(tmp_path / "backups")
    yield store
    await store.close()


def service(store: FilesystemBackupStore, partition_dir: Path) -> BackupService:
    partition_dir.mkdir(parents=True, exist_ok=True)
    return BackupService(store, NODE, 1, partition_dir=lambda p: partition_dir)


def refuse_writes(store_dir: Path) -> None:
    store_dir.mkdir(parents=True, exist_ok=True)
    (store_dir / "manifests").write_text("not a directory")


async def test_a_checkpoint_never_backed_up_is_recorded_failed_after_a_restart(
    tmp_path: Path, store: FilesystemBackupStore
) -> None:
    """The partition recovered checkpoint 4, the store has no copy of backup 4 and never had
    one: it is written FAILED with the reason, and noted; a second restart changes nothing."""
    backups = service(store, tmp_path / "partition")
    backups.reconcile(PARTITION, 4)
    await backups.wait_idle()
    status = await store.get_status(backup_id(4))
    assert (status.status_code, status.failure_reason) == (BackupState.FAILED, NOT_TAKEN)
    assert (tmp_path / "partition" / RECORDED_FILE).read_text() == "4"

    again = service(store, tmp_path / "partition")
    again.reconcile(PARTITION, 4)
    await again.wait_idle()
    assert (await store.get_status(backup_id(4))).last_modified == status.last_modified


async def test_a_deleted_backup_does_not_come_back_after_a_restart(
    tmp_path: Path, store: FilesystemBackupStore
) -> None:
    """Backup 4 was recorded (then deleted by the user): the store has no copy, yet a restart
    leaves it absent. Without a note, the same situation is recorded FAILED."""
    noted = tmp_path / "noted"
    noted.mkdir()
    (noted / RECORDED_FILE).write_text("4")
    backups = service(store, noted)
    backups.reconcile(PARTITION, 4)
    await backups.wait_idle()
    assert (await store.get_status(backup_id(4))).status_code == BackupState.DOES_NOT_EXIST

    backups = service(store, tmp_path / "not-noted")
    backups.reconcile(PARTITION, 4)
    await backups.wait_idle()
    assert (await store.get_status(backup_id(4))).status_code == BackupState.FAILED


async def test_a_failure_the_store_refused_is_written_once_it_accepts(
    tmp_path: Path, store: FilesystemBackupStore
) -> None:
    """The store refuses writes when backup 4 must be recorded FAILED: status answers FAILED
    from memory meanwhile, and the FAILED manifest is in the store once writes work again."""
    store_dir = tmp_path / "backups"
    refuse_writes(store_dir)
    backups = service(store, tmp_path / "partition")
    backups.reconcile(PARTITION, 4)

    async def failed_in_memory() -> bool:
        return (await backups.status(PARTITION, 4)).state == BackupState.FAILED

    await eventually(failed_in_memory, timeout_s=10)
    assert (await backups.status(PARTITION, 4)).failure_reason == NOT_TAKEN
    (store_dir / "manifests").unlink()
    async with asyncio.timeout(30):
        await backups.wait_idle()
    status = await store.get_status(backup_id(4))
    assert (status.status_code, status.failure_reason) == (BackupState.FAILED, NOT_TAKEN)


async def test_a_backup_deleted_while_its_failure_is_unwritten_stays_deleted(
    tmp_path: Path, store: FilesystemBackupStore
) -> None:
    """DELETE of backup 4 while its failure waits for the store: 404 from then on, and the
    failure is never written, also after the store accepts writes again."""
    store_dir = tmp_path / "backups"
    refuse_writes(store_dir)
    backups = service(store, tmp_path / "partition")
    backups.reconcile(PARTITION, 4)

    async def failed_in_memory() -> bool:
        return (await backups.status(PARTITION, 4)).state == BackupState.FAILED

    await eventually(failed_in_memory, timeout_s=10)
    await backups.delete(PARTITION, 4)
    assert (await backups.status(PARTITION, 4)).state == BackupState.DOES_NOT_EXIST
    (store_dir / "manifests").unlink()
    async with asyncio.timeout(30):
        await backups.wait_idle()
    assert (await store.get_status(backup_id(4))).status_code == BackupState.DOES_NOT_EXIST


class _NothingHeld:
    """A partition that holds nothing: a plan that failed must not ask for anything."""

    def hold(self, plan: BackupPlan) -> Release:
        raise AssertionError(f"a failed plan asked to hold {plan}")


async def test_a_completed_copy_wins_before_a_failed_plan(
    tmp_path: Path, store: FilesystemBackupStore
) -> None:
    """Node 1 already holds backup 4 of the partition COMPLETED; node 0 creates checkpoint 4
    but cannot take it (no snapshot before the checkpoint): the existing copies are looked at
    first, so nothing is written and the backup stays COMPLETED (REFERENCE §4.1). Without that
    copy the same plan is recorded FAILED with its reason."""
    other = BackupIdentifier(NodeId(1), PartitionId(PARTITION), BackupId(4))
    await store.save(Backup(other, BackupDescriptor(None, 7, 1, "8.10.0"), {}, {}))
    failed = BackupPlan(PARTITION, 4, 7, failure="Cannot find a snapshot")
    backups = service(store, tmp_path / "partition")
    backups.checkpoint_created(failed, _NothingHeld())
    await backups.wait_idle()
    assert (await store.get_status(backup_id(4))).status_code == BackupState.DOES_NOT_EXIST
    assert (await backups.status(PartitionId(PARTITION), BackupId(4))).state == (
        BackupState.COMPLETED
    )

    backups.checkpoint_created(attrs.evolve(failed, checkpoint_id=5), _NothingHeld())
    await backups.wait_idle()
    status = await store.get_status(backup_id(5))
    assert (status.status_code, status.failure_reason) == (
        BackupState.FAILED,
        "Cannot find a snapshot",
    )
