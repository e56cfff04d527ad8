"""The wire protocol between gateway and brokers, and between brokers.

Theory of operation
-------------------
A connection carries length-prefixed frames: a 4-byte big-endian body length, then a msgpack
body. Every body is an envelope ``[version, message type, request id, fields]`` where ``fields``
maps field names to values. Requests and their responses share the request id; notifications
(``...Sent``) expect no response and use request id 0.

The codec is pure: :func:`encode` turns a message into frame bytes, :class:`FrameDecoder` turns
any chunking of bytes back into ``(request_id, message)`` pairs. Anything malformed (bad length,
bad msgpack, unknown version or type, missing, extra or mistyped fields, at any depth, and
command values that do not match their declared schema) raises :class:`ProtocolError`; the
connection shell then closes that one connection, and nothing of it reaches a partition.

The whole vocabulary lives in this module as frozen attrs classes, registered by class name.
Inter-partition commands carry the sender's checkpoint id (REFERENCE.md §3) so that a receiver
can checkpoint before processing a command sent after the sender's checkpoint.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, ClassVar, Literal

import attrs
import msgpack

from zeebe_sim.ground import shapes
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.commands import check_command_value
from zeebe_sim.ground.errors import ProtocolError
from zeebe_sim.ground.ids import INT64_MAX, BackupId, Key, NodeId, PartitionId, Position
from zeebe_sim.ground.shapes import NewBackupId

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct(">I")
# Large enough for a deployment of a big BPMN file or a page of backup statuses, small enough
# that one peer cannot make us buffer unbounded memory.
FRAME_BYTES_MAX = 8 * 1024 * 1024
# Requests a single connection may have outstanding before the broker answers RESOURCE_EXHAUSTED.
IN_FLIGHT_REQUESTS_MAX = 1024

_MESSAGES: dict[str, type[Message]] = {}
# A command's value: its shape depends on the command, see zeebe_sim.ground.commands.
CommandValue = Annotated[dict[str, Any], shapes.CheckedByCaller("schema of the command")]


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

    node_id: NodeId | None = None
    address: str | None = None


@attrs.frozen
class TopologyResponse(Message):
    node_id: NodeId
    cluster_size: int
    partition_count: int
    replication_factor: int
    # node id -> "host:port" of every broker this broker knows of (itself included). A receiver
    # checks each address with parse_member_address and drops bad entries one by one.
    members: dict[NodeId, str]
    # partition id -> the role of this broker's replica: "LEADER", "FOLLOWER", "CANDIDATE" or
    # "INACTIVE" (starting up, or restoring)
    partitions: dict[PartitionId, str]
    version: str
    # partition id -> "HEALTHY", "UNHEALTHY" (a background loop fails) or "DEAD" (processing
    # stopped); a partition not named here is HEALTHY
    health: dict[PartitionId, str] = attrs.field(factory=dict)
    # partition id -> the replica's current Raft term (a newer term's leader wins)
    terms: dict[PartitionId, Annotated[int, shapes.IntRange(0, INT64_MAX)]] = attrs.field(
        factory=dict
    )
    # None: backup ids are given by the client. An int: the cluster generates them (continuous
    # backups, a schedule or a checkpoint interval is configured) as epoch ms + this offset.
    backup_id_offset: int | None = None


def parse_member_address(address: str) -> tuple[str, int]:
    """A member's ``host:port`` as gossip carries it.

    Raises:
        ProtocolError: not a non-empty host (no whitespace) and a port in 1..65535.
    """
    host, _, port = address.rpartition(":")
    if not host or any(c.isspace() for c in host) or not port.isdigit() or len(port) > 5:
        raise ProtocolError(f"member address {address[:80]!r} is not host:port")
    if not 0 < int(port) < 65536:
        raise ProtocolError(f"member address {address[:80]!r} has no valid port")
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# Commands and queries from the gateway
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class ExecuteCommandRequest(Message):
    """Write a command to a partition's log; the answer comes once it has been processed.

    ``value`` has the declared schema of (value_type, intent) in
    :mod:`zeebe_sim.ground.commands`, checked on decode.
    """

    partition_id: PartitionId
    value_type: str
    intent: str
    key: Key
    value: CommandValue


@attrs.frozen
class ExecuteCommandResponse(Message):
    partition_id: PartitionId
    key: Key
    value_type: str
    intent: str
    value: dict[str, Any]
    rejection_type: str | None = None
    rejection_reason: str | None = None


@attrs.frozen
class QueryRequest(Message):
    """Read partition state without writing to the log (e.g. a process instance by key)."""

    partition_id: PartitionId
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
    # PARTITION_LEADER_MISMATCH: the leader the answering replica knows of, if any
    leader: NodeId | None = None


# ---------------------------------------------------------------------------------------------
# Between partitions
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class InterPartitionCommandSent(Message):
    """A command one partition sends to another; fire and forget, retried by the sender until
    acknowledged by a command in the other direction.

    ``checkpoint_id`` is the sender's current checkpoint id (REFERENCE.md §3); -1 when it has
    none, or when propagation is switched off. ``value`` is checked like a command's.
    """

    expects_response: ClassVar[bool] = False

    receiver_partition_id: PartitionId
    checkpoint_id: BackupId
    value_type: str
    intent: str
    key: Key
    value: CommandValue
    sender_node_id: NodeId | None = None  # the broker that sent it (for the fault filter)


# ---------------------------------------------------------------------------------------------
# Raft, between the replicas of a partition (one-way; see broker/raft/messages.py)
# ---------------------------------------------------------------------------------------------

RaftNumber = Annotated[int, shapes.IntRange(0, INT64_MAX)]  # a term, log index or byte offset


# A Raft entry: index, term, data (None: the no-op a new leader appends).
RaftEntry = tuple[int, int, bytes | None]
# An append request carries its entries packed in one byte string, each a header (index, term,
# data length or -1 for no data) and its data as it is: no per-entry map to pack, walk and
# check on either side.
_RAFT_ENTRY_HEADER = struct.Struct("<QQq")


def pack_raft_entries(entries: Iterable[RaftEntry]) -> bytes:
    header, parts = _RAFT_ENTRY_HEADER, []
    for index, term, data in entries:
        parts.append(header.pack(index, term, -1 if data is None else len(data)))
        if data is not None:
            parts.append(data)
    return b"".join(parts)


def unpack_raft_entries(packed: bytes) -> list[RaftEntry]:
    """The entries :func:`pack_raft_entries` packed.

    Raises:
        ProtocolError: ``packed`` is not a sequence of whole entries.
    """
    entries: list[RaftEntry] = []
    header, offset, end = _RAFT_ENTRY_HEADER, 0, len(packed)
    while offset < end:
        if end - offset < header.size:
            raise ProtocolError("a Raft entry's header is cut short")
        index, term, size = header.unpack_from(packed, offset)
        offset += header.size
        if index > INT64_MAX or term > INT64_MAX or size < -1 or offset + size > end:
            raise ProtocolError(f"a malformed Raft entry at index {index}")
        if size < 0:
            entries.append((index, term, None))
        else:
            entries.append((index, term, packed[offset : offset + size]))
            offset += size
    return entries


@attrs.frozen
class RaftSnapshot:
    index: RaftNumber
    term: RaftNumber
    size_bytes: RaftNumber


@attrs.frozen
class RaftPollRequest(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    last_index: RaftNumber
    last_term: RaftNumber


@attrs.frozen
class RaftPollResponse(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    granted: bool


@attrs.frozen
class RaftVoteRequest(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    last_index: RaftNumber
    last_term: RaftNumber


@attrs.frozen
class RaftVoteResponse(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    granted: bool


@attrs.frozen
class RaftAppendRequest(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    prev_index: RaftNumber
    prev_term: RaftNumber
    entries: bytes  # pack_raft_entries
    commit_index: RaftNumber


@attrs.frozen
class RaftAppendResponse(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    success: bool
    last_index: RaftNumber


@attrs.frozen
class RaftInstallRequest(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    snapshot: RaftSnapshot
    offset: RaftNumber
    data: bytes
    done: bool


@attrs.frozen
class RaftInstallResponse(Message):
    expects_response: ClassVar[bool] = False

    partition_id: PartitionId
    sender: NodeId
    term: RaftNumber
    snapshot_index: RaftNumber
    next_offset: RaftNumber
    complete: bool


# Every Raft message names its partition (partition_id), its sender and the sender's term.
RaftMessage = (
    RaftPollRequest
    | RaftPollResponse
    | RaftVoteRequest
    | RaftVoteResponse
    | RaftAppendRequest
    | RaftAppendResponse
    | RaftInstallRequest
    | RaftInstallResponse
)
RAFT_MESSAGES = (
    RaftPollRequest,
    RaftPollResponse,
    RaftVoteRequest,
    RaftVoteResponse,
    RaftAppendRequest,
    RaftAppendResponse,
    RaftInstallRequest,
    RaftInstallResponse,
)


# ---------------------------------------------------------------------------------------------
# Backups (gateway -> the leader of each partition)
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class TakeBackupRequest(Message):
    """Write ``CHECKPOINT CREATE(backup_id)`` to the partition; answered once processed."""

    partition_id: PartitionId
    backup_id: NewBackupId
    checkpoint_type: CheckpointType = CheckpointType.MANUAL_BACKUP


@attrs.frozen
class TakeBackupResponse(Message):
    created: bool  # CREATED, or IGNORED because the partition's checkpoint id is not lower
    checkpoint_id: BackupId  # the partition's checkpoint id after processing


@attrs.frozen
class PartitionBackupStatus:
    """One partition's state of one backup: the best copy (REFERENCE.md §1 BackupInfo detail).

    Which optional fields are set follows the state: IN_PROGRESS and COMPLETED have the
    timestamps, snapshot id, checkpoint position, broker id and version; FAILED the failure
    reason, timestamps and snapshot id; DOES_NOT_EXIST none. Timestamps are ISO-8601 UTC with
    ``Z``, as the API shows them.
    """

    backup_id: BackupId
    partition_id: PartitionId
    state: BackupState
    failure_reason: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None
    snapshot_id: str | None = None
    checkpoint_position: Position | None = None
    broker_id: NodeId | None = None
    broker_version: str | None = None
    # The first log position the backup's segments hold, and what the checkpoint was taken for
    # (both unknown for DOES_NOT_EXIST and a FAILED backup nobody started).
    first_log_position: Position | None = None
    checkpoint_type: CheckpointType | None = None


@attrs.frozen
class BackupStatusRequest(Message):
    partition_id: PartitionId
    backup_id: BackupId


@attrs.frozen
class BackupStatusResponse(Message):
    status: PartitionBackupStatus


@attrs.frozen
class ListBackupsRequest(Message):
    partition_id: PartitionId
    prefix: str | None = None  # decimal prefix of the backup id; None = all
    # The listing version the asker holds: the answer is then a delta against it where the
    # partition still knows that listing (thousands of statuses need not travel).
    known_version: str | None = None


@attrs.frozen
class ListBackupsResponse(Message):
    """Per backup id, the partition's best copy; ``version`` names this listing (None: the
    store cannot tell, so it must not be reused).

    ``delta``: the answer holds only what changed since the asker's ``known_version`` (the
    backups whose status changed or that are new in ``statuses``, the ids gone in
    ``removed``): after one backup is taken or deleted, one status travels instead of all
    of them. An unchanged listing is an empty delta."""

    statuses: list[PartitionBackupStatus]
    version: str | None = None
    delta: bool = False
    removed: list[BackupId] = attrs.field(factory=list)


@attrs.frozen
class DeleteBackupRequest(Message):
    partition_id: PartitionId
    backup_id: BackupId


@attrs.frozen
class DeleteBackupResponse(Message):
    pass


@attrs.frozen
class BackupRuntimeStateRequest(Message):
    """The partition's backup runtime state: read it (GET), clear it (RESET) or write it to the
    store's metadata again (SYNC). RESET and SYNC go through the partition's log."""

    partition_id: PartitionId
    action: Literal["GET", "RESET", "SYNC"] = "GET"


@attrs.frozen
class BackupRuntimeStateResponse(Message):
    """The latest checkpoint of any type, the latest confirmed backup, and each backup range
    as (its oldest backup, its newest backup), oldest range first."""

    partition_id: PartitionId
    checkpoint: CheckpointInfo | None
    backup: CheckpointInfo | None
    ranges: list[tuple[CheckpointInfo, CheckpointInfo]]


# ---------------------------------------------------------------------------------------------
# Faults on purpose (zeebe-sim chaos, the harness -> one broker)
# ---------------------------------------------------------------------------------------------


@attrs.frozen
class SetFaultsRequest(Message):
    """Set the faults a broker applies to its broker-to-broker traffic (broker/faults.py):
    the peers it is cut from, and the delay of what it sends. ``None`` keeps that part as it
    is, so a request with neither reads the current faults."""

    cut: list[NodeId] | None = None
    delay_ms: int | None = None


@attrs.frozen
class FaultsResponse(Message):
    """The faults in force after the request."""

    cut: list[NodeId]
    delay_ms: int


# ---------------------------------------------------------------------------------------------
# In-process restore (gateway -> brokers; broker/recovery.py)
# ---------------------------------------------------------------------------------------------

BrokerMode = Literal["PROCESSING", "RECOVERING"]


@attrs.frozen
class ModeChangeRequest(Message):
    """Switch a broker's mode: RECOVERING deactivates every partition it hosts (commands
    refused, queries and in-place restore allowed), PROCESSING starts them again; ``None``
    only reads the mode."""

    mode: BrokerMode | None


@attrs.frozen
class ModeChangeResponse(Message):
    node_id: NodeId
    mode: BrokerMode


@attrs.frozen
class RestorePlanRequest(Message):
    """Resolve an in-process restore against the store (any broker with one): backups by id,
    or a time window in epoch milliseconds. Nothing is changed."""

    backup_ids: list[BackupId] = attrs.Factory(list)
    from_ms: int | None = None
    to_ms: int | None = None


@attrs.frozen
class PartitionRestorePlan:
    """One partition's chain of backups, oldest first, and the checkpoint its log ends with."""

    backup_ids: list[BackupId]
    checkpoint_id: int
    checkpoint_position: Position


