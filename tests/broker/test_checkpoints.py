"""Checkpoint types, backup confirmation, backup ranges, deletion and reset (reference
backups-8.9-8.10.md A.3, A.4), with real engine processing and the pure partition core: no event
loop, no files."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core import BackupPlan, BackupRemoval, Command, MetadataSync, PartitionConfig
from broker.engine.processor import Engine, ProcessingResult, RemoveBackup, SyncMetadata, TakeBackup
from broker.engine.state import State
from tests.broker.test_core import NOW_MS, Node, segment, snapshot
from zeebe_sim.ground.backups import CheckpointType
from zeebe_sim.ground.ids import NO_CHECKPOINT
from zeebe_sim.ground.records import ValueType

MARKER, SCHEDULED, MANUAL = (
    CheckpointType.MARKER,
    CheckpointType.SCHEDULED_BACKUP,
    CheckpointType.MANUAL_BACKUP,
)


def create(node: Node, checkpoint_id: int, kind: CheckpointType = MANUAL) -> ProcessingResult:
    value = {"checkpointId": checkpoint_id, "checkpointType": kind.value}
    return node.process(Command(ValueType.CHECKPOINT, "CREATE", checkpoint_id, value))


def confirm(node: Node, checkpoint_id: int, first_log_position: int) -> ProcessingResult:
    info = node.engine.state.checkpoints[checkpoint_id]
    value = {
        "checkpointId": checkpoint_id,
        "checkpointPosition": info["checkpointPosition"],
        "checkpointType": info["checkpointType"],
        "firstLogPosition": first_log_position,
    }
    return node.process(Command(ValueType.CHECKPOINT, "CONFIRM_BACKUP", checkpoint_id, value))


def backed_up(node: Node, checkpoint_id: int, contiguous: bool = True) -> None:
    """Create a scheduled backup and confirm it, its log reaching back to the previous backup's
    checkpoint (contiguous) or not."""
    create(node, checkpoint_id, SCHEDULED)
    latest = node.engine.state.backup_info.get("backup")
    reach = 1 if latest is None else latest["checkpointPosition"] + 1
    confirm(node, checkpoint_id, reach if contiguous else reach + 1)


def delete(node: Node, checkpoint_id: int) -> ProcessingResult:
    value = {"checkpointId": checkpoint_id}
    return node.process(Command(ValueType.CHECKPOINT, "DELETE_BACKUP", checkpoint_id, value))


def ranges(node: Node) -> list[tuple[int, int]]:
    return node.engine.backup_runtime_state()[2]


def response(result: ProcessingResult) -> tuple[str, dict[str, Any]]:
    assert result.response is not None and result.response.rejection_type is None
    return result.response.intent, result.response.value


# -- CREATE ----------------------------------------------------------------------------------


def test_a_marker_advances_the_checkpoint_but_takes_no_backup() -> None:
    """MARKER: CREATED with its type and the record's timestamp, the state's checkpoint moves
    (what inter-partition commands carry), and no backup work; a backup type takes one."""
    node = Node()
    result = create(node, 5, MARKER)
    intent, value = response(result)
    assert intent == "CREATED"
    assert value["checkpointType"] == "MARKER" and value["checkpointTimestamp"] == NOW_MS
    assert node.engine.state.checkpoint_id == 5 and node.core.stamp() == 5
    assert result.backup_work == []

    result = create(node, 6, SCHEDULED)
    assert response(result)[0] == "CREATED"
    assert result.backup_work == [TakeBackup(6, value["checkpointPosition"] + 2, SCHEDULED, NOW_MS)]
    checkpoint, backup, _ = node.engine.backup_runtime_state()
    assert checkpoint is not None and checkpoint.checkpoint_id == 6
    assert checkpoint.checkpoint_type is SCHEDULED and backup is None


def test_an_old_id_is_ignored_with_the_latest_checkpoint() -> None:
    """An id not above the latest is IGNORED, answered with the latest id, position and type."""
    node = Node()
    create(node, 9, SCHEDULED)
    position = node.engine.state.checkpoint_position
    for old in (9, 3):
        result = create(node, old, MANUAL)
        assert response(result) == (
            "IGNORED",
            {
                "checkpointId": 9,
                "checkpointPosition": position,
                "checkpointType": "SCHEDULED_BACKUP",
            },
        )
        assert result.backup_work == []


def test_a_backup_request_for_a_propagated_marker_takes_the_backup_at_its_position() -> None:
    """An inter-partition command carried checkpoint 7 here first (a MARKER); the backup
    request for 7 then takes the backup of that very checkpoint instead of being ignored."""
    node = Node()
    before = node.core.checkpoint_before(
        Command(ValueType.MESSAGE_SUBSCRIPTION, "CREATE", 1, {}, checkpoint_id=7)
    )
    assert before is not None
    node.process(before)
    position = node.engine.state.checkpoint_position
    result = create(node, 7, MANUAL)
    assert response(result)[0] == "CREATED"
    assert result.backup_work == [TakeBackup(7, position, MANUAL, NOW_MS)]
    # A second request for it is a plain duplicate.
    assert response(create(node, 7, MANUAL))[0] == "IGNORED"


# -- CONFIRM_BACKUP and ranges ---------------------------------------------------------------


def test_confirmed_backups_extend_a_range_while_their_log_reaches_the_previous_one() -> None:
    """firstLogPosition <= latest backup position + 1 extends the range; a gap starts a new
    one; markers in between do not matter. Each confirmation syncs the store's metadata."""
    node = Node()
    backed_up(node, 10)
    create(node, 11, MARKER)
    backed_up(node, 12)
    assert ranges(node) == [(10, 12)]
    backed_up(node, 13, contiguous=False)
    backed_up(node, 14)
    assert ranges(node) == [(10, 12), (13, 14)]
    backup = node.engine.backup_runtime_state()[1]
    assert backup is not None and backup.checkpoint_id == 14 and backup.first_log_position
    create(node, 15, SCHEDULED)
    assert confirm(node, 15, 1).backup_work == [SyncMetadata()]


