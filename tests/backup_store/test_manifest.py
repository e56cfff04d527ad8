"""The manifest codec and the per-file checksum/compression codecs: pure, no I/O, no event loop."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.backup.api import BackupDescriptor, BackupIdentifier
from storage.backup.manifest import (
    Decoder,
    Encoder,
    FileEntry,
    Manifest,
    decode_manifest,
    encode_manifest,
    format_timestamp,
    parse_timestamp,
)
from zeebe_sim.ground.backups import BackupState, CheckpointType
from zeebe_sim.ground.errors import StorageCorruption
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId

ids = st.builds(
    BackupIdentifier,
    st.integers(0, 63).map(NodeId),
    st.integers(1, 8192).map(PartitionId),
    st.integers(1, 2**63 - 1).map(BackupId),
)
descriptors = st.builds(
    BackupDescriptor,
    st.none() | st.text(min_size=1, max_size=30),
    st.integers(-1, 2**63 - 1),
    st.integers(1, 8192),
    st.text(max_size=20),
    st.none() | st.integers(0, 2**63 - 1),
    st.sampled_from(CheckpointType),
)
file_names = st.text(
    st.characters(exclude_characters="/\\\0", exclude_categories=["Cs"]), min_size=1
).filter(lambda n: n not in (".", ".."))
entries = st.builds(
    FileEntry,
    file_names,
    st.integers(0, 2**40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([None, "zstd"]),
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
manifests = st.builds(
    Manifest,
    id=ids,
    descriptor=st.none() | descriptors,
    status_code=st.sampled_from(
        [BackupState.IN_PROGRESS, BackupState.COMPLETED, BackupState.FAILED, BackupState.DELETED]
    ),
    created_at=times,
    modified_at=times,
    snapshot_files=st.lists(entries, max_size=4).map(tuple),
    segment_files=st.lists(entries, max_size=4).map(tuple),
    failure_reason=st.none() | st.text(),
)


@given(manifests)
def test_manifest_round_trips_through_json(manifest: Manifest) -> None:
    """Any manifest decodes to itself after encoding."""
    assert decode_manifest(encode_manifest(manifest), "test") == manifest


def test_manifest_json_has_zeebes_shape() -> None:
    """Keys are Zeebe's camelCase names; optional ones are omitted, not null."""
    at = datetime(2022, 12, 8, 13, 0, 55, 344276, tzinfo=UTC)
    manifest = Manifest.in_progress(
        BackupIdentifier(NodeId(0), PartitionId(1), BackupId(100)),
        BackupDescriptor(None, 5, 3, "8.2.0"),
        at,
    )
    assert json.loads(encode_manifest(manifest)) == {
        "id": {"nodeId": 0, "partitionId": 1, "checkpointId": 100},
        "descriptor": {
            "checkpointPosition": 5,
            "numberOfPartitions": 3,
            "brokerVersion": "8.2.0",
            "checkpointType": "MANUAL_BACKUP",
        },
        "statusCode": "IN_PROGRESS",
        "snapshot": {"files": []},
        "segments": {"files": []},
        "createdAt": "2022-12-08T13:00:55.344276Z",
        "modifiedAt": "2022-12-08T13:00:55.344276Z",
    }


def test_a_manifest_without_a_checkpoint_type_is_a_manual_backup() -> None:
    """Manifests written before checkpoint types existed (and without firstLogPosition) read as
    MANUAL_BACKUP with an unknown first log position; a written type and position come back."""
    at = datetime(2022, 12, 8, 13, 0, 55, tzinfo=UTC)
    id = BackupIdentifier(NodeId(0), PartitionId(1), BackupId(100))
    typed = Manifest.in_progress(
        id, BackupDescriptor(None, 5, 3, "8.9.0", 2, CheckpointType.SCHEDULED_BACKUP), at
    )
    doc = json.loads(encode_manifest(typed))
    assert doc["descriptor"]["checkpointType"] == "SCHEDULED_BACKUP"
    assert doc["descriptor"]["firstLogPosition"] == 2
    del doc["descriptor"]["checkpointType"], doc["descriptor"]["firstLogPosition"]
    old = decode_manifest(json.dumps(doc).encode(), "here").descriptor
    assert old is not None
    assert old.checkpoint_type is CheckpointType.MANUAL_BACKUP
    assert old.first_log_position is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"\xff\xfe",
        b'{"id": {}}',
        b'{"id": {"nodeId": 0, "partitionId": 1, "checkpointId": "1"}}',
    ],
)
def test_malformed_manifest_is_storage_corruption(raw: bytes) -> None:
    """Bytes that are not a manifest raise StorageCorruption naming where they were read."""
    with pytest.raises(StorageCorruption, match="at somewhere"):
        decode_manifest(raw, "somewhere")