@attrs.frozen
class RestorePlanResponse(Message):
    checkpoint_id: int
    partitions: dict[PartitionId, PartitionRestorePlan]


@attrs.frozen
class RestorePartitionRequest(Message):
    """Restore one partition of a RECOVERING broker in place from ``plan``; answered once its
    directory holds the restored partition (it starts again with the PROCESSING mode)."""

    partition_id: PartitionId
    plan: PartitionRestorePlan


@attrs.frozen
class RestorePartitionResponse(Message):
    partition_id: PartitionId


# ---------------------------------------------------------------------------------------------
# Codec
# ---------------------------------------------------------------------------------------------

# Messages whose ``value`` is a command's: checked against its declared schema.
_COMMANDS = (ExecuteCommandRequest, InterPartitionCommandSent)


def _to_wire(value: Any) -> Any:
    """msgpack's hook for what it cannot pack itself: enums by name, attrs classes as maps."""
    if isinstance(value, enum.Enum):
        return value.value
    if attrs.has(type(value)):
        return {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(message: Message, request_id: int = 0) -> bytes:
    """One complete frame (header included) for ``message``.

    Raises:
        ProtocolError: the frame would exceed the frame size limit.
    """
    fields = _to_wire(message)
    body: bytes = msgpack.packb(
        [PROTOCOL_VERSION, type(message).__name__, request_id, fields],
        use_bin_type=True,
        default=_to_wire,
    )
    if len(body) > FRAME_BYTES_MAX:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {FRAME_BYTES_MAX}")
    return FRAME_HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> tuple[int, Message]:
    """Decode one frame body into ``(request_id, message)``, every field checked against its
    declared shape (:mod:`zeebe_sim.ground.shapes`) and a command's value against its schema
    (:mod:`zeebe_sim.ground.commands`).

    Raises:
        ProtocolError: the body is not a valid envelope of a known, well-formed message.
    """
    try:
        # The body is already bounded by the frame limit; unpackb bounds every container and
        # string by the body's length. Map keys may be ints (member and partition maps); the
        # shape check refuses them wherever strings are declared.
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
    if type(request_id) is not int or not 0 <= request_id <= INT64_MAX:
        raise ProtocolError(f"bad request id {request_id!r}")
    cls = _MESSAGES[type_name]
    message = shapes.check(cls, fields, type_name)
    if isinstance(message, _COMMANDS):
        check_command_value(message.value_type, message.intent, message.value, f"{type_name}.value")
    return request_id, message


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
