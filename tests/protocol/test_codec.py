"""The wire codec and framing: pure, tested without sockets."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zeebe_sim.ground import protocol
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import ProtocolError
from zeebe_sim.ground.protocol import (
    BackupRuntimeStateResponse,
    ErrorResponse,
    ExecuteCommandRequest,
    FrameDecoder,
    InterPartitionCommandSent,
    ListBackupsResponse,
    PartitionBackupStatus,
    TopologyResponse,
    decode_body,
    encode,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
values = st.dictionaries(st.text(max_size=10), json_values, max_size=5)

checkpoints = st.builds(
    CheckpointInfo,
    checkpoint_id=st.integers(1, 2**63 - 1),
    checkpoint_type=st.sampled_from(CheckpointType),
    checkpoint_position=st.integers(0, 2**63 - 1),
    checkpoint_timestamp_ms=st.integers(0, 2**50),
    first_log_position=st.none() | st.integers(0, 2**63 - 1),
)

messages = st.one_of(
    st.builds(
        ExecuteCommandRequest,
        partition_id=st.integers(1, 100),
        # value types without a declared schema: any plain data is their value
        value_type=st.sampled_from(["VARIABLE", "INCIDENT"]),
        intent=st.text(min_size=1, max_size=10),
        key=st.integers(-1, 2**62),
        value=values,
    ),
    st.builds(
        InterPartitionCommandSent,
        receiver_partition_id=st.integers(1, 100),
        checkpoint_id=st.integers(-1, 2**62),
        value_type=st.sampled_from(["VARIABLE", "INCIDENT"]),
        intent=st.text(min_size=1, max_size=10),
        key=st.integers(-1, 2**62),
        value=values,
    ),
    st.builds(ErrorResponse, code=st.text(max_size=20), message=st.text(max_size=50)),
    st.builds(
        TopologyResponse,
        node_id=st.integers(0, 10),
        cluster_size=st.integers(1, 10),
        partition_count=st.integers(1, 10),
        replication_factor=st.just(1),
        members=st.dictionaries(st.integers(0, 10), st.text(max_size=20), max_size=3),
        partitions=st.dictionaries(st.integers(1, 10), st.sampled_from(["LEADER", "INACTIVE"])),
        version=st.text(max_size=10),
        backup_id_offset=st.none() | st.integers(0, 2**40),
    ),
    st.builds(
        ListBackupsResponse,
        st.lists(
            st.builds(
                PartitionBackupStatus,
                backup_id=st.integers(1, 2**63 - 1),
                partition_id=st.integers(1, 100),
                state=st.sampled_from(BackupState),
                failure_reason=st.none() | st.text(max_size=20),
                checkpoint_position=st.none() | st.integers(0, 2**63 - 1),
                broker_id=st.none() | st.integers(0, 10),
                first_log_position=st.none() | st.integers(0, 2**63 - 1),
                checkpoint_type=st.none() | st.sampled_from(CheckpointType),
            ),
            max_size=2,
        ),
    ),
    st.builds(
        BackupRuntimeStateResponse,
        partition_id=st.integers(1, 100),
        checkpoint=st.none() | checkpoints,
        backup=st.none() | checkpoints,
        ranges=st.lists(st.tuples(checkpoints, checkpoints), max_size=3),
    ),
)


@given(messages, st.integers(0, 2**32))
def test_round_trip(message: protocol.Message, request_id: int) -> None:
    """Every message decodes to an equal message with the same request id."""
    frame = encode(message, request_id)
    assert FrameDecoder().feed(frame) == [(request_id, message)]


# Generating a batch of messages is slow on a loaded machine; that is not what is under test.
@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_any_chunking_yields_the_same_messages(
    batch: list[protocol.Message], data: st.DataObject
) -> None:
    """Frames split at arbitrary byte boundaries decode to the same sequence of messages."""
    stream = b"".join(encode(m, i) for i, m in enumerate(batch))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    decoded = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoded += decoder.feed(stream[start:end])
    assert decoded == list(enumerate(batch))
    assert decoder.buffered_bytes == 0


def _frame(body: Any) -> bytes:
    packed = msgpack.packb(body, use_bin_type=True)
    return struct.pack(">I", len(packed)) + packed


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (struct.pack(">I", 3) + b"\xc1\xc1\xc1", "undecodable"),
        (_frame([1, "ExecuteCommandRequest", 1]), "envelope"),
        (_frame([99, "TopologyRequest", 1, {}]), "version"),
        (_frame([1, "NoSuchMessage", 1, {}]), "unknown message type"),
        (_frame([1, "TopologyRequest", -5, {}]), "request id"),
        (_frame([1, "ErrorResponse", 1, {"code": "X"}]), "missing field"),
        (_frame([1, "ErrorResponse", 1, {"code": "X", "message": 5}]), "expected a string, got 5"),
        (
            _frame([1, "ErrorResponse", 1, {"code": "X", "message": "m", "extra": 1}]),
            "unknown fields",
        ),
        (
            _frame(
                [
                    1,
                    "ExecuteCommandRequest",
                    1,
                    {"partition_id": True, "value_type": "J", "intent": "C", "key": 1, "value": {}},
                ]
            ),
            "expected an integer",
        ),
    ],
)
def test_malformed_frames_raise(frame: bytes, complaint: str) -> None:
    """Anything that is not a valid envelope of a known message is a ProtocolError."""
    with pytest.raises(ProtocolError, match=complaint):
        FrameDecoder().feed(frame)


def test_oversized_frame_is_refused_before_buffering() -> None:
    """A header announcing more than the limit fails at once, without waiting for the body."""
    decoder = FrameDecoder(frame_bytes_max=1024)
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(struct.pack(">I", 1025))


def test_encoding_an_oversized_message_fails() -> None:
    """We never send a frame the other side would refuse."""
    big = ExecuteCommandRequest(
        1, "DEPLOYMENT", "CREATE", -1, {"r": b"x" * protocol.FRAME_BYTES_MAX}
    )
    with pytest.raises(ProtocolError):
        encode(big)


def test_decode_body_returns_request_id() -> None:
    """The request id travels with the message for correlation."""
    frame = encode(ErrorResponse("NOT_FOUND", "gone"), 42)
    assert decode_body(frame[4:]) == (42, ErrorResponse("NOT_FOUND", "gone"))


@pytest.mark.parametrize("result", [True, False, None, [True, 1], {"a": False}])
def test_an_any_field_takes_booleans(result: Any) -> None:
    """A field typed Any (a query's result) carries a bool like any other value; only a bool
    where an int is declared is malformed."""
    frame = protocol.encode(protocol.QueryResponse(result), 7)
    [(request_id, message)] = protocol.FrameDecoder().feed(frame)
    assert request_id == 7 and message == protocol.QueryResponse(result)


def test_a_range_must_be_a_pair() -> None:
    """A backup range on the wire is exactly two checkpoints; one or three is malformed."""
    info = {
        "checkpoint_id": 5,
        "checkpoint_type": "MARKER",
        "checkpoint_position": 9,
        "checkpoint_timestamp_ms": 1,
        "first_log_position": None,
    }
    for pair in ([info], [info, info, info]):
        fields = {"partition_id": 1, "checkpoint": None, "backup": None, "ranges": [pair]}
        body = msgpack.packb([1, "BackupRuntimeStateResponse", 0, fields])
        with pytest.raises(ProtocolError, match="a list of 2"):
            decode_body(body)


raft_entries = st.lists(
    st.tuples(
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
        st.none() | st.binary(max_size=40),
    ),
    max_size=6,
)


@given(raft_entries)
def test_raft_entries_round_trip(entries: list[protocol.RaftEntry]) -> None:
    """An append request's packed entries unpack to the same entries, data bytes as they were
    and the no-op's missing data kept apart from empty data."""
    assert protocol.unpack_raft_entries(protocol.pack_raft_entries(entries)) == entries


@given(raft_entries.filter(bool), st.data())
def test_cut_or_garbled_raft_entries_raise(entries: list[protocol.RaftEntry], data: Any) -> None:
    """Packed entries cut short, or with a data length past the end or below -1, are a
    ProtocolError (the connection that sent them is closed), never a partial list."""
    packed = protocol.pack_raft_entries(entries)
    last_start = len(protocol.pack_raft_entries(entries[:-1]))
    cut = data.draw(st.integers(last_start + 1, len(packed) - 1))  # inside the last entry
    with pytest.raises(ProtocolError):
        protocol.unpack_raft_entries(packed[:cut])
    for size in (-2, len(packed) + 1):
        garbled = struct.pack("<QQq", 1, 1, size) + packed
        with pytest.raises(ProtocolError):
            protocol.unpack_raft_entries(garbled)
