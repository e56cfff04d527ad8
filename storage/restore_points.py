"""Choosing what a point-in-time restore restores (backups-8.9-8.10 A.8), a pure function of
every partition's store metadata (:class:`~storage.backup.api.RuntimeMetadata`).

Theory of operation
-------------------
A partition can be restored to any checkpoint its store metadata remembers inside one of its
backup ranges: a backup of the range, or a MARKER between two of them (markers are the fine
restore points; the log up to them is in the next backup of the range). With ``to``, the
candidates are those taken at or before ``to``; with ``from``, only ranges that start at or
before ``from`` count (the chain must reach back to it). Checkpoint ids are cluster-wide (one id
per checkpoint on every partition), so the restore point is the **highest id that is a candidate
on every partition**.

Each partition is then restored from the chain of backups of its range from the range start up
to and including the first backup at or past that checkpoint, and its log is cut right after
the checkpoint's record. Consecutive backups of the chain must join: a backup whose first log
position is past the previous checkpoint position + 1 is a gap, and the window is refused
naming it, rather than restoring a log with a hole.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime

import attrs

from storage.backup.api import RuntimeMetadata
from zeebe_sim.ground.backups import CheckpointInfo
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import PartitionId


class NoRestorePoint(InvalidArgument):
    """The window holds no usable restore point (empty, or a gap in the chain)."""


@attrs.frozen
class PartitionPoint:
    """One partition's part of a restore point: the backups to restore, oldest first, and the
    checkpoint its log ends with (the restore point itself)."""

    backup_ids: tuple[int, ...]
    checkpoint_id: int
    checkpoint_position: int


@attrs.frozen
class RestorePoint:
    checkpoint_id: int
    checkpoint_timestamp_ms: int
    partitions: dict[PartitionId, PartitionPoint]


def resolve(
    metadata: Mapping[PartitionId, RuntimeMetadata | None],
    *,
    from_ms: int | None,
    to_ms: int | None,
) -> RestorePoint:
    """The latest checkpoint common to every partition of ``metadata`` inside the window, and
    each partition's chain to it (see the module docstring). ``None`` bounds are open.

    Raises:
        NoRestorePoint: a partition has no metadata, no checkpoint is common to all partitions
            in the window, or a chain to the chosen checkpoint has a gap (named).
    """
    window = _window(from_ms, to_ms)
    metas: dict[PartitionId, RuntimeMetadata] = {}
    for partition_id, meta in sorted(metadata.items()):
        if meta is None:
            raise NoRestorePoint(
                f"Partition {partition_id} has no backup metadata in the store: no backup "
                "range to restore from"
            )
        metas[partition_id] = meta
    candidates = {p: _candidates(meta, from_ms, to_ms) for p, meta in metas.items()}
    common = set.intersection(*(set(c) for c in candidates.values())) if candidates else set()
    if not common:
        latest = "; ".join(
            f"partition {p}: {max(c) if c else 'none'}" for p, c in sorted(candidates.items())
        )
        raise NoRestorePoint(
            f"No checkpoint common to all {len(candidates)} partitions {window} (the latest "
            f"one of each partition in the window: {latest})"
        )
    chosen = max(common)
    partitions = {p: _chain(p, meta, chosen) for p, meta in metas.items()}
    first = next(iter(candidates.values()))[chosen]
    return RestorePoint(chosen, first.checkpoint_timestamp_ms, partitions)


def iso_ms(ms: int | None) -> str:
    """The one spelling of a time in restore messages: ISO-8601 UTC with milliseconds."""
    if ms is None:
        return "(open)"
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _window(from_ms: int | None, to_ms: int | None) -> str:
    parts = []
    if to_ms is not None:
        parts.append(f"at or before {iso_ms(to_ms)}")
    if from_ms is not None:
        parts.append(f"in a backup range starting at or before {iso_ms(from_ms)}")
    return " ".join(parts) or "in the store"


def _candidates(
    meta: RuntimeMetadata, from_ms: int | None, to_ms: int | None
) -> dict[int, CheckpointInfo]:
    """Every checkpoint of the partition that a restore in the window could end with."""
    by_id = {c.checkpoint_id: c for c in meta.checkpoints}
    found: dict[int, CheckpointInfo] = {}
    for start, end in meta.ranges:
        start_info = by_id.get(start)
        if start_info is None:
            continue  # a range whose start is forgotten cannot be restored from
        if from_ms is not None and start_info.checkpoint_timestamp_ms > from_ms:
            continue
        for checkpoint in meta.checkpoints:
            if start <= checkpoint.checkpoint_id <= end and (
                to_ms is None or checkpoint.checkpoint_timestamp_ms <= to_ms
            ):
                found[checkpoint.checkpoint_id] = checkpoint
    return found


def _chain(partition_id: PartitionId, meta: RuntimeMetadata, chosen: int) -> PartitionPoint:
    by_id = {c.checkpoint_id: c for c in meta.checkpoints}
    start, end = next((s, e) for s, e in meta.ranges if s <= chosen <= e and s in by_id)
    backups = sorted(
        (
            c
            for c in meta.checkpoints
            if start <= c.checkpoint_id <= end and c.checkpoint_type.takes_backup
        ),
        key=lambda c: c.checkpoint_id,
    )
    chain: list[CheckpointInfo] = []
    for backup in backups:
        chain.append(backup)
        if backup.checkpoint_id >= chosen:
            break
    else:
        raise NoRestorePoint(
            f"Partition {partition_id}: no backup at or after checkpoint {chosen} in its range "
            f"[{start}, {end}]"
        )
    for previous, following in itertools.pairwise(chain):
        first = following.first_log_position
        if first is not None and first > previous.checkpoint_position + 1:
            raise NoRestorePoint(
                f"Partition {partition_id}: a gap between backup {previous.checkpoint_id} "
                f"(checkpoint position {previous.checkpoint_position}) and backup "
                f"{following.checkpoint_id} (first log position {first}): positions "
                f"{previous.checkpoint_position + 1} to {first - 1} are in no backup"
            )
    point = by_id[chosen]
    return PartitionPoint(tuple(c.checkpoint_id for c in chain), chosen, point.checkpoint_position)
