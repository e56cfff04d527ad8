"""The wire protocol between gateway and brokers, and between brokers.

Theory of operation
-------------------
A connection carries length-prefixed frames: a 4-byte big-endian body length, then a msgpack
body. Every body is an envelope ``[version, message type, request id, fields]`` where ``fields``
maps field names to values. Requests and their responses share the request id; notifications
(``...Sent``) expect no response and use request id 0.

The codec is pure: :func:`encode` turns a message into frame bytes, :class:`FrameDecoder` turns
any chunking of bytes back into ``(request_id, message)`` pairs. Anything malformed (bad length,
bad msgpack, unknown version or type, missing, extra or mistyped fields) raises
:class:`ProtocolError`; the connection shell then closes that one connection.

The whole vocabulary lives in this module as frozen attrs classes, registered by class name.
Inter-partition commands carry the sender's checkpoint id (REFERENCE.md §3) so that a receiver
can checkpoint before processing a command sent after the sender's checkpoint.
"""

from __future__ import annotations

import struct
import types
import typing
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import msgpack

from zeebe_sim.ground.errors import ProtocolError

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct(">I")
# Large enough for a deployment of a big BPMN file or a page of backup statuses, small enough
# that one peer cannot make us buffer unbounded memory.
FRAME_BYTES_MAX = 8 * 1024 * 1024
# Requests a single connection may have outstanding before the broker answers RESOURCE_EXHAUSTED.
IN_FLIGHT_REQUESTS_MAX = 1024

_MESSAGES: dict[str, type[Message]] = {}


class Message:
    """Base of every wire message; subclasses are frozen attrs classes."""

    expects_response: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _MESSAGES[cls.__name__] = cls


# ---------------------------------------------------------------------------------------------
# Membership and topology
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class TopologyRequest(Message):
    """Asks a broker for its view of the cluster. A broker joining passes its own address."""

    node_id: int | None = None
    address: str | None = None


@attrs.frozen
class TopologyResponse(Message):
    node_id: int
    cluster_size: int
    partition_count: int
    replication_factor: int
    # node id -> "host:port" of every broker this broker knows of (itself included)
    members: dict[int, str]
    # partition id -> "LEADER" (healthy, processing) or "INACTIVE" (still starting up)
    partitions: dict[int, str]
    version: str


# ---------------------------------------------------------------------------------------------
# Commands and queries from the gateway
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class ExecuteCommandRequest(Message):
    """Write a command to a partition's log; the answer comes once it has been processed."""

    partition_id: int
    value_type: str
    intent: str
    key: int
    value: dict[str, Any]


@attrs.frozen
class ExecuteCommandResponse(Message):
    partition_id: int
    key: int
    value_type: str
    intent: str
    value: dict[str, Any]
    rejection_type: str | None = None
    rejection_reason: str | None = None


@attrs.frozen
class QueryRequest(Message):
    """Read partition state without writing to the log (e.g. a process instance by key)."""

    partition_id: int
    query: str
    arguments: dict[str, Any]


@attrs.frozen
class QueryResponse(Message):
    result: Any


@attrs.frozen
class ErrorResponse(Message):
    """Any request can be answered with an error; ``code`` is one of Zeebe's error codes."""

    code: str
    message: str


# ---------------------------------------------------------------------------------------------
# Between partitions
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class InterPartitionCommandSent(Message):
    """A command one partition sends to another; fire and forget, retried by the sender until
    acknowledged by a command in the other direction.

    ``checkpoint_id`` is the sender's current checkpoint id (REFERENCE.md §3); -1 when it has
    none, or when propagation is switched off.
    """

    expects_response: ClassVar[bool] = False

    receiver_partition_id: int
    checkpoint_id: int
    value_type: str
    intent: str
    key: int
    value: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Backups (gateway -> the leader of each partition)
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class TakeBackupRequest(Message):
    """Write ``CHECKPOINT CREATE(backup_id)`` to the partition; answered once processed."""

    partition_id: int
    backup_id: int


@attrs.frozen
class TakeBackupResponse(Message):
    created: bool  # CREATED, or IGNORED because the partition's checkpoint id is not lower
    checkpoint_id: int  # the partition's checkpoint id after processing


@attrs.frozen
class BackupStatusRequest(Message):
    partition_id: int
    backup_id: int


@attrs.frozen
class BackupStatusResponse(Message):
    """One partition's status of a backup, with BackupInfo detail field names (REFERENCE §1)."""

    status: dict[str, Any]


