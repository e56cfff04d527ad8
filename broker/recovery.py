"""In-process restore on a running broker (8.10, backups-8.9-8.10 A.7): the broker's mode and
the restore of one partition in place.

Theory of operation
-------------------
The gateway drives the restore (``gateway/recovery.py``); a broker only answers three requests:

- ``ModeChangeRequest``: RECOVERING pauses every partition it hosts (client commands answered
  RESOURCE_EXHAUSTED, commands from other partitions dropped for their senders to retry,
  nothing processed; queries still answered), PROCESSING resumes them.
- ``RestorePlanRequest``: resolve backup ids or a time window against the store, once, so that
  every broker restores the same restore point (``storage/restore.py``). Nothing changes.
- ``RestorePartitionRequest`` (RECOVERING only): stop the partition, lay its chain out in
  ``<broker>/.recovering/<p>`` (fsynced), swap it with the partition's directory, then start the
  partition again from the new directory (still paused). A failure before the swap leaves the
  old directory in place and restarts it.

The swap is two renames: the old directory goes to ``.recovering/<p>.old``, the staged one into
place. A kill between them leaves no partition directory but a complete staged one, which
:func:`finish_interrupted_restore` (called at broker start) renames into place; anything else
under ``.recovering`` is scratch and removed. The mode lives in memory: a broker restarted
while RECOVERING comes back PROCESSING (the gateway's restore then reports FAILED).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from broker.backup import BackupService
from broker.partition import Partition
from storage.backup.api import BackupStore
from storage.durable import ensure_directory, fsync_directory
from storage.restore import (
    BackupIncomplete,
    PartitionChain,
    RestoreError,
    RestoreRequest,
    chains_of_ids,
    chains_of_window,
    completed_copy,
    fsync_tree,
    restore_partition,
)
from zeebe_sim.ground import layout
from zeebe_sim.ground.errors import (
    BackupNotConfigured,
    InvalidArgument,
    InvalidState,
    NotFound,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId, Position
from zeebe_sim.ground.protocol import (
    BrokerMode,
    Message,
    ModeChangeRequest,
    ModeChangeResponse,
    PartitionRestorePlan,
    RestorePartitionRequest,
    RestorePartitionResponse,
    RestorePlanRequest,
    RestorePlanResponse,
)

log = logging.getLogger(__name__)

RECOVERING_DIR = ".recovering"
RECOVERY_MESSAGES = (ModeChangeRequest, RestorePlanRequest, RestorePartitionRequest)


class Recovery:
    def __init__(
        self,
        node_id: NodeId,
        directory: Path,
        partitions: dict[PartitionId, Partition],
        backups: BackupService,
        partition_count: int,
    ) -> None:
        """``partitions`` is the broker's own (live) map; ``directory`` its data directory."""
        self.node_id = node_id
        self._directory = directory
        self._partitions = partitions
        self._backups = backups
        self._partition_count = partition_count
        self.mode: BrokerMode = "PROCESSING"

    async def handle(self, message: Message) -> Message:
        if isinstance(message, ModeChangeRequest):
            if message.mode is not None:
                self.change_mode(message.mode)
            return ModeChangeResponse(self.node_id, self.mode)
        if isinstance(message, RestorePlanRequest):
            return await self.plan(message)
        assert isinstance(message, RestorePartitionRequest), message
        await self.restore(message.partition_id, message.plan)
        return RestorePartitionResponse(message.partition_id)

    def change_mode(self, mode: BrokerMode) -> None:
        self.mode = mode
        reason = (
            f"Broker {self.node_id} is RECOVERING (in-process restore): its partitions "
            "process no commands until the cluster is back in PROCESSING mode"
            if mode == "RECOVERING"
            else None
        )
        for partition in self._partitions.values():
            partition.pause(reason)
        log.info("broker mode changed", extra={"node": self.node_id, "mode": mode})

    async def plan(self, request: RestorePlanRequest) -> RestorePlanResponse:
        """Resolve the restore once, for every partition.

        Raises:
            NotFound: a backup is not COMPLETED on a partition that needs it (HTTP 404).
            InvalidArgument: no restore point in the window, a gap, another partition count.
        """
        store = self._store()
        wanted = RestoreRequest(tuple(request.backup_ids), request.from_ms, request.to_ms)
        try:
            if wanted.backup_ids:
                chains = await chains_of_ids(store, wanted.backup_ids, self._partition_count)
                checkpoint = max(wanted.backup_ids)
            else:
                point, chains = await chains_of_window(store, wanted, self._partition_count)
                checkpoint = point.checkpoint_id
        except BackupIncomplete as exc:
            raise NotFound(exc.message) from exc
        except RestoreError as exc:
            raise InvalidArgument(exc.message) from exc
        return RestorePlanResponse(
            checkpoint,
            {
                p: PartitionRestorePlan(
                    [BackupId(i) for i in chain.backup_ids],
                    chain.checkpoint_id,
                    Position(chain.checkpoint_position),
                )
                for p, chain in chains.items()
            },
        )

    async def restore(self, partition_id: PartitionId, plan: PartitionRestorePlan) -> None:
        """Restore ``partition_id`` in place from ``plan`` (see the module docstring).

        Raises:
            InvalidState: the broker is not RECOVERING, or the restore failed (the partition
                runs on from its old directory).
            NotFound: a backup of the plan is not COMPLETED any more.
        """
        if self.mode != "RECOVERING":
            raise InvalidState(
                f"Broker {self.node_id} is not in RECOVERING mode: a partition is only "
                "restored in place while the cluster is recovering"
            )
        partition = self._partitions.get(partition_id)
        if partition is None:
            raise InvalidArgument(f"Broker {self.node_id} hosts no partition {partition_id}")
        store = self._store()
        backups = []
        for backup_id in plan.backup_ids:
            found = await completed_copy(store, partition_id, backup_id, self._partition_count)
            if isinstance(found, str):
                raise NotFound(f"Backup {backup_id}: {found}")
            backups.append(found)
        chain = PartitionChain(tuple(backups), plan.checkpoint_id, plan.checkpoint_position)
        # A backup still uploading holds the old files: let it end before they go away.
        await self._backups.wait_idle()
        await partition.stop()
        recovering = self._directory / RECOVERING_DIR
        staged = recovering / str(partition_id)
        try:
            shutil.rmtree(staged, ignore_errors=True)
            ensure_directory(staged)
            await restore_partition(store, chain, staged, lambda line: log.info(line))
            fsync_tree(staged)
            _swap(partition.directory, staged, recovering / f"{partition_id}.old")
        except BaseException as exc:
            shutil.rmtree(staged, ignore_errors=True)
            await partition.restart()
            if isinstance(exc, ZeebeSimError | OSError):  # a corrupt file, a gap, the disk
                reason = exc.message if isinstance(exc, ZeebeSimError) else str(exc)
                raise InvalidState(
                    f"Restoring partition {partition_id} on broker {self.node_id} failed, it "
                    f"runs on unchanged: {reason}"
                ) from exc
            raise
        shutil.rmtree(recovering, ignore_errors=True)
        await partition.restart()
        log.info(
            "partition restored in place",
            extra={"partition": partition_id, "backups": chain.backup_ids},
        )

    def _store(self) -> BackupStore:
        if self._backups.store is None:
            raise BackupNotConfigured()
        return self._backups.store


def _swap(target: Path, staged: Path, old: Path) -> None:
    """Put ``staged`` where ``target`` is, moving ``target`` to ``old``; each rename durable."""
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
        fsync_directory(target.parent)
        fsync_directory(old.parent)
    os.replace(staged, target)
    fsync_directory(staged.parent)
    fsync_directory(target.parent)


def finish_interrupted_restore(broker_dir: Path) -> None:
    """After a kill during an in-place restore: a staged partition whose directory is missing
    was complete (staged before the swap began) and goes into place; the rest is scratch."""
    recovering = broker_dir / RECOVERING_DIR
    if not recovering.is_dir():
        return
    for staged in recovering.iterdir():
        if not staged.name.isdigit():
            continue
        target = layout.partition_dir(broker_dir, PartitionId(int(staged.name)))
        if not target.exists():
            ensure_directory(target.parent)
            os.replace(staged, target)
            fsync_directory(target.parent)
            log.warning("finished an interrupted in-place restore of %s", target)
    shutil.rmtree(recovering)
    fsync_directory(broker_dir)
