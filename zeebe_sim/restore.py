"""``zeebe-sim restore``: rebuild brokers' data directories from one backup (REFERENCE.md §5).

Theory of operation
-------------------
Everything is checked before anything is written: the target data directories must be empty,
and the backup must be COMPLETED on **every** partition (Zeebe checks only the partitions a node
hosts; a partial restore is how users lost data, REFERENCE §8) with the configured partition
count. Then, per broker, everything is laid out in a staging directory beside the data
directory: each partition's snapshot is installed (checksums verified), its segments placed and
its log truncated right after the ``CHECKPOINT CREATE`` entry at the checkpoint position. Only
when every broker is staged are the staging directories renamed into place. Any failure removes
every staging directory and anything already renamed, so the data directories are as empty as
they were.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from storage.backup.api import (
    BackupIdentifierWildcard,
    BackupStatus,
    BackupStatusCode,
    BackupStore,
)
from storage.durable import fsync_directory
from storage.log import SegmentedLog
from storage.snapshots import SnapshotStore
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.records import ValueType, decode_records
from zeebe_sim.ground.routing import partitions_of_broker

Progress = Callable[[str], None]


class RestoreError(ZeebeSimError):
    """The restore was refused or failed; nothing was left behind."""

    code = "INVALID_STATE"


def broker_dir(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"broker-{node_id}"


async def find_backup(
    store: BackupStore, backup_id: int, partition_count: int
) -> dict[int, BackupStatus]:
    """The COMPLETED copy of every partition's backup.

    Raises:
        RestoreError: a partition is not COMPLETED, or the backup was taken with another
            partition count.
    """
    chosen: dict[int, BackupStatus] = {}
    problems: list[str] = []
    for partition_id in range(1, partition_count + 1):
        copies = [
            s
            for s in await store.list(
                BackupIdentifierWildcard(
                    partition_id=PartitionId(partition_id), checkpoint_prefix=str(backup_id)
                )
            )
            if s.id.checkpoint_id == backup_id
        ]
        best = max(copies, key=lambda s: s.status_code, default=None)
        if best is None or best.status_code != BackupStatusCode.COMPLETED:
            state = best.status_code.name if best is not None else "DOES_NOT_EXIST"
            problems.append(f"partition {partition_id} is {state}")
            continue
        assert best.descriptor is not None
        if best.descriptor.number_of_partitions != partition_count:
            raise RestoreError(
                f"Backup {backup_id} was taken from a cluster with "
                f"{best.descriptor.number_of_partitions} partitions, but this cluster is "
                f"configured with {partition_count}; refusing a partial restore"
            )
        chosen[partition_id] = best
    if problems:
        raise RestoreError(
            f"Backup {backup_id} is not COMPLETED on every partition ({'; '.join(problems)}); "
            "refusing to restore"
        )
    return chosen


async def restore(
    store: BackupStore,
    *,
    data_dir: Path,
    backup_id: int,
    cluster_size: int,
    partition_count: int,
    node_ids: list[int],
    progress: Progress,
) -> None:
    """Restore ``node_ids``' data directories from backup ``backup_id``.

    Raises:
        RestoreError: refused (non-empty directory, incomplete backup, partition count) or
            failed (corrupt file, missing checkpoint entry); nothing is left behind.
    """
    for node in node_ids:
        target = broker_dir(data_dir, node)
        if target.exists() and any(target.iterdir()):
            raise RestoreError(
                f"The data directory {target} is not empty; restore only writes into empty "
                "ones (nothing was changed)"
            )
    backups = await find_backup(store, backup_id, partition_count)
    progress(f"Backup {backup_id} is COMPLETED on all {partition_count} partitions")
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for node in node_ids:
            stage = data_dir / f".restore-broker-{node}"
            shutil.rmtree(stage, ignore_errors=True)
            staged.append((stage, broker_dir(data_dir, node)))
            for partition_id in partitions_of_broker(NodeId(node), cluster_size, partition_count):
                await _restore_partition(
                    store,
                    backups[partition_id],
                    stage / "partitions" / str(partition_id),
                    progress,
                )
        for stage, target in staged:
            if target.exists():
                target.rmdir()  # empty, checked above
            os.replace(stage, target)
            placed.append(target)
            progress(f"Broker {target.name.removeprefix('broker-')}: restored into {target}")
        fsync_directory(data_dir)
    except BaseException as exc:
        for stage, _ in staged:
            shutil.rmtree(stage, ignore_errors=True)
        for target in placed:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, RestoreError):
            raise
        if isinstance(exc, ZeebeSimError):
            raise RestoreError(f"Restore failed, nothing was restored: {exc.message}") from exc
        if isinstance(exc, OSError):
            raise RestoreError(f"Restore failed, nothing was restored: {exc}") from exc
        raise


async def _restore_partition(
    store: BackupStore, backup: BackupStatus, directory: Path, progress: Progress
) -> None:
    descriptor = backup.descriptor
    assert descriptor is not None
    partition_id = backup.id.partition_id
    position = descriptor.checkpoint_position
    download = directory / "download"
    restored = await store.restore(backup.id, download)
    size = sum(p.stat().st_size for p in download.rglob("*") if p.is_file())
    progress(
        f"Partition {partition_id}: downloaded {len(restored.segment_files)} segment(s)"
        f"{' and snapshot ' + descriptor.snapshot_id if descriptor.snapshot_id else ''}"
        f" ({size / 1e6:.1f} MB) taken by node {backup.id.node_id}"
    )
    processed = 0
    if restored.snapshot_dir is not None and descriptor.snapshot_id is not None:
        snapshots = SnapshotStore.open(directory / "snapshots")
        snapshot = snapshots.install(
            restored.snapshot_dir, restored.snapshot_dir / f"{descriptor.snapshot_id}.checksum"
        )
        processed = snapshot.processed_position
    log_dir = directory / "log"
    log_dir.mkdir(parents=True)
    for segment in restored.segment_files:
        os.replace(segment, log_dir / segment.name)
    shutil.rmtree(download)
    log = SegmentedLog.open(log_dir)
    try:
        entry = log.entry_at_position(position)
        if entry is None:
            raise RestoreError(
                f"Partition {partition_id}: the backup's log has no entry at the checkpoint "
                f"position {position}"
            )
        record = next(r for r in decode_records(entry.payload) if r.position == position)
        if (record.value_type, record.intent) != (ValueType.CHECKPOINT, "CREATE") or (
            record.value.get("checkpointId") != backup.id.checkpoint_id
        ):
            raise RestoreError(
                f"Partition {partition_id}: the entry at the checkpoint position {position} is "
                f"{record.value_type} {record.intent}, not CHECKPOINT CREATE "
                f"{backup.id.checkpoint_id}"
            )
        if log.first_position > processed + 1:
            raise RestoreError(
                f"Partition {partition_id}: the backup's log starts at position "
                f"{log.first_position}, after the snapshot's position {processed}"
            )
        log.truncate_after(position)
    finally:
        log.close()
    progress(f"Partition {partition_id}: log truncated right after checkpoint position {position}")