@pytest.mark.parametrize(
    "change",
    [
        {"statusCode": "DOES_NOT_EXIST"},
        {"statusCode": "DONE"},
        {"createdAt": "2022-12-08T13:00:55"},  # no time zone
        {"snapshot": {"files": [{"name": "../x", "size": 1, "crc32c": 0}]}},
        {"segments": {"files": [{"name": "a", "size": -1, "crc32c": 0}]}},
        {"segments": {"files": [{"name": "a", "size": 1, "crc32c": 2**32}]}},
        {"segments": {"files": [{"name": "a", "size": 1, "crc32c": 0, "compression": "lz4"}]}},
        {"failureReason": 7},
    ],
)
def test_invalid_manifest_fields_are_storage_corruption(change: dict[str, object]) -> None:
    """Values a manifest can never hold are rejected, not passed on."""
    doc = json.loads(
        encode_manifest(
            Manifest.failed_new(
                BackupIdentifier(NodeId(0), PartitionId(1), BackupId(2)), "x", datetime.now(UTC)
            )
        )
    )
    doc.update(change)
    with pytest.raises(StorageCorruption):
        decode_manifest(json.dumps(doc).encode(), "here")


def test_timestamps_are_utc_with_z_and_accept_nanoseconds() -> None:
    """Timestamps are written as UTC with Z; Zeebe's nanosecond timestamps parse."""
    local = datetime(2024, 1, 1, 12, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(local) == "2024-01-01T12:00:00.000000Z"
    assert parse_timestamp("2022-12-08T13:00:55.344276672Z") == datetime(
        2022, 12, 8, 13, 0, 55, 344276, tzinfo=UTC
    )


def test_illegal_state_change_is_a_bug() -> None:
    """FAILED never becomes COMPLETED: the transition table refuses it (an assertion)."""
    failed = Manifest.failed_new(
        BackupIdentifier(NodeId(0), PartitionId(1), BackupId(2)), "x", datetime.now(UTC)
    )
    with pytest.raises(AssertionError):
        failed.completed((), (), datetime.now(UTC))


def _encode(data: bytes, compression: str | None, cuts: list[int]) -> tuple[bytes, FileEntry]:
    encoder = Encoder(compression)
    out = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out.append(encoder.feed(data[start:cut]))
        start = max(start, cut)
    out.append(encoder.finish())
    return b"".join(out), encoder.entry("f")


def _decode(stored: bytes, entry: FileEntry, chunk: int) -> bytes:
    decoder = Decoder(entry, "f")
    out = b"".join(decoder.feed(stored[i : i + chunk]) for i in range(0, len(stored), chunk))
    decoder.finish()
    return out


@given(
    st.binary(max_size=5000),
    st.sampled_from([None, "zstd"]),
    st.lists(st.integers(0, 5000), max_size=5),
    st.integers(1, 700),
)
def test_codec_round_trips_under_any_chunking(
    data: bytes, compression: str | None, cuts: list[int], chunk: int
) -> None:
    """Whatever the chunking on either side, decoding gives the original bytes, and the entry
    holds their size and crc32c."""
    stored, entry = _encode(data, compression, cuts)
    assert entry.size == len(data) and entry.crc32c == google_crc32c.value(data)
    assert _decode(stored, entry, chunk) == data


@given(
    st.binary(min_size=1, max_size=3000),
    st.sampled_from([None, "zstd"]),
    st.integers(0),
    st.integers(1, 255),
)
def test_any_flipped_byte_is_detected(
    data: bytes, compression: str | None, where: int, flip: int
) -> None:
    """Changing any stored byte makes decoding raise StorageCorruption, unless (zstd only) the
    change is in framing that does not alter the decoded bytes: what is verified is the data
    handed back, not its stored representation."""
    stored, entry = _encode(data, compression, [])
    damaged = bytearray(stored)
    damaged[where % len(damaged)] ^= flip
    try:
        decoded = _decode(bytes(damaged), entry, 100)
    except StorageCorruption:
        return
    assert compression == "zstd" and decoded == data


@given(st.binary(min_size=2, max_size=3000), st.sampled_from([None, "zstd"]))
def test_truncated_or_extended_data_is_detected(data: bytes, compression: str | None) -> None:
    """Missing or extra stored bytes raise StorageCorruption."""
    stored, entry = _encode(data, compression, [])
    with pytest.raises(StorageCorruption):
        _decode(stored[:-1], entry, 100)
    with pytest.raises(StorageCorruption):
        _decode(stored + b"\0", entry, 100)
