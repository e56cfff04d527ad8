"""The asyncio shell around one partition replica's Raft core (replication factor above 1).

Theory of operation
-------------------
A :class:`Replica` belongs to a :class:`broker.partition.Partition` and owns its
:class:`broker.raft.core.RaftCore`. Every input (a Raft message from a peer, a timer tick, the
leader's proposal of a processed group, a snapshot taken) goes through :meth:`Replica.handle`,
which calls the core synchronously and queues the effects. One executor task carries the effects
out **in order**: persist effects at once (log appends, truncation, the term-and-vote file,
snapshot chunks and installs), then one fsync for the whole batch, then what leaves the replica
or acts on commitment (sends, ``Committed``, role changes). Delaying a send is always safe, so
the core's rule (a persist is durable before any later effect leaves) holds with one fsync per
batch: group commit, replicated.

Log mapping: one Raft entry per log entry (a command, or its follow-up records; the no-op of a
new leader is an entry without records), the Raft index is the log index, and the entry's data
is ``first position | record count | payload``, so a follower appends exactly the leader's
entry. The leader writes its processed entries to its log itself (the processing task appends
them and proposes them in the same synchronous step, so the core and the log never disagree);
the executor only flushes them.

Commitment: the leader's answers and post-commit effects of a group (client answers, sends to
other partitions, backup starts, job wake-ups) wait in ``awaiting`` until the core reports the
group's last entry committed: a quorum has it durable. Followers (and a new leader) apply
committed entries by replaying their events, so their state stays warm and equals the leader's
at the same position. A new leader processes only once its no-op is committed (every earlier
entry is then committed and applied), then processes the commands written but never processed,
as recovery does. A leader that steps down fails its waiting requests with
PARTITION_LEADER_MISMATCH and rebuilds its state from its newest snapshot and the committed
entries (its own uncommitted processing may be truncated by the new leader).

Snapshots: each replica takes its own (at its applied index, which on the leader waits for
commitment) and reports it to the core; a follower behind the leader's compacted log gets the
leader's snapshot in chunks: a byte stream of a small header (id, positions) and the files.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import msgpack

from broker.raft.core import DurableState, RaftConfig, RaftCore
from broker.raft.messages import (
    Committed,
    CompactLog,
    Effect,
    Entry,
    Index,
    Input,
    InstallSnapshot,
    NotLeader,
    PersistEntries,
    PersistTermVote,
    Propose,
    Role,
    RoleChanged,
    Send,
    SnapshotMeta,
    SnapshotTaken,
    Term,
    Tick,
    TruncateLog,
    WriteSnapshotChunk,
)
from broker.raft.wire import from_wire, to_wire
from storage.durable import fsync_directory
from storage.snapshots import Snapshot, SnapshotId
from zeebe_sim.ground.errors import PartitionLeaderMismatch, StorageCorruption
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.protocol import Message, RaftMessage
from zeebe_sim.ground.records import Record, decode_records
from zeebe_sim.ground.tasks import in_thread

if TYPE_CHECKING:
    from broker.engine.processor import ProcessingResult, Response
    from broker.partition import Partition

log = logging.getLogger(__name__)

TERM_FILE = "raft-term.json"
_DATA_HEADER = struct.Struct("<QI")  # first position, record count
_STREAM_HEADER = struct.Struct(">I")
# Processed groups waiting for commitment before the leader stops taking more (backpressure).
AWAITING_ENTRIES_MAX = 8_192

SendFn = Callable[[NodeId, Message], None]
# a processed command's result, waiting until the entry at that index is committed
Awaiting = tuple[int, "asyncio.Future[Response] | None", "ProcessingResult"]


@attrs.frozen
class ReplicaConfig:
    """Where this replica stands in its partition (``zeebe_sim.ground.routing``)."""

    node_id: NodeId
    members: tuple[NodeId, ...]
    priority: int
    target_priority: int
    raft: RaftConfig = attrs.Factory(RaftConfig)


def entry_data(first_position: int, record_count: int, payload: bytes) -> bytes:
    return _DATA_HEADER.pack(first_position, record_count) + payload


def parse_entry_data(data: bytes) -> tuple[int, int, bytes]:
    first_position, record_count = _DATA_HEADER.unpack_from(data)
    return first_position, record_count, data[_DATA_HEADER.size :]


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class Replica:
    def __init__(self, partition: Partition, config: ReplicaConfig, send: SendFn) -> None:
        self.partition = partition
        self.config = config
        self.send = send
        self.core: RaftCore
        self._effects: collections.deque[Effect] = collections.deque()
        self._effects_ready = asyncio.Event()
        self._timer_changed = asyncio.Event()
        # what the state machine reflects: the last applied entry (the leader's own processing
        # included, committed or not)
        self.applied_index = 0
        self.applied_term = 0
        self.applied_position = 0
        self._skip_until = 0
        self.commit_seen = 0
        self.unprocessed: list[Record] = []
        # the term in which this replica leads and processes (None: it does not)
        self.leading_term: int | None = None
        self._becoming: tuple[int, int] | None = None  # (term, index of its no-op)
        self.awaiting: collections.deque[Awaiting] = collections.deque()
        self.drained = asyncio.Event()
        self.drained.set()
        self._incoming = bytearray()
        self._streams: dict[tuple[int, int], bytes] = {}
        self.role = Role.FOLLOWER
        self.term = 0
        self.leader: NodeId | None = None

    # -- start --------------------------------------------------------------------------------

    @property
    def _term_file(self) -> Path:
        return self.partition.directory / TERM_FILE

    def recover(self, snapshot: Snapshot | None) -> None:
        """Build the core from what is durable: the term file, the snapshot the partition's
        state was loaded from, and the log entries after it."""
        p = self.partition
        if snapshot is not None:
            self.applied_index, self.applied_term = snapshot.id.index, snapshot.id.term
            self.applied_position = snapshot.last_followup_event_position
        self._skip_until = self.applied_position
        meta = self._meta(snapshot) if snapshot is not None else None
        if p.log.last_index < self.applied_index or (
            p.log.first_index > self.applied_index + 1 and not p.log.is_empty
        ):
            # an install whose log reset did not finish, or a log that does not reach the
            # snapshot: the snapshot holds everything, the log starts after it
            p.log.reset_to(self.applied_index + 1, self.applied_position + 1)
        entries = []
        for entry in p.log.entries_from_index(self.applied_index + 1):
            data = (
                None
                if entry.record_count == 0
                else entry_data(entry.first_position, entry.record_count, entry.payload)
            )
            entries.append(Entry(Index(entry.index), Term(entry.term), data))
        stored_term, voted_for = self._read_term_file()
        # A restored replica has no term file: its term starts at its log's (terms only grow).
        log_term = max([self.applied_term, *(e.term for e in entries[-1:])])
        term = max(stored_term, log_term)
        durable = DurableState(
            term=Term(term),
            voted_for=voted_for if term == stored_term else None,
            snapshot=meta,
            entries=entries,
        )
        rng = random.Random()
        self.core = RaftCore(
            self.config.node_id,
            self.config.members,
            now_ms=_monotonic_ms(),
            random=rng.randrange,
            snapshots=self,
            durable=durable,
            config=self.config.raft,
            priority=self.config.priority,
            target_priority=self.config.target_priority,
        )
        self.term = term

    def _read_term_file(self) -> tuple[int, NodeId | None]:
        try:
            data = json.loads(self._term_file.read_text())
        except FileNotFoundError:
            return 0, None
        except ValueError as exc:
            raise StorageCorruption(f"{self._term_file} is not valid: {exc}") from exc
        voted = data.get("votedFor")
        return int(data["term"]), None if voted is None else NodeId(int(voted))

    def _write_term_file(self, term: int, voted_for: int | None) -> None:
        """Durably (temp + fsync + rename + fsync of the directory), before any later send."""
        temp = self._term_file.with_name(TERM_FILE + ".tmp")
        with open(temp, "w") as file:
            json.dump({"term": term, "votedFor": voted_for}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self._term_file)
        fsync_directory(self._term_file.parent)

    async def run(self) -> None:
        """The executor: carries out the core's effects in order (owned by the partition)."""
        try:
            while True:
                await self._effects_ready.wait()
                self._effects_ready.clear()
                while self._effects:
                    batch = list(self._effects)
                    self._effects.clear()
                    await self._execute(batch)
        except Exception as exc:
            # Not restarted: the log may be behind what the core believes durable. A restart
            # recovers both from disk; meanwhile the partition says it is DEAD.
            self.partition.processing_stopped(exc)

    async def tick(self) -> None:
        """The core's timer: a ``Tick`` at its next deadline (owned by the partition)."""
        while True:
            delay_s = max(0, self.core.next_deadline_ms() - _monotonic_ms()) / 1000
            self._timer_changed.clear()
            try:
                async with asyncio.timeout(delay_s):
                    await self._timer_changed.wait()
            except TimeoutError:
                self.handle(Tick())

    # -- inputs -------------------------------------------------------------------------------

    def handle(self, event: Input) -> None:
        effects = self.core.handle(event, _monotonic_ms())
        if effects:
            self._effects.extend(effects)
            self._effects_ready.set()
        self._timer_changed.set()

    def receive(self, message: RaftMessage) -> None:
        self.handle(from_wire(message))

    @property
    def can_process(self) -> bool:
        """Leading and caught up: the core is leader of the term this replica processes in."""
        return (
            self.leading_term is not None
            and self.core.role is Role.LEADER
            and self.core.term == self.leading_term
        )

    def propose(
        self,
        datas: list[bytes],
        results: list[Awaiting],
    ) -> None:
        """The leader processed a group: its entries are in the log (appended by the
        processing task); replicate them and hold the results until they are committed."""
        p = self.partition
        if datas:
            self.handle(Propose(tuple(datas)))
        assert self.core.last_index == p.log.last_index, (self.core.last_index, p.log.last_index)
        self.applied_index = p.log.last_index
        self.applied_term = self.core.term
        self.applied_position = p.log.last_position
        if results:
            self.awaiting.extend(results)
            self.drained.clear()
        if self.commit_seen >= self.applied_index:
            self._release(self.commit_seen)

    @property
    def backlogged(self) -> bool:
        return bool(self.awaiting) and self.applied_index - self.commit_seen > AWAITING_ENTRIES_MAX

    # -- effects ------------------------------------------------------------------------------

    async def _execute(self, batch: list[Effect]) -> None:
        p = self.partition
        later: list[Effect] = []
        dirty = False
        for at, effect in enumerate(batch):
            if isinstance(effect, PersistEntries):
                for entry in effect.entries:
                    if entry.index <= p.log.last_index:
                        continue  # the leader's own: appended while processing
                    assert entry.index == p.log.last_index + 1, (entry.index, p.log.last_index)
                    if entry.data is None:
                        p.log.append(p.log.last_position + 1, 0, b"", entry.term)
                    else:
                        first, count, payload = parse_entry_data(entry.data)
                        p.log.append(first, count, payload, entry.term)
                dirty = True
            elif isinstance(effect, PersistTermVote):
                self._write_term_file(effect.term, effect.voted_for)
            elif isinstance(effect, TruncateLog):
                p.log.truncate_from_index(effect.from_index)
            elif isinstance(effect, WriteSnapshotChunk):
                if effect.offset == 0:
                    self._incoming = bytearray()
                self._incoming += effect.data
            elif isinstance(effect, InstallSnapshot):
                following = batch[at + 1] if at + 1 < len(batch) else None
                self._install(effect.snapshot, isinstance(following, TruncateLog))
            elif isinstance(effect, CompactLog | NotLeader):
                pass  # the partition compacts by its own floor; processing checks the role
            else:
                later.append(effect)
        if dirty:
            await in_thread(p.log.flush)
        for effect in later:
            if isinstance(effect, Send):
                self.send(effect.to, to_wire(PartitionId(p.partition_id), effect.message))
            elif isinstance(effect, Committed):
                self._on_committed(effect.index)
            elif isinstance(effect, RoleChanged):
                self._on_role(effect)

    def _on_committed(self, index: int) -> None:
        self.commit_seen = max(self.commit_seen, index)
        if self.leading_term is None:
            self.apply_to(self.commit_seen)
        self._release(self.commit_seen)
        becoming = self._becoming
        if becoming is not None and self.commit_seen >= becoming[1]:
            self._becoming = None
            if self.core.role is Role.LEADER and self.core.term == becoming[0]:
                self._lead(becoming[0])

    def _release(self, index: int) -> None:
        """Carry out the effects of every processed group whose entries are committed."""
        now_ms = _monotonic_ms()
        while self.awaiting and self.awaiting[0][0] <= index:
            _, reply, result = self.awaiting.popleft()
            self.partition.carry_out(reply, result, now_ms)
        if not self.awaiting:
            self.drained.set()

    def apply_to(self, index: int) -> None:
        """Replay the committed entries after the applied one up to ``index``."""
        p = self.partition
        if index <= self.applied_index:
            return
        entries = self.core.entries(self.applied_index + 1, index)
        if not entries or entries[0].index != self.applied_index + 1:
            raise StorageCorruption(
                f"partition {p.partition_id}: committed entries after {self.applied_index} are "
                "not in the log"
            )
        # One replay for the whole committed range: the engine's per-call work (and the
        # unprocessed commands' bookkeeping) is paid once, not once an entry.
        records: list[Record] = []
        for entry in entries:
            if entry.data is not None:
                first, count, payload = parse_entry_data(entry.data)
                records += decode_records(payload)
                self.applied_position = first + count - 1
        if records:
            processed, commands = p.engine.replay(records, self._skip_until, p.processed_position)
            p.processed_position = processed
            self.unprocessed = [c for c in [*self.unprocessed, *commands] if c.position > processed]
        last = entries[-1]
        self.applied_index, self.applied_term = last.index, last.term

    def _on_role(self, change: RoleChanged) -> None:
        was_leading = self.leading_term is not None
        self.role, self.term, self.leader = change.role, change.term, change.leader
        if change.role is Role.LEADER:
            # processing starts once this term's no-op (the last entry now) is committed
            self._becoming = (change.term, self.core.last_index)
            self._on_committed(self.commit_seen)
        elif was_leading:
            self._step_down()
        log.info(
            "partition %s: %s in term %s (leader %s)",
            self.partition.partition_id,
            change.role.value,
            change.term,
            change.leader,
        )

    def _lead(self, term: int) -> None:
        """This term's no-op is committed: every entry before it is applied. Process."""
        self.leading_term = term
        commands, self.unprocessed = self.unprocessed, []
        self.partition.lead(commands)

    def _step_down(self) -> None:
        self.leading_term = None
        error = self.not_leader()
        awaiting = [reply for _, reply, _ in self.awaiting]
        self.awaiting.clear()
        self.drained.set()
        self.partition.step_down(error, awaiting)
        # Its own processing after the commit index may be truncated: rebuild from what is
        # committed.
        latest = self.partition.snapshots.latest()
        self.reset_state(latest)
        self.apply_to(self.commit_seen)

    def not_leader(self) -> PartitionLeaderMismatch:
        leader = self.leader if self.leader != self.config.node_id else None
        return PartitionLeaderMismatch(
            f"Broker {self.config.node_id} is not the leader of partition "
            f"{self.partition.partition_id}"
            + (f"; the leader is broker {leader}" if leader is not None else ""),
            leader,
        )

    def reset_state(self, snapshot: Snapshot | None) -> None:
        """The state machine as of ``snapshot`` (nothing applied after it)."""
        self.partition.load_state(snapshot)
        self.unprocessed = []
        if snapshot is None:
            self.applied_index = self.applied_term = self.applied_position = 0
        else:
            self.applied_index, self.applied_term = snapshot.id.index, snapshot.id.term
            self.applied_position = snapshot.last_followup_event_position
        self._skip_until = self.applied_position

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_taken(self, snapshot: Snapshot) -> None:
        self.handle(SnapshotTaken(self._meta(snapshot)))
        in_use = {(m.index, m.term) for m in self.core.snapshots_in_use()}
        self._streams = {k: v for k, v in self._streams.items() if k in in_use}

    def _meta(self, snapshot: Snapshot) -> SnapshotMeta:
        stream = self._stream(snapshot)
        return SnapshotMeta(Index(snapshot.id.index), Term(snapshot.id.term), len(stream))

    def _stream(self, snapshot: Snapshot) -> bytes:
        """The snapshot as the byte stream a transfer sends: header, then the files."""
        key = (snapshot.id.index, snapshot.id.term)
        stream = self._streams.get(key)
        if stream is None:
            names = sorted(snapshot.files)
            header: bytes = msgpack.packb(
                {
                    "id": str(snapshot.id),
                    "lastFollowup": snapshot.last_followup_event_position,
                    "extra": snapshot.extra,
                    "files": [[name, snapshot.files[name].size] for name in names],
                },
                use_bin_type=True,
            )
            parts = [_STREAM_HEADER.pack(len(header)), header]
            parts += [(snapshot.directory / name).read_bytes() for name in names]
            stream = self._streams[key] = b"".join(parts)
        return stream

    def read(self, snapshot: SnapshotMeta, offset: int, size_max: int) -> bytes | None:
        """The core's :class:`broker.raft.core.SnapshotReader`."""
        stream = self._streams.get((snapshot.index, snapshot.term))
        if stream is None:
            found = next(
                (
                    s
                    for s in self.partition.snapshots.all()
                    if (s.id.index, s.id.term) == (snapshot.index, snapshot.term)
                ),
                None,
            )
            if found is None:
                return None
            stream = self._stream(found)
        return stream[offset : offset + size_max]

    def _install(self, meta: SnapshotMeta, log_conflicts: bool) -> None:
        """A snapshot from the leader is complete: store it, reset the state machine to it,
        and restart the log after it when the log does not continue it."""
        p = self.partition
        data = bytes(self._incoming)
        self._incoming = bytearray()
        (header_bytes,) = _STREAM_HEADER.unpack_from(data)
        start = _STREAM_HEADER.size + header_bytes
        header: dict[str, Any] = msgpack.unpackb(data[_STREAM_HEADER.size : start], raw=False)
        snapshot_id = SnapshotId.parse(header["id"])
        pending = p.snapshots.begin(snapshot_id, header["lastFollowup"], extra=header["extra"])
        for name, size in header["files"]:
            pending.write_file(name, [data[start : start + size]])
            start += size
        snapshot = p.snapshots.persist(pending)
        self._streams[(meta.index, meta.term)] = data
        if log_conflicts or p.log.last_index <= meta.index:
            p.log.reset_to(meta.index + 1, snapshot.last_followup_event_position + 1)
        self.reset_state(snapshot)
        self.commit_seen = max(self.commit_seen, meta.index)
        log.info("partition %s: installed snapshot %s", p.partition_id, snapshot.id)