def test_a_late_confirmation_is_rejected_and_moves_nothing_back() -> None:
    """Confirming a backup older than the latest confirmed one is a rejection; the latest
    backup and the ranges stay."""
    node = Node()
    create(node, 10, SCHEDULED)
    backed_up(node, 11)
    result = confirm(node, 10, 1)
    assert result.response is not None and result.response.rejection_type == "INVALID_STATE"
    backup = node.engine.backup_runtime_state()[1]
    assert backup is not None and backup.checkpoint_id == 11
    assert ranges(node) == [(11, 11)]


# -- DELETE_BACKUP ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deleted", "expected"),
    [
        (10, [(11, 13)]),  # the start moves to the next backup
        (13, [(10, 12)]),  # the end moves to the previous backup
        (11, [(10, 10), (12, 13)]),  # the middle splits the range
    ],
)
def test_deleting_a_backup_shrinks_or_splits_its_range(
    deleted: int, expected: list[tuple[int, int]]
) -> None:
    """Reference A.4's range rules for a backup at the start, the end or in the middle."""
    node = Node()
    for checkpoint_id in (10, 11, 12, 13):
        backed_up(node, checkpoint_id)
    result = delete(node, deleted)
    assert response(result)[0] == "DELETED_BACKUP"
    assert result.backup_work == [SyncMetadata(), RemoveBackup(deleted)]
    assert ranges(node) == expected
    assert deleted not in node.engine.state.checkpoints


def test_deleting_the_only_backup_of_a_range_removes_it_and_is_idempotent() -> None:
    """The only element: the range goes; deleting it again changes nothing (no existence
    check) and still asks the store to delete."""
    node = Node()
    backed_up(node, 10)
    backed_up(node, 20, contiguous=False)
    delete(node, 10)
    assert ranges(node) == [(20, 20)]
    before = node.engine.state.copy_for_snapshot()
    assert delete(node, 10).backup_work == [SyncMetadata(), RemoveBackup(10)]
    assert node.engine.state.copy_for_snapshot() == before


def test_deleting_the_oldest_backup_drops_the_markers_no_backup_covers() -> None:
    """Markers older than the first log position of the first range's start are no restore
    point any more and leave the state; newer ones stay."""
    node = Node()
    create(node, 5, MARKER)
    backed_up(node, 10)
    create(node, 11, MARKER)
    node.position += 50  # much later: the next backup's log no longer reaches marker 11
    create(node, 12, MARKER)
    create(node, 13, SCHEDULED)
    confirm(node, 13, node.engine.state.checkpoints[12]["checkpointPosition"] - 1)
    assert ranges(node) == [(10, 10), (13, 13)]
    delete(node, 10)
    assert sorted(node.engine.state.checkpoints) == [12, 13]


def test_deleting_the_latest_backup_rolls_it_back_to_the_previous_one() -> None:
    """The latest backup becomes the newest remaining backup, or none."""
    node = Node()
    backed_up(node, 10)
    backed_up(node, 11)
    delete(node, 11)
    backup = node.engine.backup_runtime_state()[1]
    assert backup is not None and backup.checkpoint_id == 10
    delete(node, 10)
    assert node.engine.backup_runtime_state()[1] is None


