"""Every field of every wire message, and every key of every command value, is checked on decode:
a missing, extra or mistyped one is a ProtocolError, never a message handed on."""

from __future__ import annotations

import struct
import types
import typing
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeebe_sim.ground import protocol
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.commands import COMMAND_VALUES
from zeebe_sim.ground.errors import ProtocolError
from zeebe_sim.ground.ids import INT64_MAX, INT64_MIN
from zeebe_sim.ground.protocol import (
    PROTOCOL_VERSION,
    ExecuteCommandRequest,
    FrameDecoder,
    InterPartitionCommandSent,
    PartitionBackupStatus,
)
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.shapes import NESTING_DEPTH_MAX

CHECKPOINT = CheckpointInfo(7, CheckpointType.SCHEDULED_BACKUP, 9, 1_700_000_000_000, 3)
STATUS = PartitionBackupStatus(7, 2, BackupState.COMPLETED, broker_id=1, checkpoint_position=9)

# One valid example of every message class (the codec's registry must not hold others).
VALID: dict[type[protocol.Message], protocol.Message] = {
    protocol.TopologyRequest: protocol.TopologyRequest(0, "127.0.0.1:26501"),
    protocol.TopologyResponse: protocol.TopologyResponse(
        0, 3, 3, 1, {0: "127.0.0.1:26501"}, {1: "LEADER"}, "8.8.0"
    ),
    protocol.ExecuteCommandRequest: protocol.ExecuteCommandRequest(
        1, ValueType.JOB, "COMPLETE", 5, {"variables": {"a": 1}}
    ),
    protocol.ExecuteCommandResponse: protocol.ExecuteCommandResponse(
        1, 5, ValueType.JOB, "COMPLETED", {"a": [1, "b"]}, None, None
    ),
    protocol.QueryRequest: protocol.QueryRequest(1, "partitions", {}),
    protocol.QueryResponse: protocol.QueryResponse({"1": {"ready": True}}),
    protocol.ErrorResponse: protocol.ErrorResponse("NOT_FOUND", "gone"),
    protocol.InterPartitionCommandSent: protocol.InterPartitionCommandSent(
        2,
        -1,
        ValueType.PROCESS_MESSAGE_SUBSCRIPTION,
        "CREATE",
        5,
        {"elementInstanceKey": 5, "messageName": "m"},
    ),
    protocol.TakeBackupRequest: protocol.TakeBackupRequest(1, 7),
    protocol.ModeChangeRequest: protocol.ModeChangeRequest("RECOVERING"),
    protocol.ModeChangeResponse: protocol.ModeChangeResponse(1, "PROCESSING"),
    protocol.RestorePlanRequest: protocol.RestorePlanRequest([7, 9], None, None),
    protocol.RestorePlanResponse: protocol.RestorePlanResponse(
        9, {1: protocol.PartitionRestorePlan([7, 9], 8, 120)}
    ),
    protocol.RestorePartitionRequest: protocol.RestorePartitionRequest(
        1, protocol.PartitionRestorePlan([7], 7, 100)
    ),
    protocol.RestorePartitionResponse: protocol.RestorePartitionResponse(1),
    protocol.TakeBackupResponse: protocol.TakeBackupResponse(True, 7),
    protocol.BackupStatusRequest: protocol.BackupStatusRequest(1, 7),
    protocol.BackupStatusResponse: protocol.BackupStatusResponse(STATUS),
    protocol.ListBackupsRequest: protocol.ListBackupsRequest(1, "1"),
    protocol.ListBackupsResponse: protocol.ListBackupsResponse([STATUS]),
    protocol.DeleteBackupRequest: protocol.DeleteBackupRequest(1, 7),
    protocol.DeleteBackupResponse: protocol.DeleteBackupResponse(),
    protocol.RaftPollRequest: protocol.RaftPollRequest(1, 0, 3, 10, 2),
    protocol.RaftPollResponse: protocol.RaftPollResponse(1, 2, 3, True),
    protocol.RaftVoteRequest: protocol.RaftVoteRequest(1, 0, 4, 10, 2),
    protocol.RaftVoteResponse: protocol.RaftVoteResponse(1, 2, 4, False),
    protocol.RaftAppendRequest: protocol.RaftAppendRequest(
        1, 0, 4, 9, 2, protocol.pack_raft_entries([(10, 4, b"batch"), (11, 4, None)]), 9
    ),
    protocol.RaftAppendResponse: protocol.RaftAppendResponse(1, 2, 4, True, 11),
    protocol.RaftInstallRequest: protocol.RaftInstallRequest(
        1, 0, 4, protocol.RaftSnapshot(8, 3, 100), 0, b"chunk", False
    ),
    protocol.RaftInstallResponse: protocol.RaftInstallResponse(1, 2, 4, 8, 5, False),
    protocol.BackupRuntimeStateRequest: protocol.BackupRuntimeStateRequest(1, "SYNC"),
    protocol.BackupRuntimeStateResponse: protocol.BackupRuntimeStateResponse(
        1, CHECKPOINT, CHECKPOINT, [(CHECKPOINT, CHECKPOINT)]
    ),
    protocol.SetFaultsRequest: protocol.SetFaultsRequest([1, 2], 250),
    protocol.FaultsResponse: protocol.FaultsResponse([1], 0),
}

