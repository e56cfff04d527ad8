"""A deterministic simulation of one Raft partition: the real ``RaftCore`` replicas in one
process, joined by a simulated network, driven by a simulated clock, with seeded faults.

What is simulated (the edges of nondeterminism only):

- **the network**: each message gets its own delay (so messages reorder), may be dropped or
  duplicated, and is lost if the link between the two replicas is cut at sending or at arrival;
- **the clock**: time jumps to the next message arrival, timer deadline or scheduled fault;
- **the disk**: a replica's :class:`Disk` holds exactly what its effects told it to persist, and
  a crash throws everything else away (a crash can even land between two effects of one call);
- **the shell**: a tiny state machine (a running hash over applied entries) that takes its own
  snapshots, so followers compact and lagging replicas need snapshots.

The checks (:class:`Violation` on failure) run as the simulation goes and after healing: one
leader per term; a committed index never changes its entry; every replica applying index ``i``
reaches the same state hash; every acknowledged write (committed and reported on the leader that
took it) is in the final committed log of every replica; all replicas converge.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.raft.core import NO_TERM, DurableState, RaftConfig, RaftCore
from broker.raft.messages import (
    Committed,
    CompactLog,
    Effect,
    Entry,
    Index,
    Input,
    InstallSnapshot,
    Message,
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
from zeebe_sim.ground.ids import NodeId

GENESIS = b"\0" * 16


class Violation(AssertionError):
    """An invariant of the replicated log was broken."""


def chain(state: bytes, entry: Entry) -> bytes:
    """The state machine: a running hash over (index, term, data) of applied entries."""
    h = hashlib.blake2b(state, digest_size=16)
    h.update(b"%d:%d:" % (entry.index, entry.term))
    h.update(b"-" if entry.data is None else b"+" + entry.data)
    return h.digest()


@dataclass
class Disk:
    """What a replica persisted, exactly as its effects said; a crash keeps only this."""

    term: Term = NO_TERM
    voted_for: NodeId | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    # older snapshots kept while a transfer reads them (the newest is snapshot/snapshot_data)
    kept: dict[SnapshotMeta, bytes] = field(default_factory=dict)
    pending: bytearray = field(default_factory=bytearray)
    pending_meta: SnapshotMeta | None = None

    def durable(self) -> DurableState:
        return DurableState(self.term, self.voted_for, self.snapshot, list(self.entries))

    def read(self, snapshot: SnapshotMeta, offset: int, size_max: int) -> bytes | None:
        """The snapshot reader the core gets."""
        data = self.snapshot_data if snapshot == self.snapshot else self.kept.get(snapshot)
        return None if data is None else data[offset : offset + size_max]

    def replace_snapshot(
        self, snapshot: SnapshotMeta, data: bytes, in_use: set[SnapshotMeta]
    ) -> None:
        """A new newest snapshot; older ones survive only while in use."""
        if self.snapshot is not None:
            self.kept[self.snapshot] = self.snapshot_data
        self.snapshot, self.snapshot_data = snapshot, data
        self.kept = {meta: d for meta, d in self.kept.items() if meta in in_use}


def encode_snapshot(index: int, state: bytes, pad_bytes: int) -> bytes:
    return b"%d|%s|" % (index, state.hex().encode()) + b"." * pad_bytes


def decode_snapshot(data: bytes) -> tuple[int, bytes]:
    index, state, _ = data.split(b"|", 2)
    return int(index), bytes.fromhex(state.decode())


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: tuple[int, int] = (1, 5)
    crash_mid_call: float = 0.0  # chance that a crash lands inside a call's effects


@dataclass
class Replica:
    node_id: NodeId
    disk: Disk
    core: RaftCore | None = None
    applied: int = 0
    state: bytes = GENESIS
    incarnation: int = 0
    installs: int = 0
    # proposals this incarnation made as leader: index -> (term, data)
    proposals: dict[int, tuple[int, bytes]] = field(default_factory=dict)


@dataclass
class Stats:
    elections: int = 0
    acked: int = 0
    installs: int = 0
    crashes: int = 0
    messages: int = 0


class Simulation:
    """One partition of ``size`` replicas; call :meth:`run_until` and :meth:`heal_and_check`."""

    def __init__(
        self,
        seed: int,
        size: int,
        config: RaftConfig,
        *,
        faults: Faults | None = None,
        priorities: dict[NodeId, int] | None = None,
        snapshot_every: int = 20,
        snapshot_pad_bytes: int = 100,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config
        self.faults = faults or Faults()
        self.members = [NodeId(i) for i in range(size)]
        self.priorities = priorities or {}
        self.target_priority = max(self.priorities.values(), default=1)
        self.snapshot_every = snapshot_every
        self.snapshot_pad_bytes = snapshot_pad_bytes
        self.now = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.replicas = {n: Replica(n, Disk()) for n in self.members}
        self.stats = Stats()
        # the invariants' memory
        self.leaders: dict[int, NodeId] = {}
        self.committed: dict[int, tuple[int, bytes | None]] = {}
        self.history: dict[int, bytes] = {0: GENESIS}
        self.acked: dict[int, bytes] = {}
        self.writes = 0
        self.log: list[str] = []  # a short trace for failure reports
        for n in self.members:
            self.start(n)

    # -- plumbing ------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        trace = "\n".join(self.log[-40:])
        raise Violation(f"seed {self.seed} at {self.now} ms: {what}\nlast events:\n{trace}")

    def at(self, time_ms: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, action))

    def note(self, text: str) -> None:
        self.log.append(f"{self.now:>7} {text}")
        if len(self.log) > 400:
            del self.log[:200]

    def start(self, n: NodeId) -> None:
        r = self.replicas[n]
        assert r.core is None
        r.incarnation += 1
        r.proposals = {}
        r.core = RaftCore(
            n,
            self.members,
            now_ms=self.now,
            random=self.rng.randrange,
            snapshots=r.disk,
            durable=r.disk.durable(),
            config=self.config,
            priority=self.priorities.get(n, 1),
            target_priority=self.target_priority,
        )
        # the shell recovers its state machine from the snapshot; the rest is relearned
        if r.disk.snapshot is not None:
            r.applied, r.state = decode_snapshot(r.disk.snapshot_data)
        else:
            r.applied, r.state = 0, GENESIS
        r.disk.pending, r.disk.pending_meta = bytearray(), None  # never made durable
        r.disk.kept = {}  # a restarted replica sends nothing yet: only the newest stays
        self.note(f"start {n} (incarnation {r.incarnation}, term {r.disk.term})")

    def crash(self, n: NodeId) -> None:
        r = self.replicas[n]
        if r.core is not None:
            r.core = None
            self.stats.crashes += 1
            self.note(f"crash {n}")

    def deliver(self, n: NodeId, event: Input) -> None:
        r = self.replicas[n]
        if r.core is None:
            return
        effects = r.core.handle(event, self.now)
        crash_after = len(effects) + 1
        if self.faults.crash_mid_call and self.rng.random() < self.faults.crash_mid_call:
            crash_after = self.rng.randrange(len(effects) + 1)
        for i, effect in enumerate(effects):
            if i == crash_after:
                self.crash(n)
                return
            self.execute(r, effect)

    def send(self, src: NodeId, dst: NodeId, message: Message) -> None:
        self.stats.messages += 1
        if (src, dst) in self.cut or self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            lo, hi = self.faults.delay_ms
            arrival = self.now + self.rng.randint(lo, hi)

            def arrive(src: NodeId = src, dst: NodeId = dst, m: Message = message) -> None:
                if (src, dst) not in self.cut:
                    self.deliver(dst, m)

            self.at(arrival, arrive)

    # -- the shell: carrying out effects -------------------------------------------------------

    def execute(self, r: Replica, effect: Effect) -> None:
        disk = r.disk
        core = r.core
        assert core is not None
        if isinstance(effect, Send):
            self.send(r.node_id, effect.to, effect.message)
        elif isinstance(effect, PersistTermVote):
            disk.term, disk.voted_for = effect.term, effect.voted_for
        elif isinstance(effect, PersistEntries):
            last = disk.entries[-1].index if disk.entries else (disk.snapshot or _ZERO).index
            if effect.entries[0].index != last + 1:
                self.fail(f"{r.node_id} persists {effect.entries[0].index} after {last}")
            disk.entries.extend(effect.entries)
        elif isinstance(effect, TruncateLog):
            disk.entries = [e for e in disk.entries if e.index < effect.from_index]
        elif isinstance(effect, CompactLog):
            disk.entries = [e for e in disk.entries if e.index > effect.up_to_index]
        elif isinstance(effect, WriteSnapshotChunk):
            if effect.offset == 0:
                disk.pending, disk.pending_meta = bytearray(), effect.snapshot
            if disk.pending_meta != effect.snapshot or effect.offset != len(disk.pending):
                self.fail(f"{r.node_id} got chunk {effect.offset} out of order")
            disk.pending += effect.data
        elif isinstance(effect, InstallSnapshot):
            if disk.pending_meta != effect.snapshot:
                self.fail(f"{r.node_id} installs a snapshot it did not receive")
            disk.replace_snapshot(effect.snapshot, bytes(disk.pending), core.snapshots_in_use())
            disk.pending, disk.pending_meta = bytearray(), None
            disk.entries = [e for e in disk.entries if e.index > effect.snapshot.index]
            r.applied, r.state = decode_snapshot(disk.snapshot_data)
            if r.applied != effect.snapshot.index:
                self.fail(f"{r.node_id} snapshot content is for {r.applied}")
            self.check_state(r)
            r.installs += 1
            self.stats.installs += 1
            self.note(f"{r.node_id} installed snapshot {effect.snapshot.index}")
        elif isinstance(effect, Committed):
            self.apply(r, core, effect.index)
        elif isinstance(effect, RoleChanged):
            self.note(f"{r.node_id} {effect.role.value} term {effect.term} leader {effect.leader}")
            if effect.role is Role.LEADER:
                self.stats.elections += 1
                other = self.leaders.setdefault(effect.term, r.node_id)
                if other != r.node_id:
                    self.fail(f"two leaders in term {effect.term}: {other} and {r.node_id}")

    def apply(self, r: Replica, core: RaftCore, commit: int) -> None:
        entries = core.entries(r.applied + 1, commit)
        if len(entries) != commit - r.applied:
            self.fail(f"{r.node_id} cannot apply {r.applied + 1}..{commit}: entries missing")
        for entry in entries:
            seen = self.committed.setdefault(entry.index, (entry.term, entry.data))
            if seen != (entry.term, entry.data):
                self.fail(f"committed entry {entry.index} changed: {seen} then {entry}")
            r.state = chain(r.state, entry)
            r.applied = entry.index
            self.check_state(r)
            proposal = r.proposals.pop(entry.index, None)
            if proposal is not None and proposal == (entry.term, entry.data):
                # the client hears "done" only now: committed and applied by its leader
                self.acked[entry.index] = proposal[1]
                self.stats.acked += 1
        if r.applied - (r.disk.snapshot.index if r.disk.snapshot else 0) >= self.snapshot_every:
            self.take_snapshot(r, core)

    def check_state(self, r: Replica) -> None:
        seen = self.history.setdefault(r.applied, r.state)
        if seen != r.state:
            self.fail(f"{r.node_id} state at {r.applied} differs from another replica's")

    def take_snapshot(self, r: Replica, core: RaftCore) -> None:
        term = core.term_at(r.applied)
        assert term is not None
        data = encode_snapshot(r.applied, r.state, self.snapshot_pad_bytes)
        meta = SnapshotMeta(Index(r.applied), Term(term), len(data))
        r.disk.replace_snapshot(meta, data, core.snapshots_in_use() | {meta})
        for effect in core.handle(SnapshotTaken(meta), self.now):
            self.execute(r, effect)

    # -- driving ---------------------------------------------------------------------------------

    def propose(self) -> None:
        """A client writes to whichever replica thinks it leads (or a random one)."""
        live = [r for r in self.replicas.values() if r.core is not None]
        if not live:
            return
        leaders = [r for r in live if r.core is not None and r.core.role is Role.LEADER]
        r = self.rng.choice(leaders or live)
        assert r.core is not None
        self.writes += 1
        data = b"w%d" % self.writes
        effects = r.core.handle(Propose((data,)), self.now)
        for effect in effects:
            if isinstance(effect, PersistEntries):
                for entry in effect.entries:
                    r.proposals[entry.index] = (entry.term, entry.data or b"")
        for effect in effects:
            if r.core is None:
                break
            self.execute(r, effect)

    def step(self, until_ms: int) -> bool:
        """Advance to the next event before ``until_ms``; False when there is none."""
        next_time = until_ms
        due: NodeId | None = None
        for r in self.replicas.values():
            if r.core is not None:
                deadline = r.core.next_deadline_ms()
                if deadline < next_time:
                    next_time, due = deadline, r.node_id
        if self._queue and self._queue[0][0] <= next_time:
            time_ms, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, time_ms)
            action()
            return True
        if due is None:
            self.now = max(self.now, until_ms)
            return False
        self.now = max(self.now, next_time)
        self.deliver(due, Tick())
        return True

    def run_until(self, until_ms: int) -> None:
        while self.step(until_ms):
            pass

    def run_while(self, condition: Callable[[], bool], until_ms: int) -> bool:
        """Run until ``condition`` is false (True) or ``until_ms`` passes (False)."""
        while condition():
            if not self.step(until_ms):
                return not condition()
        return True

    def leader(self) -> Replica | None:
        leaders = [
            r for r in self.replicas.values() if r.core is not None and r.core.role is Role.LEADER
        ]
        return max(leaders, key=lambda r: r.core.term if r.core else 0) if leaders else None

    def converged(self) -> bool:
        leader = self.leader()
        if leader is None or leader.core is None:
            return False
        target = leader.core.last_index
        return leader.core.commit_index == target and all(
            r.core is not None and r.applied == target for r in self.replicas.values()
        )

    def heal_and_check(self, timeout_ms: int) -> None:
        """Heal the network, restart everyone, and check that all replicas agree and that no
        acknowledged write is missing."""
        self.cut.clear()
        self.faults = Faults(delay_ms=self.faults.delay_ms)
        for n, r in self.replicas.items():
            if r.core is None:
                self.start(n)
        self.note("healed")
        if not self.run_while(lambda: not self.converged(), self.now + timeout_ms):
            states = {
                n: (r.core.role.value, r.core.term, r.core.commit_index, r.applied)
                for n, r in self.replicas.items()
                if r.core is not None
            }
            self.fail(f"no convergence within {timeout_ms} ms after healing: {states}")
        applied = {r.applied for r in self.replicas.values()}
        states = {r.state for r in self.replicas.values()}
        if len(applied) != 1 or len(states) != 1:
            self.fail(f"replicas disagree after healing: {applied}")
        final = applied.pop()
        for index, data in self.acked.items():
            if index > final or self.committed.get(index, (0, None))[1] != data:
                self.fail(f"acknowledged write {data!r} at {index} is lost")


_ZERO = SnapshotMeta(Index(0), Term(0), 0)
