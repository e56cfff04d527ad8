"""The checkpoint scheduler and backup retention (reference backups-8.9-8.10.md A.5).

Theory of operation
-------------------
Both jobs are cluster singletons: they run on the live broker with the lowest node id (the
membership the brokers gossip says who is live), so they move when that broker dies and come
back when it returns.

The decisions are pure and take the time:

- :func:`scheduler_step` is Zeebe's ``CheckpointScheduler``: from the cluster's runtime state
  (each partition's latest checkpoint and latest backup), the last checkpoint and the last backup
  are those of the partition furthest behind (the smallest id). The next MARKER is due one
  ``checkpoint_interval`` after the last checkpoint, the next SCHEDULED_BACKUP at the backup
  schedule's next run after the last backup. The backup wins when it comes first or within
  :data:`SKIP_CHECKPOINT_MS` of the marker. A past-due action fires at once; after firing, the
  next wait is to the nearer of both next runs counted from now. One deviation: the skip
  threshold is at most half the checkpoint interval, so that markers more frequent than every
  4 s still fire between backups (with Zeebe's fixed 2 s, markers every 0.5 s and backups every
  2 s would never produce a marker).
- :func:`retention_deletions` is Zeebe's ``BackupRetention`` per partition (anchor: the newest
  COMPLETED backup of the partition; everything older than ``anchor - window`` goes, whatever
  its state, except the anchor), with Zeebe's bug #62394 fixed: the newest backup id that is
  COMPLETED on every partition is never deleted, so a restore always has a complete backup.

:class:`SchedulerLoop` is the thin asyncio shell: it asks the cluster (a :class:`Cluster`, the
broker's requests to partition leaders) and sleeps; errors back off from 1 s by 1.2x up to 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final, Protocol

import attrs

from broker.schedule import IntervalSchedule, Schedule
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.protocol import PartitionBackupStatus

log = logging.getLogger(__name__)

SKIP_CHECKPOINT_MS: Final = 2000
BACKOFF_INITIAL_MS: Final = 1000
BACKOFF_FACTOR: Final = 1.2
BACKOFF_MAX_MS: Final = 10_000


@attrs.frozen
class SchedulerConfig:
    """The continuous and scheduled backup settings (reference A.2)."""

    continuous: bool = False
    schedule: Schedule | None = None  # SCHEDULED_BACKUP checkpoints; None: none
    checkpoint_interval_ms: int = 0  # MARKER checkpoints; 0: none
    offset: int = 0  # added to generated ids
    retention_window_ms: int = 0  # 0: no retention
    cleanup_schedule: Schedule | None = None  # when retention runs; None: never

    @property
    def generates_ids(self) -> bool:
        """Whether backup ids are generated (epoch ms + offset) rather than given."""
        return self.continuous or self.schedule is not None or self.checkpoint_interval_ms > 0

    @property
    def schedules_checkpoints(self) -> bool:
        return self.schedule is not None or self.checkpoint_interval_ms > 0

    @property
    def retains(self) -> bool:
        return self.retention_window_ms > 0 and self.cleanup_schedule is not None


def generate_backup_id(now_ms: int, offset: int) -> int:
    """Zeebe's ``CheckpointIdGenerator``: the wall clock in epoch ms, plus the offset."""
    return now_ms + offset if offset > 0 else now_ms


# -- the checkpoint scheduler -----------------------------------------------------------------


@attrs.frozen
class Step:
    """What the scheduler does now: fire a checkpoint of ``fire`` (None: nothing is due), then
    wait ``wait_ms``."""

    fire: CheckpointType | None
    wait_ms: int


