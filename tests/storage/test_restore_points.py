"""The point-in-time resolver (storage/restore_points.py) over hand-built store metadata: the
latest checkpoint common to every partition at or before `to` (markers count), ranges bounded
by `from`, each partition's own chain to it, gaps and empty windows refused by name."""

from __future__ import annotations

import pytest

from storage.backup.api import RuntimeMetadata
from storage.restore_points import NoRestorePoint, PartitionPoint, resolve
from zeebe_sim.ground.backups import CheckpointInfo, CheckpointType
from zeebe_sim.ground.ids import PartitionId

B = CheckpointType.SCHEDULED_BACKUP
M = CheckpointType.MARKER
P1, P2 = PartitionId(1), PartitionId(2)


def cp(
    checkpoint_id: int, kind: CheckpointType, position: int, first: int | None = None
) -> CheckpointInfo:
    """A checkpoint whose timestamp is its id (ids are epoch ms in generated mode)."""
    return CheckpointInfo(checkpoint_id, kind, position, checkpoint_id, first)


def meta(
    partition_id: PartitionId, checkpoints: list[CheckpointInfo], ranges: list[tuple[int, int]]
) -> RuntimeMetadata:
    return RuntimeMetadata(partition_id, 1, 0, checkpoints, ranges)


# Partition 1: backups 100, 200, 300 in one range, markers 150, 250, 350 (350 after the last
# backup: no backup holds its log yet).
ONE = meta(
    P1,
    [
        cp(100, B, 10, 1),
        cp(150, M, 15),
        cp(200, B, 20, 11),
        cp(250, M, 25),
        cp(300, B, 30, 21),
        cp(350, M, 35),
    ],
    [(100, 300)],
)
# Partition 2: the same checkpoint ids at other positions, but its range starts at 200 (its
# backup 100 was deleted by retention).
TWO = meta(
    P2,
    [cp(200, B, 40, 1), cp(250, M, 45), cp(300, B, 50, 41), cp(350, M, 55)],
    [(200, 300)],
)


def test_a_marker_is_the_restore_point_and_each_partition_has_its_own_chain() -> None:
    """`to` just after marker 250: 250 is the latest common checkpoint; partition 1 restores
    100, 200, 300 and partition 2 200, 300, both cut at the marker's own position."""
    point = resolve({P1: ONE, P2: TWO}, from_ms=None, to_ms=260)
    assert point.checkpoint_id == 250 and point.checkpoint_timestamp_ms == 250
    assert point.partitions == {
        P1: PartitionPoint((100, 200, 300), 250, 25),
        P2: PartitionPoint((200, 300), 250, 45),
    }


def test_a_backup_at_to_ends_the_chain_there() -> None:
    """`to` exactly at backup 200's timestamp: the point is 200 and no later backup is used."""
    point = resolve({P1: ONE, P2: TWO}, from_ms=None, to_ms=200)
    assert point.partitions == {
        P1: PartitionPoint((100, 200), 200, 20),
        P2: PartitionPoint((200,), 200, 40),
    }


def test_a_marker_after_the_last_backup_is_not_a_restore_point() -> None:
    """Marker 350 is past every range's end (its log is in no backup): `to` after it gives 300."""
    point = resolve({P1: ONE, P2: TWO}, from_ms=None, to_ms=10_000)
    assert point.checkpoint_id == 300


def test_only_checkpoints_common_to_all_partitions_count() -> None:
    """Marker 150 exists only on partition 1's range: `to` at 190 finds nothing common, and the
    refusal names each partition's latest checkpoint in the window."""
    with pytest.raises(NoRestorePoint) as caught:
        resolve({P1: ONE, P2: TWO}, from_ms=None, to_ms=190)
    assert caught.value.message == (
        "No checkpoint common to all 2 partitions at or before 1970-01-01T00:00:00.190Z (the "
        "latest one of each partition in the window: partition 1: 150; partition 2: none)"
    )


def test_from_keeps_only_ranges_starting_at_or_before_it() -> None:
    """`from` at 150: partition 2's range starts at 200, too late, so nothing is common; `from`
    at 200 admits it."""
    with pytest.raises(NoRestorePoint, match="in a backup range starting at or before"):
        resolve({P1: ONE, P2: TWO}, from_ms=150, to_ms=300)
    assert resolve({P1: ONE, P2: TWO}, from_ms=200, to_ms=300).checkpoint_id == 300


def test_several_ranges_the_point_picks_its_own_range() -> None:
    """Two ranges [100, 200] and [400, 500] (backup 300 failed): a point in the second range
    chains from 400 only; one in the first from 100."""
    split = meta(
        P1,
        [
            cp(100, B, 10, 1),
            cp(200, B, 20, 11),
            cp(400, B, 60, 50),
            cp(450, M, 65),
            cp(500, B, 70, 61),
        ],
        [(100, 200), (400, 500)],
    )
    assert resolve({P1: split}, from_ms=None, to_ms=460).partitions[P1] == PartitionPoint(
        (400, 500), 450, 65
    )
    assert resolve({P1: split}, from_ms=None, to_ms=399).partitions[P1] == PartitionPoint(
        (100, 200), 200, 20
    )
    # `from` before the second range's start: only the first range qualifies.
    assert resolve({P1: split}, from_ms=150, to_ms=10_000).checkpoint_id == 200


def test_a_gap_in_the_chain_is_refused_and_named() -> None:
    """Backup 200's log starts at 13, but backup 100 ends at 10: positions 11-12 are in no
    backup, so a restore through 200 is refused naming the gap; a restore to 100 is fine."""
    gapped = meta(P1, [cp(100, B, 10, 1), cp(150, M, 12), cp(200, B, 20, 13)], [(100, 200)])
    with pytest.raises(NoRestorePoint) as caught:
        resolve({P1: gapped}, from_ms=None, to_ms=160)
    assert caught.value.message == (
        "Partition 1: a gap between backup 100 (checkpoint position 10) and backup 200 (first "
        "log position 13): positions 11 to 12 are in no backup"
    )
    assert resolve({P1: gapped}, from_ms=None, to_ms=120).partitions[P1].backup_ids == (100,)


def test_an_empty_window_and_missing_metadata_are_refused() -> None:
    """`to` before every checkpoint, a partition without ranges, or one with no metadata at
    all: each refused with a message saying so."""
    with pytest.raises(NoRestorePoint, match="No checkpoint common to all 2 partitions"):
        resolve({P1: ONE, P2: TWO}, from_ms=None, to_ms=50)
    with pytest.raises(NoRestorePoint, match="partition 2: none"):
        resolve({P1: ONE, P2: meta(P2, [], [])}, from_ms=None, to_ms=10_000)
    with pytest.raises(NoRestorePoint, match="Partition 2 has no backup metadata in the store"):
        resolve({P1: ONE, P2: None}, from_ms=None, to_ms=10_000)
