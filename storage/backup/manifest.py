"""The manifest of a partition backup, and the per-file checksum and compression codecs.

Shared by every store: the stores differ only in where bytes go, never in what the bytes mean.

Theory of operation
-------------------
A manifest is the single source of truth for a backup's state. Its life is a tiny state machine
whose legal moves are the table ``_TRANSITIONS`` (an illegal move is a failed lookup, i.e. our
bug, so it is an assertion, not an error):

    (absent) --create--> IN_PROGRESS --save done--> COMPLETED --delete starts--> DELETED
                         IN_PROGRESS --error / mark_failed--> FAILED --delete starts--> DELETED
    (absent) --mark_failed--> FAILED

Files are described by their ORIGINAL size and crc32c (Castagnoli, ``google_crc32c``), whether
or not they are stored compressed: restore verifies what it hands back, not what it downloaded.
:class:`Encoder` and :class:`Decoder` are sans-IO: bytes in, bytes out, no files, no awaits.

JSON shape (camelCase, as Zeebe's manifests; timestamps ISO-8601 UTC with ``Z``)::

    {"id": {"nodeId", "partitionId", "checkpointId"},
     "descriptor": {"snapshotId"?, "checkpointPosition", "numberOfPartitions", "brokerVersion",
                    "firstLogPosition"?, "checkpointType"?}?,
     "statusCode": "IN_PROGRESS" | "COMPLETED" | "FAILED" | "DELETED",
     "snapshot": {"files": [{"name", "size", "crc32c", "compression"?}]},
     "segments": {"files": [...]},
     "createdAt", "modifiedAt", "failureReason"?}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import google_crc32c
import zstandard

from storage.backup.api import (
    BackupDescriptor,
    BackupIdentifier,
    BackupStatus,
    RuntimeMetadata,
)
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import StorageCorruption
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId

ZSTD: Final = "zstd"
COMPRESSIONS: Final = frozenset({ZSTD})
# Level 3 is zstd's default: most of the ratio of higher levels at a fraction of the CPU, which
# matters because a backup competes with processing for the broker's CPU.
ZSTD_LEVEL: Final = 3
CRC32C_MAX: Final = (1 << 32) - 1

# The reason Zeebe writes when a backup is failed on its way to deletion (REFERENCE §4).
DELETING_REASON: Final = "The backup is going to be deleted."

_STORED_CODES: Final = {
    "IN_PROGRESS": BackupState.IN_PROGRESS,
    "COMPLETED": BackupState.COMPLETED,
    "FAILED": BackupState.FAILED,
    # Zeebe 8.9's markDeleted: the state of a backup while its deletion runs, or after one
    # failed part-way (reference backups-8.9-8.10.md A.4).
    "DELETED": BackupState.DELETED,
}

# (from, to): the only legal state changes of an existing manifest.
_TRANSITIONS: Final = frozenset(
    {
        (BackupState.IN_PROGRESS, BackupState.COMPLETED),
        (BackupState.IN_PROGRESS, BackupState.FAILED),
        # Only delete does these: a backup is demoted before its files go, so that a delete
        # interrupted half-way never leaves a COMPLETED manifest over missing files.
        (BackupState.COMPLETED, BackupState.DELETED),
        (BackupState.FAILED, BackupState.DELETED),
    }
)


@attrs.frozen
class FileEntry:
    """One stored file: ``size`` and ``crc32c`` are of the original (uncompressed) bytes."""

    name: str
    size: int
    crc32c: int
    compression: str | None = None


@attrs.frozen
class Manifest:
    id: BackupIdentifier
    descriptor: BackupDescriptor | None
    status_code: BackupState
    created_at: datetime
    modified_at: datetime
    snapshot_files: tuple[FileEntry, ...] = ()
    segment_files: tuple[FileEntry, ...] = ()
    failure_reason: str | None = None

    @classmethod
    def in_progress(
        cls, id: BackupIdentifier, descriptor: BackupDescriptor, now: datetime
    ) -> Manifest:
        return cls(id, descriptor, BackupState.IN_PROGRESS, now, now)

    @classmethod
    def failed_new(cls, id: BackupIdentifier, reason: str, now: datetime) -> Manifest:
        """A FAILED manifest for a backup nobody started (``mark_failed`` of an absent one)."""
        return cls(id, None, BackupState.FAILED, now, now, failure_reason=reason)

    def completed(
        self,
        snapshot_files: tuple[FileEntry, ...],
        segment_files: tuple[FileEntry, ...],
        now: datetime,
    ) -> Manifest:
        self._check_transition(BackupState.COMPLETED)
        return attrs.evolve(
            self,
            status_code=BackupState.COMPLETED,
            snapshot_files=snapshot_files,
            segment_files=segment_files,
            modified_at=now,
        )

    def failed(self, reason: str, now: datetime) -> Manifest:
        self._check_transition(BackupState.FAILED)
        return attrs.evolve(
            self, status_code=BackupState.FAILED, failure_reason=reason, modified_at=now
        )

    def deleted(self, now: datetime) -> Manifest:
        self._check_transition(BackupState.DELETED)
        return attrs.evolve(self, status_code=BackupState.DELETED, modified_at=now)

    def _check_transition(self, to: BackupState) -> None:
        assert (self.status_code, to) in _TRANSITIONS, (self.status_code, to)

    def status(self) -> BackupStatus:
        return BackupStatus(
            id=self.id,
            status_code=self.status_code,
            descriptor=self.descriptor,
            failure_reason=self.failure_reason,
            created_at=self.created_at,
            last_modified=self.modified_at,
        )


# -- timestamps ---------------------------------------------------------------------------------


def format_timestamp(at: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, microsecond precision: ``2022-12-08T13:00:55.344276Z``."""
    assert at.tzinfo is not None, "naive datetime"
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp with an offset or ``Z`` (Zeebe writes nanoseconds; Python
    keeps microseconds). Raises ValueError."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return at.astimezone(UTC)


