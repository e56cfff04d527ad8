"""The pure partition core, driven directly: no event loop, no files, no clock.

Every rule is exercised with real engine processing (a real deployment, a real checkpoint) and
plain snapshot/segment descriptions, so each test runs in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from broker.core import (
    BackupPlan,
    Command,
    PartitionConfig,
    PartitionCore,
    PartitionView,
    plan_backup,
)
from broker.engine.processor import Engine, ProcessingResult
from broker.engine.state import State
from storage.log import SegmentInfo
from storage.snapshots import Snapshot, SnapshotId
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.ids import NO_CHECKPOINT, Position
from zeebe_sim.ground.records import ValueType

NOW_MS = 5_000_000


class Node:
    """One partition's engine and core over an in-memory log (a position counter)."""

    def __init__(self, config: PartitionConfig | None = None, partition_count: int = 3) -> None:
        self.engine = Engine(State(1), partition_count)
        self.core = PartitionCore(self.engine, config or PartitionConfig())
        self.position = 0

    def process(self, command: Command) -> ProcessingResult:
        self.position += 1
        result = self.engine.process(command.record(self.position, NOW_MS))
        self.position += len(result.records)
        return result

    def checkpoint(self, checkpoint_id: int) -> None:
        self.process(
            Command(ValueType.CHECKPOINT, "CREATE", checkpoint_id, {"checkpointId": checkpoint_id})
        )

    def deploy(self) -> ProcessingResult:
        resource = {"resourceName": "p.bpmn", "resource": process_xml("p")}
        return self.process(Command(ValueType.DEPLOYMENT, "CREATE", -1, {"resources": [resource]}))


def snapshot(processed: int, followup: int, index: int = 0) -> Snapshot:
    snapshot_id = SnapshotId(index or followup, 1, processed, processed)
    directory = Path("/nowhere") / str(snapshot_id)
    return Snapshot(snapshot_id, directory, processed, followup, {}, directory.with_suffix(".c"))


def segment(first: int, last: int) -> SegmentInfo:
    return SegmentInfo(
        Path(f"/nowhere/segment-{first}.log"), first, Position(first), Position(last), 1
    )


# -- checkpoint first on receive, and the stamp ----------------------------------------------


def test_a_command_sent_after_a_newer_checkpoint_is_preceded_by_that_checkpoint() -> None:
    """A received command carrying a checkpoint id above ours needs CHECKPOINT CREATE(id) first
    (a MARKER: the request for that id says whether it takes a backup); one carrying our id, a
    lower one or none needs nothing."""
    node = Node()
    node.checkpoint(5)
    command = Command(ValueType.MESSAGE_SUBSCRIPTION, "CREATE", 1, {}, checkpoint_id=7)
    assert node.core.checkpoint_before(command) == Command(
        ValueType.CHECKPOINT, "CREATE", 7, {"checkpointId": 7, "checkpointType": "MARKER"}
    )
    for checkpoint_id in (5, 3, NO_CHECKPOINT):
        received = Command(ValueType.MESSAGE_SUBSCRIPTION, "CREATE", 1, {}, checkpoint_id)
        assert node.core.checkpoint_before(received) is None


def test_without_propagation_nothing_is_checkpointed_first_and_sends_carry_no_checkpoint() -> None:
    """The unsafe switch turns off both halves of the rule."""
    node = Node(PartitionConfig(checkpoint_propagation=False))
    node.checkpoint(5)
    command = Command(ValueType.MESSAGE_SUBSCRIPTION, "CREATE", 1, {}, checkpoint_id=9)
    assert node.core.checkpoint_before(command) is None
    assert node.core.stamp() == NO_CHECKPOINT
    assert {out.checkpoint_id for out in node.core.outgoing(node.deploy(), NOW_MS)} == {
        NO_CHECKPOINT
    }


def test_every_send_carries_the_checkpoint_id_at_the_time_it_leaves() -> None:
    """Sends are stamped when handed to the network: a checkpoint created after the command was
    processed (later in the same group) already counts."""
    node = Node()
    result = node.deploy()
    assert node.core.stamp() == NO_CHECKPOINT
    node.checkpoint(4)
    outgoing = node.core.outgoing(result, NOW_MS)
    assert [out.send.receiver_partition_id for out in outgoing] == [2, 3]
    assert {out.checkpoint_id for out in outgoing} == {4}


# -- the retry schedule -----------------------------------------------------------------------