# -- RESET, replay, snapshots ----------------------------------------------------------------


def test_reset_clears_the_runtime_state_and_syncs() -> None:
    """RESET_STATE wipes the latest checkpoint and backup, checkpoints and ranges (the
    checkpoint id with them, as Zeebe's latest checkpoint info), then syncs the metadata."""
    node = Node()
    backed_up(node, 10)
    result = node.process(Command(ValueType.CHECKPOINT, "RESET_STATE", -1, {}))
    assert response(result)[0] == "STATE_RESET"
    assert result.backup_work == [SyncMetadata()]
    assert node.engine.backup_runtime_state() == (None, None, [])
    assert node.engine.known_checkpoints() == []
    assert node.engine.state.checkpoint_id == NO_CHECKPOINT


def test_the_runtime_state_survives_a_snapshot() -> None:
    """A snapshot of the state rebuilds the same checkpoints, ranges and latest
    checkpoint/backup (they are column families like the rest of the state)."""
    node = Node()
    create(node, 5, MARKER)
    backed_up(node, 10)
    backed_up(node, 11)
    delete(node, 10)
    expected = node.engine.backup_runtime_state(), node.engine.known_checkpoints()
    view = node.engine.state.copy_for_snapshot()
    restored = Engine(State.from_snapshot(1, view), 3)
    assert (restored.backup_runtime_state(), restored.known_checkpoints()) == expected


# -- the core: compaction and backup jobs ----------------------------------------------------


def test_continuous_backups_keep_the_log_from_the_last_backed_up_position() -> None:
    """Compaction stops at the position after the latest backup's checkpoint (at the start of
    the log before the first backup); without continuous backups only the snapshot counts."""
    node = Node(PartitionConfig(continuous_backups=True))
    latest = snapshot(processed=100, followup=101)
    assert node.core.compaction_floor(latest) == 1
    backed_up(node, 10)
    position = node.engine.state.checkpoints[10]["checkpointPosition"]
    assert node.core.compaction_floor(latest) == position + 1
    classic = Node()
    backed_up(classic, 10)
    assert classic.core.compaction_floor(latest) == 101


def test_a_continuous_backup_holds_the_log_from_the_previous_backup_on() -> None:
    """The plan of the next backup starts at the previous backup's position + 1 even when a
    newer snapshot exists, so its firstLogPosition continues the range; it carries the type."""
    node = Node(PartitionConfig(continuous_backups=True))
    backed_up(node, 10)
    previous = node.engine.state.checkpoints[10]["checkpointPosition"]
    node.position += 100
    result = create(node, 11, SCHEDULED)
    segments = [segment(1, previous), segment(previous + 1, previous + 60), segment(10**3, 10**4)]
    jobs = node.core.backup_jobs(
        1, result.backup_work, [snapshot(processed=previous + 80, followup=previous + 80)], segments
    )
    assert len(jobs) == 1 and isinstance(jobs[0], BackupPlan)
    plan = jobs[0]
    assert plan.log_from_position == previous + 1
    assert plan.first_log_position == previous + 1
    assert plan.checkpoint_type is SCHEDULED


def test_backup_jobs_carry_the_state_to_sync_and_the_backup_to_delete() -> None:
    """A deletion's jobs: the metadata (every checkpoint, markers included, and the ranges as
    they are now), then the removal."""
    node = Node()
    create(node, 5, MARKER)
    backed_up(node, 10)
    backed_up(node, 11)
    result = delete(node, 11)
    jobs = node.core.backup_jobs(1, result.backup_work, [], [])
    assert jobs == [
        MetadataSync(1, node.engine.known_checkpoints(), [(10, 10)]),
        BackupRemoval(1, 11),
    ]
    assert [c.checkpoint_id for c in node.engine.known_checkpoints()] == [5, 10]


def test_the_metadata_lists_an_unconfirmed_backup_as_a_marker() -> None:
    """For restore, a backup-type checkpoint whose backup never completed is a restore point
    inside a later backup's log only: the metadata lists it as a MARKER until it is confirmed."""
    node = Node()
    backed_up(node, 10)
    create(node, 11, SCHEDULED)
    kinds = {c.checkpoint_id: c.checkpoint_type for c in node.engine.restore_points()}
    assert kinds == {10: SCHEDULED, 11: MARKER}
    confirm(node, 11, node.engine.state.checkpoints[10]["checkpointPosition"] + 1)
    kinds = {c.checkpoint_id: c.checkpoint_type for c in node.engine.restore_points()}
    assert kinds == {10: SCHEDULED, 11: SCHEDULED}
