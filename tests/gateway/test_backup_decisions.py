"""The gateway's pure backup decisions: id parsing, the id to take, 202/409, state aggregation
and the two views of a BackupInfo (actuator and REST)."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gateway.backups import (
    GENERATED_ID_GIVEN,
    Listings,
    actuator_view,
    aggregate,
    backup_id_to_take,
    parse_backup_id,
    parse_prefix,
    parse_selector,
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("7", 7), ("+7", 7), ("007", 7), ("0", 0), ("-1", -1), ("-9223372036854775808", -(2**63))],
)
def test_path_ids_are_read_as_zeebe_reads_a_long(raw: str, expected: int) -> None:
    """Any long, sign included (an id <= 0 is one no backup has: GET 404, DELETE 204)."""
    assert parse_selector(raw, "a backup ID") == expected


@pytest.mark.parametrize("raw", ["abc", "9223372036854775808", "1.5", "7\n", " 7", "", "1" * 5000])
def test_invalid_path_ids_are_400_with_the_newest_message(raw: str) -> None:
    """Not a long (beyond int64 included): 400 "Expected a backup ID or prefix ending with
    '*', but got '<x>'." (the DELETE variant names 'state')."""
    with pytest.raises(InvalidArgument) as caught:
        parse_selector(raw, "a backup ID or prefix ending with '*'")
    assert caught.value.message == (
        f"Expected a backup ID or prefix ending with '*', but got '{raw[:40]}'."
    )


@pytest.mark.parametrize(("raw", "expected"), [("", ""), ("17", "17"), ("-1", None), ("-", None)])
def test_any_decimal_prefix_is_a_listing(raw: str, expected: str | None) -> None:
    """Digits list by prefix, "" lists all; a sign matches no backup id (an empty list)."""
    assert parse_prefix(raw) == expected


@pytest.mark.parametrize("raw", ["1x", "abc", "+1", "1 "])
def test_a_prefix_that_is_not_decimal_is_400(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="prefix ending with"):
        parse_prefix(raw)


def test_the_id_to_take_given_or_generated() -> None:
    """Without generated ids the given id is taken, and none is 400; in generated-id mode the
    id is epoch milliseconds plus the offset, and a given id is 400 (A.6)."""
    assert backup_id_to_take(BackupId(5), None, 1_000) == 5
    with pytest.raises(InvalidArgument, match=r"^A backupId must be provided and it must be > 0$"):
        backup_id_to_take(None, None, 1_000)
    assert backup_id_to_take(None, 0, 1_764_000_000_000) == 1_764_000_000_000
    assert backup_id_to_take(None, 20251104131520, 1_000) == 20251104132520
    with pytest.raises(InvalidArgument) as caught:
        backup_id_to_take(BackupId(5), 0, 1_000)
    assert caught.value.message == GENERATED_ID_GIVEN


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
        f"Requested backup has ID 5. The latest backup has ID {latest}. The backup ID must be "
        "greater than the ID of previous backups that are completed, failed, or deleted."
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
        assert info["failureReason"] is None
        assert "failureReason" not in actuator_view(info)


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
    """An id known to only some partitions is never COMPLETED; ids come newest first (the
    merge a listing renders, from every partition's statuses, nothing cached)."""
    per_partition: list[dict[BackupId, PartitionBackupStatus]] = [{}, {}, {}]
    for backup_id, states in found.items():
        for partition, state in enumerate(states, start=1):
            status = _status(partition, state, backup_id, broker_id=0)
            per_partition[partition - 1][status.backup_id] = status
    partitions = [PartitionId(p) for p in (1, 2, 3)]
    body = Listings(lambda info: info).merged(
        "", partitions, per_partition, ((), (None,) * 3), None
    )
    infos = json.loads(body)
    assert [i["backupId"] for i in infos] == sorted(found, reverse=True)
    for info in infos:
        states = tuple(found[info["backupId"]]) + ("DOES_NOT_EXIST",) * (
            3 - len(found[info["backupId"]])
        )
        assert info["state"] == _expected(states)
        # Every field in the REST view; the actuator's list details are reduced.
        assert all(len(d) == 10 for d in info["details"])
        listed = actuator_view(info, listed=True)["details"]
        assert all(set(d) <= {"partitionId", "state", "failureReason", "createdAt"} for d in listed)


def test_the_actuator_leaves_out_what_a_failed_partition_never_had() -> None:
    """In a status, a FAILED partition shows its reason, times and snapshot, not a version or
    position; the REST view has every field, null where unknown (A.7); a list shows the
    version on every entry, FAILED too (REFERENCE §1)."""
    statuses = [
        _status(1, "FAILED", 1, failure_reason="x", created_at="t", broker_version="8.10.0"),
        _status(2, "COMPLETED", 1, created_at="t", checkpoint_position=5, broker_version="8"),
    ]
    info = aggregate(BackupId(1), statuses)
    assert info["details"][0]["brokerVersion"] == "8.10.0"
    assert info["details"][0]["lastUpdatedAt"] is None
    shown = actuator_view(info)["details"]
    assert shown[0] == {"partitionId": 1, "state": "FAILED", "failureReason": "x", "createdAt": "t"}
    assert shown[1] == {
        "partitionId": 2,
        "state": "COMPLETED",
        "createdAt": "t",
        "checkpointPosition": 5,
        "brokerVersion": "8",
    }
    listed = actuator_view(info, listed=True)["details"]
    assert [d["brokerVersion"] for d in listed] == ["8.10.0", "8"]


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
