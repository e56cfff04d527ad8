"""A partition's listing answered as a delta: against a version the broker answered with, only
the backups that changed or are new travel, and the ids of those deleted; against a version it
does not hold, everything. On a real filesystem store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.backup import BackupService
from storage.backup.api import Backup, BackupDescriptor, BackupIdentifier
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.protocol import ListBackupsResponse

PARTITION = PartitionId(1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FilesystemBackupStore]:
    store = FilesystemBackupStore(tmp_path / "backups")
    yield store
    await store.close()


async def save(store: FilesystemBackupStore, checkpoint: int) -> BackupIdentifier:
    id = BackupIdentifier(NodeId(0), PARTITION, BackupId(checkpoint))
    await store.save(Backup(id, BackupDescriptor(None, checkpoint, 1, "8.10.0"), {}, {}))
    return id


def ids(answer: ListBackupsResponse) -> list[int]:
    return [s.backup_id for s in answer.statuses]


async def test_a_changed_listing_is_answered_with_what_changed(
    store: FilesystemBackupStore,
) -> None:
    """After a full listing, a take answers only the new backup, a delete only its id, a
    changed best copy only that backup (another copy that is not the best: nothing); a prefix
    filters the delta too; an unchanged listing is an empty delta; a version the broker never
    answered with gets the whole listing."""
    backups = BackupService(store, 0, 1)
    for checkpoint in (1, 2, 12):
        await save(store, checkpoint)
    full = await backups.list_backups(PARTITION, None)
    assert (ids(full), full.delta) == ([1, 2, 12], False)
    assert full.version is not None

    same = await backups.list_backups(PARTITION, None, full.version)
    assert (same.statuses, same.removed, same.delta) == ([], [], True)

    await save(store, 13)
    added = await backups.list_backups(PARTITION, None, full.version)
    assert (ids(added), added.removed, added.delta) == ([13], [], True)
    assert added.statuses[0].state is BackupState.COMPLETED

    await backups.delete(PARTITION, BackupId(2))
    deleted = await backups.list_backups(PARTITION, None, added.version)
    assert (deleted.statuses, deleted.removed, deleted.delta) == ([], [2], True)

    # Against an older version: everything that changed since, taken and deleted.
    since_full = await backups.list_backups(PARTITION, "1", full.version)
    assert (ids(since_full), since_full.removed) == ([13], [])
    since_full = await backups.list_backups(PARTITION, None, full.version)
    assert (ids(since_full), since_full.removed) == ([13], [2])

    # A second copy that does not change the best one changes nothing; losing the best one
    # changes the backup's status.
    await store.mark_failed(BackupIdentifier(NodeId(1), PARTITION, BackupId(12)), "by hand")
    second = await backups.list_backups(PARTITION, None, deleted.version)
    assert (second.statuses, second.removed, second.delta) == ([], [], True)
    assert second.version != deleted.version
    await store.delete(BackupIdentifier(NodeId(0), PARTITION, BackupId(12)))
    failed = await backups.list_backups(PARTITION, None, second.version)
    assert (ids(failed), failed.removed) == ([12], [])
    assert (failed.statuses[0].state, failed.statuses[0].failure_reason) == (
        BackupState.FAILED,
        "by hand",
    )

    unknown = await backups.list_backups(PARTITION, "1", "a version nobody answered with")
    assert (ids(unknown), unknown.delta) == ([1, 12, 13], False)
