"""Laying out one partition from a chain of backups (REFERENCE.md §5, backups-8.9-8.10 A.8).

Shared by ``zeebe-sim restore`` (``zeebe_sim/restore.py``: every broker, stopped, all or
nothing) and the in-process restore of a running broker (``broker/recovery.py``: one partition
at a time); both only decide *where* the partition goes and how it is committed.

Theory of operation
-------------------
A partition is restored from a *chain*: backups of one partition sorted by id, each taken after
the one before (continuous backups: a later backup's log starts at or before the previous
checkpoint position + 1). The snapshot comes from the first backup only. Its log is laid out up
to and including its checkpoint record; from each later backup the entries through the previous
checkpoint record are skipped and those up to its own checkpoint record appended. The log ends
with the chain's *end checkpoint*: the last backup's checkpoint, or a MARKER checkpoint before it
for a point-in-time restore, whose record must be there too. Any missing record or gap fails the
partition with Zeebe's message; nothing here decides what to do with the half-written directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from storage.backup.api import BackupIdentifierWildcard, BackupStatus, BackupStore, best_copy
from storage.durable import fsync_directory, fsync_file
from storage.log import SegmentedLog, open_for_read
from storage.restore_points import NoRestorePoint, RestorePoint, iso_ms, resolve
from storage.snapshots import SnapshotStore
from zeebe_sim.ground import layout
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import InvalidState
from zeebe_sim.ground.ids import BackupId, PartitionId
from zeebe_sim.ground.records import ValueType, decode_records

Progress = Callable[[str], None]


class RestoreError(InvalidState):
    """The restore was refused or failed; nothing was left behind."""


class BackupIncomplete(RestoreError):
    """A backup to restore is not COMPLETED on every partition it is needed for."""


@attrs.frozen
class RestoreRequest:
    """What to restore: backups by id (every partition from the same chain), or a time window
    (epoch milliseconds) resolved against the store's metadata."""

    backup_ids: tuple[int, ...] = ()
    from_ms: int | None = None
    to_ms: int | None = None

    def describe(self) -> str:
        if self.backup_ids:
            ids = ", ".join(map(str, sorted(self.backup_ids)))
            return f"backup{'s' if len(self.backup_ids) > 1 else ''} {ids}"
        return f"the window from {iso_ms(self.from_ms)} to {iso_ms(self.to_ms)}"

    def flags(self) -> str:
        """The CLI flags that ask for this restore."""
        if self.backup_ids:
            return f"--backup-id {','.join(map(str, sorted(self.backup_ids)))}"
        bounds = [("--from", self.from_ms), ("--to", self.to_ms)]
        return " ".join(f"{flag} {iso_ms(ms)}" for flag, ms in bounds if ms is not None)


@attrs.frozen
class PartitionChain:
    """What one partition is restored from: COMPLETED backup copies sorted by id, and the
    checkpoint (id and position) its restored log ends with, at or before the last backup's."""

    backups: tuple[BackupStatus, ...]
    checkpoint_id: int
    checkpoint_position: int

    @property
    def backup_ids(self) -> list[int]:
        return [b.id.checkpoint_id for b in self.backups]


def checkpoint_position_of(backup: BackupStatus) -> int:
    assert backup.descriptor is not None  # only COMPLETED copies get here
    return backup.descriptor.checkpoint_position


def whole_chain(backups: Sequence[BackupStatus]) -> PartitionChain:
    """The chain of ``backups`` (any order) ending at the last one's checkpoint."""
    ordered = tuple(sorted(backups, key=lambda b: b.id.checkpoint_id))
    return PartitionChain(
        ordered, ordered[-1].id.checkpoint_id, checkpoint_position_of(ordered[-1])
    )


async def completed_copy(
    store: BackupStore, partition_id: PartitionId, backup_id: int, partition_count: int
) -> BackupStatus | str:
    """The best copy of one partition's backup if it is COMPLETED, else what it is instead.

    Raises:
        RestoreError: it was taken with another partition count.
    """
    copies = [
        s
        for s in await store.list(
            BackupIdentifierWildcard(partition_id=partition_id, checkpoint_prefix=str(backup_id))
        )
        if s.id.checkpoint_id == backup_id
    ]
    best = best_copy(copies)
    if best is None or best.status_code != BackupState.COMPLETED:
        state = best.status_code if best is not None else BackupState.DOES_NOT_EXIST
        return f"partition {partition_id} is {state.value}"
    assert best.descriptor is not None
    if best.descriptor.number_of_partitions != partition_count:
        raise RestoreError(
            f"Backup {backup_id} was taken from a cluster with "
            f"{best.descriptor.number_of_partitions} partitions, but this cluster is "
            f"configured with {partition_count}; refusing a partial restore"
        )
    return best


