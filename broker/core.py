"""The pure core of a partition: what to write, send, retry, snapshot and back up.

Theory of operation
-------------------
A partition is an asyncio shell (``broker/partition.py``) around this core; the in-process
simulation (``zeebe_sim/simulation.py``) drives the very same core without sockets or clocks.
Everything here is synchronous, reads no clock and touches no file: the shell passes the time
(``now_ms``, a monotonic clock) and a read-only view of what is on disk, and carries out what
comes back.

The rules, one place each:

- **Writing a command**: a command is encoded before it is written (:meth:`PartitionCore.prepare`);
  one the log cannot hold is answered with a ``PROCESSING_ERROR`` rejection and not written (no
  input may stop a partition). Processing errors of written commands are contained by the
  engine (``Engine.process``).
- **Checkpoint first on receive** (REFERENCE.md §3): a command from another partition carrying a
  checkpoint id above ours is preceded by our own ``CHECKPOINT CREATE(id)``
  (:meth:`PartitionCore.checkpoint_before`). Every command that leaves carries our checkpoint id,
  or ``NO_CHECKPOINT`` when propagation is off (:meth:`PartitionCore.stamp`).
- **Retries**: a send with a ``retry_key`` is re-sent 10 s after it left, then with a backoff
  doubling up to 5 min (both configurable), until a later command resolves the key. After a
  start the schedule is derived from state: everything pending is due at once
  (:meth:`PartitionCore.reset_retries`).
- **Snapshots**: due every ``snapshot_period_s``; taken only when there is something new (a
  processed position and an id above the newest snapshot's), one at a time.
- **Compaction**: below the newest snapshot's processed position, but never past a position a
  running backup holds; with continuous backups, never past the last backed-up position
  either, so that every segment not yet in a backup is kept and ranges stay contiguous.
- **Backups** (REFERENCE.md §4 step 2-3): :func:`plan_backup` picks the newest snapshot entirely
  before the checkpoint and the log segments from it on (with continuous backups, from the
  position after the last backup on, so that the new backup continues its range).
  :meth:`PartitionCore.backup_jobs` turns the engine's backup work into what the backup service
  does: take a backup (a plan), sync the store's metadata (the checkpoints and ranges now), or
  delete a backup. The backup service receives that plan
  (data) and a :class:`BackupSource` that can only hold what the plan names and release it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from broker.engine.processor import (
    BackupWork,
    Engine,
    ProcessingResult,
    Response,
    RetryKey,
    Send,
    SyncMetadata,
    TakeBackup,
)
from storage.log import SegmentInfo
from storage.snapshots import Snapshot, SnapshotId
from zeebe_sim.ground.backups import CheckpointInfo, CheckpointType
from zeebe_sim.ground.ids import NO_CHECKPOINT
from zeebe_sim.ground.records import Record, RecordType, ValueType, encode_records


@attrs.define
class PartitionConfig:
    snapshot_period_s: float = 300.0
    segment_bytes_max: int = 64 * 1024 * 1024
    retry_initial_s: float = 10.0
    retry_max_s: float = 300.0
    checkpoint_propagation: bool = True
    # Continuous backups (reference backups-8.9-8.10.md A.2): compaction and backup plans keep
    # the log from the last backed-up position on.
    continuous_backups: bool = False


@attrs.frozen
class Command:
    """A command to write to the log, as it arrives (from a client, a timer or a partition)."""

    value_type: str
    intent: str
    key: int
    value: dict[str, Any]
    # the sender's checkpoint id, for commands from other partitions (REFERENCE.md §3)
    checkpoint_id: int = NO_CHECKPOINT

    def record(self, position: int, timestamp_ms: int) -> Record:
        """The command as the log holds it, at ``position``."""
        return Record(
            position=position,
            source_position=-1,
            key=self.key,
            timestamp_ms=timestamp_ms,
            record_type=RecordType.COMMAND,
            value_type=self.value_type,
            intent=self.intent,
            value=self.value,
        )


@attrs.frozen
class Prepared:
    """A command ready to be written at its position, or the answer if it cannot be."""

    record: Record
    payload: bytes  # the log entry holding just the command
    rejected: ProcessingResult | None = None  # set: not written, answer this instead


@attrs.frozen
class Outgoing:
    """An inter-partition command to hand to the network, stamped with our checkpoint id."""

    send: Send
    checkpoint_id: int


@attrs.define
class _Retry:
    send: Send
    due_ms: int
    backoff_ms: int


@attrs.frozen
class PartitionView:
    """What the core needs to know of a partition's files, read by the shell."""

    processed_position: int
    last_index: int  # of the log's last entry
    latest_snapshot: Snapshot | None