def test_a_send_is_retried_after_the_initial_delay_then_with_doubling_backoff_to_the_max() -> None:
    """10 s after it left, then 10, 20, 40 s ... capped at the maximum (here 60 s)."""
    node = Node(PartitionConfig(retry_initial_s=10, retry_max_s=60))
    node.core.outgoing(node.deploy(), NOW_MS)
    fired = []
    for now_ms in range(NOW_MS, NOW_MS + 300_001, 1_000):
        if node.core.due_retries(now_ms):
            fired.append((now_ms - NOW_MS) // 1000)
    assert fired == [10, 20, 40, 80, 140, 200, 260]


def test_an_acknowledged_send_is_no_longer_retried() -> None:
    """The acknowledgement resolves the retry of that partition only."""
    node = Node()
    deployment = node.deploy()
    node.core.outgoing(deployment, NOW_MS)
    assert deployment.response is not None
    ack = Command(
        ValueType.COMMAND_DISTRIBUTION,
        "ACKNOWLEDGE",
        deployment.response.key,
        {"partitionId": 2, "distributionKey": deployment.response.key},
    )
    node.core.outgoing(node.process(ack), NOW_MS)
    due = node.core.due_retries(NOW_MS + 10_000)
    assert [out.send.receiver_partition_id for out in due] == [3]


def test_after_a_start_everything_pending_in_state_is_due_at_once() -> None:
    """The schedule is derived from state: a fresh core over a state with an unacknowledged
    distribution re-sends it immediately, nothing else."""
    node = Node()
    node.deploy()
    restarted = PartitionCore(node.engine, PartitionConfig())
    assert restarted.due_retries(NOW_MS) == []
    restarted.reset_retries(NOW_MS)
    due = restarted.due_retries(NOW_MS)
    assert sorted(out.send.receiver_partition_id for out in due) == [2, 3]
    assert restarted.due_retries(NOW_MS + 9_999) == []
    assert len(restarted.due_retries(NOW_MS + 10_000)) == 2


# -- snapshots and compaction -----------------------------------------------------------------


def test_a_snapshot_is_due_once_per_period() -> None:
    """Counted from the first look; due again a full period after the last one."""
    core = Node(PartitionConfig(snapshot_period_s=60)).core
    assert not core.snapshot_due(NOW_MS)
    assert not core.snapshot_due(NOW_MS + 59_999)
    assert core.snapshot_due(NOW_MS + 60_000)
    assert not core.snapshot_due(NOW_MS + 60_001)
    assert core.snapshot_due(NOW_MS + 120_000)


def test_a_snapshot_is_taken_only_when_there_is_something_new_and_one_at_a_time() -> None:
    """Nothing processed, or nothing since the newest snapshot: no snapshot. While one is being
    taken, no second one."""
    core = Node().core
    assert core.begin_snapshot(PartitionView(0, 0, None)) is None
    taken = snapshot(processed=10, followup=12, index=12)
    assert core.begin_snapshot(PartitionView(10, 12, taken)) is None
    new_id = core.begin_snapshot(PartitionView(20, 25, taken))
    assert new_id == SnapshotId(25, 1, 20, 20)
    assert core.begin_snapshot(PartitionView(30, 35, taken)) is None
    core.snapshot_ended()
    assert core.begin_snapshot(PartitionView(30, 35, taken)) == SnapshotId(35, 1, 30, 30)


def test_compaction_stops_at_the_snapshot_and_at_every_hold() -> None:
    """No snapshot: keep everything. Else keep from the snapshot's processed position on, or
    from the lowest position a running backup holds, until it releases."""
    core = Node().core
    assert core.compaction_floor(None) is None
    latest = snapshot(processed=100, followup=105)
    assert core.compaction_floor(latest) == 101
    backup_a, backup_b = object(), object()
    core.hold_log(backup_a, 40)
    core.hold_log(backup_b, 70)
    assert core.compaction_floor(latest) == 40
    core.release_log(backup_a)
    assert core.compaction_floor(latest) == 70
    core.release_log(backup_b)
    assert core.compaction_floor(latest) == 101


# -- the backup plan --------------------------------------------------------------------------


def test_the_backup_takes_the_newest_snapshot_entirely_before_the_checkpoint() -> None:
    """processedPosition and lastFollowupEventPosition must both be below the checkpoint
    position; segments from the snapshot on are included, those before are not."""
    old = snapshot(processed=10, followup=12)
    usable = snapshot(processed=40, followup=45)
    followups_after = snapshot(processed=48, followup=52)
    segments = [segment(1, 20), segment(21, 49), segment(50, 90)]
    plan = plan_backup(1, 7, 50, [old, usable, followups_after], segments)
    assert plan == BackupPlan(1, 7, 50, usable, 41, (segment(21, 49), segment(50, 90)))


def test_no_snapshot_before_the_checkpoint_but_one_exists_fails_the_backup() -> None:
    """Zeebe's failure reason names every snapshot and the checkpoint position."""
    plan = plan_backup(2, 7, 50, [snapshot(processed=50, followup=55)], [segment(1, 90)])
    assert plan.snapshot is None and plan.segments == ()
    assert plan.failure == (
        "Cannot find a snapshot that can be included in the backup 7. All available snapshots "
        "(55-1-50-50) have processedPosition or lastFollowupEventPosition >= "
        "checkpointPosition 50"
    )


def test_without_any_snapshot_the_backup_is_the_whole_log() -> None:
    """No snapshot at all is fine: every segment from position 1 on."""
    segments = (segment(1, 20), segment(21, 60))
    assert plan_backup(3, 7, 50, [], segments) == BackupPlan(3, 7, 50, None, 1, segments)
