"""The checkpoint scheduler's and retention's decisions (reference backups-8.9-8.10.md A.5), and
the schedule setting: pure functions driven with a clock the test sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.schedule import INVALID, CronSchedule, IntervalSchedule, parse_schedule
from broker.scheduler import (
    BACKOFF_MAX_MS,
    SchedulerConfig,
    Step,
    generate_backup_id,
    lowest_live,
    next_backoff_ms,
    retention_deletions,
    scheduler_step,
)
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.ids import BackupId, PartitionId
from zeebe_sim.ground.protocol import PartitionBackupStatus

MARKER, SCHEDULED = CheckpointType.MARKER, CheckpointType.SCHEDULED_BACKUP
NOW = 1_800_000_000_000
EVERY_2S = SchedulerConfig(
    continuous=True,
    schedule=IntervalSchedule(2000, "PT2S"),
    checkpoint_interval_ms=500,
)


def info(checkpoint_id: int, at_ms: int, kind: CheckpointType = MARKER) -> CheckpointInfo:
    return CheckpointInfo(checkpoint_id, kind, 100, at_ms)


# -- the schedule setting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", IntervalSchedule(3_600_000, "PT1H")),
        ("pt0.5s", IntervalSchedule(500, "pt0.5s")),
        ("P1DT2M", IntervalSchedule(86_520_000, "P1DT2M")),
        ("0 0 * * * *", CronSchedule("0 0 * * * *")),
        ("*/10 * * * * MON-FRI", CronSchedule("*/10 * * * * MON-FRI")),
        ("none", None),
        ("NONE", None),
        ("", None),
        ("auto", IntervalSchedule(3_600_000, "auto")),
    ],
)
def test_a_schedule_is_cron_iso_none_or_auto(
    text: str, expected: IntervalSchedule | CronSchedule | None
) -> None:
    """Spring's six-field cron, ISO-8601 durations (Java's Duration.parse), none and auto."""
    assert parse_schedule(text) == expected


@pytest.mark.parametrize("text", ["every hour", "* * * * *", "PT0S", "-PT1S", "1h", "P1Y", "PT"])
def test_anything_else_is_zeebes_error(text: str) -> None:
    """Five-field cron, zero or negative durations, years, free text: Zeebe's message, with
    what was given."""
    with pytest.raises(ValueError) as raised:
        parse_schedule(text)
    assert str(raised.value) == f"{INVALID} Given: {text}"
    assert INVALID == (
        "Invalid expression for schedule: must be one of CRON, ISO8601, NONE or AUTO."
    )


def test_a_cron_schedule_runs_at_its_seconds() -> None:
    """Seconds first: "*/15 * * * * *" runs at :00, :15, :30, :45 of every minute."""
    schedule = CronSchedule("*/15 * * * * *")
    base = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
    base_ms = int(base.timestamp() * 1000)
    assert schedule.next_ms(base_ms) == base_ms + 8000
    assert schedule.previous_ms(base_ms) == base_ms - 7000


def test_generated_ids_are_epoch_ms_plus_the_offset() -> None:
    """CheckpointIdGenerator: now in epoch ms, plus the offset when it is positive."""
    assert generate_backup_id(NOW, 0) == NOW
    assert generate_backup_id(NOW, 1000) == NOW + 1000
    assert SchedulerConfig().generates_ids is False
    assert SchedulerConfig(checkpoint_interval_ms=1).generates_ids is True
    assert SchedulerConfig(continuous=True).generates_ids is True
    assert SchedulerConfig(schedule=IntervalSchedule(1, "x")).generates_ids is True


# -- the checkpoint scheduler ----------------------------------------------------------------


def test_the_first_backup_is_taken_at_once() -> None:
    """No partition has a backup yet: the backup is past due and fires now; the next round
    waits for the nearer of both next runs from now (the marker in 0.5 s)."""
    step = scheduler_step(EVERY_2S, [None, None], [None, None], NOW)
    assert step == Step(SCHEDULED, 500)


def test_markers_fire_between_backups_but_not_next_to_one() -> None:
    """Hourly backups, markers every 15 min: a marker due now fires; one due within Zeebe's
    2 s of the backup is skipped for the backup. With markers every 0.5 s and backups every
    2 s the threshold is half the marker interval, so markers still fire in between."""
    hourly = SchedulerConfig(
        schedule=IntervalSchedule(3_600_000, "PT1H"), checkpoint_interval_ms=900_000
    )
    backups = [info(1, NOW - 1_800_000, SCHEDULED)]
    assert scheduler_step(hourly, [info(2, NOW - 900_000)], backups, NOW) == Step(MARKER, 900_000)
    # The marker would be due in 1.5 s, the backup in 3 s: the backup is taken instead.
    near = [info(1, NOW + 3000 - 3_600_000, SCHEDULED)]
    assert scheduler_step(hourly, [info(2, NOW - 898_500)], near, NOW) == Step(None, 3000)

    checkpoints = [info(2, NOW - 600), info(2, NOW - 600)]
    recent = [info(1, NOW - 1000, SCHEDULED)] * 2
    # Marker due 0.1 s ago, backup in 1 s: the marker fires.
    assert scheduler_step(EVERY_2S, checkpoints, recent, NOW) == Step(MARKER, 500)
    # Marker due 0.1 s ago, backup due in 0.1 s (within 0.25 s): the backup wins, later.
    soon = [info(1, NOW - 1900, SCHEDULED)] * 2
    assert scheduler_step(EVERY_2S, checkpoints, soon, NOW) == Step(None, 100)


def test_the_partition_furthest_behind_decides() -> None:
    """The last checkpoint is the one with the smallest id among the partitions': a partition
    that missed the newest marker makes the next one due."""
    markers_only = SchedulerConfig(checkpoint_interval_ms=500)
    fresh, stale = info(9, NOW - 100), info(8, NOW - 700)
    assert scheduler_step(markers_only, [fresh, fresh], [None, None], NOW) == Step(None, 400)
    assert scheduler_step(markers_only, [fresh, stale], [None, None], NOW) == Step(MARKER, 500)


def test_past_due_actions_fire_at_once_after_an_outage() -> None:
    """After an outage far longer than both intervals, the earlier-due marker fires at once,
    and the backup at the next round, half a second later."""
    backups = [info(1, NOW - 3_600_000, SCHEDULED)]
    assert scheduler_step(EVERY_2S, backups, backups, NOW) == Step(MARKER, 500)
    later = NOW + 500
    marker = [info(later - 500, later - 500)]
    assert scheduler_step(EVERY_2S, marker, backups, later) == Step(SCHEDULED, 500)
    backups_only = SchedulerConfig(schedule=IntervalSchedule(2000, "PT2S"))
    assert scheduler_step(backups_only, backups, backups, NOW) == Step(SCHEDULED, 2000)


def test_nothing_configured_means_nothing_fires() -> None:
    """Retention only: the scheduler has nothing to do."""
    step = scheduler_step(SchedulerConfig(), [None], [None], NOW)
    assert step.fire is None and step.wait_ms == BACKOFF_MAX_MS


def test_errors_back_off_from_one_second_by_1_2_up_to_ten() -> None:
    """1 s, 1.2 s, 1.44 s, ... never above 10 s."""
    waits = []
    backoff = None
    for _ in range(20):
        backoff = next_backoff_ms(backoff)
        waits.append(backoff)
    assert waits[:3] == [1000, 1200, 1440]
    assert max(waits) == 10_000 and waits[-1] == 10_000


def test_the_lowest_live_broker_runs_the_jobs() -> None:
    """Placement: the lowest id among the live members (the broker itself always counts)."""
    assert lowest_live(0, [0, 1, 2])
    assert not lowest_live(1, [1, 0, 2])
    assert lowest_live(1, [1, 2])  # 0 is dead
    assert lowest_live(2, [])


# -- retention -------------------------------------------------------------------------------


def status(
    backup_id: int, partition: int, age_s: float, state: BackupState = BackupState.COMPLETED
) -> PartitionBackupStatus:
    at = datetime.fromtimestamp(NOW / 1000, UTC) - timedelta(seconds=age_s)
    text = at.isoformat().replace("+00:00", "Z")
    return PartitionBackupStatus(
        BackupId(backup_id), PartitionId(partition), state, created_at=text, last_updated_at=text
    )


def test_retention_keeps_the_window_before_the_newest_completed_backup() -> None:
    """Anchor: the partition's newest COMPLETED backup; everything older than anchor - window
    goes, whatever its state; the window is relative to the anchor, not to now."""
    p1 = PartitionId(1)
    statuses = {
        p1: [
            status(1, 1, 100),
            status(2, 1, 60, BackupState.FAILED),
            status(3, 1, 45),
            status(4, 1, 41),
            status(5, 1, 30, BackupState.IN_PROGRESS),
        ]
    }
    # Anchor 4 (41 s old): window 10 s keeps what is at most 51 s old.
    assert retention_deletions(statuses, 10_000) == {p1: [1, 2]}


def test_retention_never_deletes_the_newest_backup_complete_everywhere() -> None:
    """Zeebe's bug #62394 fixed: partition 1's newest completed backup is 5 (6 failed there),
    partition 2's is 6 (5 failed there); so the newest id COMPLETED on every partition is 4,
    and it is kept although each partition's own anchor would let it go."""
    p1, p2 = PartitionId(1), PartitionId(2)
    statuses = {
        p1: [status(4, 1, 60), status(5, 1, 10), status(6, 1, 5, BackupState.FAILED)],
        p2: [status(4, 2, 60), status(5, 2, 10, BackupState.FAILED), status(6, 2, 5)],
    }
    assert retention_deletions(statuses, 20_000) == {}
    # Without the fix (each partition alone), 4 would go on both.
    alone = {p: retention_deletions({p: s}, 20_000) for p, s in statuses.items()}
    assert alone == {p1: {p1: [4]}, p2: {p2: [4]}}
    # Once 6 completes on partition 1 too, 4 is no longer the newest complete one and goes.
    statuses[p1][2] = status(6, 1, 5)
    assert retention_deletions(statuses, 20_000) == {p1: [4], p2: [4]}


def test_retention_without_a_completed_backup_deletes_nothing() -> None:
    """No anchor, no deletion (a partition whose backups all failed keeps them)."""
    p1 = PartitionId(1)
    statuses = {p1: [status(1, 1, 100, BackupState.FAILED), status(2, 1, 90, BackupState.FAILED)]}
    assert retention_deletions(statuses, 1000) == {}