class PartitionCore:
    """The decisions of one partition (see the module docstring)."""

    def __init__(self, engine: Engine, config: PartitionConfig) -> None:
        self.engine = engine
        self.config = config
        self._retries: dict[RetryKey, _Retry] = {}
        self._last_snapshot_ms: int | None = None
        self.snapshotting = False
        # owner -> the first log position it needs (a running backup)
        self._log_holds: dict[object, int] = {}

    # -- writing commands ---------------------------------------------------------------------

    @staticmethod
    def prepare(command: Command, position: int, timestamp_ms: int) -> Prepared:
        """The command as the log entry to write at ``position``. A command whose value cannot
        be encoded (an integer beyond msgpack's range, a type it does not know: possible only
        from a sender inside this process, the wire decodes nothing of the kind) is rejected
        with PROCESSING_ERROR instead of being written."""
        record = command.record(position, timestamp_ms)
        try:
            return Prepared(record, encode_records([record]))
        except (OverflowError, TypeError, ValueError) as exc:
            reason = (
                f"Expected to write {command.value_type} {command.intent}, but it cannot be "
                f"encoded: {type(exc).__name__}: {exc}"
            )
            response = Response(
                command.key,
                command.value_type,
                command.intent,
                {},
                "PROCESSING_ERROR",
                reason,
            )
            return Prepared(record, b"", ProcessingResult(response=response, error=exc))

    # -- checkpoints on inter-partition commands ----------------------------------------------

    def stamp(self) -> int:
        """The checkpoint id every command leaving this partition carries."""
        if not self.config.checkpoint_propagation:
            return NO_CHECKPOINT
        return self.engine.state.checkpoint_id

    def checkpoint_before(self, command: Command) -> Command | None:
        """The ``CHECKPOINT CREATE`` to write before ``command``, if it was sent after a
        checkpoint we have not taken yet: then it can never be received before our own
        checkpoint (no orphan receive, REFERENCE.md §3)."""
        if not self.config.checkpoint_propagation:
            return None
        if command.checkpoint_id <= self.engine.state.checkpoint_id:
            return None
        # A MARKER: the sender's request for this id (which says whether it takes a backup)
        # may still be on its way; if it does, it turns this checkpoint into a backup.
        checkpoint_id = command.checkpoint_id
        value = {"checkpointId": checkpoint_id, "checkpointType": CheckpointType.MARKER.value}
        return Command(ValueType.CHECKPOINT, "CREATE", checkpoint_id, value)

    # -- after processing: sends and retries --------------------------------------------------

    def outgoing(self, result: ProcessingResult, now_ms: int) -> list[Outgoing]:
        """The sends of a processed (and durable) command; resolves and schedules retries.

        The stamp is read now, not when the command was processed: it may be higher (a later
        command of the same group created a checkpoint). That is safe: a receiver then
        checkpoints early and the command counts as in flight; only a lower id could make an
        orphan receive.
        """
        for key in result.resolved:
            self._retries.pop(key, None)
        checkpoint_id = self.stamp()
        initial_ms = _ms(self.config.retry_initial_s)
        for send in result.sends:
            if send.retry_key is not None:
                self._retries[send.retry_key] = _Retry(send, now_ms + initial_ms, initial_ms)
        return [Outgoing(send, checkpoint_id) for send in result.sends]

    def reset_retries(self, now_ms: int) -> None:
        """Derive the retry schedule from state (a started or restored partition): everything
        still unacknowledged is due now."""
        initial_ms = _ms(self.config.retry_initial_s)
        self._retries = {}
        for send in self.engine.pending_sends():
            assert send.retry_key is not None
            self._retries[send.retry_key] = _Retry(send, now_ms, initial_ms)

    def due_retries(self, now_ms: int) -> list[Outgoing]:
        """The sends to repeat now; each is rescheduled with its backoff doubled (up to the
        maximum)."""
        checkpoint_id = self.stamp()
        max_ms = _ms(self.config.retry_max_s)
        due: list[Outgoing] = []
        for retry in self._retries.values():
            if retry.due_ms <= now_ms:
                due.append(Outgoing(retry.send, checkpoint_id))
                retry.due_ms = now_ms + retry.backoff_ms
                retry.backoff_ms = min(retry.backoff_ms * 2, max_ms)
        return due

    # -- snapshots and compaction -------------------------------------------------------------

    def snapshot_due(self, now_ms: int) -> bool:
        """Whether the snapshot period has passed (counted from the first call)."""
        if self._last_snapshot_ms is None:
            self._last_snapshot_ms = now_ms
        if now_ms - self._last_snapshot_ms < _ms(self.config.snapshot_period_s):
            return False
        self._last_snapshot_ms = now_ms
        return True

    def begin_snapshot(self, view: PartitionView) -> SnapshotId | None:
        """The id of the snapshot to take now, or None: one is being taken already, or there
        is nothing new to snapshot. Call :meth:`snapshot_ended` once it is persisted or failed."""
        if self.snapshotting or view.processed_position == 0:
            return None
        snapshot_id = SnapshotId(
            index=view.last_index,
            term=1,
            processed_position=view.processed_position,
            exported_position=view.processed_position,
        )
        if view.latest_snapshot is not None and view.latest_snapshot.id >= snapshot_id:
            return None
        self.snapshotting = True
        return snapshot_id

    def snapshot_ended(self) -> None:
        self.snapshotting = False

    def hold_log(self, owner: object, position: int) -> None:
        """Keep the log from ``position`` on (a running backup needs those segments)."""
        self._log_holds[owner] = position

    def release_log(self, owner: object) -> None:
        self._log_holds.pop(owner, None)

    def compaction_floor(self, latest_snapshot: Snapshot | None) -> int | None:
        """The first position the log must keep (None: keep everything, no snapshot yet)."""
        if latest_snapshot is None:
            return None
        floors = [latest_snapshot.processed_position + 1, *self._log_holds.values()]
        backed_up = self._backed_up_floor()
        if backed_up is not None:
            floors.append(backed_up)
        return min(floors)

    def _backed_up_floor(self) -> int | None:
        """With continuous backups, the first position no backup holds yet (1 before the
        first backup); None otherwise."""
        if not self.config.continuous_backups:
            return None
        latest = self.engine.state.backup_info.get("backup")
        return 1 if latest is None else latest["checkpointPosition"] + 1

    # -- backups ------------------------------------------------------------------------------

    def backup_jobs(
        self,
        partition_id: int,
        work: Iterable[BackupWork],
        snapshots: Sequence[Snapshot],
        segments: Iterable[SegmentInfo],
    ) -> list[BackupJob]:
        """What the backup service does for the backup work of a durable command."""
        jobs: list[BackupJob] = []
        for item in work:
            if isinstance(item, TakeBackup):
                jobs.append(
                    plan_backup(
                        partition_id,
                        item.checkpoint_id,
                        item.checkpoint_position,
                        snapshots,
                        segments,
                        checkpoint_type=item.checkpoint_type,
                        keep_from_position=self._backed_up_floor(),
                    )
                )
            elif isinstance(item, SyncMetadata):
                _, _, ranges = self.engine.backup_runtime_state()
                jobs.append(MetadataSync(partition_id, self.engine.restore_points(), ranges))
            else:
                jobs.append(BackupRemoval(partition_id, item.checkpoint_id))
        return jobs


