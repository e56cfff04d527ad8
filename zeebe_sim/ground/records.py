"""Records: what a partition's log holds.

Each log entry is one atomic batch of records with consecutive positions (REFERENCE.md §2). A
record is a command (something asked), an event (something that happened and changed state) or a
command rejection. Records are stored as compact msgpack arrays; their ``value`` is a plain map
with Zeebe's field names.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import attrs
import msgpack

from zeebe_sim.ground.errors import StorageCorruption


class RecordType(IntEnum):
    COMMAND = 0
    EVENT = 1
    COMMAND_REJECTION = 2


class ValueType:
    """Zeebe's value types (the subset zeebe-sim implements)."""

    DEPLOYMENT = "DEPLOYMENT"
    PROCESS = "PROCESS"
    PROCESS_INSTANCE = "PROCESS_INSTANCE"
    PROCESS_INSTANCE_CREATION = "PROCESS_INSTANCE_CREATION"
    JOB = "JOB"
    JOB_BATCH = "JOB_BATCH"
    VARIABLE = "VARIABLE"
    MESSAGE = "MESSAGE"
    MESSAGE_SUBSCRIPTION = "MESSAGE_SUBSCRIPTION"
    PROCESS_MESSAGE_SUBSCRIPTION = "PROCESS_MESSAGE_SUBSCRIPTION"
    COMMAND_DISTRIBUTION = "COMMAND_DISTRIBUTION"
    CHECKPOINT = "CHECKPOINT"
    INCIDENT = "INCIDENT"
    # Written when processing a command failed unexpectedly: the command's position and the
    # exception text (Zeebe's ErrorRecord). The command counts as processed, without effects.
    ERROR = "ERROR"
    VARIABLE_DOCUMENT = "VARIABLE_DOCUMENT"
    SIGNAL = "SIGNAL"


@attrs.frozen(slots=True)
class Record:
    position: int
    source_position: int  # the command that caused this record; -1 for commands from outside
    key: int
    timestamp_ms: int
    record_type: RecordType
    value_type: str
    intent: str
    value: dict[str, Any]
    rejection_type: str | None = None
    rejection_reason: str | None = None

    @property
    def is_command(self) -> bool:
        return self.record_type == RecordType.COMMAND

    @property
    def is_event(self) -> bool:
        return self.record_type == RecordType.EVENT


_RECORD_TYPES = {int(t): t for t in RecordType}


def encode_records(records: Sequence[Record]) -> bytes:
    packed: bytes = msgpack.packb(
        [
            (
                r.position,
                r.source_position,
                r.key,
                r.timestamp_ms,
                int(r.record_type),
                r.value_type,
                r.intent,
                r.value,
                r.rejection_type,
                r.rejection_reason,
            )
            for r in records
        ],
        use_bin_type=True,
    )
    return packed


def decode_records(payload: bytes) -> list[Record]:
    """Decode a log entry's payload.

    Raises:
        StorageCorruption: the payload is not a list of records (the entry checksum matched, so
            this is a bug or a foreign file, not a torn write).
    """
    try:
        rows = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        record_types = _RECORD_TYPES  # a dict lookup: IntEnum's call is slow here
        return [
            Record(p, s, k, t, record_types[rt], vt, i, v, rjt, rjr)
            for (p, s, k, t, rt, vt, i, v, rjt, rjr) in rows
        ]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise StorageCorruption(f"log entry is not a batch of records: {exc}") from exc
