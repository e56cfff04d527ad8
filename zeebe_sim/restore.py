"""``zeebe-sim restore``: rebuild brokers' data directories from one backup (REFERENCE.md §5).

Theory of operation
-------------------
Everything is checked before anything is written: the target data directories must be empty,
and the backup must be COMPLETED on **every** partition (Zeebe checks only the partitions a node
hosts; a partial restore is how users lost data, REFERENCE §8) with the configured partition
count. Then the restore is all or nothing across the cluster, even when killed at any instant:

1. *Stage*: every broker is laid out under ``<data-dir>/.restore/broker-<n>``: each partition's
   snapshot installed (checksums verified), its segments placed and its log truncated right
   after the ``CHECKPOINT CREATE`` entry at the checkpoint position; then every staged file and
   directory is fsynced.
2. *Commit*: the journal ``<data-dir>/.restore-journal.json`` (backup id, brokers) is written
   durably (write temp + fsync + rename + fsync(dir)). Before it exists, ``.restore`` is
   scratch: a failure, or the next run after a crash, deletes it, and no data directory was
   touched.
3. *Place*: each staged broker directory is renamed onto its (empty or absent) data directory,
   both parents fsynced. A rename either happened or did not, so this step is idempotent: after
   a crash the next run reads the journal and places what is still staged.
4. *Finish*: ``.restore`` (empty by now) is removed, and last the journal: its removal is the
   one atomic act that ends the restore.

While a journal exists the data directory is *unfinished*: :func:`unfinished_restore` says so,
``zeebe-sim verify`` and a broker refuse it, and the next ``zeebe-sim restore --backup-id`` of
the same backup finishes it (another backup id is refused, naming the one to finish).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import attrs

from storage.backup.api import (
    BackupIdentifierWildcard,
    BackupStatus,
    BackupStore,
    best_copy,
)
from storage.durable import ensure_directory, fsync_directory, fsync_file
from storage.log import SegmentedLog
from storage.snapshots import SnapshotStore
from zeebe_sim.ground import layout
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.records import ValueType, decode_records
from zeebe_sim.ground.routing import partitions_of_broker

Progress = Callable[[str], None]


class RestoreError(ZeebeSimError):
    """The restore was refused or failed; nothing was left behind."""

    code = "INVALID_STATE"


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
        copies = [
            s
            for s in await store.list(
                BackupIdentifierWildcard(
                    partition_id=partition_id, checkpoint_prefix=str(backup_id)
                )
            )
            if s.id.checkpoint_id == backup_id
        ]
        best = best_copy(copies)
        if best is None or best.status_code != BackupState.COMPLETED:
            state = best.status_code if best is not None else BackupState.DOES_NOT_EXIST
            problems.append(f"partition {partition_id} is {state.value}")
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
    backup_id: BackupId,
    cluster_size: int,
    partition_count: int,
    node_ids: list[NodeId],
    progress: Progress,
    crash_point: CrashPoint = lambda step: None,
) -> None:
    """Restore ``node_ids``' data directories from backup ``backup_id``, all or nothing (see
    the module docstring); first finishes or cleans up what an interrupted run left.

    ``crash_point`` is called after every durable step with its name (fault injection: see
    :func:`crash_at`).

    Raises:
        RestoreError: refused (non-empty directory, incomplete backup, partition count, an
            unfinished restore of another backup) or failed before the commit (corrupt file,
            missing checkpoint entry): no data directory was changed. Or it failed while
            placing the committed restore: the message says to run it again to finish.
    """
    staging = data_dir / STAGING_DIR
    journal = read_journal(data_dir)
    if journal is not None:
        if journal.backup_id != backup_id:
            raise RestoreError(
                f"{unfinished_restore(data_dir)}; refusing to restore backup {backup_id} "
                "(nothing was changed)"
            )
        progress(
            f"Finishing the interrupted restore of backup {backup_id} into {data_dir} "
            f"(brokers {list(journal.node_ids)})"
        )
        _place(data_dir, journal, progress, crash_point)
        node_ids = [n for n in node_ids if n not in journal.node_ids]
        if not node_ids:
            return
    elif staging.exists():
        shutil.rmtree(staging)
        fsync_directory(data_dir)
        progress(
            f"Removed {staging}: an earlier restore was interrupted before it changed any data "
            "directory"
        )
    for node in node_ids:
        target = layout.broker_dir(data_dir, node)
        if target.exists() and any(target.iterdir()):
            raise RestoreError(
                f"The data directory {target} is not empty; restore only writes into empty "
                "ones (nothing was changed)"
            )
    backups = await find_backup(store, backup_id, partition_count)
    progress(f"Backup {backup_id} is COMPLETED on all {partition_count} partitions")
    try:
        ensure_directory(staging)
        for node in node_ids:
            layout.broker_dir(staging, node).mkdir()  # also for a broker without partitions
            for partition_id in partitions_of_broker(node, cluster_size, partition_count):
                await _restore_partition(
                    store,
                    backups[partition_id],
                    layout.partition_dir(layout.broker_dir(staging, node), partition_id),
                    progress,
                )
                crash_point(f"staged partition {partition_id}")
        _fsync_tree(staging)
        crash_point("staged everything durably")
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, RestoreError):
            raise
        if isinstance(exc, ZeebeSimError):
            raise RestoreError(f"Restore failed, nothing was restored: {exc.message}") from exc
        if isinstance(exc, OSError):
            raise RestoreError(f"Restore failed, nothing was restored: {exc}") from exc
        raise
    journal = Journal(backup_id, tuple(node_ids))
    _write_journal(data_dir, journal)
    crash_point("committed")
    _place(data_dir, journal, progress, crash_point)


# -- the journal and the placing step -----------------------------------------------------------

# Re-exported for the tests of the restore protocol.
STAGING_DIR = layout.RESTORE_STAGING_DIR
JOURNAL_FILE = layout.RESTORE_JOURNAL_FILE
CrashPoint = Callable[[str], None]
CRASH_EXIT_CODE = 86


def crash_at(step: int) -> CrashPoint:
    """A crash point that ends the process at once (``os._exit``: no cleanup, no flush, as a
    kill -9 would) at its ``step``-th call, counting from 1."""
    calls = 0

    def crash_point(name: str) -> None:
        nonlocal calls
        calls += 1
        if calls == step:
            os._exit(CRASH_EXIT_CODE)

    return crash_point


@attrs.frozen
class Journal:
    """A committed restore: its data is staged, its brokers' directories may be placed."""

    backup_id: int
    node_ids: tuple[int, ...]


