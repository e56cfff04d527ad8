"""A sans-IO Raft replica: one partition's consensus, as a deterministic state machine.

Theory of operation
-------------------
:class:`RaftCore` is one replica of one partition. The shell (an asyncio partition, or the
deterministic simulation in ``tests/raft``) feeds it inputs with the current time,
``handle(input, now_ms) -> effects``, and carries out the effects. The core never awaits, reads
no clock, opens no file and draws no random number of its own: time comes in as ``now_ms`` (a
monotonic clock), randomness from the ``random`` callable given at construction, and the only
thing it reads is the snapshot it is told about, through a :class:`SnapshotReader`.

Inputs (``messages.py``): the eight replica-to-replica messages, ``Tick`` (time passed; the shell
calls at :meth:`RaftCore.next_deadline_ms`), ``Propose`` (append payloads; leader only) and
``SnapshotTaken`` (the shell made a snapshot of its state machine durable).

Effects, carried out **in order**; a persist effect (``PersistTermVote``, ``TruncateLog``,
``PersistEntries``, ``WriteSnapshotChunk``, ``InstallSnapshot``) must be durable before any later
effect leaves the replica (``Send``, or acting on ``Committed``). That single rule gives Raft's
"fsync before you answer": a vote is stored before it is granted, entries before they are acked,
and a leader's own entries before it sends them (so its own match index, counted towards the
quorum, is never ahead of its disk when it matters). ``Committed(i)``: apply the entries after the
last applied one up to ``i`` and only then answer clients; ``CompactLog(i)``: entries up to ``i``
may go; ``RoleChanged``: for topology.

Durable state (what a restarted replica gets back in :class:`DurableState`): the term and vote,
the newest snapshot, and the log entries after it. Nothing else survives: the commit index
restarts at the snapshot's index and is relearned from the leader.

Roles and transitions (an illegal one is a failed lookup in ``_TRANSITIONS``, not a forgotten
``if``)::

    role       event                                   next role
    follower   election timer fired, poll won           candidate   (term + 1, votes for itself)
    follower   a message with a newer term              follower    (adopts the term, no vote)
    candidate  votes from a quorum                      leader      (appends a no-op)
    candidate  election timer fired                     follower
    candidate  append/install from this term's leader   follower
    candidate  a message with a newer term              follower
    leader     a message with a newer term              follower
    leader     no quorum heard within the quorum        follower
               response timeout

Choices, and the Zeebe (Atomix) behaviour they follow:

- **Pre-vote** (Atomix's *poll*): when its timer fires a follower first asks whether the others
  would vote for it, changing nothing. Only with a quorum of yeses does it raise its term and ask
  for real votes. A replica answers yes if the poller's log is at least as up to date as its own
  and it has not heard from a leader within ``election_timeout - heartbeat_interval``; one
  heartbeat shorter than the timeout, so replicas whose timers fire a moment apart (after the
  leader died) do not refuse each other. A replica cut off from the others therefore never
  inflates the term and never deposes a healthy leader when it returns.
- **Election timer**: with ``enable_priority_election`` (the default) Zeebe's
  ``PriorityElectionTimer``: each fire either polls (``priority >= target``) or lowers the target
  by one and waits another ``election_timeout``; hearing from the leader restores the initial
  target (the partition's target priority, the primary's). So the primary polls about one
  timeout after the leader went silent, the next replica after two, and so on. The timeouts are
  not randomized while a leader is heard (priorities already differ); after a poll or an
  election that did not end with a leader, the wait is ``election_timeout + U[0,
  election_timeout)`` from the injected random source, which breaks ties between replicas whose
  targets decayed to the same level. Without priority election every wait is randomized that way
  (Atomix's ``RandomizedElectionTimer``).
- **Replication**: the leader pipelines appends (at most ``append_window_entries_max`` unacked
  entries per follower, ``append_batch_entries_max`` per request) and heartbeats every
  ``heartbeat_interval``. A follower whose entry at ``prev_index`` has another term answers
  with a hint and the leader retries from there; a follower truncates a conflicting suffix
  (never a committed entry: that would be a bug and is asserted). A heartbeat to a follower
  that lost messages fails the consistency check, so a lost request costs one heartbeat.
- **Commit** (``LeaderAppender``): the index a quorum has matched, counted only when it is an
  entry of the leader's own term; its first such entry is the no-op it appends on election.
  A single-member partition commits on append.
- **Quorum loss**: a leader that has not heard from a quorum (itself included) for
  ``max_quorum_response_timeout`` (0: twice the election timeout) steps down. Zeebe also
  requires ``minStepDownFailureCount`` (3) failed requests to one member; with a heartbeat per
  ``heartbeat_interval`` that many have always failed by then, so the time alone decides here.
- **Snapshots**: the shell reports its own snapshots (``SnapshotTaken``) and the core answers
  ``CompactLog`` up to the snapshot's index. The leader sends its newest snapshot, in chunks of
  ``snapshot_chunk_size`` bytes, to a follower whose next entry it no longer has, or that is more
  than ``prefer_snapshot_replication_threshold`` entries behind the snapshot (Zeebe's
  ``shouldReplicateSnapshot``); after the last chunk the follower continues from the snapshot's
  index. The follower answers every chunk with the offset it expects next, so a lost, duplicated
  or reordered chunk costs one chunk (Zeebe restarts from the first chunk instead); a chunk at
  offset 0 restarts the transfer. A transfer keeps the snapshot it began with even when the
  leader takes a newer one (the shell keeps :meth:`RaftCore.snapshots_in_use`). A chunk is sent
  again if unanswered for ``snapshot_request_timeout`` (Zeebe's ``snapshotRequestTimeout``); the
  follower's election timer restarts with every chunk.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Committed,
    CompactLog,
    Effect,
    Entry,
    Index,
    Input,
    InstallRequest,
    InstallResponse,
    InstallSnapshot,
    NotLeader,
    PersistEntries,
    PersistTermVote,
    PollRequest,
    PollResponse,
    Propose,
    Role,
    RoleChanged,
    Send,
    SnapshotMeta,
    SnapshotTaken,
    Term,
    Tick,
    TruncateLog,
    VoteRequest,
    VoteResponse,
    WriteSnapshotChunk,
)
from zeebe_sim.ground.errors import InvalidArgument, StorageCorruption
from zeebe_sim.ground.ids import NodeId


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Timing and limits. Names follow Zeebe's ``cluster.*`` / ``experimental.raft.*`` settings,
    with their defaults; tests use short timeouts."""

    election_timeout_ms: int = 2500
    heartbeat_interval_ms: int = 250
    enable_priority_election: bool = True
    max_quorum_response_timeout_ms: int = 0  # 0: 2 x election timeout, as Zeebe
    snapshot_chunk_size_bytes: int = 1 << 30  # Zeebe's snapshotChunkSize, 1 GB
    snapshot_request_timeout_ms: int = 2500  # an unanswered chunk is sent again after this
    prefer_snapshot_replication_threshold: int = 100
    append_batch_entries_max: int = 256
    append_window_entries_max: int = 4096
    # an append request stops adding entries past this many data bytes (it holds at least one
    # entry): requests must fit in a wire frame
    append_batch_bytes_max: int = 1 << 20

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ms <= 0:
            raise InvalidArgument("heartbeatInterval must be positive")
        if self.election_timeout_ms <= 2 * self.heartbeat_interval_ms:
            # the leader-liveness window for polls is one heartbeat shorter than the timeout
            raise InvalidArgument("electionTimeout must be more than twice the heartbeatInterval")
        if self.snapshot_chunk_size_bytes <= 0 or self.append_batch_entries_max <= 0:
            raise InvalidArgument("snapshotChunkSize and the append batch must be positive")
        if self.append_window_entries_max < self.append_batch_entries_max:
            raise InvalidArgument("the append window must hold at least one batch")

    @property
    def quorum_response_timeout_ms(self) -> int:
        return self.max_quorum_response_timeout_ms or 2 * self.election_timeout_ms


