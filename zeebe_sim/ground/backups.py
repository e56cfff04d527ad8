"""The backup vocabulary shared by every floor: states, the best-copy order, the backup-id rule.

Theory of operation
-------------------
One :class:`BackupState` names both the state of one partition's backup copy (what a store holds)
and the aggregated state of a backup over all partitions (what the API answers): Zeebe uses one
``StateCode`` for both, and so the strings on the wire and in the API are the member names.
INCOMPLETE only ever results from aggregation; no copy is INCOMPLETE.

When several copies of one partition's backup exist (taken by different nodes), the best one
counts (REFERENCE.md §1, §4). "Best" is :data:`COPY_RANK`, Zeebe's store-side order
``DOES_NOT_EXIST < DELETED < FAILED < IN_PROGRESS < COMPLETED`` (reference/backups-8.9-8.10.md,
``BackupStatusCode``); ties are broken by the caller's tie key, see
``storage.backup.api.best_copy``.

A backup id is the checkpoint id: an integer > 0 within int64 (REFERENCE.md §1). Every entry
point (HTTP, CLI, client) refuses anything else through :func:`parse_backup_id`.
"""

from __future__ import annotations

import enum
import re

import attrs

from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import INT64_MAX, BackupId


class BackupState(enum.StrEnum):
    """A backup's state; the value is the name used on the wire, in manifests and in the API
    (a ``StrEnum``, so that it is its own JSON and table text)."""

    DOES_NOT_EXIST = "DOES_NOT_EXIST"
    DELETED = "DELETED"
    FAILED = "FAILED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    INCOMPLETE = "INCOMPLETE"  # aggregated only: some partitions have it, some do not


# Worst to best: when a partition's backup has several copies, the highest rank counts.
COPY_RANK: dict[BackupState, int] = {
    BackupState.DOES_NOT_EXIST: 0,
    BackupState.DELETED: 1,
    BackupState.FAILED: 2,
    BackupState.IN_PROGRESS: 3,
    BackupState.COMPLETED: 4,
}


def aggregate_states(states: set[BackupState]) -> BackupState:
    """The backup's state from its partitions' states, by Zeebe's ordered rules (REFERENCE.md
    §1, with DELETED as in reference/backups-8.9-8.10.md): FAILED wins; DOES_NOT_EXIST mixed with
    IN_PROGRESS or COMPLETED (and no DELETED) is INCOMPLETE; then DELETED, IN_PROGRESS,
    DOES_NOT_EXIST; all COMPLETED is COMPLETED. No partitions at all: DOES_NOT_EXIST."""
    present = {BackupState.IN_PROGRESS, BackupState.COMPLETED} & states
    if BackupState.FAILED in states:
        return BackupState.FAILED
    if BackupState.DOES_NOT_EXIST in states and present and BackupState.DELETED not in states:
        return BackupState.INCOMPLETE
    for state in (BackupState.DELETED, BackupState.IN_PROGRESS, BackupState.DOES_NOT_EXIST):
        if state in states:
            return state
    return BackupState.COMPLETED if states else BackupState.DOES_NOT_EXIST


class CheckpointType(enum.StrEnum):
    """What a checkpoint is for (reference/backups-8.9-8.10.md A.3). A MARKER only advances the
    checkpoint (a finer restore point); the two backup types also take a backup. A manifest
    written before types existed is read as MANUAL_BACKUP."""

    MARKER = "MARKER"
    SCHEDULED_BACKUP = "SCHEDULED_BACKUP"
    MANUAL_BACKUP = "MANUAL_BACKUP"

    @property
    def takes_backup(self) -> bool:
        return self is not CheckpointType.MARKER


@attrs.frozen
class CheckpointInfo:
    """One checkpoint of a partition as the runtime state and the store metadata keep it.

    ``first_log_position`` is the first log position the backup's segments hold (None for a
    marker, or when unknown)."""

    checkpoint_id: int
    checkpoint_type: CheckpointType
    checkpoint_position: int
    checkpoint_timestamp_ms: int
    first_log_position: int | None = None


BACKUP_ID_MAX = INT64_MAX
ID_REQUIRED = "A backupId must be provided and it must be > 0"
_DIGITS = re.compile(r"[0-9]+")  # used with fullmatch: "7\n" is not an id
# int64's largest value has 19 digits: longer digit strings are refused before int() (which
# refuses beyond 4,300 digits with a ValueError of its own).
_ID_DIGITS_MAX = len(str(BACKUP_ID_MAX))


def is_backup_id(value: object) -> bool:
    """Whether ``value`` is a valid backup id: an int (not a bool) in [1, int64 max]."""
    return type(value) is int and 0 < value <= BACKUP_ID_MAX


def parse_backup_id(raw: object) -> BackupId:
    """A backup id from a JSON value or a command-line/path string: an integer > 0 within
    int64, or a string of such digits (the docs' own curl example sends ``"100"``; surrounding
    spaces are tolerated).

    Raises:
        InvalidArgument: anything else, with a message naming the problem.
    """
    if isinstance(raw, bool):
        raise InvalidArgument(f"{ID_REQUIRED}, but it was a boolean")
    if isinstance(raw, str):
        text = raw.strip(" ")
        if not _DIGITS.fullmatch(text):
            raise InvalidArgument(f"{ID_REQUIRED}, but it was {_shown(raw)}")
        if len(text.lstrip("0")) > _ID_DIGITS_MAX:
            raise InvalidArgument(
                f"{ID_REQUIRED} and at most {BACKUP_ID_MAX}, but it was {_shown(raw)}"
            )
        raw = int(text)
    if isinstance(raw, float):
        raise InvalidArgument(f"{ID_REQUIRED} and a whole number, but it was {raw}")
    if not isinstance(raw, int):
        raise InvalidArgument(ID_REQUIRED)
    if raw <= 0:
        raise InvalidArgument(f"{ID_REQUIRED}, but it was {raw}")
    if raw > BACKUP_ID_MAX:
        raise InvalidArgument(
            f"{ID_REQUIRED} and at most {BACKUP_ID_MAX}, but it was {_shown(raw)}"
        )
    return BackupId(raw)


def _shown(raw: object) -> str:
    """A client's value in an error message: quoted and cut short."""
    text = repr(raw) if isinstance(raw, str) else str(raw)
    return text if len(text) <= 40 else text[:37] + "..."