@attrs.frozen
class ListBackupsRequest(Message):
    partition_id: int
    prefix: str | None = None  # decimal prefix of the backup id; None = all


@attrs.frozen
class ListBackupsResponse(Message):
    """Per backup id, the partition's best copy, with ``backupId`` added to each detail."""

    statuses: list[dict[str, Any]]


@attrs.frozen
class DeleteBackupRequest(Message):
    partition_id: int
    backup_id: int


@attrs.frozen
class DeleteBackupResponse(Message):
    pass


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class _FieldSpec:
    name: str
    types: tuple[type, ...]
    required: bool


_SPECS: dict[type[Message], tuple[_FieldSpec, ...]] = {}


def _outer_types(hint: Any) -> tuple[type, ...]:
    """The Python types a decoded msgpack value may have for a field annotation."""
    if hint is Any:
        return (object,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        result: tuple[type, ...] = ()
        for arg in typing.get_args(hint):
            result += _outer_types(arg)
        return result
    if hint is type(None):
        return (type(None),)
    base = origin if origin is not None else hint
    if base is int:
        return (int,)
    if base is float:
        return (float, int)
    return (base,)


def _spec(cls: type[Message]) -> tuple[_FieldSpec, ...]:
    spec = _SPECS.get(cls)
    if spec is None:
        hints = typing.get_type_hints(cls)
        spec = tuple(
            _FieldSpec(f.name, _outer_types(hints[f.name]), required=f.default is attrs.NOTHING)
            for f in attrs.fields(cls)  # type: ignore[arg-type]
        )
        _SPECS[cls] = spec
    return spec


def encode(message: Message, request_id: int = 0) -> bytes:
    """One complete frame (header included) for ``message``."""
    fields = {s.name: getattr(message, s.name) for s in _spec(type(message))}
    body: bytes = msgpack.packb(
        [PROTOCOL_VERSION, type(message).__name__, request_id, fields], use_bin_type=True
    )
    if len(body) > FRAME_BYTES_MAX:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
    return FRAME_HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> tuple[int, Message]:
    """Decode one frame body into ``(request_id, message)``.

    Raises:
        ProtocolError: the body is not a valid envelope of a known message.
    """
    try:
        # The body is already bounded by the frame limit; unpackb bounds every container and
        # string by the body's length.
        envelope = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if not (isinstance(envelope, list) and len(envelope) == 4):
        raise ProtocolError("frame is not a [version, type, request id, fields] envelope")
    version, type_name, request_id, fields = envelope
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r}")
    if not isinstance(type_name, str) or type_name not in _MESSAGES:
        raise ProtocolError(f"unknown message type {type_name!r}")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
        raise ProtocolError(f"bad request id {request_id!r}")
    if not isinstance(fields, dict):
        raise ProtocolError("message fields are not a map")
    cls = _MESSAGES[type_name]
    spec = _spec(cls)
    unknown = set(fields) - {s.name for s in spec}
    if unknown:
        raise ProtocolError(f"{type_name}: unknown fields {sorted(map(str, unknown))}")
    kwargs: dict[str, Any] = {}
    for s in spec:
        if s.name not in fields:
            if s.required:
                raise ProtocolError(f"{type_name}: missing field {s.name!r}")
            continue
        value = fields[s.name]
        # bool is an int subclass; a bool where an int is expected is a malformed message (an
        # Any field takes anything, a bool included).
        if not isinstance(value, s.types) or (
            isinstance(value, bool) and bool not in s.types and object not in s.types
        ):
            raise ProtocolError(f"{type_name}.{s.name}: unexpected {type(value).__name__}")
        kwargs[s.name] = value
    return request_id, cls(**kwargs)


class FrameDecoder:
    """Turns a byte stream, in any chunking, into decoded messages."""

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        self._buffer = bytearray()
        self._frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        """Consume ``data``; return every message completed by it.

        Raises:
            ProtocolError: an oversized or malformed frame; the decoder is then unusable.
        """
        self._buffer += data
        return list(self._drain())

    def _drain(self) -> Iterator[tuple[int, Message]]:
        header = FRAME_HEADER.size
        while len(self._buffer) >= header:
            (length,) = FRAME_HEADER.unpack_from(self._buffer)
            if length > self._frame_bytes_max:
                raise ProtocolError(f"frame of {length} bytes exceeds {self._frame_bytes_max}")
            if len(self._buffer) < header + length:
                return
            body = bytes(self._buffer[header : header + length])
            del self._buffer[: header + length]
            yield decode_body(body)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