async def find_backup(
    store: BackupStore, backup_id: BackupId, partition_count: int
) -> dict[PartitionId, BackupStatus]:
    """The COMPLETED copy of every partition's backup.

    Raises:
        RestoreError: a partition is not COMPLETED, or the backup was taken with another
            partition count.
    """
    chosen: dict[PartitionId, BackupStatus] = {}
    problems: list[str] = []
    for partition_id in map(PartitionId, range(1, partition_count + 1)):
        found = await completed_copy(store, partition_id, backup_id, partition_count)
        if isinstance(found, str):
            problems.append(found)
        else:
            chosen[partition_id] = found
    if problems:
        raise BackupIncomplete(
            f"Backup {backup_id} is not COMPLETED on every partition ({'; '.join(problems)}); "
            "refusing to restore"
        )
    return chosen


async def chains_of_ids(
    store: BackupStore, backup_ids: Sequence[int], partition_count: int
) -> dict[PartitionId, PartitionChain]:
    """Every partition restored from the same backups ``backup_ids``, each COMPLETED on every
    partition.

    Raises:
        RestoreError: as :func:`find_backup`, for the first id that fails.
    """
    found = [await find_backup(store, BackupId(i), partition_count) for i in sorted(backup_ids)]
    return {
        PartitionId(p): whole_chain([backups[PartitionId(p)] for backups in found])
        for p in range(1, partition_count + 1)
    }


async def chains_of_window(
    store: BackupStore, request: RestoreRequest, partition_count: int
) -> tuple[RestorePoint, dict[PartitionId, PartitionChain]]:
    """The restore point of the window ``request`` (see ``storage/restore_points.py``) and each
    partition's chain to it, every backup of it COMPLETED.

    Raises:
        RestoreError: no restore point in the window, a gap, a backup of a chain that is not
            COMPLETED, or another partition count.
    """
    partitions = list(map(PartitionId, range(1, partition_count + 1)))
    metadata = {p: await store.read_metadata(p) for p in partitions}
    try:
        point = resolve(metadata, from_ms=request.from_ms, to_ms=request.to_ms)
    except NoRestorePoint as exc:
        raise RestoreError(exc.message) from exc
    chains: dict[PartitionId, PartitionChain] = {}
    for partition_id, part in point.partitions.items():
        backups = []
        for backup_id in part.backup_ids:
            found = await completed_copy(store, partition_id, backup_id, partition_count)
            if isinstance(found, str):
                raise BackupIncomplete(
                    f"Backup {backup_id} of the chain to checkpoint {point.checkpoint_id}: "
                    f"{found}; refusing to restore"
                )
            backups.append(found)
        chains[partition_id] = PartitionChain(
            tuple(backups), part.checkpoint_id, part.checkpoint_position
        )
    return point, chains


async def restore_partition(
    store: BackupStore, chain: PartitionChain, directory: Path, progress: Progress
) -> None:
    """Lay out ``chain`` into the partition directory ``directory`` (new or empty): snapshot
    and log, the log ending right after the chain's end checkpoint record. Not fsynced (see
    :func:`fsync_tree`).

    Raises:
        RestoreError: a checkpoint record is missing, the log has a gap, or the first log does
            not reach back to the snapshot. StorageCorruption, BackupStoreError, OSError: from
            the download.
    """
    first = chain.backups[0]
    descriptor = first.descriptor
    assert descriptor is not None
    partition_id = first.id.partition_id
    download = directory / layout.RESTORE_DOWNLOAD_DIR
    restored = await store.restore(first.id, download)
    _downloaded(first, download, len(restored.segment_files), progress)
    processed = 0
    if restored.snapshot_dir is not None and descriptor.snapshot_id is not None:
        snapshots = SnapshotStore.open(directory / layout.SNAPSHOTS_DIR)
        snapshot = snapshots.install(
            restored.snapshot_dir, restored.snapshot_dir / f"{descriptor.snapshot_id}.checksum"
        )
        processed = snapshot.processed_position
    log_dir = directory / layout.LOG_DIR
    log_dir.mkdir(parents=True)
    for segment in restored.segment_files:
        os.replace(segment, log_dir / segment.name)
    shutil.rmtree(download)
    log = SegmentedLog.open(log_dir)
    try:
        end = _end_of(chain, first)
        _check_checkpoint(log, partition_id, *end)
        if log.first_position > processed + 1:
            raise RestoreError(
                f"Partition {partition_id}: the backup's log starts at position "
                f"{log.first_position}, after the snapshot's position {processed}"
            )
        log.truncate_after(end[1])
        previous = first
        for backup in chain.backups[1:]:
            await _append_later(store, log, backup, previous, _end_of(chain, backup), directory)
            progress(
                f"Partition {partition_id}: appended the log of backup "
                f"{backup.id.checkpoint_id} taken by node {backup.id.node_id}"
            )
            previous = backup
        log.flush()
    finally:
        log.close()
    progress(
        f"Partition {partition_id}: log truncated right after checkpoint position "
        f"{chain.checkpoint_position}"
    )


