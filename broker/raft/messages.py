"""The Raft core's vocabulary: log entries, the messages replicas exchange, the inputs the shell
feeds in and the effects it gets back.

Everything is a frozen, slotted dataclass (the core imports only the ground floor and the
standard library). Message names follow Atomix, the Raft library inside Zeebe: a *poll* is the
pre-vote round, a *vote* the real one, *append* replicates entries (and is the heartbeat), and
*install* carries one snapshot chunk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

from zeebe_sim.ground.ids import NodeId

Term = NewType("Term", int)
Index = NewType("Index", int)  # a log index, 1-based; 0 means "before the first entry"


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is the shell's payload (an encoded record batch); ``None`` marks
    the no-op a new leader appends first, which the shell skips when it applies entries."""

    index: Index
    term: Term
    data: bytes | None


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A snapshot of the replica's state machine after applying every entry up to ``index``
    (whose term is ``term``); ``size_bytes`` is the length of its serialized form, the byte
    stream the snapshot reader serves and chunks cover."""

    index: Index
    term: Term
    size_bytes: int


# -- messages between replicas --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PollRequest:
    """Pre-vote: "would you vote for me?". Changes no term and no vote, so a replica cut off
    from the others cannot inflate the term and depose a healthy leader when it returns."""

    term: Term  # the candidate's current term (not yet incremented)
    sender: NodeId
    last_index: Index
    last_term: Term


@dataclass(frozen=True, slots=True)
class PollResponse:
    term: Term
    sender: NodeId
    granted: bool


@dataclass(frozen=True, slots=True)
class VoteRequest:
    term: Term
    sender: NodeId
    last_index: Index
    last_term: Term


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: Term
    sender: NodeId
    granted: bool


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Entries after ``prev_index`` (empty: a heartbeat); the follower accepts them only if its
    entry at ``prev_index`` has ``prev_term`` (the log matching check)."""

    term: Term
    sender: NodeId
    prev_index: Index
    prev_term: Term
    entries: tuple[Entry, ...]
    commit_index: Index


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """On success ``last_index`` is the index up to which the follower's log now matches the
    leader's; on failure it is a hint: the leader retries from ``last_index + 1``."""

    term: Term
    sender: NodeId
    success: bool
    last_index: Index


@dataclass(frozen=True, slots=True)
class InstallRequest:
    """One chunk of the leader's snapshot: bytes ``[offset, offset + len(data))``; ``done``
    when it is the last one."""

    term: Term
    sender: NodeId
    snapshot: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallResponse:
    """``next_offset`` is the byte the follower expects next for ``snapshot_index`` (the leader
    resumes there, so a lost or duplicated chunk costs one chunk, not the whole transfer);
    ``complete`` when the follower holds that snapshot (or a later state)."""

    term: Term
    sender: NodeId
    snapshot_index: Index
    next_offset: int
    complete: bool


Message = (
    PollRequest
    | PollResponse
    | VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | InstallRequest
    | InstallResponse
)

# -- inputs from the shell ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Only time passed (the shell calls at :meth:`RaftCore.next_deadline_ms` or earlier)."""


@dataclass(frozen=True, slots=True)
class Propose:
    """Append these payloads to the log (leader only), one entry each."""

    data: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SnapshotTaken:
    """The shell made a snapshot of its state machine durable (at an applied index)."""

    snapshot: SnapshotMeta


Input = Message | Tick | Propose | SnapshotTaken

# -- effects for the shell ----------------------------------------------------------------------
# The shell carries out one call's effects in order. A Persist*/Truncate/Write/Install effect
# must be durable (fsynced) before any effect after it that leaves the replica: a Send, or
# acting on a Committed (answering a client). It may batch several calls' persists into one
# fsync as long as that order holds.


@dataclass(frozen=True, slots=True)
class PersistTermVote:
    """Store the current term and the vote cast in it (``None``: no vote yet)."""

    term: Term
    voted_for: NodeId | None


@dataclass(frozen=True, slots=True)
class TruncateLog:
    """Remove every log entry with an index ``>= from_index`` (a conflicting suffix)."""

    from_index: Index


@dataclass(frozen=True, slots=True)
class PersistEntries:
    """Append these entries (contiguous, directly after the log's last entry)."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class WriteSnapshotChunk:
    """Write a received chunk into the pending snapshot ``snapshot``; offset 0 starts it afresh
    (drop any other pending one)."""

    snapshot: SnapshotMeta
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The pending snapshot is complete: make it the replica's newest snapshot, reset the state
    machine to it (it now stands at ``snapshot.index``) and drop log entries up to its index.
    A ``TruncateLog`` follows when the rest of the log did not match and must go as well."""

    snapshot: SnapshotMeta


@dataclass(frozen=True, slots=True)
class CompactLog:
    """Raft no longer needs entries up to ``up_to_index`` (a snapshot covers them); the shell
    may delete them whenever its own holds (a running backup) allow."""

    up_to_index: Index


@dataclass(frozen=True, slots=True)
class Send:
    to: NodeId
    message: Message


@dataclass(frozen=True, slots=True)
class Committed:
    """Entries up to ``index`` are committed: apply those after the last applied one (skipping
    no-ops) and run their side effects (client answers) on the leader."""

    index: Index


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """The replica's role, term or known leader changed (for topology and routing)."""

    role: Role
    term: Term
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class NotLeader:
    """A proposal reached a replica that is not the leader; ``leader`` is its best guess."""

    leader: NodeId | None


Effect = (
    PersistTermVote
    | TruncateLog
    | PersistEntries
    | WriteSnapshotChunk
    | InstallSnapshot
    | CompactLog
    | Send
    | Committed
    | RoleChanged
    | NotLeader
)