# -- JSON codec ---------------------------------------------------------------------------------


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as UTF-8 JSON bytes."""
    doc: dict[str, Any] = {
        "id": {
            "nodeId": manifest.id.node_id,
            "partitionId": manifest.id.partition_id,
            "checkpointId": manifest.id.checkpoint_id,
        }
    }
    if manifest.descriptor is not None:
        d = manifest.descriptor
        descriptor: dict[str, Any] = {}
        if d.snapshot_id is not None:
            descriptor["snapshotId"] = d.snapshot_id
        descriptor["checkpointPosition"] = d.checkpoint_position
        descriptor["numberOfPartitions"] = d.number_of_partitions
        descriptor["brokerVersion"] = d.broker_version
        if d.first_log_position is not None:
            descriptor["firstLogPosition"] = d.first_log_position
        descriptor["checkpointType"] = d.checkpoint_type.value
        doc["descriptor"] = descriptor
    doc["statusCode"] = manifest.status_code.name
    doc["snapshot"] = {"files": [_encode_file(f) for f in manifest.snapshot_files]}
    doc["segments"] = {"files": [_encode_file(f) for f in manifest.segment_files]}
    doc["createdAt"] = format_timestamp(manifest.created_at)
    doc["modifiedAt"] = format_timestamp(manifest.modified_at)
    if manifest.failure_reason is not None:
        doc["failureReason"] = manifest.failure_reason
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _encode_file(entry: FileEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": entry.name, "size": entry.size, "crc32c": entry.crc32c}
    if entry.compression is not None:
        doc["compression"] = entry.compression
    return doc


def decode_manifest(raw: bytes, where: str) -> Manifest:
    """Parse manifest bytes read from ``where``.

    Raises StorageCorruption naming ``where`` if the bytes are not a valid manifest.
    """
    try:
        doc = json.loads(raw)
        return _decode(_obj(doc, "manifest"))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise StorageCorruption(f"The manifest at {where} is malformed: {exc}") from exc


def _decode(doc: dict[str, Any]) -> Manifest:
    id_doc = _obj(doc["id"], "id")
    id = BackupIdentifier(
        NodeId(_int(id_doc["nodeId"], "id.nodeId")),
        PartitionId(_int(id_doc["partitionId"], "id.partitionId")),
        BackupId(_int(id_doc["checkpointId"], "id.checkpointId")),
    )
    descriptor = None
    if "descriptor" in doc:
        d = _obj(doc["descriptor"], "descriptor")
        snapshot_id = d.get("snapshotId")
        if snapshot_id is not None and not isinstance(snapshot_id, str):
            raise ValueError("descriptor.snapshotId is not a string")
        descriptor = BackupDescriptor(
            snapshot_id=snapshot_id,
            checkpoint_position=_int(d["checkpointPosition"], "descriptor.checkpointPosition"),
            number_of_partitions=_int(d["numberOfPartitions"], "descriptor.numberOfPartitions"),
            broker_version=_str(d["brokerVersion"], "descriptor.brokerVersion"),
            first_log_position=_optional_int(d, "firstLogPosition", "descriptor"),
            checkpoint_type=_checkpoint_type(
                d.get("checkpointType", CheckpointType.MANUAL_BACKUP.value),
                "descriptor.checkpointType",
            ),
        )
    code_text = _str(doc["statusCode"], "statusCode")
    if code_text not in _STORED_CODES:
        raise ValueError(f"unknown statusCode {code_text!r}")
    reason = doc.get("failureReason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("failureReason is not a string")
    return Manifest(
        id=id,
        descriptor=descriptor,
        status_code=_STORED_CODES[code_text],
        created_at=parse_timestamp(_str(doc["createdAt"], "createdAt")),
        modified_at=parse_timestamp(_str(doc["modifiedAt"], "modifiedAt")),
        snapshot_files=_decode_files(doc, "snapshot"),
        segment_files=_decode_files(doc, "segments"),
        failure_reason=reason,
    )


def _decode_files(doc: dict[str, Any], key: str) -> tuple[FileEntry, ...]:
    files = _obj(doc.get(key, {"files": []}), key).get("files", [])
    if not isinstance(files, list):
        raise ValueError(f"{key}.files is not a list")
    entries = []
    for i, item in enumerate(files):
        f = _obj(item, f"{key}.files[{i}]")
        name = _str(f["name"], f"{key}.files[{i}].name")
        check_file_name(name)
        crc = _int(f["crc32c"], f"{key}.files[{i}].crc32c")
        if not 0 <= crc <= CRC32C_MAX:
            raise ValueError(f"{key}.files[{i}].crc32c out of range")
        size = _int(f["size"], f"{key}.files[{i}].size")
        if size < 0:
            raise ValueError(f"{key}.files[{i}].size is negative")
        compression = f.get("compression")
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"{key}.files[{i}] has unknown compression {compression!r}")
        entries.append(FileEntry(name, size, crc, compression))
    return tuple(entries)


def _optional_int(doc: dict[str, Any], key: str, where: str) -> int | None:
    value = doc.get(key)
    return None if value is None else _int(value, f"{where}.{key}")


def _checkpoint_type(value: Any, what: str) -> CheckpointType:
    text = _str(value, what)
    if text not in CheckpointType.__members__:
        raise ValueError(f"{what} is not a checkpoint type: {text!r}")
    return CheckpointType(text)


# -- runtime metadata (one per partition, two slots) --------------------------------------------


def encode_metadata(metadata: RuntimeMetadata) -> bytes:
    """The partition's runtime metadata as UTF-8 JSON (reference A.4
    ``BackupMetadataManifest``)."""
    doc = {
        "partitionId": metadata.partition_id,
        "sequenceNumber": metadata.sequence_number,
        "timestamp": metadata.timestamp_ms,
        "checkpoints": [
            {
                "checkpointId": c.checkpoint_id,
                "checkpointPosition": c.checkpoint_position,
                "checkpointTimestamp": c.checkpoint_timestamp_ms,
                "checkpointType": c.checkpoint_type.value,
                "firstLogPosition": c.first_log_position,
            }
            for c in metadata.checkpoints
        ],
        "ranges": [{"start": start, "end": end} for start, end in metadata.ranges],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_metadata(raw: bytes, where: str) -> RuntimeMetadata:
    """Parse metadata bytes read from ``where``.

    Raises StorageCorruption naming ``where`` if the bytes are not valid metadata (a slot
    torn by a crash is one).
    """
    try:
        doc = _obj(json.loads(raw), "metadata")
        checkpoints = []
        for i, item in enumerate(_list(doc["checkpoints"], "checkpoints")):
            c = _obj(item, f"checkpoints[{i}]")
            checkpoints.append(
                CheckpointInfo(
                    checkpoint_id=_int(c["checkpointId"], "checkpointId"),
                    checkpoint_type=_checkpoint_type(c["checkpointType"], "checkpointType"),
                    checkpoint_position=_int(c["checkpointPosition"], "checkpointPosition"),
                    checkpoint_timestamp_ms=_int(c["checkpointTimestamp"], "checkpointTimestamp"),
                    first_log_position=_optional_int(c, "firstLogPosition", f"checkpoints[{i}]"),
                )
            )
        ranges = [
            (_int(r["start"], "ranges.start"), _int(r["end"], "ranges.end"))
            for r in (_obj(item, "range") for item in _list(doc["ranges"], "ranges"))
        ]
        return RuntimeMetadata(
            partition_id=PartitionId(_int(doc["partitionId"], "partitionId")),
            sequence_number=_int(doc["sequenceNumber"], "sequenceNumber"),
            timestamp_ms=_int(doc["timestamp"], "timestamp"),
            checkpoints=checkpoints,
            ranges=ranges,
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise StorageCorruption(f"The backup metadata at {where} is malformed: {exc}") from exc


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def check_file_name(name: str) -> None:
    """File names are single path components, so that no store can be made to write outside
    the backup's own folder. Raises ValueError."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"invalid backup file name {name!r}")