# -- backups ----------------------------------------------------------------------------------


@attrs.frozen
class BackupPlan:
    """What one partition backup is made of (REFERENCE.md §4 steps 2-3); ``failure`` set means
    no backup can be taken (no snapshot entirely before the checkpoint, though one exists)."""

    partition_id: int
    checkpoint_id: int
    checkpoint_position: int
    snapshot: Snapshot | None = None
    # the log from this position on must be kept while the backup runs
    log_from_position: int = 1
    segments: tuple[SegmentInfo, ...] = ()
    failure: str | None = None
    checkpoint_type: CheckpointType = CheckpointType.MANUAL_BACKUP

    @property
    def first_log_position(self) -> int | None:
        """The first log position the backup's segments hold."""
        return self.segments[0].first_position if self.segments else None


@attrs.frozen
class MetadataSync:
    """Write the partition's checkpoints and ranges (start, end ids) to the store."""

    partition_id: int
    checkpoints: list[CheckpointInfo]
    ranges: list[tuple[int, int]]


@attrs.frozen
class BackupRemoval:
    """Delete a backup of the partition from the store."""

    partition_id: int
    checkpoint_id: int


BackupJob = BackupPlan | MetadataSync | BackupRemoval


def plan_backup(
    partition_id: int,
    checkpoint_id: int,
    checkpoint_position: int,
    snapshots: Sequence[Snapshot],
    segments: Iterable[SegmentInfo],
    *,
    checkpoint_type: CheckpointType = CheckpointType.MANUAL_BACKUP,
    keep_from_position: int | None = None,
) -> BackupPlan:
    """Plan the backup of a checkpoint just created at ``checkpoint_position``.

    ``snapshots`` oldest first; ``segments`` as durable now (the checkpoint is durable, so
    every segment reaches it; later ones are included, restore truncates them).
    ``keep_from_position`` (continuous backups): the log from there on is included too, so
    that the backup continues the range of the previous one.
    """
    valid = [
        s
        for s in snapshots
        if s.processed_position < checkpoint_position
        and s.last_followup_event_position < checkpoint_position
    ]
    if snapshots and not valid:
        return BackupPlan(
            partition_id,
            checkpoint_id,
            checkpoint_position,
            failure=(
                f"Cannot find a snapshot that can be included in the backup {checkpoint_id}. "
                f"All available snapshots ({', '.join(str(s.id) for s in snapshots)}) have "
                "processedPosition or lastFollowupEventPosition >= checkpointPosition "
                f"{checkpoint_position}"
            ),
            checkpoint_type=checkpoint_type,
        )
    snapshot = valid[-1] if valid else None
    floor = snapshot.processed_position + 1 if snapshot is not None else 1
    if keep_from_position is not None:
        floor = min(floor, keep_from_position)
    return BackupPlan(
        partition_id,
        checkpoint_id,
        checkpoint_position,
        snapshot,
        floor,
        tuple(s for s in segments if s.last_position >= floor),
        checkpoint_type=checkpoint_type,
    )


Release = Callable[[], None]


class BackupSource(Protocol):
    """All a backup service may do with a partition: hold what a plan names, then release."""

    def hold(self, plan: BackupPlan) -> Release:
        """Keep the plan's snapshot and its log from ``log_from_position`` until the returned
        function is called (once)."""
        ...


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