def read_journal(data_dir: Path) -> Journal | None:
    """The journal of a committed, unfinished restore into ``data_dir``, if there is one.

    Raises:
        RestoreError: the journal is unreadable (it is only ever replaced whole, so this is
            damage from outside).
    """
    path = data_dir / JOURNAL_FILE
    try:
        content = json.loads(path.read_bytes())
        return Journal(int(content["backupId"]), tuple(int(n) for n in content["nodeIds"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"The restore journal {path} is unreadable: {exc}") from exc


def unfinished_restore(data_dir: Path) -> str | None:
    """Why ``data_dir`` must not be used yet because of an interrupted restore, or None."""
    journal = read_journal(data_dir)
    if journal is not None:
        return (
            f"A restore of backup {journal.backup_id} into {data_dir} (brokers "
            f"{list(journal.node_ids)}) is unfinished: run `zeebe-sim restore --backup-id "
            f"{journal.backup_id}` with the same flags to finish it"
        )
    if (data_dir / STAGING_DIR).exists():
        return (
            f"An interrupted restore left its staging directory {data_dir / STAGING_DIR} (it "
            "changed no data directory): run `zeebe-sim restore` again, which removes it"
        )
    return None


def _write_journal(data_dir: Path, journal: Journal) -> None:
    """The commit point: write temp + fsync + rename + fsync(dir). The temporary file is in
    the staging directory, so that a crash before the rename leaves nothing outside it."""
    temp = data_dir / STAGING_DIR / "journal.tmp"
    content = {"backupId": journal.backup_id, "nodeIds": list(journal.node_ids)}
    with open(temp, "wb") as file:
        file.write(json.dumps(content).encode())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, data_dir / JOURNAL_FILE)
    fsync_directory(data_dir / STAGING_DIR)
    fsync_directory(data_dir)


def _place(data_dir: Path, journal: Journal, progress: Progress, crash_point: CrashPoint) -> None:
    """Rename every staged broker directory into place, then remove the journal; idempotent.

    Raises:
        RestoreError: a broker's directory can be neither placed nor found placed.
    """
    staging = data_dir / STAGING_DIR
    for node in journal.node_ids:
        stage, target = (
            layout.broker_dir(staging, NodeId(node)),
            layout.broker_dir(data_dir, NodeId(node)),
        )
        if stage.exists():
            try:
                # rename(2) replaces an empty directory atomically; a non-empty one refuses.
                os.replace(stage, target)
            except OSError as exc:
                raise RestoreError(
                    f"Cannot place broker {node}'s restored data into {target}: {exc}. "
                    f"{unfinished_restore(data_dir)}"
                ) from exc
            fsync_directory(staging)
            fsync_directory(data_dir)
            crash_point(f"placed broker {node}")
        elif not target.is_dir():
            raise RestoreError(
                f"The restore journal of backup {journal.backup_id} lists broker {node}, but "
                f"neither its staged data nor {target} exists; remove {data_dir} and restore "
                "again"
            )
        progress(f"Broker {node}: restored into {target}")
    if staging.exists():
        shutil.rmtree(staging)  # empty: every broker directory was moved out of it
        fsync_directory(data_dir)
        crash_point("removed the staging directory")
    (data_dir / JOURNAL_FILE).unlink()
    fsync_directory(data_dir)


def _fsync_tree(root: Path) -> None:
    """Every file and directory under ``root`` (itself included) durable."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(directory) / name)
        fsync_directory(Path(directory))


async def _restore_partition(
    store: BackupStore, backup: BackupStatus, directory: Path, progress: Progress
) -> None:
    descriptor = backup.descriptor
    assert descriptor is not None
    partition_id = backup.id.partition_id
    position = descriptor.checkpoint_position
    download = directory / layout.RESTORE_DOWNLOAD_DIR
    restored = await store.restore(backup.id, download)
    size = sum(p.stat().st_size for p in download.rglob("*") if p.is_file())
    progress(
        f"Partition {partition_id}: downloaded {len(restored.segment_files)} segment(s)"
        f"{' and snapshot ' + descriptor.snapshot_id if descriptor.snapshot_id else ''}"
        f" ({size / 1e6:.1f} MB) taken by node {backup.id.node_id}"
    )
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