K = 2**52  # shapes need any key > 0 within int64
# One valid value of every command with a schema.
VALID_VALUES: dict[tuple[str, str], dict[str, Any]] = {
    (ValueType.DEPLOYMENT, "CREATE"): {
        "resources": [{"resourceName": "a.bpmn", "resource": b"<xml/>"}]
    },
    (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGE"): {"partitionId": 2, "distributionKey": K},
    (ValueType.PROCESS_INSTANCE_CREATION, "CREATE"): {
        "variables": {"x": 1},
        "bpmnProcessId": "p",
        "version": -1,
    },
    (ValueType.JOB_BATCH, "ACTIVATE"): {
        "type": "work",
        "worker": "w",
        "timeout": 1000,
        "maxJobsToActivate": 3,
    },
    (ValueType.JOB, "COMPLETE"): {"variables": {}},
    (ValueType.JOB, "TIME_OUT"): {},
    (ValueType.MESSAGE, "PUBLISH"): {
        "name": "m",
        "correlationKey": "k",
        "timeToLive": 0,
        "messageId": "",
        "variables": {},
    },
    (ValueType.MESSAGE, "EXPIRE"): {},
    (ValueType.MESSAGE_SUBSCRIPTION, "CREATE"): {
        "processInstanceKey": K,
        "elementInstanceKey": K + 1,
        "messageName": "m",
        "correlationKey": "k",
        "bpmnProcessId": "p",
    },
    (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATE"): {
        "elementInstanceKey": K,
        "messageName": "m",
        "messageKey": K + 2,
        "bpmnProcessId": "p",
    },
    (ValueType.MESSAGE_SUBSCRIPTION, "REJECT"): {
        "elementInstanceKey": K,
        "messageName": "m",
        "messageKey": K + 2,
        "bpmnProcessId": "p",
    },
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATE"): {
        "elementInstanceKey": K,
        "messageName": "m",
    },
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATE"): {
        "processInstanceKey": K,
        "elementInstanceKey": K + 1,
        "messageName": "m",
        "correlationKey": "k",
        "bpmnProcessId": "p",
        "messageKey": K + 2,
        "variables": {"v": None},
        "messagePartitionId": 3,
    },
    (ValueType.CHECKPOINT, "CREATE"): {"checkpointId": 7, "checkpointType": "MARKER"},
    (ValueType.CHECKPOINT, "CONFIRM_BACKUP"): {
        "checkpointId": 7,
        "checkpointPosition": 9,
        "checkpointType": "SCHEDULED_BACKUP",
        "firstLogPosition": -1,
    },
    (ValueType.CHECKPOINT, "DELETE_BACKUP"): {"checkpointId": 7},
    (ValueType.CHECKPOINT, "RESET_STATE"): {},
    (ValueType.PROCESS_INSTANCE_CREATION, "CREATE_WITH_AWAITING_RESULT"): {
        "bpmnProcessId": "p",
        "version": -1,
        "variables": {},
    },
    (ValueType.PROCESS_INSTANCE, "CANCEL"): {},
    (ValueType.VARIABLE_DOCUMENT, "UPDATE"): {"scopeKey": 5, "variables": {"a": 1}, "local": True},
    (ValueType.JOB, "FAIL"): {"retries": 1, "errorMessage": "e", "retryBackOff": 10},
    (ValueType.JOB, "RECUR_AFTER_BACKOFF"): {},
    (ValueType.JOB, "THROW_ERROR"): {"errorCode": "E", "errorMessage": "m"},
    (ValueType.JOB, "UPDATE_RETRIES"): {"retries": 2},
    (ValueType.JOB, "UPDATE_TIMEOUT"): {"timeout": 1000},
    (ValueType.INCIDENT, "RESOLVE"): {},
    (ValueType.SIGNAL, "BROADCAST"): {"signalName": "s"},
    (ValueType.MESSAGE_SUBSCRIPTION, "DELETE"): {"elementInstanceKey": 5, "messageName": "m"},
}


