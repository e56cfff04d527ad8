"""The gateway's pure backup decisions: id parsing, 202/409 and state aggregation."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gateway.backups import (
    aggregate,
    aggregate_list,
    parse_backup_id,
    parse_path_id,
    take_backup_outcome,
)
from zeebe_sim.cli import main as cli_main
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import AlreadyExists, InvalidArgument
from zeebe_sim.ground.ids import BackupId, PartitionId
from zeebe_sim.ground.protocol import PartitionBackupStatus, TakeBackupResponse

# Every state a partition's copy can have (INCOMPLETE is an aggregate only).
STATES = ["DOES_NOT_EXIST", "DELETED", "FAILED", "IN_PROGRESS", "COMPLETED"]


def _status(
    partition: int, state: str, backup_id: int = 42, **fields: object
) -> PartitionBackupStatus:
    return PartitionBackupStatus(
        BackupId(backup_id),
        PartitionId(partition),
        BackupState[state],
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [(1, 1), ("100", 100), (" 7 ", 7), (2**63 - 1, 2**63 - 1)]
)
def test_valid_backup_ids(raw: object, expected: int) -> None:
    """Positive int64 integers, and numeric strings as in the docs' curl example."""
    assert parse_backup_id(raw) == expected


@pytest.mark.parametrize(
    "raw", [0, -1, 1.5, 100.0, "abc", "", "-5", "1e3", 2**63, True, None, [1], {"a": 1}]
)
def test_invalid_backup_ids_are_400(raw: object) -> None:
    """Zero, negative, fractional, non-numeric, beyond int64, or not a number: InvalidArgument."""
    with pytest.raises(InvalidArgument, match="A backupId must be provided and it must be > 0"):
        parse_backup_id(raw)


@pytest.mark.parametrize("raw", ["0", "abc", "-1", "9223372036854775808", "1.5"])
def test_invalid_path_ids(raw: str) -> None:
    """Path ids must be digits of a positive int64."""
    with pytest.raises(InvalidArgument):
        parse_path_id(raw)


def test_202_when_one_created_and_the_highest_id_is_ours() -> None:
    """A partition that already created the checkpoint (propagated) answers IGNORED: still 202."""
    take_backup_outcome(5, [TakeBackupResponse(True, 5), TakeBackupResponse(False, 5)])


@pytest.mark.parametrize(
    "answers",
    [
        [TakeBackupResponse(False, 5), TakeBackupResponse(False, 5)],  # repeated POST
        [TakeBackupResponse(True, 5), TakeBackupResponse(False, 9)],  # someone is beyond
        [TakeBackupResponse(False, 9)],
    ],
)
def test_409_otherwise_with_zeebes_message(answers: list[TakeBackupResponse]) -> None:
    """Nobody created it, or a partition is already beyond it: 409 with Zeebe's text."""
    latest = max(a.checkpoint_id for a in answers)
    with pytest.raises(AlreadyExists) as caught:
        take_backup_outcome(5, answers)
    assert caught.value.message == (
        f"Requested backup has id 5. The latest backup has id {latest}. "
        "Id of new backups must be higher than the previous one."
    )


def _expected(states: tuple[str, ...]) -> str:
    """Zeebe's ordered rules as the reference lists them (8.9's getAggregatedStatus)."""
    if "FAILED" in states:
        return "FAILED"
    if (
        "DOES_NOT_EXIST" in states
        and ({"IN_PROGRESS", "COMPLETED"} & set(states))
        and "DELETED" not in states
    ):
        return "INCOMPLETE"
    if "DELETED" in states:
        return "DELETED"
    if "IN_PROGRESS" in states:
        return "IN_PROGRESS"
    if "DOES_NOT_EXIST" in states:
        return "DOES_NOT_EXIST"
    return "COMPLETED"


@pytest.mark.parametrize("states", list(itertools.product(STATES, repeat=3)))
def test_aggregation_over_every_combination_of_three_partitions(states: tuple[str, ...]) -> None:
    """The ordered rules of REFERENCE §1 (with DELETED placed as in 8.9), for all 125
    combinations; details come sorted by partition."""
    details = [_status(p, s) for p, s in zip([3, 1, 2], states, strict=True)]
    info = aggregate(BackupId(42), details)
    assert info["state"] == _expected(states)
    assert [d["partitionId"] for d in info["details"]] == [1, 2, 3]
    if info["state"] == "FAILED":
        assert info["failureReason"].startswith("Backup on partition ")
        assert "Unknown reason" in info["failureReason"]
    else:
        assert "failureReason" not in info


def test_failure_reason_concatenates_failed_partitions_in_order() -> None:
    """ "Backup on partition P failed due to REASON. " per failed partition, by partition id."""
    info = aggregate(
        BackupId(1),
        [
            _status(2, "FAILED", 1, failure_reason="disk full"),
            _status(1, "FAILED", 1, failure_reason="cancelled"),
            _status(3, "COMPLETED", 1),
        ],
    )
    assert info["failureReason"] == (
        "Backup on partition 1 failed due to cancelled. "
        "Backup on partition 2 failed due to disk full. "
    )


@given(
    st.dictionaries(
        st.integers(1, 50), st.lists(st.sampled_from(STATES[1:]), min_size=1, max_size=3)
    )
)
def test_list_counts_missing_partitions_as_does_not_exist(found: dict[int, list[str]]) -> None:
    """An id known to only some partitions is never COMPLETED; ids come newest first."""
    per_partition: list[list[PartitionBackupStatus]] = [[], [], []]
    for backup_id, states in found.items():
        for partition, state in enumerate(states, start=1):
            per_partition[partition - 1].append(_status(partition, state, backup_id, broker_id=0))
    infos = aggregate_list([PartitionId(p) for p in (1, 2, 3)], per_partition)
    assert [i["backupId"] for i in infos] == sorted(found, reverse=True)
    for info in infos:
        states = tuple(found[info["backupId"]]) + ("DOES_NOT_EXIST",) * (
            3 - len(found[info["backupId"]])
        )
        assert info["state"] == _expected(states)
        assert all("brokerId" not in d for d in info["details"])  # list details are reduced


@pytest.mark.parametrize("raw", ["0", "-3", "9223372036854775808", "1.5", "abc"])
@pytest.mark.parametrize(
    "command",
    [["restore", "--backup-id"], ["backup", "status"], ["backup", "take"], ["backup", "delete"]],
)
def test_the_cli_uses_the_same_id_rule(command: list[str], raw: str) -> None:
    """`zeebe-sim restore --backup-id` and the `zeebe-sim backup` client refuse what the API
    refuses (beyond int64 included), with exit code 2, before any connection is made."""
    result = CliRunner().invoke(cli_main, [*command, raw])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