# -- per-file codecs ----------------------------------------------------------------------------


class Encoder:
    """Original bytes in, stored bytes out; records size and crc32c of the original bytes."""

    def __init__(self, compression: str | None) -> None:
        assert compression is None or compression in COMPRESSIONS, compression
        self._compression = compression
        self._crc = 0
        self._size = 0
        self._zstd = (
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
            if compression == ZSTD
            else None
        )

    def feed(self, data: bytes) -> bytes:
        self._crc = google_crc32c.extend(self._crc, data)
        self._size += len(data)
        if self._zstd is None:
            return data
        out: bytes = self._zstd.compress(data)
        return out

    def finish(self) -> bytes:
        if self._zstd is None:
            return b""
        out: bytes = self._zstd.flush()
        return out

    def entry(self, name: str) -> FileEntry:
        return FileEntry(name, self._size, self._crc, self._compression)


class Decoder:
    """Stored bytes in, original bytes out, verified against the manifest's entry.

    Raises StorageCorruption (naming ``where``) as soon as the output is longer than recorded
    or the compressed stream is invalid, and in ``finish`` if size or crc32c do not match.
    """

    def __init__(self, entry: FileEntry, where: str) -> None:
        self.entry = entry
        self.where = where
        self._crc = 0
        self._size = 0
        self._zstd = (
            zstandard.ZstdDecompressor().decompressobj() if entry.compression == ZSTD else None
        )

    def feed(self, data: bytes) -> bytes:
        if self._zstd is not None:
            if self._zstd.eof:
                raise StorageCorruption(f"{self.where}: data after the end of the zstd stream")
            try:
                data = self._zstd.decompress(data)
            except zstandard.ZstdError as exc:
                raise StorageCorruption(f"{self.where}: invalid zstd data: {exc}") from exc
        self._size += len(data)
        if self._size > self.entry.size:
            # Checked per chunk so that a corrupt (or hostile) stream cannot make us write an
            # unbounded amount before the final size check.
            raise StorageCorruption(
                f"{self.where}: longer than the {self.entry.size} bytes the manifest records"
            )
        self._crc = google_crc32c.extend(self._crc, data)
        return data

    def finish(self) -> None:
        if self._zstd is not None:
            if not self._zstd.eof:
                raise StorageCorruption(f"{self.where}: the zstd stream is truncated")
            if self._zstd.unused_data:
                raise StorageCorruption(f"{self.where}: data after the end of the zstd stream")
        if self._size != self.entry.size:
            raise StorageCorruption(
                f"{self.where}: size mismatch: expected {self.entry.size} bytes, got {self._size}"
            )
        if self._crc != self.entry.crc32c:
            raise StorageCorruption(
                f"{self.where}: crc32c mismatch: expected {self.entry.crc32c:#010x},"
                f" got {self._crc:#010x}"
            )