NO_TERM = Term(0)  # before the first election


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a replica persisted, given back on start: term, vote, newest snapshot and the log
    (entries up to the snapshot's index are ignored; the rest must follow it without a gap)."""

    term: Term = NO_TERM
    voted_for: NodeId | None = None
    snapshot: SnapshotMeta | None = None
    entries: Sequence[Entry] = ()


class SnapshotReader(Protocol):
    """Reads the replica's snapshots for sending to followers.

    The core reads only snapshots it was told about (``SnapshotTaken``, ``InstallSnapshot``),
    and a transfer keeps reading the snapshot it began with, so the shell keeps every snapshot
    in :meth:`RaftCore.snapshots_in_use` when it deletes older ones (Zeebe reserves the
    snapshot a transfer sends); restarting transfers whenever a new snapshot appears would never
    finish one under load."""

    def read(self, snapshot: SnapshotMeta, offset: int, size_max: int) -> bytes | None:
        """Up to ``size_max`` bytes from ``offset`` (fewer only at the end); ``None`` if that
        snapshot is gone, and the core starts the transfer over with the newest one."""
        ...


class _Why(enum.Enum):
    NEWER_TERM = "newer term"
    POLL_WON = "poll won"
    ELECTION_WON = "election won"
    ELECTION_TIMED_OUT = "election timed out"
    LEADER_FOUND = "leader found"
    QUORUM_LOST = "quorum lost"


_TRANSITIONS: dict[tuple[Role, _Why], Role] = {
    (Role.FOLLOWER, _Why.POLL_WON): Role.CANDIDATE,
    (Role.FOLLOWER, _Why.NEWER_TERM): Role.FOLLOWER,
    (Role.CANDIDATE, _Why.ELECTION_WON): Role.LEADER,
    (Role.CANDIDATE, _Why.ELECTION_TIMED_OUT): Role.FOLLOWER,
    (Role.CANDIDATE, _Why.LEADER_FOUND): Role.FOLLOWER,
    (Role.CANDIDATE, _Why.NEWER_TERM): Role.FOLLOWER,
    (Role.LEADER, _Why.NEWER_TERM): Role.FOLLOWER,
    (Role.LEADER, _Why.QUORUM_LOST): Role.FOLLOWER,
}


@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower."""

    next_index: int
    match_index: int
    last_response_ms: int
    snapshot: SnapshotMeta | None = None  # a transfer in progress
    snapshot_offset: int = 0
    chunk_sent_ms: int = 0


class RaftCore:
    """One replica of one partition (see the module docstring)."""

    def __init__(
        self,
        node_id: NodeId,
        members: Sequence[NodeId],
        *,
        now_ms: int,
        random: Callable[[int], int],
        snapshots: SnapshotReader,
        durable: DurableState | None = None,
        config: RaftConfig | None = None,
        priority: int = 1,
        target_priority: int = 1,
    ) -> None:
        """``random(n)`` returns a uniform int in ``[0, n)``; ``priority`` and
        ``target_priority`` come from ``zeebe_sim.ground.routing.replica_priorities``.

        Raises ``InvalidArgument`` if ``node_id`` is not a member, ``StorageCorruption`` if the
        durable log does not follow its snapshot.
        """
        if node_id not in members or len(set(members)) != len(members):
            raise InvalidArgument(f"Node {node_id} must be one of distinct members {members}")
        self.node_id = node_id
        self.members = tuple(members)
        self.peers = tuple(m for m in members if m != node_id)
        self.config = config or RaftConfig()
        self._quorum = len(members) // 2 + 1
        self._random = random
        self._snapshots = snapshots
        self._priority = priority
        self._initial_target = target_priority
        self._target = target_priority
        durable = durable or DurableState()

        self.term = durable.term
        self.voted_for = durable.voted_for
        self.snapshot = durable.snapshot
        # The log: entries (base_index, last_index]; base is the snapshot's entry (or index 0).
        self._base_index = durable.snapshot.index if durable.snapshot else 0
        self._base_term: int = durable.snapshot.term if durable.snapshot else 0
        self._log = [e for e in durable.entries if e.index > self._base_index]
        for offset, entry in enumerate(self._log):
            if entry.index != self._base_index + 1 + offset:
                raise StorageCorruption(
                    f"Raft log of node {node_id} has a gap: entry {entry.index} where "
                    f"{self._base_index + 1 + offset} belongs"
                )
        self.commit_index = self._base_index

        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self._reported: tuple[Role, int, NodeId | None] = (Role.FOLLOWER, self.term, None)
        self._now = now_ms
        self._out: list[Effect] = []
        self._leader_seen_ms: int | None = None
        self._polls: set[NodeId] | None = None  # yeses of the poll in progress
        self._votes: set[NodeId] = set()
        self._progress: dict[NodeId, _Progress] = {}
        self._quorum_deadline_cache: int | None = None  # derived from _progress
        self._heartbeat_due_ms = now_ms
        self._incoming: SnapshotMeta | None = None  # a snapshot being received
        self._incoming_offset = 0
        self._reset_election_timer(jitter=False)
        if not self.peers:
            # Atomix: a single-member partition campaigns at once; nobody else could.
            self._election_deadline_ms = now_ms

    # -- reading ---------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self._base_index + len(self._log)

    @property
    def last_term(self) -> int:
        return self._log[-1].term if self._log else self._base_term

    @property
    def first_index(self) -> int:
        """The first entry still in the log (after compaction)."""
        return self._base_index + 1

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if compacted away or beyond the log."""
        if index == self._base_index:
            return self._base_term
        if self._base_index < index <= self.last_index:
            return self._log[index - self._base_index - 1].term
        return None

    def entries(self, first: int, last: int) -> list[Entry]:
        """The entries ``first..last`` (inclusive) that are still in the log."""
        lo = max(first, self.first_index) - self._base_index - 1
        hi = min(last, self.last_index) - self._base_index
        return self._log[lo:hi] if hi > lo else []

    def snapshots_in_use(self) -> set[SnapshotMeta]:
        """The snapshots the shell must keep: the newest and those transfers are sending."""
        used = {p.snapshot for p in self._progress.values() if p.snapshot is not None}
        if self.snapshot is not None:
            used.add(self.snapshot)
        return used

    def next_deadline_ms(self) -> int:
        """When the core next needs a ``Tick`` (it may get one earlier)."""
        if self.role is Role.LEADER:
            return min(self._heartbeat_due_ms, self._quorum_deadline_ms())
        return self._election_deadline_ms

    # -- the one entry point -----------------------------------------------------------------

    def handle(self, event: Input, now_ms: int) -> list[Effect]:
        """Consume one input at ``now_ms`` and return the effects to carry out, in order."""
        assert now_ms >= self._now, "time went backwards"
        self._now = now_ms
        self._out = []
        if isinstance(event, PollRequest):
            self._on_poll_request(event)
        elif isinstance(event, Tick):
            pass
        elif isinstance(event, Propose):
            self._on_propose(event)
        elif isinstance(event, SnapshotTaken):
            self._on_snapshot_taken(event.snapshot)
        else:
            # every other message: a newer term demotes us first, whatever the message is
            if event.term > self.term:
                self._adopt_term(event.term)
            if isinstance(event, PollResponse):
                self._on_poll_response(event)
            elif isinstance(event, VoteRequest):
                self._on_vote_request(event)
            elif isinstance(event, VoteResponse):
                self._on_vote_response(event)
            elif isinstance(event, AppendRequest):
                self._on_append_request(event)
            elif isinstance(event, AppendResponse):
                self._on_append_response(event)
            elif isinstance(event, InstallRequest):
                self._on_install_request(event)
            else:
                self._on_install_response(event)
        self._on_time()
        state = (self.role, self.term, self.leader)
        if state != self._reported:
            self._reported = state
            self._out.append(RoleChanged(self.role, self.term, self.leader))
        return self._out

    # -- roles and terms ---------------------------------------------------------------------

    def _become(self, why: _Why) -> None:
        role = _TRANSITIONS[(self.role, why)]
        self.role = role
        self._polls = None
        if role is not Role.LEADER:
            self._progress = {}
        if role is Role.FOLLOWER and why is not _Why.LEADER_FOUND:
            self.leader = None

    def _adopt_term(self, term: int) -> None:
        was = self.role
        self.term = Term(term)
        self.voted_for = None
        self._out.append(PersistTermVote(self.term, None))
        self._become(_Why.NEWER_TERM)
        self.leader = None
        if was is not Role.FOLLOWER:
            self._reset_election_timer(jitter=False)

    def _reset_election_timer(self, *, jitter: bool) -> None:
        self._target = self._initial_target
        timeout = self.config.election_timeout_ms
        wait = timeout
        if jitter or not self.config.enable_priority_election:
            wait += self._random(timeout)
        self._election_deadline_ms = self._now + wait

    def _on_time(self) -> None:
        if self.role is Role.LEADER:
            if self._now >= self._quorum_deadline_ms():
                self._become(_Why.QUORUM_LOST)
                self.leader = None
                self._reset_election_timer(jitter=True)
                return
            if self._now >= self._heartbeat_due_ms:
                self._heartbeat_due_ms = self._now + self.config.heartbeat_interval_ms
                for peer, p in self._progress.items():
                    if p.snapshot is None:
                        self._replicate(peer, heartbeat=True)
                    elif self._now - p.chunk_sent_ms >= self.config.snapshot_request_timeout_ms:
                        # a chunk can be large (1 GB by default): resend only when overdue
                        self._replicate(peer, heartbeat=True)
            return
        # a loop, in case the shell ticks late: a priority step may be due right after another
        while self._now >= self._election_deadline_ms:
            if self.role is Role.CANDIDATE:
                self._become(_Why.ELECTION_TIMED_OUT)
                self._reset_election_timer(jitter=True)
            elif not self.config.enable_priority_election or self._priority >= self._target:
                self._start_poll()
            else:
                self._target -= 1
                self._election_deadline_ms += self.config.election_timeout_ms

    def _quorum_deadline_ms(self) -> int:
        if self._quorum_deadline_cache is None:
            if not self.peers:
                self._quorum_deadline_cache = 1 << 62
            else:
                heard = sorted((p.last_response_ms for p in self._progress.values()), reverse=True)
                # the leader counts itself: it needs quorum - 1 others
                deadline = heard[self._quorum - 2] + self.config.quorum_response_timeout_ms
                self._quorum_deadline_cache = deadline
        return self._quorum_deadline_cache

    def _heard_from(self, p: _Progress) -> None:
        p.last_response_ms = self._now
        self._quorum_deadline_cache = None

    def _log_is_current(self, last_index: int, last_term: int) -> bool:
        return (last_term, last_index) >= (self.last_term, self.last_index)

    # -- elections ---------------------------------------------------------------------------

    def _start_poll(self) -> None:
        self._polls = {self.node_id}
        self._reset_election_timer(jitter=True)
        request = PollRequest(self.term, self.node_id, Index(self.last_index), Term(self.last_term))
        self._out.extend(Send(peer, request) for peer in self.peers)
        self._check_poll()

    def _check_poll(self) -> None:
        if self._polls is not None and len(self._polls) >= self._quorum:
            self._become(_Why.POLL_WON)
            self.term = Term(self.term + 1)
            self.voted_for = self.node_id
            self._out.append(PersistTermVote(self.term, self.node_id))
            self._votes = {self.node_id}
            self._reset_election_timer(jitter=True)
            request = VoteRequest(
                self.term, self.node_id, Index(self.last_index), Term(self.last_term)
            )
            self._out.extend(Send(peer, request) for peer in self.peers)
            self._check_votes()

    def _check_votes(self) -> None:
        if self.role is Role.CANDIDATE and len(self._votes) >= self._quorum:
            self._become(_Why.ELECTION_WON)
            self.leader = self.node_id
            self._progress = {
                peer: _Progress(self.last_index + 1, 0, self._now) for peer in self.peers
            }
            self._quorum_deadline_cache = None
            self._heartbeat_due_ms = self._now + self.config.heartbeat_interval_ms
            # the no-op: entries of earlier terms commit once an entry of this term does
            self._append((None,))

    def _on_poll_request(self, m: PollRequest) -> None:
        leader_live = self.role is Role.LEADER or (
            self._leader_seen_ms is not None
            and self._now - self._leader_seen_ms
            < self.config.election_timeout_ms - self.config.heartbeat_interval_ms
        )
        granted = (
            m.term >= self.term
            and not leader_live
            and self._log_is_current(m.last_index, m.last_term)
        )
        self._out.append(Send(m.sender, PollResponse(self.term, self.node_id, granted)))

    def _on_poll_response(self, m: PollResponse) -> None:
        if self.role is Role.FOLLOWER and self._polls is not None and m.granted:
            self._polls.add(m.sender)
            self._check_poll()

    def _on_vote_request(self, m: VoteRequest) -> None:
        granted = (
            m.term == self.term
            and self.voted_for in (None, m.sender)
            and self._log_is_current(m.last_index, m.last_term)
        )
        if granted:
            if self.voted_for is None:
                self.voted_for = m.sender
                self._out.append(PersistTermVote(self.term, m.sender))
            self._reset_election_timer(jitter=False)
        self._out.append(Send(m.sender, VoteResponse(self.term, self.node_id, granted)))

    def _on_vote_response(self, m: VoteResponse) -> None:
        if self.role is Role.CANDIDATE and m.term == self.term and m.granted:
            self._votes.add(m.sender)
            self._check_votes()

    # -- the leader's side of replication ----------------------------------------------------

    def _on_propose(self, m: Propose) -> None:
        if self.role is not Role.LEADER:
            self._out.append(NotLeader(self.leader))
            return
        if m.data:
            self._append(m.data)

    def _append(self, data: Sequence[bytes | None]) -> None:
        first = self.last_index + 1
        new = tuple(Entry(Index(first + i), self.term, d) for i, d in enumerate(data))
        self._log.extend(new)
        self._out.append(PersistEntries(new))
        self._advance_commit()
        for peer in self.peers:
            self._replicate(peer, heartbeat=False)

    def _advance_commit(self) -> None:
        matches = sorted([self.last_index, *(p.match_index for p in self._progress.values())])
        quorum_match = matches[len(matches) - self._quorum]
        if quorum_match > self.commit_index and self.term_at(quorum_match) == self.term:
            self.commit_index = quorum_match
            self._out.append(Committed(Index(quorum_match)))

    def _needs_snapshot(self, p: _Progress) -> bool:
        if self.snapshot is None:
            return False
        if self.term_at(p.next_index - 1) is None:
            return True  # the entries it needs were compacted
        behind = self.snapshot.index - (p.next_index - 1)
        return (
            p.match_index < self.snapshot.index
            and behind > self.config.prefer_snapshot_replication_threshold
        )

    def _replicate(self, peer: NodeId, *, heartbeat: bool) -> None:
        """Send ``peer`` what it needs next: a snapshot chunk, new entries, or (``heartbeat``)
        at least an empty append."""
        p = self._progress[peer]
        if p.snapshot is None and self._needs_snapshot(p):
            p.snapshot, p.snapshot_offset = self.snapshot, 0
            heartbeat = True
        if p.snapshot is not None:
            if heartbeat and not self._send_chunk(peer, p):
                # the snapshot we were sending is gone: start over with the newest one
                p.snapshot, p.snapshot_offset = self.snapshot, 0
                sent = self._send_chunk(peer, p)
                assert sent, "the newest snapshot cannot be read"
            return
        window_full = p.next_index - 1 - p.match_index >= self.config.append_window_entries_max
        if not heartbeat and (p.next_index > self.last_index or window_full):
            return
        last = p.next_index - 1 + self.config.append_batch_entries_max
        batch = () if window_full else self._batch(p.next_index, last)
        prev_term = self.term_at(p.next_index - 1)
        assert prev_term is not None, "entries before next_index are compacted"
        request = AppendRequest(
            self.term,
            self.node_id,
            Index(p.next_index - 1),
            Term(prev_term),
            batch,
            Index(self.commit_index),
        )
        self._out.append(Send(peer, request))
        p.next_index += len(batch)

    def _batch(self, first: int, last: int) -> tuple[Entry, ...]:
        """The entries ``first..last``, cut after ``append_batch_bytes_max`` data bytes."""
        entries = self.entries(first, last)
        size = 0
        for count, entry in enumerate(entries):
            size += len(entry.data or b"")
            if size > self.config.append_batch_bytes_max and count > 0:
                return tuple(entries[:count])
        return tuple(entries)

    def _send_chunk(self, peer: NodeId, p: _Progress) -> bool:
        """Send the chunk at the transfer's offset; False if its snapshot is gone."""
        snapshot = p.snapshot
        assert snapshot is not None
        size_max = self.config.snapshot_chunk_size_bytes
        data = self._snapshots.read(snapshot, p.snapshot_offset, size_max)
        if data is None:
            return False
        done = p.snapshot_offset + len(data) >= snapshot.size_bytes
        assert data or done, "the snapshot reader returned nothing before the end"
        chunk = InstallRequest(self.term, self.node_id, snapshot, p.snapshot_offset, data, done)
        self._out.append(Send(peer, chunk))
        p.chunk_sent_ms = self._now
        return True

    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role is not Role.LEADER or m.term != self.term:
            return
        p = self._progress[m.sender]
        self._heard_from(p)
        if m.success:
            if m.last_index > p.match_index:
                p.match_index = m.last_index
                self._advance_commit()
            p.next_index = max(p.next_index, p.match_index + 1)
        else:
            p.next_index = max(p.match_index + 1, min(p.next_index, m.last_index + 1))
        self._replicate(m.sender, heartbeat=not m.success)

    def _on_install_response(self, m: InstallResponse) -> None:
        if self.role is not Role.LEADER or m.term != self.term:
            return
        p = self._progress[m.sender]
        self._heard_from(p)
        if m.complete:
            if m.snapshot_index > p.match_index:
                p.match_index = m.snapshot_index
                self._advance_commit()
            if p.snapshot is not None and m.snapshot_index >= p.snapshot.index:
                p.snapshot = None
                p.next_index = p.match_index + 1
                self._replicate(m.sender, heartbeat=True)
        elif (
            p.snapshot is not None
            and m.snapshot_index == p.snapshot.index
            and m.next_offset != p.snapshot_offset
        ):
            # an equal offset is an answer to a duplicate: the heartbeat resends if it is lost
            p.snapshot_offset = m.next_offset
            self._replicate(m.sender, heartbeat=True)

    # -- the follower's side -----------------------------------------------------------------

    def _heard_from_leader(self, leader: NodeId) -> None:
        """A request of this term from its leader: follow it and restart the timer."""
        assert self.role is not Role.LEADER, f"two leaders in term {self.term}"
        if self.role is Role.CANDIDATE:
            self._become(_Why.LEADER_FOUND)
        self._polls = None
        self.leader = leader
        self._leader_seen_ms = self._now
        self._reset_election_timer(jitter=False)

    def _on_append_request(self, m: AppendRequest) -> None:
        if m.term < self.term:
            self._reply_append(m.sender, False, self.last_index)
            return
        self._heard_from_leader(m.sender)
        if m.prev_index > self.last_index:
            self._reply_append(m.sender, False, self.last_index)
            return
        entries = m.entries
        prev_term = self.term_at(m.prev_index)
        if prev_term is None:
            # prev_index lies in our snapshot: those entries are committed and ours match
            entries = tuple(e for e in entries if e.index > self._base_index)
        elif prev_term != m.prev_term:
            assert m.prev_index > self.commit_index, "a committed entry conflicts"
            self._reply_append(m.sender, False, max(self.commit_index, m.prev_index - 1))
            return
        keep = 0
        for entry in entries:
            if entry.index > self.last_index:
                break
            if self.term_at(entry.index) != entry.term:
                assert entry.index > self.commit_index, "a committed entry conflicts"
                del self._log[entry.index - self._base_index - 1 :]
                self._out.append(TruncateLog(entry.index))
                break
            keep += 1
        new = entries[keep:]
        if new:
            self._log.extend(new)
            self._out.append(PersistEntries(new))
        matched = m.prev_index + len(m.entries)
        commit = min(m.commit_index, matched)
        if commit > self.commit_index:
            self.commit_index = commit
            self._out.append(Committed(Index(commit)))
        self._reply_append(m.sender, True, matched)

    def _reply_append(self, to: NodeId, success: bool, last_index: int) -> None:
        response = AppendResponse(self.term, self.node_id, success, Index(last_index))
        self._out.append(Send(to, response))

    def _on_install_request(self, m: InstallRequest) -> None:
        snapshot = m.snapshot
        if m.term < self.term:
            self._reply_install(m.sender, snapshot.index, 0, complete=False)
            return
        self._heard_from_leader(m.sender)
        if snapshot.index <= self.commit_index:
            self._reply_install(m.sender, snapshot.index, snapshot.size_bytes, complete=True)
            return
        if m.offset == 0:
            self._incoming, self._incoming_offset = snapshot, 0
        if self._incoming != snapshot or m.offset != self._incoming_offset:
            expected = self._incoming_offset if self._incoming == snapshot else 0
            self._reply_install(m.sender, snapshot.index, expected, complete=False)
            return
        self._out.append(WriteSnapshotChunk(snapshot, m.offset, m.data))
        self._incoming_offset += len(m.data)
        if not m.done:
            self._reply_install(m.sender, snapshot.index, self._incoming_offset, complete=False)
            return
        if self._incoming_offset != snapshot.size_bytes:
            # the leader's chunks do not add up: drop them and ask again from the start
            self._incoming = None
            self._reply_install(m.sender, snapshot.index, 0, complete=False)
            return
        self._incoming = None
        self._install(snapshot)
        self._reply_install(m.sender, snapshot.index, snapshot.size_bytes, complete=True)

    def _install(self, snapshot: SnapshotMeta) -> None:
        self._out.append(InstallSnapshot(snapshot))
        if self.term_at(snapshot.index) == snapshot.term:
            # the log continues the snapshot (Raft: keep the entries that follow it)
            del self._log[: snapshot.index - self._base_index]
        else:
            if self.last_index > snapshot.index:
                self._out.append(TruncateLog(Index(snapshot.index + 1)))
            self._log = []
        self._base_index, self._base_term = snapshot.index, snapshot.term
        self.snapshot = snapshot
        self.commit_index = max(self.commit_index, snapshot.index)

    def _reply_install(self, to: NodeId, index: int, next_offset: int, *, complete: bool) -> None:
        response = InstallResponse(self.term, self.node_id, Index(index), next_offset, complete)
        self._out.append(Send(to, response))

    # -- the replica's own snapshots ---------------------------------------------------------

    def _on_snapshot_taken(self, snapshot: SnapshotMeta) -> None:
        assert snapshot.index <= self.commit_index, "a snapshot of uncommitted entries"
        if self.snapshot is not None and snapshot.index <= self.snapshot.index:
            return
        known = self.term_at(snapshot.index)
        assert known is None or known == snapshot.term, "the snapshot's term disagrees with the log"
        self.snapshot = snapshot
        if snapshot.index > self._base_index:
            del self._log[: snapshot.index - self._base_index]
            self._base_index, self._base_term = snapshot.index, snapshot.term
            self._out.append(CompactLog(snapshot.index))
