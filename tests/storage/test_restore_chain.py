"""Laying out one partition from a chain of backups (storage/restore.py) over hand-made backups
in a memory store: the log of the first backup up to its checkpoint, then each later backup's
entries after the previous checkpoint; the end checkpoint may be a marker before the last
backup; a gap or a missing checkpoint record fails with the reference's message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.backup.api import (
    Backup,
    BackupDescriptor,
    BackupIdentifier,
    BackupStatus,
    FileRef,
)
from storage.backup.memory import InMemoryBackupStore
from storage.log import SegmentedLog, open_for_read
from storage.restore import PartitionChain, RestoreError, restore_partition, whole_chain
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.records import Record, RecordType, ValueType, decode_records, encode_records

P = PartitionId(1)


def record(position: int, checkpoint_id: int | None = None) -> Record:
    """A CHECKPOINT CREATE command when ``checkpoint_id`` is given, else a job command."""
    if checkpoint_id is not None:
        value_type, intent, value = ValueType.CHECKPOINT, "CREATE", {"checkpointId": checkpoint_id}
    else:
        value_type, intent, value = ValueType.JOB, "COMPLETE", {"n": position}
    return Record(position, -1, position, 0, RecordType.COMMAND, value_type, intent, value)


async def backup(
    store: InMemoryBackupStore,
    directory: Path,
    checkpoint_id: int,
    records: list[Record],
    checkpoint_position: int,
) -> BackupStatus:
    """Save a backup of partition 1 whose log holds ``records`` (consecutive positions), one
    entry each: a log starting past 1 is made by compacting one-entry segments away."""
    first = records[0].position
    log = SegmentedLog.open(
        directory / f"log-{checkpoint_id}", segment_bytes_max=120
    )  # one entry per segment
    for r in [*jobs(1, first - 1), *records]:
        log.append(r.position, 1, encode_records([r]))
    log.flush()
    log.compact(first)
    assert log.first_position == first
    segments = {s.path.name: FileRef(s.path, s.size_bytes) for s in log.segments()}
    log.close()
    id = BackupIdentifier(NodeId(0), P, BackupId(checkpoint_id))
    descriptor = BackupDescriptor(None, checkpoint_position, 1, "8.8.0", first)
    await store.save(Backup(id, descriptor, {}, segments))
    status = await store.get_status(id)
    assert status.status_code == BackupState.COMPLETED
    return status


def positions_and_checkpoints(log_dir: Path) -> Iterator[tuple[int, object]]:
    log = open_for_read(log_dir)
    try:
        for entry in log.entries_from(1):
            for r in decode_records(entry.payload):
                yield r.position, r.value.get("checkpointId")
    finally:
        log.close()


def jobs(first: int, last: int) -> list[Record]:
    return [record(p) for p in range(first, last + 1)]


async def test_a_chain_is_the_first_log_then_each_later_one_after_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    """Backup 1 holds 1-6 (checkpoint at 5, a later record 6 it must not keep); backup 2
    holds 3-10 (overlapping, checkpoint at 9, marker 7 at 7): the chain gives 1-9 ending with
    checkpoint 2, and with marker 7 as the end checkpoint it stops at 7."""
    store = InMemoryBackupStore()
    one = await backup(store, tmp_path, 1, [*jobs(1, 4), record(5, 1), record(6)], 5)
    two = await backup(
        store,
        tmp_path,
        2,
        [*jobs(3, 4), record(5, 1), record(6), record(7, 7), record(8), record(9, 2), record(10)],
        9,
    )
    target = tmp_path / "restored"
    lines: list[str] = []
    await restore_partition(store, whole_chain([two, one]), target, lines.append)
    restored = list(positions_and_checkpoints(target / "log"))
    assert [p for p, _ in restored] == list(range(1, 10))
    assert restored[4] == (5, 1) and restored[-1] == (9, 2)
    assert lines[-1] == "Partition 1: log truncated right after checkpoint position 9"

    to_marker = tmp_path / "marker"
    await restore_partition(store, PartitionChain((one, two), 7, 7), to_marker, lines.append)
    restored = list(positions_and_checkpoints(to_marker / "log"))
    assert [p for p, _ in restored] == list(range(1, 8)) and restored[-1] == (7, 7)


async def test_a_gap_between_two_backups_fails_naming_it(tmp_path: Path) -> None:
    """Backup 2's log starts at 8 but backup 1 ends at checkpoint position 5: positions 6-7
    are in neither, and the restore says so."""
    store = InMemoryBackupStore()
    one = await backup(store, tmp_path, 1, [*jobs(1, 4), record(5, 1)], 5)
    two = await backup(store, tmp_path, 2, [record(8), record(9, 2)], 9)
    with pytest.raises(RestoreError) as caught:
        await restore_partition(store, whole_chain([one, two]), tmp_path / "r", lambda _: None)
    assert caught.value.message == (
        "Partition 1: backup 2's log starts at position 8, but the log restored so far ends "
        "with backup 1's checkpoint at position 5: a gap between backups 1 and 2"
    )


async def test_a_missing_checkpoint_record_fails_with_zeebes_message(tmp_path: Path) -> None:
    """Backup 2 claims its checkpoint at position 9 but its log ends at 8."""
    store = InMemoryBackupStore()
    one = await backup(store, tmp_path, 1, [*jobs(1, 4), record(5, 1)], 5)
    two = await backup(store, tmp_path, 2, jobs(6, 8), 9)
    with pytest.raises(RestoreError) as caught:
        await restore_partition(store, whole_chain([one, two]), tmp_path / "r", lambda _: None)
    assert caught.value.message == (
        "Partition 1: Failed to restore from backup. Cannot find a record at checkpoint "
        "position 9 in the log."
    )