def scheduler_step(
    config: SchedulerConfig,
    checkpoints: Sequence[CheckpointInfo | None],
    backups: Sequence[CheckpointInfo | None],
    now_ms: int,
) -> Step:
    """One round of the scheduler, from every partition's latest checkpoint and latest backup
    (None: the partition has none)."""
    markers = (
        IntervalSchedule(config.checkpoint_interval_ms, "")
        if config.checkpoint_interval_ms > 0
        else None
    )
    action = _next_action(
        markers,
        config.schedule,
        _furthest_behind(checkpoints),
        _furthest_behind(backups),
        now_ms,
        min(SKIP_CHECKPOINT_MS, config.checkpoint_interval_ms // 2),
    )
    if action is None:
        return Step(None, BACKOFF_MAX_MS)
    kind, at_ms = action
    if at_ms > now_ms:
        return Step(None, at_ms - now_ms)
    # Fired: wait for the nearer of both next runs, counted from now.
    nexts = [s.next_ms(now_ms) for s in (markers, config.schedule) if s is not None]
    return Step(kind, max(min(nexts) - now_ms, 1))


def _furthest_behind(infos: Sequence[CheckpointInfo | None]) -> int | None:
    """The timestamp of the smallest checkpoint id among the partitions' (None if any
    partition has none: its first one is due)."""
    if not infos or any(i is None for i in infos):
        return None
    oldest = min((i for i in infos if i is not None), key=lambda i: i.checkpoint_id)
    return oldest.checkpoint_timestamp_ms


def _next_action(
    markers: Schedule | None,
    backups: Schedule | None,
    last_checkpoint_ms: int | None,
    last_backup_ms: int | None,
    now_ms: int,
    skip_ms: int,
) -> tuple[CheckpointType, int] | None:
    next_marker = next_backup = None
    if markers is not None:
        last = last_checkpoint_ms if last_checkpoint_ms is not None else markers.previous_ms(now_ms)
        next_marker = markers.next_ms(last)
    if backups is not None:
        last = last_backup_ms if last_backup_ms is not None else backups.previous_ms(now_ms)
        next_backup = backups.next_ms(last)
    if next_backup is not None and (
        next_marker is None
        or next_backup <= next_marker
        or abs(next_marker - next_backup) <= skip_ms
    ):
        return CheckpointType.SCHEDULED_BACKUP, next_backup
    if next_marker is not None:
        return CheckpointType.MARKER, next_marker
    return None


def next_backoff_ms(backoff_ms: int | None) -> int:
    """The wait after a failed round: 1 s, then 1.2x the last, at most 10 s."""
    if backoff_ms is None:
        return BACKOFF_INITIAL_MS
    return min(round(backoff_ms * BACKOFF_FACTOR), BACKOFF_MAX_MS)


# -- retention --------------------------------------------------------------------------------


def retention_deletions(
    statuses: Mapping[PartitionId, Sequence[PartitionBackupStatus]], window_ms: int
) -> dict[PartitionId, list[int]]:
    """Per partition, the backup ids retention deletes (reference A.5, with #62394 fixed)."""
    complete_everywhere = _newest_complete_everywhere(statuses)
    deletions: dict[PartitionId, list[int]] = {}
    for partition_id, copies in statuses.items():
        dated = [(ms, s) for s in copies if (ms := _timestamp_ms(s)) is not None]
        completed = [(ms, s) for ms, s in dated if s.state is BackupState.COMPLETED]
        if not completed:
            continue
        anchor_ms, anchor = max(completed, key=lambda c: (c[0], c[1].backup_id))
        bound_ms = anchor_ms - window_ms
        doomed: list[int] = sorted(
            s.backup_id
            for ms, s in dated
            if ms < bound_ms
            and s.backup_id != anchor.backup_id
            and s.backup_id != complete_everywhere
            and s.state is not BackupState.DOES_NOT_EXIST
        )
        if doomed:
            deletions[partition_id] = doomed
    return deletions


def _newest_complete_everywhere(
    statuses: Mapping[PartitionId, Sequence[PartitionBackupStatus]],
) -> int | None:
    complete: set[int] | None = None
    for copies in statuses.values():
        ids: set[int] = {s.backup_id for s in copies if s.state is BackupState.COMPLETED}
        complete = ids if complete is None else complete & ids
    return max(complete) if complete else None


def _timestamp_ms(status: PartitionBackupStatus) -> int | None:
    """When the backup was taken: created, else last updated (ISO-8601 with Z)."""
    text = status.created_at or status.last_updated_at
    if text is None:
        return None
    return round(datetime.fromisoformat(text).timestamp() * 1000)


# -- the asyncio shell ------------------------------------------------------------------------


class Cluster(Protocol):
    """What the jobs ask of the cluster (requests to each partition's leader)."""

    async def runtime_states(self) -> list[tuple[CheckpointInfo | None, CheckpointInfo | None]]:
        """Every partition's (latest checkpoint, latest backup)."""
        ...

    async def checkpoint(self, checkpoint_id: int, checkpoint_type: CheckpointType) -> None:
        """Create the checkpoint on every partition."""
        ...

    async def backups(self) -> dict[PartitionId, list[PartitionBackupStatus]]:
        """Every partition's backups (best copy per id)."""
        ...

    async def delete_backup(self, partition_id: PartitionId, backup_id: int) -> None: ...


class SchedulerLoop:
    """Runs the scheduler and retention while this broker is the lowest live one."""

    def __init__(
        self,
        config: SchedulerConfig,
        cluster: Cluster,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.config = config
        self.cluster = cluster
        self._wall_ms = wall_ms

    async def run_scheduler(self) -> None:
        backoff_ms: int | None = None
        while True:
            try:
                states = await self.cluster.runtime_states()
                now_ms = self._wall_ms()
                step = scheduler_step(
                    self.config, [c for c, _ in states], [b for _, b in states], now_ms
                )
                if step.fire is not None:
                    checkpoint_id = generate_backup_id(now_ms, self.config.offset)
                    await self.cluster.checkpoint(checkpoint_id, step.fire)
                wait_ms, backoff_ms = step.wait_ms, None
            except (ZeebeSimError, OSError) as exc:
                backoff_ms = next_backoff_ms(backoff_ms)
                wait_ms = backoff_ms
                log.info("checkpoint scheduler: %s; again in %s ms", exc, wait_ms)
            await asyncio.sleep(wait_ms / 1000)

    async def run_retention(self) -> None:
        schedule = self.config.cleanup_schedule
        assert schedule is not None
        while True:
            # The first run is one period after start; each next one is counted from the end of
            # the last (reference A.5).
            now_ms = self._wall_ms()
            await asyncio.sleep(max(schedule.next_ms(now_ms) - now_ms, 1) / 1000)
            try:
                await self.retain_once()
            except (ZeebeSimError, OSError) as exc:
                log.info("backup retention: %s", exc)

    async def retain_once(self) -> dict[PartitionId, list[int]]:
        """One retention run: what it deleted."""
        deletions = retention_deletions(
            await self.cluster.backups(), self.config.retention_window_ms
        )
        for partition_id, backup_ids in deletions.items():
            for backup_id in backup_ids:
                await self.cluster.delete_backup(partition_id, backup_id)
        return deletions


def lowest_live(node_id: int, live: Iterable[int]) -> bool:
    """Whether ``node_id`` is the lowest of the live members (itself included)."""
    return node_id <= min(live, default=node_id)