def _frame(type_name: str, fields: Any) -> bytes:
    body = msgpack.packb([PROTOCOL_VERSION, type_name, 1, fields], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _wire_fields(message: protocol.Message) -> dict[str, Any]:
    """The message's fields as msgpack carries them (what encode sends)."""
    frame = protocol.encode(message, 1)
    fields: dict[str, Any] = msgpack.unpackb(frame[4:], raw=False, strict_map_key=False)[3]
    return fields


def _accepts_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(hint)


# Values of every msgpack kind, and integers just beyond int64.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(INT64_MAX + 1, 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def _is_wrong(hint: Any, value: Any) -> bool:
    """Whether ``value`` is of a kind the annotation does not allow (an independent oracle,
    deliberately coarse: only clear kind mismatches and out-of-range integers)."""
    while typing.get_origin(hint) in (typing.Annotated, typing.NotRequired):
        hint = typing.get_args(hint)[0]
    if value is None:
        return not _accepts_none(hint) and hint is not Any
    hints = typing.get_args(hint) if _accepts_none(hint) else (hint,)
    base = next(h for h in hints if h is not type(None))
    if base is Any:
        return type(value) is int and not INT64_MIN <= value <= INT64_MAX
    supertype = getattr(base, "__supertype__", base)
    origin = typing.get_origin(supertype) or supertype
    if origin is int:
        return type(value) is not int or not INT64_MIN <= value <= INT64_MAX
    if origin in (str, bool, bytes, list, dict):
        return type(value) is not origin
    if isinstance(origin, type) and issubclass(origin, BackupState):
        return type(value) is not str or value not in {s.value for s in BackupState}
    if attrs.has(origin):
        return type(value) is not dict or bool(value)  # a non-empty map of unknown fields
    return False


def test_the_examples_cover_every_message_and_decode() -> None:
    """Every registered message class has a valid example, and each example round-trips."""
    assert set(VALID) == set(protocol._MESSAGES.values())
    for message in VALID.values():
        assert FrameDecoder().feed(protocol.encode(message, 3)) == [(3, message)]


@pytest.mark.parametrize("key", sorted(VALID_VALUES))
def test_every_command_value_example_is_accepted(key: tuple[str, str]) -> None:
    """The valid examples below are valid, so that their mutations test one fault each."""
    message = ExecuteCommandRequest(1, key[0], key[1], -1, VALID_VALUES[key])
    assert FrameDecoder().feed(protocol.encode(message))[0][1] == message
    assert set(VALID_VALUES) == set(COMMAND_VALUES)


@given(st.sampled_from(sorted(VALID, key=lambda c: c.__name__)), st.data())
def test_a_missing_required_field_is_refused(cls: type, data: st.DataObject) -> None:
    """Leaving out any field without a default is a ProtocolError."""
    fields = _wire_fields(VALID[cls])
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
    if not required:
        return
    del fields[data.draw(st.sampled_from(required))]
    with pytest.raises(ProtocolError, match="missing field"):
        FrameDecoder().feed(_frame(cls.__name__, fields))


@given(st.sampled_from(sorted(VALID, key=lambda c: c.__name__)), st.text(min_size=1), ANY_VALUE)
def test_an_extra_field_is_refused(cls: type, name: str, value: Any) -> None:
    """A field the message does not declare is a ProtocolError, whatever its value."""
    fields = _wire_fields(VALID[cls])
    if name in fields or name in {f.name for f in attrs.fields(cls)}:
        return
    fields[name] = value
    with pytest.raises(ProtocolError, match="unknown fields"):
        FrameDecoder().feed(_frame(cls.__name__, fields))


@given(
    st.sampled_from(sorted(VALID, key=lambda c: c.__name__)),
    st.data(),
    ANY_VALUE,
)
def test_a_mistyped_field_is_refused(cls: type, data: st.DataObject, value: Any) -> None:
    """Any field replaced by a value of a kind its declaration does not allow (or an integer
    beyond int64) is a ProtocolError."""
    names = [f.name for f in attrs.fields(cls)]
    if not names:
        return
    name = data.draw(st.sampled_from(names))
    hint = typing.get_type_hints(cls)[name]
    if not _is_wrong(hint, value):
        return
    fields = _wire_fields(VALID[cls])
    fields[name] = value
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(_frame(cls.__name__, fields))


@given(st.sampled_from(sorted(VALID_VALUES)), st.data(), ANY_VALUE)
def test_a_command_value_with_a_missing_extra_or_mistyped_key_is_refused(
    command: tuple[str, str], data: st.DataObject, replacement: Any
) -> None:
    """Both ways a command reaches a partition (from the gateway, from another partition)
    refuse a value that does not match the command's schema."""
    value = dict(VALID_VALUES[command])
    schema = COMMAND_VALUES[command]
    options = typing.get_args(schema) or (schema,)
    hints = typing.get_type_hints(options[0], include_extras=True)
    required = [k for k in options[0].__required_keys__ if k in value]
    mutation = data.draw(st.sampled_from(["missing", "extra", "mistyped"]))
    if mutation == "missing":
        if not required:
            return
        del value[data.draw(st.sampled_from(required))]
    elif mutation == "extra":
        value[data.draw(st.text(min_size=1).filter(lambda k: k not in hints))] = replacement
    else:
        if not value:
            return
        key = data.draw(st.sampled_from(sorted(value)))
        if not _is_wrong(hints[key], replacement):
            return
        value[key] = replacement
    for message in (
        ExecuteCommandRequest(1, command[0], command[1], -1, value),
        InterPartitionCommandSent(1, -1, command[0], command[1], 5, value),
    ):
        with pytest.raises(ProtocolError):
            FrameDecoder().feed(protocol.encode(message))


@pytest.mark.parametrize(
    ("command", "key", "value"),
    [
        ((ValueType.JOB_BATCH, "ACTIVATE"), "timeout", 2**62 + 1),
        ((ValueType.JOB_BATCH, "ACTIVATE"), "timeout", -1),
        ((ValueType.JOB_BATCH, "ACTIVATE"), "maxJobsToActivate", 0),
        ((ValueType.MESSAGE, "PUBLISH"), "timeToLive", INT64_MAX),
        ((ValueType.CHECKPOINT, "CREATE"), "checkpointId", 0),
        ((ValueType.CHECKPOINT, "CREATE"), "checkpointId", "7"),
        ((ValueType.CHECKPOINT, "CREATE"), "checkpointType", "BACKUP"),
        ((ValueType.CHECKPOINT, "CONFIRM_BACKUP"), "firstLogPosition", -2),
        ((ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGE"), "partitionId", 0),
        ((ValueType.MESSAGE_SUBSCRIPTION, "CREATE"), "processInstanceKey", -1),
    ],
)
def test_ranges_inside_values(command: tuple[str, str], key: str, value: Any) -> None:
    """Durations whose deadline would overflow int64, counts below one, a checkpoint id that is
    not > 0 or not an int, a partition id 0, a "no key" where a key is required: refused."""
    message = ExecuteCommandRequest(
        1, command[0], command[1], -1, {**VALID_VALUES[command], key: value}
    )
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(protocol.encode(message))


def test_plain_data_nested_too_deep_is_refused() -> None:
    """Variables nested beyond the limit are refused before anything walks them recursively."""
    deep: Any = 1
    for _ in range(NESTING_DEPTH_MAX + 1):
        deep = [deep]
    message = ExecuteCommandRequest(1, ValueType.JOB, "COMPLETE", 5, {"variables": {"d": deep}})
    with pytest.raises(ProtocolError, match="nested deeper"):
        FrameDecoder().feed(protocol.encode(message))


def test_plain_data_maps_need_string_keys() -> None:
    """A map with an integer key inside variables is refused (records and JSON have string
    keys only)."""
    message = ExecuteCommandRequest(1, ValueType.JOB, "COMPLETE", 5, {"variables": {"m": {1: 2}}})
    with pytest.raises(ProtocolError, match="key"):
        FrameDecoder().feed(protocol.encode(message))


@pytest.mark.parametrize(
    "address", ["", "host", "host:", ":26501", "host:0", "host:65536", "host:abc", "a b:1"]
)
def test_unusable_member_addresses(address: str) -> None:
    """Gossip addresses must be host:port with a port in 1..65535."""
    with pytest.raises(ProtocolError):
        protocol.parse_member_address(address)


def test_usable_member_address() -> None:
    """A host and a port."""
    assert protocol.parse_member_address("10.0.0.1:26501") == ("10.0.0.1", 26501)


@pytest.mark.parametrize("backup_id", [0, -1, INT64_MAX + 1])
def test_a_backup_to_take_has_an_id_above_zero(backup_id: int) -> None:
    """TAKE_BACKUP writes CHECKPOINT CREATE at once: an id that is not > 0 (or not an int64)
    never gets that far."""
    frame = _frame("TakeBackupRequest", {"partition_id": 1, "backup_id": backup_id})
    with pytest.raises(ProtocolError, match="backup_id"):
        FrameDecoder().feed(frame)
