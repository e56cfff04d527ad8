"""The backup service of a broker: takes partition backups in the background, answers status,
list and delete for the partitions it leads.

Theory of operation (REFERENCE.md §4)
-------------------------------------
When a partition processes ``CHECKPOINT CREATE(id)`` into a new checkpoint of a type that takes
a backup, the partition calls :meth:`BackupService.on_backup_job` from its processing task,
between two groups, with the backup's plan (``broker/core.py``: the newest snapshot entirely
before the checkpoint, the segments from it on with their durable sizes; the checkpoint is
durable, it was flushed before the effects ran) and a :class:`BackupSource` that can hold what
the plan names. There, in well under a millisecond, the service holds the snapshot and the log
against deletion and compaction and notes the files. Everything slow happens afterwards in a
background task: look for existing copies (a COMPLETED one means there is nothing to do; an
IN_PROGRESS or FAILED one must not be overwritten), then ``store.save`` (manifest IN_PROGRESS,
files, re-check, COMPLETED; FAILED on any error). The reservation and the pin are released
either way.

A broker that starts marks every IN_PROGRESS copy of its partitions FAILED: nothing of it can
still be running (Zeebe does this only for the latest checkpoint, its issue #41200; we do it for
all).

A backup this service saved is confirmed through ``on_completed`` (the broker writes
``CONFIRM_BACKUP`` to the partition, which records it in its ranges). The other jobs, a sync of
the partition's runtime metadata to the store and the deletion of a backup (after
``DELETE_BACKUP``), run one at a time per partition, in the order they were committed
(reference backups-8.9-8.10.md A.4).

Every accepted backup ends COMPLETED or FAILED. Two holes are closed here:

- A failure the store could not take (unreachable, refusing writes), even before the manifest
  exists, is kept in memory (status answers FAILED from there) and written as a FAILED manifest
  once the store accepts it; a DELETE meanwhile drops it.
- A broker killed between the checkpoint (durable before the 202) and the first manifest left
  no trace in the store: Zeebe shows that backup INCOMPLETE for ever. After recovery,
  :meth:`BackupService.reconcile` looks at each partition's latest checkpoint: if the store has
  no copy of that backup and this partition never had one recorded, it records it FAILED
  ("not taken"). "Recorded" is a small durable note per partition (``RECORDED_FILE``: the
  highest checkpoint id whose backup the store is known to have held, written once a save ended
  or a failure was written); without it, a backup deleted by the user would come back FAILED.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import operator
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from broker.core import BackupJob, BackupPlan, BackupRemoval, BackupSource, MetadataSync, Release
from storage.backup.api import (
    Backup,
    BackupDescriptor,
    BackupIdentifier,
    BackupIdentifierWildcard,
    BackupStatus,
    BackupStore,
    FileRef,
    PartitionListing,
    RuntimeMetadata,
    best_copy,
)
from storage.backup.manifest import DELETING_REASON
from storage.durable import fsync_directory
from zeebe_sim.ground import VERSION, layout
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import BackupNotConfigured, SaveOvertaken, ZeebeSimError
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId, Position
from zeebe_sim.ground.protocol import ListBackupsResponse, PartitionBackupStatus
from zeebe_sim.ground.tasks import OwnedTasks, in_thread

log = logging.getLogger(__name__)

CANCELLED_ON_RESTART = "Backup is cancelled due to leader change."
NOT_TAKEN = "Backup was not taken: the broker restarted before it started it"
# In a partition's directory: the highest checkpoint id whose backup the store held (see above).
# Re-exported for the tests.
RECORDED_FILE = layout.BACKUP_RECORDED_FILE
# Retry of writing a failure to a store that was unreachable when the backup failed.
RECORD_RETRY_INITIAL_S = 1.0
RECORD_RETRY_MAX_S = 30.0
# Listings kept per partition to answer with a delta (one per prefix a gateway keeps, and one
# more for a lister that is a step behind).
LISTINGS_KEPT = 5
# Per backup id: its copies in the store and the best copy's status.
_BestCopies = dict[BackupId, tuple[list[BackupStatus], PartitionBackupStatus]]
_CHECKPOINT_ID = operator.attrgetter("id.checkpoint_id")


def _changed(before: _BestCopies, backup_id: BackupId, status: PartitionBackupStatus) -> bool:
    # An unchanged backup keeps its status object (see _best_copies): ``is`` finds it cheaply.
    found = before.get(backup_id)
    return found is None or (found[1] is not status and found[1] != status)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def detail(
    partition_id: PartitionId, backup_id: BackupId, status: BackupStatus | None
) -> PartitionBackupStatus:
    """One partition's status of a backup from its best copy; the fields a state shows
    (REFERENCE §1) are set, the others left out (the gateway leaves out the version of a FAILED
    copy in a status)."""
    if status is None or status.status_code is BackupState.DOES_NOT_EXIST:
        return PartitionBackupStatus(backup_id, partition_id, BackupState.DOES_NOT_EXIST)
    failed = status.status_code is BackupState.FAILED
    descriptor = status.descriptor
    shown = descriptor if descriptor is not None and not failed else None
    return PartitionBackupStatus(
        backup_id,
        partition_id,
        status.status_code,
        failure_reason=(status.failure_reason or "Unknown reason") if failed else None,
        created_at=iso(status.created_at),
        last_updated_at=iso(status.last_modified),
        snapshot_id=descriptor.snapshot_id if descriptor is not None else None,
        checkpoint_position=Position(shown.checkpoint_position) if shown is not None else None,
        broker_id=status.id.node_id if shown is not None else None,
        # On every existing copy, FAILED too (the list shows it on every entry, REFERENCE §1):
        # the version that wrote it, or, without a descriptor, the one that recorded it.
        broker_version=descriptor.broker_version if descriptor is not None else VERSION,
        first_log_position=(
            Position(descriptor.first_log_position)
            if descriptor is not None and descriptor.first_log_position is not None
            else None
        ),
        checkpoint_type=descriptor.checkpoint_type if descriptor is not None else None,
    )


class BackupService:
    def __init__(
        self,
        store: BackupStore | None,
        node_id: int,
        partition_count: int,
        partition_dir: Callable[[PartitionId], Path] | None = None,
        on_completed: Callable[[BackupPlan], None] | None = None,
    ) -> None:
        """``partition_dir`` gives a partition's data directory, where the "recorded" note
        lives; without it (tests of the service alone) nothing is noted. ``on_completed`` is
        called with the plan of every backup this service saved (the broker writes
        CONFIRM_BACKUP to the partition)."""
        self.store = store
        self.node_id = NodeId(node_id)
        self.partition_count = partition_count
        self._partition_dir = partition_dir
        # Checkpoints handed to this service since it started: not for reconcile to judge.
        self._handled: set[BackupIdentifier] = set()
        self._tasks = OwnedTasks(f"backups of node {node_id}")
        self._running: collections.Counter[int] = collections.Counter()
        # uploads in progress per partition (cancelled when its replica stops leading)
        self._uploads: dict[BackupIdentifier, asyncio.Task[None]] = {}
        # Saves that failed while the store could not record it (unreachable): reported by
        # status from here, and written to the store once it answers again.
        self._unrecorded_failures: dict[BackupIdentifier, tuple[str, datetime]] = {}
        self._on_completed = on_completed
        # Per partition, metadata syncs and deletions run one at a time, in commit order.
        self._metadata_locks: dict[int, asyncio.Lock] = {}
        # (partition, backup id) -> DELETE requests waiting for the store's deletion
        self._removals: dict[tuple[PartitionId, int], list[asyncio.Future[None]]] = {}
        # Per partition, the last few listings answered, by version: a lister holding one of
        # them is answered with what changed since.
        self._listed: dict[PartitionId, dict[str, _BestCopies]] = {}

    def _require_store(self) -> BackupStore:
        if self.store is None:
            raise BackupNotConfigured()
        return self.store

    async def check(self) -> None:
        """Fail fast at start-up on a store that cannot work (missing bucket, bad credentials,
        unreachable endpoint).

        Raises:
            BackupStoreError: with the reason, in one line.
        """
        check = getattr(self.store, "check", None)
        if check is not None:
            await check()

    async def wait_idle(self) -> None:
        """Wait until no backup is being taken (tests and benchmarks)."""
        await self._tasks.wait_idle()

    async def close(self) -> None:
        await self._tasks.stop()
        if self.store is not None:
            await self.store.close()

    # -- taking backups -----------------------------------------------------------------------

    def on_backup_job(self, job: BackupJob, source: BackupSource) -> None:
        """Called in the partition's processing task once a command with backup work is
        durable: take a backup, sync the store's metadata, or delete a backup."""
        if isinstance(job, BackupPlan):
            self.checkpoint_created(job, source)
        elif self.store is not None:
            self._tasks.spawn(self.run_metadata_job(job))

    async def run_metadata_job(self, job: MetadataSync | BackupRemoval) -> None:
        """Carry out a metadata sync or a deletion, after those of the same partition handed
        over before it (in commit order). A failure is logged and swallowed, as Zeebe does: the
        next sync writes the whole state again, a deletion can be repeated."""
        lock = self._metadata_locks.setdefault(job.partition_id, asyncio.Lock())
        partition_id = PartitionId(job.partition_id)
        async with lock:  # asyncio locks are fair: first come, first served
            try:
                if isinstance(job, MetadataSync):
                    await self._require_store().write_metadata(
                        RuntimeMetadata(
                            partition_id,
                            0,  # the store numbers it above what it holds
                            int(datetime.now(UTC).timestamp() * 1000),
                            job.checkpoints,
                            job.ranges,
                        )
                    )
                else:
                    await self.delete(partition_id, BackupId(job.checkpoint_id))
            except ZeebeSimError as exc:
                log.warning("partition %s: %s failed: %s", partition_id, job, exc.message)
            except Exception:
                log.exception("partition %s: %s failed", partition_id, job)
            if isinstance(job, BackupRemoval):
                for waiter in self._removals.pop((partition_id, job.checkpoint_id), []):
                    if not waiter.done():
                        waiter.set_result(None)

    def removal_done(self, partition_id: PartitionId, backup_id: BackupId) -> asyncio.Future[None]:
        """Resolves once the next deletion of this backup from the store has run."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._removals.setdefault((partition_id, backup_id), []).append(waiter)
        return waiter

    def checkpoint_created(self, plan: BackupPlan, source: BackupSource) -> None:
        """Called in the partition's processing task, right after the checkpoint is durable."""
        if self.store is None:
            return
        partition_id = plan.partition_id
        identifier = BackupIdentifier(
            self.node_id, PartitionId(partition_id), BackupId(plan.checkpoint_id)
        )
        self._handled.add(identifier)
        if plan.failure is not None:
            self._tasks.spawn(self._fail(identifier, plan.failure))
            return
        # Held before its files are listed: a snapshot persisted meanwhile (in a worker thread)
        # deletes older snapshots unless they are reserved.
        release_source = source.hold(plan)
        snapshot = plan.snapshot
        segments = {s.path.name: FileRef(s.path, s.size_bytes) for s in plan.segments}
        snapshot_files: dict[str, FileRef] = {}
        if snapshot is not None:
            try:
                for path in sorted(snapshot.directory.iterdir()):
                    snapshot_files[path.name] = FileRef(path, path.stat().st_size)
                checksum = snapshot.checksum_file
                snapshot_files[checksum.name] = FileRef(checksum, checksum.stat().st_size)
            except OSError as exc:
                release_source()
                self._tasks.spawn(self._fail(identifier, f"Cannot read the snapshot: {exc}"))
                return
        backup = Backup(
            identifier,
            BackupDescriptor(
                snapshot_id=str(snapshot.id) if snapshot is not None else None,
                checkpoint_position=plan.checkpoint_position,
                number_of_partitions=self.partition_count,
                broker_version=VERSION,
                first_log_position=plan.first_log_position,
                checkpoint_type=plan.checkpoint_type,
            ),
            snapshot_files,
            segments,
        )

        self._running[partition_id] += 1

        def release() -> None:
            release_source()
            self._running[partition_id] -= 1

        task = self._tasks.spawn(self._save(backup, plan, release))
        self._uploads[identifier] = task
        task.add_done_callback(lambda _: self._uploads.pop(identifier, None))

    def running(self, partition_id: int) -> int:
        """Backups of this partition being taken right now."""
        return self._running[partition_id]

    async def _fail(self, identifier: BackupIdentifier, reason: str) -> None:
        """Record the backup FAILED: now, or once the store accepts it. Existing copies are
        looked at first, as before a save: a COMPLETED copy wins before anything can fail the
        backup, and no existing copy is overwritten (REFERENCE §4.1)."""
        try:
            if await self._copies(identifier.partition_id, identifier.checkpoint_id):
                await self._note_recorded(identifier)
                return
        except ZeebeSimError as exc:  # unreachable: the failure is written once it answers
            log.debug("cannot look for copies of %s: %s", identifier, exc.message)
        self._unrecorded_failures[identifier] = (reason, datetime.now(UTC))
        await self._record_failure(identifier)

    async def _save(self, backup: Backup, plan: BackupPlan, release: Release) -> None:
        try:
            recorded = await self._store_backup(backup)
        finally:
            release()
        if recorded:
            await self._note_recorded(backup.id)
        if recorded == "saved" and self._on_completed is not None:
            try:
                self._on_completed(plan)
            except Exception:
                log.exception("cannot confirm %s", backup.id)

    async def _store_backup(self, backup: Backup) -> Literal["saved", "recorded", ""]:
        """Save the backup unless a copy exists: "saved" (by us, or a COMPLETED copy exists),
        "recorded" (the store has its outcome, not a completed backup), "" (the failure is
        kept here and written later)."""
        store = self._require_store()
        identifier = backup.id
        try:
            copies = await self._copies(identifier.partition_id, identifier.checkpoint_id)
            best = best_copy(copies)
            if best is not None and best.status_code == BackupState.COMPLETED:
                log.info("%s already completed (node %s)", identifier, best.id.node_id)
                return "saved"
            if best is not None and best.status_code != BackupState.DOES_NOT_EXIST:
                # Do not overwrite: an IN_PROGRESS or FAILED copy exists (REFERENCE §4.1).
                log.warning("%s exists as %s: not taken again", identifier, best.status_code.name)
                return "recorded"
            await store.save(backup)
            log.info("%s completed", identifier)
        except SaveOvertaken as exc:
            log.warning("%s: %s", identifier, exc.message)
            return "recorded"
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, ZeebeSimError) else f"{type(exc).__name__}: {exc}"
            )
            log.error(
                "%s failed: %s", identifier, message, exc_info=not isinstance(exc, ZeebeSimError)
            )
            # The store marks a failed save FAILED itself, unless it cannot be reached (S3
            # down), refused the manifest or the error is a bug of ours: so the failure is
            # also kept here until the store has it for sure.
            self._unrecorded_failures[identifier] = (message, datetime.now(UTC))
            self._tasks.spawn(self._record_failure(identifier))
            return ""
        return "saved"

    async def _record_failure(self, identifier: BackupIdentifier) -> None:
        store = self._require_store()
        delay_s = RECORD_RETRY_INITIAL_S
        while identifier in self._unrecorded_failures:
            reason, _ = self._unrecorded_failures[identifier]
            try:
                # An IN_PROGRESS manifest is ours to fail, and an absent one is created FAILED
                # (the failure came before the manifest: without it the backup would be 404
                # for ever). A DELETE meanwhile dropped the failure from the dict (checked
                # again after the await), so a deleted backup does not come back.
                status = await store.get_status(identifier)
                if status.status_code in (
                    BackupState.IN_PROGRESS,
                    BackupState.DOES_NOT_EXIST,
                ) and (identifier in self._unrecorded_failures):
                    await store.mark_failed(identifier, reason)
            except ZeebeSimError as exc:
                log.debug("cannot record that %s failed yet: %s", identifier, exc.message)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECORD_RETRY_MAX_S)
                continue
            self._unrecorded_failures.pop(identifier, None)
            await self._note_recorded(identifier)

    # -- after a restart: checkpoints whose backup never started ------------------------------

    def reconcile(self, partition_id: int, checkpoint_id: int) -> None:
        """Called once a partition has recovered, with its latest checkpoint: a backup that
        was accepted (the checkpoint is durable before the 202) but never reached the store,
        because the broker died first, is recorded FAILED instead of staying INCOMPLETE."""
        if self.store is None or checkpoint_id <= 0:
            return
        identifier = BackupIdentifier(
            self.node_id, PartitionId(partition_id), BackupId(checkpoint_id)
        )
        if identifier not in self._handled:
            self._tasks.spawn(self._reconcile(identifier))

    async def _reconcile(self, identifier: BackupIdentifier) -> None:
        partition_id, checkpoint_id = identifier.partition_id, identifier.checkpoint_id
        note = self._recorded_path(partition_id)
        if note is not None and await in_thread(_read_recorded, note) >= checkpoint_id:
            return  # the store had it: absent now means deleted
        delay_s = RECORD_RETRY_INITIAL_S
        while True:
            try:
                copies = await self._copies(partition_id, checkpoint_id)
                break
            except ZeebeSimError as exc:
                log.debug("cannot look for copies of %s yet: %s", identifier, exc.message)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECORD_RETRY_MAX_S)
        if copies:
            await self._note_recorded(identifier)
            return
        log.warning("%s was accepted but never started: recording it FAILED", identifier)
        await self._fail(identifier, NOT_TAKEN)

    def _recorded_path(self, partition_id: PartitionId) -> Path | None:
        if self._partition_dir is None:
            return None
        return self._partition_dir(partition_id) / RECORDED_FILE

    async def _note_recorded(self, identifier: BackupIdentifier) -> None:
        note = self._recorded_path(identifier.partition_id)
        if note is None:
            return
        try:
            await in_thread(_write_recorded, note, identifier.checkpoint_id)
        except OSError as exc:
            log.error("cannot note that the store has %s: %s", identifier, exc)

    # -- queries ------------------------------------------------------------------------------

    async def _copies(self, partition_id: PartitionId, backup_id: BackupId) -> list[BackupStatus]:
        store = self._require_store()
        return await store.list(
            BackupIdentifierWildcard(partition_id=partition_id, checkpoint_id=backup_id)
        )

    async def status(self, partition_id: PartitionId, backup_id: BackupId) -> PartitionBackupStatus:
        identifier = BackupIdentifier(self.node_id, partition_id, backup_id)
        unrecorded = self._unrecorded_failures.get(identifier)
        if unrecorded is not None:
            # Known here while the store may still say IN_PROGRESS (or not answer at all).
            reason, when = unrecorded
            failed = BackupStatus(identifier, BackupState.FAILED, None, reason, when, when)
            return detail(partition_id, backup_id, failed)
        copies = await self._copies(partition_id, backup_id)
        return detail(partition_id, backup_id, best_copy(copies))

    async def list_backups(
        self, partition_id: PartitionId, prefix: str | None, known_version: str | None = None
    ) -> ListBackupsResponse:
        """Each backup's best copy whose id starts with ``prefix``, with the listing's version;
        only what changed since ``known_version`` where this service still holds that
        listing (the last few it answered with)."""
        listing = await self._require_store().partition_listing(partition_id)
        if listing.version is not None and listing.version == known_version:
            return ListBackupsResponse([], listing.version, delta=True)
        kept = self._listed.setdefault(partition_id, {})
        current = self._best_copies(partition_id, listing, kept)
        if listing.version is not None:
            kept.pop(listing.version, None)
            kept[listing.version] = current
            while len(kept) > LISTINGS_KEPT:
                del kept[next(iter(kept))]

        def wanted(backup_id: BackupId) -> bool:
            return not prefix or str(backup_id).startswith(prefix)

        known = kept.get(known_version) if known_version is not None else None
        if known is None:
            statuses = [s for i, (_, s) in sorted(current.items()) if wanted(i)]
            return ListBackupsResponse(statuses, listing.version)
        changed = [s for i, (_, s) in current.items() if wanted(i) and _changed(known, i, s)]
        return ListBackupsResponse(
            changed,
            listing.version,
            delta=True,
            removed=[i for i in known if i not in current and wanted(i)],
        )

    def _best_copies(
        self,
        partition_id: PartitionId,
        listing: PartitionListing,
        kept: dict[str, _BestCopies],
    ) -> _BestCopies:
        """Per backup id, its copies and the best one's status; a backup whose copies are the
        ones of the newest kept listing keeps that listing's status object."""
        if listing.version is not None and listing.version in kept:
            return kept[listing.version]
        last = kept[next(reversed(kept))] if kept else {}
        best: _BestCopies = {}
        # A listing is sorted by checkpoint: its copies are neighbours.
        for backup_id, group in itertools.groupby(listing.statuses, _CHECKPOINT_ID):
            copies = list(group)
            before = last.get(backup_id)
            if before is not None and before[0] == copies:
                best[backup_id] = before
            else:
                best[backup_id] = (copies, detail(partition_id, backup_id, best_copy(copies)))
        return best

    async def delete(self, partition_id: PartitionId, backup_id: BackupId) -> None:
        """Delete every copy; an IN_PROGRESS one is marked FAILED first, so that a save still
        running fails its re-check instead of writing COMPLETED (REFERENCE §4)."""
        store = self._require_store()
        # A failure not written yet (perhaps no manifest exists at all) must not come back.
        self._unrecorded_failures.pop(
            BackupIdentifier(self.node_id, PartitionId(partition_id), BackupId(backup_id)), None
        )
        for copy in await self._copies(partition_id, backup_id):
            self._unrecorded_failures.pop(copy.id, None)
            if copy.status_code == BackupState.IN_PROGRESS:
                await store.mark_failed(copy.id, DELETING_REASON)
            await store.delete(copy.id)

    def leader_changed(self, partition_id: int, leading: bool, checkpoint_id: int) -> None:
        """A replica of this broker became the leader of a partition (after replaying the
        committed log; ``checkpoint_id`` its latest), or stopped being it.

        New leader: every IN_PROGRESS copy of the partition's backups, whoever took it, can no
        longer finish: it is recorded FAILED with the leader-change reason (all of them, not
        only the latest as Zeebe does), except what this broker uploads now; and the latest
        checkpoint is reconciled as after a restart. Old leader: its uploads of the partition
        stop; their holds on the snapshot and segments are released."""
        if self.store is None:
            return
        if leading:
            self._tasks.spawn(self._fail_others_in_progress(PartitionId(partition_id)))
            self.reconcile(partition_id, checkpoint_id)
            return
        for identifier, task in list(self._uploads.items()):
            if identifier.partition_id == partition_id:
                log.warning("%s: upload cancelled, no longer the partition's leader", identifier)
                task.cancel()

    async def _fail_others_in_progress(self, partition_id: PartitionId) -> None:
        store = self._require_store()
        for status in await store.list(BackupIdentifierWildcard(partition_id=partition_id)):
            if status.status_code == BackupState.IN_PROGRESS and status.id not in self._uploads:
                log.warning("marking %s FAILED: the partition's leader changed", status.id)
                await store.mark_failed(status.id, CANCELLED_ON_RESTART)

    async def fail_in_progress(self, partition_ids: list[int]) -> None:
        """At start-up: nothing of this partition's backups can still be running."""
        if self.store is None:
            return
        for partition_id in partition_ids:
            statuses = await self.store.list(
                BackupIdentifierWildcard(partition_id=PartitionId(partition_id))
            )
            for status in statuses:
                if status.status_code == BackupState.IN_PROGRESS:
                    log.warning("marking %s FAILED: the broker restarted", status.id)
                    await self.store.mark_failed(status.id, CANCELLED_ON_RESTART)


def _read_recorded(note: Path) -> int:
    try:
        return int(note.read_text())
    except (FileNotFoundError, ValueError):
        return 0  # a torn note cannot exist (replaced whole), but must not stop a start


def _write_recorded(note: Path, checkpoint_id: int) -> None:
    """Raise the note to ``checkpoint_id``, durably (write temp + fsync + rename + fsync dir)."""
    if _read_recorded(note) >= checkpoint_id:
        return
    temp = note.with_name(f"{note.name}.tmp")
    with open(temp, "w") as file:
        file.write(str(checkpoint_id))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, note)
    fsync_directory(note.parent)