def _end_of(chain: PartitionChain, backup: BackupStatus) -> tuple[int, int]:
    """The checkpoint (id, position) up to which ``backup``'s log is laid out: its own, or the
    chain's end checkpoint when that comes first (a marker before the last backup)."""
    own = checkpoint_position_of(backup)
    if chain.checkpoint_position < own:
        return chain.checkpoint_id, chain.checkpoint_position
    return backup.id.checkpoint_id, own


async def _append_later(
    store: BackupStore,
    log: SegmentedLog,
    backup: BackupStatus,
    previous: BackupStatus,
    end: tuple[int, int],
    directory: Path,
) -> None:
    """Append ``backup``'s entries after ``previous``'s checkpoint record up to ``end``'s."""
    partition_id = backup.id.partition_id
    after = checkpoint_position_of(previous)
    download = directory / layout.RESTORE_DOWNLOAD_DIR
    restored = await store.restore(backup.id, download)
    try:
        segments = restored.segment_files
        source = open_for_read(segments[0].parent) if segments else None
        try:
            if source is None or source.is_empty or source.first_position > after + 1:
                start = source.first_position if source is not None else None
                raise RestoreError(
                    f"Partition {partition_id}: backup {backup.id.checkpoint_id}'s log starts "
                    f"at position {start}, but the log restored so far ends with backup "
                    f"{previous.id.checkpoint_id}'s checkpoint at position {after}: a gap "
                    f"between backups {previous.id.checkpoint_id} and {backup.id.checkpoint_id}"
                )
            for entry in source.entries_from(after + 1):
                if entry.first_position <= after:
                    if entry.last_position > after:
                        raise RestoreError(
                            f"Partition {partition_id}: backup {backup.id.checkpoint_id}'s log "
                            f"has no entry boundary after checkpoint position {after}"
                        )
                    continue
                if entry.first_position > end[1]:
                    break
                log.append(entry.first_position, entry.record_count, entry.payload)
        finally:
            if source is not None:
                source.close()
    finally:
        shutil.rmtree(download)
    _check_checkpoint(log, partition_id, *end)


def _check_checkpoint(
    log: SegmentedLog, partition_id: PartitionId, checkpoint_id: int, position: int
) -> None:
    entry = log.entry_at_position(position)
    if entry is None:
        raise RestoreError(
            f"Partition {partition_id}: Failed to restore from backup. Cannot find a record at "
            f"checkpoint position {position} in the log."
        )
    record = next(r for r in decode_records(entry.payload) if r.position == position)
    if (record.value_type, record.intent) != (ValueType.CHECKPOINT, "CREATE") or (
        record.value.get("checkpointId") != checkpoint_id
    ):
        raise RestoreError(
            f"Partition {partition_id}: the entry at the checkpoint position {position} is "
            f"{record.value_type} {record.intent}, not CHECKPOINT CREATE {checkpoint_id}"
        )


def _downloaded(backup: BackupStatus, download: Path, segments: int, progress: Progress) -> None:
    descriptor = backup.descriptor
    assert descriptor is not None
    snapshot = f" and snapshot {descriptor.snapshot_id}" if descriptor.snapshot_id else ""
    size = sum(p.stat().st_size for p in download.rglob("*") if p.is_file())
    progress(
        f"Partition {backup.id.partition_id}: downloaded {segments} segment(s){snapshot}"
        f" ({size / 1e6:.1f} MB) taken by node {backup.id.node_id}"
    )


def fsync_tree(root: Path) -> None:
    """Every file and directory under ``root`` (itself included) durable."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(directory) / name)
        fsync_directory(Path(directory))
