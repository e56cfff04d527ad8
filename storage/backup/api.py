"""The backup store interface: what a partition backup is, and what every store must do with it.

A partition backup is identified by (node id, partition id, checkpoint id): the node that took it,
the partition it belongs to and the checkpoint (= backup) id. Every store (in-memory, filesystem,
S3) implements :class:`BackupStore` with the same semantics, which are Zeebe's backup-store
testkit rules and are checked by one contract suite (``tests/backup_store/test_contract.py``):

- ``save`` creates the manifest IN_PROGRESS only if none exists (any existing manifest, whatever
  its state, is :class:`~zeebe_sim.ground.errors.AlreadyExists`, so a COMPLETED backup is never
  overwritten), uploads the files, checks that nobody marked the backup FAILED or deleted it
  meanwhile, and only then writes COMPLETED. On any error it marks the backup FAILED with the
  error's text and raises :class:`~zeebe_sim.ground.errors.BackupStoreError`.
- ``get_status`` of an absent backup is a DOES_NOT_EXIST status, never an error.
- ``delete`` refuses an IN_PROGRESS backup (the caller marks it FAILED first); deleting an absent
  backup is a no-op.
- ``mark_failed`` creates a FAILED manifest for an absent backup, fails an IN_PROGRESS one and
  leaves a COMPLETED one alone.
- ``restore`` only restores COMPLETED backups, and verifies size and checksum of every file.
- ``write_metadata`` / ``read_metadata`` keep one :class:`RuntimeMetadata` per partition (the
  partition's checkpoints and backup ranges, which restore reads) in two alternating slots, so
  that a write interrupted half-way never destroys the previous one; a reader takes the valid
  slot with the higher sequence number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import attrs

from zeebe_sim.ground.backups import COPY_RANK, BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId


@attrs.frozen(order=True)
class BackupIdentifier:
    """Which partition backup: taken by ``node_id`` of ``partition_id`` at ``checkpoint_id``."""

    node_id: NodeId
    partition_id: PartitionId
    checkpoint_id: BackupId

    def __str__(self) -> str:
        return f"backup {self.checkpoint_id} of partition {self.partition_id} (node {self.node_id})"


_DECIMAL_PREFIX = re.compile(r"[0-9]*")


def _check_prefix(_: object, __: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not _DECIMAL_PREFIX.fullmatch(value):
        raise ValueError(f"checkpoint_prefix must be decimal digits, got {value!r}")


@attrs.frozen
class BackupIdentifierWildcard:
    """A set of backups: ``None`` matches anything; ``checkpoint_prefix`` matches the checkpoint
    ids whose decimal form starts with it (``"17"`` matches 17, 170, 1712, ...);
    ``checkpoint_id`` matches one id exactly (the copies of one backup, read without walking
    the others)."""

    node_id: NodeId | None = None
    partition_id: PartitionId | None = None
    checkpoint_prefix: str | None = attrs.field(default=None, validator=_check_prefix)
    checkpoint_id: BackupId | None = None

    def matches(self, id: BackupIdentifier) -> bool:
        return (
            (self.node_id is None or id.node_id == self.node_id)
            and (self.partition_id is None or id.partition_id == self.partition_id)
            and (self.checkpoint_id is None or id.checkpoint_id == self.checkpoint_id)
            and (
                self.checkpoint_prefix is None
                or str(id.checkpoint_id).startswith(self.checkpoint_prefix)
            )
        )


@attrs.frozen
class BackupDescriptor:
    """What a partition backup contains, as Zeebe records it."""

    snapshot_id: str | None
    checkpoint_position: int
    number_of_partitions: int
    broker_version: str
    # The first log position the backup's segments hold (None: unknown, an older manifest).
    first_log_position: int | None = None
    # Manifests written before checkpoint types existed are MANUAL_BACKUP (reference A.3).
    checkpoint_type: CheckpointType = CheckpointType.MANUAL_BACKUP


@attrs.frozen
class FileRef:
    """A file to back up: exactly the first ``size_bytes`` bytes of ``path``.

    Why a size: the active log segment keeps growing while a backup copies it; the backup must
    hold the bytes that existed when it was taken (up to and past the checkpoint), not whatever
    the file holds when the upload happens to read it.
    """

    path: Path
    size_bytes: int


@attrs.frozen
class Backup:
    """A partition backup to save. File names are single path components (no ``/``)."""

    id: BackupIdentifier
    descriptor: BackupDescriptor
    snapshot_files: dict[str, FileRef]
    segment_files: dict[str, FileRef]


@attrs.frozen
class BackupStatus:
    """The state of one partition backup copy in a store. Timestamps are UTC-aware datetimes.

    For DOES_NOT_EXIST every optional field is ``None``. A FAILED backup created by
    ``mark_failed`` for an absent backup has no descriptor.
    """

    id: BackupIdentifier
    status_code: BackupState
    descriptor: BackupDescriptor | None = None
    failure_reason: str | None = None
    created_at: datetime | None = None
    last_modified: datetime | None = None


_EPOCH = datetime.fromtimestamp(0, UTC)


def best_copy(copies: Iterable[BackupStatus]) -> BackupStatus | None:
    """The copy of one partition's backup that counts when several nodes hold one (REFERENCE.md
    §1, §4): the best state by :data:`~zeebe_sim.ground.backups.COPY_RANK`; ``None`` if none.

    Ties go to the most recently modified copy (it carries the newest failure reason or
    descriptor), then to the highest node id, so that every caller (status, list, restore, the
    take-backup precheck) picks the same copy from the same listing, whatever its order.
    """
    return max(
        copies,
        key=lambda s: (COPY_RANK[s.status_code], s.last_modified or _EPOCH, s.id.node_id),
        default=None,
    )


@attrs.frozen
class RestoredBackup:
    """A backup downloaded and verified into a directory.

    ``snapshot_dir`` is ``<target>/snapshot`` (``None`` for a log-only backup); ``segment_files``
    are the files under ``<target>/segments``, in the order the backup listed them.
    """

    id: BackupIdentifier
    descriptor: BackupDescriptor
    snapshot_dir: Path | None
    segment_files: list[Path]


@attrs.frozen
class RuntimeMetadata:
    """A partition's backup runtime state as kept in the store (reference A.4 "Metadata in the
    store"): every checkpoint it still remembers (markers included, which restore counts as
    restore points) and its backup ranges as (start id, end id), oldest first.

    ``sequence_number`` only grows: the store writes ``max(sequence_number, stored + 1)``."""

    partition_id: PartitionId
    sequence_number: int
    timestamp_ms: int
    checkpoints: list[CheckpointInfo]
    ranges: list[tuple[int, int]]


@attrs.frozen
class PartitionListing:
    """Every copy of every backup of one partition, sorted by (checkpoint, node), and the
    store's version of that listing: the same version means the same listing (``None``: the
    store cannot tell cheaply, e.g. S3, so nobody may reuse an earlier listing)."""

    version: str | None
    statuses: list[BackupStatus]


class BackupStore(Protocol):
    """Where partition backups are kept. See the module docstring for the shared semantics."""

    async def save(self, backup: Backup) -> None:
        """Store ``backup`` and mark it COMPLETED.

        Raises AlreadyExists if a manifest for its id exists in any state, and BackupStoreError
        for every other failure (after marking the backup FAILED where it is still ours).
        """
        ...

    async def get_status(self, id: BackupIdentifier) -> BackupStatus:
        """The backup's status; DOES_NOT_EXIST if absent. Raises BackupStoreError on I/O."""
        ...

    async def list(self, wildcard: BackupIdentifierWildcard) -> list[BackupStatus]:
        """Statuses of every backup matching ``wildcard``, sorted by (checkpoint, partition,
        node). Raises BackupStoreError on I/O."""
        ...

    async def partition_listing(self, partition_id: PartitionId) -> PartitionListing:
        """Every copy of every backup of the partition, with the listing's version; cheap
        while nothing changed (a listing is cached, and its version checked, where the store
        can do that cheaply). Raises BackupStoreError on I/O."""
        ...

    async def delete(self, id: BackupIdentifier) -> None:
        """Remove the backup and all its files; absent is a no-op.

        Raises InvalidState for an IN_PROGRESS backup, BackupStoreError on I/O.
        """
        ...

    async def restore(self, id: BackupIdentifier, target_dir: Path) -> RestoredBackup:
        """Download a COMPLETED backup into ``target_dir/snapshot`` and ``target_dir/segments``.

        Raises BackupStoreError if the backup is not COMPLETED or on I/O, StorageCorruption if
        a file is missing or its size or checksum does not match.
        """
        ...

    async def mark_failed(self, id: BackupIdentifier, reason: str) -> BackupState:
        """Mark the backup FAILED (creating a FAILED manifest if absent); a COMPLETED backup is
        left alone. Returns the resulting status code. Raises BackupStoreError on I/O."""
        ...

    async def write_metadata(self, metadata: RuntimeMetadata) -> None:
        """Write the partition's metadata into the slot not holding the newest valid copy,
        with a sequence number above it. Raises BackupStoreError on I/O."""
        ...

    async def read_metadata(self, partition_id: PartitionId) -> RuntimeMetadata | None:
        """The valid metadata slot with the higher sequence number; None if neither slot holds
        a valid copy. Raises BackupStoreError on I/O."""
        ...

    async def check(self) -> None:
        """Verify the store is usable (called at broker start-up).

        Raises BackupStoreError with a one-line reason (missing bucket, bad credentials,
        unreachable endpoint, unwritable directory).
        """
        ...

    async def close(self) -> None:
        """Release resources; later calls raise BackupStoreError."""
        ...
