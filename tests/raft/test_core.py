"""Scenario tests of the Raft core over the deterministic simulation (tests/raft/sim.py):
election, replication, failover timing, priority election, snapshots, durability rules."""

from __future__ import annotations

import random

import pytest

from broker.raft.core import DurableState, RaftConfig, RaftCore
from broker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Index,
    NotLeader,
    PersistTermVote,
    PollResponse,
    Propose,
    Role,
    Send,
    SnapshotMeta,
    Term,
    Tick,
    VoteRequest,
    VoteResponse,
)
from tests.raft.sim import Disk, Faults, Simulation
from zeebe_sim.ground.errors import InvalidArgument, StorageCorruption
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.routing import replica_priorities

CONFIG = RaftConfig(election_timeout_ms=1000, heartbeat_interval_ms=100)


def leader_after(sim: Simulation, limit_ms: int) -> NodeId:
    assert sim.run_while(lambda: sim.leader() is None, sim.now + limit_ms), "no leader"
    leader = sim.leader()
    assert leader is not None
    return leader.node_id


def test_defaults_are_zeebes() -> None:
    """Election timeout 2.5 s, heartbeat 250 ms, priority election on, quorum timeout 2 x
    election timeout, 1 GB snapshot chunks, snapshot preferred 100 entries behind."""
    config = RaftConfig()
    assert (config.election_timeout_ms, config.heartbeat_interval_ms) == (2500, 250)
    assert config.enable_priority_election
    assert config.quorum_response_timeout_ms == 5000
    assert config.snapshot_chunk_size_bytes == 1 << 30
    assert config.prefer_snapshot_replication_threshold == 100


def test_bad_config_is_refused() -> None:
    """A heartbeat that is not well below the election timeout is refused."""
    with pytest.raises(InvalidArgument):
        RaftConfig(election_timeout_ms=500, heartbeat_interval_ms=250)


def test_single_member_leads_at_once_and_commits_on_append() -> None:
    """A partition with one replica elects itself on its first call and commits each entry as
    it appends it (after persisting it: the effects say so in that order)."""
    core = RaftCore(
        NodeId(0), [NodeId(0)], now_ms=0, random=random.Random(1).randrange, snapshots=Disk()
    )
    effects = core.handle(Tick(), 0)
    assert core.role is Role.LEADER and core.term == 1
    kinds = [type(e).__name__ for e in effects]
    assert kinds == ["PersistTermVote", "PersistEntries", "Committed", "RoleChanged"]
    effects = core.handle(Propose((b"a", b"b")), 1)
    assert [type(e).__name__ for e in effects] == ["PersistEntries", "Committed"]
    assert core.commit_index == 3 and [e.data for e in core.entries(1, 3)] == [None, b"a", b"b"]


def test_vote_is_persisted_before_it_is_sent() -> None:
    """A granted vote comes back as PersistTermVote before the Send of the VoteResponse."""
    core = RaftCore(
        NodeId(1),
        [NodeId(0), NodeId(1), NodeId(2)],
        now_ms=0,
        random=random.Random(1).randrange,
        snapshots=Disk(),
    )
    effects = core.handle(VoteRequest(Term(4), NodeId(0), Index(0), Term(0)), 10)
    persist = [i for i, e in enumerate(effects) if isinstance(e, PersistTermVote)]
    send = [i for i, e in enumerate(effects) if isinstance(e, Send)]
    assert effects[persist[-1]] == PersistTermVote(Term(4), NodeId(0))
    assert persist[-1] < send[0]
    assert effects[send[0]] == Send(NodeId(0), VoteResponse(Term(4), NodeId(1), True))
    # one vote per term: another candidate of term 4 is refused
    effects = core.handle(VoteRequest(Term(4), NodeId(2), Index(0), Term(0)), 11)
    assert Send(NodeId(2), VoteResponse(Term(4), NodeId(1), False)) in effects


def test_follower_refuses_an_append_that_does_not_match_and_truncates_a_conflict() -> None:
    """The log matching check: an append whose prev entry has another term fails with a hint;
    a conflicting uncommitted suffix is truncated and replaced."""
    old = [
        Entry(Index(1), Term(1), b"a"),
        Entry(Index(2), Term(1), b"b"),
        Entry(Index(3), Term(2), b"x"),
    ]
    core = RaftCore(
        NodeId(1),
        [NodeId(0), NodeId(1), NodeId(2)],
        now_ms=0,
        random=random.Random(1).randrange,
        snapshots=Disk(),
        durable=DurableState(Term(2), None, None, old),
    )
    leader = NodeId(0)
    miss = core.handle(AppendRequest(Term(3), leader, Index(3), Term(3), (), Index(0)), 1)
    reply = next(e for e in miss if isinstance(e, Send)).message
    assert not reply.success and reply.last_index == 2  # type: ignore[union-attr]
    new = (Entry(Index(3), Term(3), b"y"),)
    effects = core.handle(AppendRequest(Term(3), leader, Index(2), Term(1), new, Index(3)), 2)
    names = [type(e).__name__ for e in effects]
    assert names[:3] == ["TruncateLog", "PersistEntries", "Committed"]
    assert [e.data for e in core.entries(1, 3)] == [b"a", b"b", b"y"] and core.commit_index == 3


def test_restart_with_a_gap_in_the_log_is_refused() -> None:
    """A durable log that does not follow its snapshot is corruption, not something to guess."""
    with pytest.raises(StorageCorruption):
        RaftCore(
            NodeId(0),
            [NodeId(0), NodeId(1), NodeId(2)],
            now_ms=0,
            random=random.Random(1).randrange,
            snapshots=Disk(),
            durable=DurableState(
                Term(1), None, SnapshotMeta(Index(5), Term(1), 3), [Entry(Index(7), Term(1), b"")]
            ),
        )


def test_proposal_to_a_follower_names_the_leader() -> None:
    """A proposal reaching a follower is answered NotLeader with the leader it knows."""
    sim = Simulation(1, 3, CONFIG)
    leader = leader_after(sim, 10_000)
    sim.run_until(sim.now + 500)
    follower = next(r for r in sim.replicas.values() if r.node_id != leader)
    assert follower.core is not None
    assert follower.core.handle(Propose((b"x",)), sim.now) == [NotLeader(leader)]


def test_replication_commits_and_every_replica_applies_the_same_state() -> None:
    """Writes to the leader commit on a quorum and all three replicas apply the same state."""
    sim = Simulation(2, 3, CONFIG, snapshot_every=1000)
    leader_after(sim, 10_000)
    for i in range(50):
        sim.at(sim.now + 10 * i, sim.propose)
    sim.run_until(sim.now + 2_000)
    assert sim.stats.acked == 50
    sim.heal_and_check(10_000)
    assert {r.applied for r in sim.replicas.values()} == {51}  # the no-op and 50 writes


def priority_sim(seed: int, partition: int, **kwargs: object) -> Simulation:
    priorities = replica_priorities(PartitionId(partition), 3, 3)
    return Simulation(seed, 3, CONFIG, priorities=priorities, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("partition", [1, 2, 3, 4])
def test_priority_election_makes_the_primary_leader(partition: int) -> None:
    """With all replicas up, the primary (highest priority) wins the first election, after about
    one election timeout, for many seeds and network delays."""
    primary = NodeId((partition - 1) % 3)
    for seed in range(40):
        sim = priority_sim(seed, partition, faults=Faults(delay_ms=(1, 30)))
        assert leader_after(sim, 10_000) == primary, f"seed {seed}"
        assert CONFIG.election_timeout_ms <= sim.now < 2 * CONFIG.election_timeout_ms
        assert set(sim.leaders) == {1}, f"seed {seed}: terms {sim.leaders}"


def test_failover_elects_the_next_priority_within_two_election_timeouts() -> None:
    """Kill the leader (the primary) in a healthy network: the replica with the next priority
    leads within two election timeouts of the kill, plus the poll and vote round trips (at most
    4 one-way delays). Zeebe's priority timer gives that replica exactly two timeouts from the
    last heartbeat it heard, which came before the kill."""
    delay_max_ms = 10
    timeout = CONFIG.election_timeout_ms
    worst = 0
    for seed in range(60):
        sim = priority_sim(seed, 1, faults=Faults(delay_ms=(1, delay_max_ms)))
        assert leader_after(sim, 10_000) == 0
        sim.run_until(sim.now + sim.rng.randrange(1_000, 3_000))
        crashed_at = sim.now
        sim.crash(NodeId(0))
        assert sim.run_while(
            lambda sim=sim: (sim.leader() or sim.replicas[NodeId(0)]).node_id == 0,
            crashed_at + 10 * timeout,
        )
        leader = sim.leader()
        assert leader is not None and leader.node_id == 1, f"seed {seed}"  # priority 2
        elapsed = sim.now - crashed_at
        worst = max(worst, elapsed)
        assert elapsed <= 2 * timeout + 4 * delay_max_ms, f"seed {seed}: {elapsed} ms"
    # the bound is tight: a failover takes more than one timeout (the primary's turn passes)
    assert worst > timeout


def test_leader_cut_off_from_its_quorum_steps_down() -> None:
    """A leader that hears from no quorum for 2 x election timeout becomes a follower; the
    majority side elects a new leader in a higher term meanwhile."""
    sim = priority_sim(3, 1)
    assert leader_after(sim, 10_000) == 0
    sim.run_until(sim.now + 500)
    cut_at = sim.now
    for other in (1, 2):
        sim.cut |= {(NodeId(0), NodeId(other)), (NodeId(other), NodeId(0))}
    old = sim.replicas[NodeId(0)].core
    assert old is not None
    assert sim.run_while(lambda: old.role is Role.LEADER, cut_at + 10_000)
    assert sim.now - cut_at <= CONFIG.quorum_response_timeout_ms + CONFIG.heartbeat_interval_ms
    assert sim.run_while(lambda: sim.leader() is None, sim.now + 10_000)
    new = sim.leader()
    assert new is not None and new.node_id != 0 and new.core is not None
    assert new.core.term > old.term
    sim.heal_and_check(20_000)


def test_follower_down_while_the_leader_compacted_catches_up_by_snapshot() -> None:
    """Stop a follower, write enough for the leader to snapshot and compact past it, restart
    it: it receives the snapshot in several chunks, installs it and ends with the same state."""
    sim = priority_sim(4, 1, snapshot_every=10, snapshot_pad_bytes=300)
    sim.config = CONFIG
    assert leader_after(sim, 10_000) == 0
    sim.crash(NodeId(2))
    for i in range(60):
        sim.at(sim.now + 5 * i, sim.propose)
    sim.run_until(sim.now + 2_000)
    leader_core = sim.replicas[NodeId(0)].core
    assert leader_core is not None and leader_core.first_index > 2
    sim.start(NodeId(2))
    sim.heal_and_check(20_000)
    assert sim.replicas[NodeId(2)].installs == 1
    assert sim.stats.acked == 60


def test_small_chunks_make_a_multi_chunk_transfer() -> None:
    """With a 64-byte chunk size the ~400-byte snapshot goes over in several chunks, each
    written in order, and the follower resumes from the leader's snapshot index."""
    config = RaftConfig(
        election_timeout_ms=1000, heartbeat_interval_ms=100, snapshot_chunk_size_bytes=64
    )
    sim = Simulation(
        5,
        3,
        config,
        priorities=replica_priorities(PartitionId(1), 3, 3),
        snapshot_every=10,
        snapshot_pad_bytes=350,
    )
    assert leader_after(sim, 10_000) == 0
    sim.crash(NodeId(1))
    chunks: list[int] = []
    original = sim.execute

    def spy(r, effect):  # type: ignore[no-untyped-def]
        if r.node_id == 1 and type(effect).__name__ == "WriteSnapshotChunk":
            chunks.append(effect.offset)
        original(r, effect)

    sim.execute = spy  # type: ignore[method-assign]
    for i in range(40):
        sim.at(sim.now + 5 * i, sim.propose)
    sim.run_until(sim.now + 1_000)
    sim.start(NodeId(1))
    sim.heal_and_check(20_000)
    assert len(chunks) >= 6 and chunks == sorted(chunks) and chunks[0] == 0
    assert sim.replicas[NodeId(1)].installs == 1


def test_pre_vote_keeps_a_returning_partitioned_follower_from_deposing_the_leader() -> None:
    """A follower cut off for ten election timeouts polls again and again but never wins a poll,
    so it never raises its term; when the network heals the leader and its term are unchanged."""
    sim = priority_sim(6, 1)
    assert leader_after(sim, 10_000) == 0
    term = max(sim.leaders)
    sim.cut |= {(NodeId(2), NodeId(0)), (NodeId(0), NodeId(2))}
    sim.cut |= {(NodeId(2), NodeId(1)), (NodeId(1), NodeId(2))}
    sim.run_until(sim.now + 10 * CONFIG.election_timeout_ms)
    isolated = sim.replicas[NodeId(2)].core
    assert isolated is not None and isolated.term == term and isolated.role is Role.FOLLOWER
    sim.cut.clear()
    sim.run_until(sim.now + 3 * CONFIG.election_timeout_ms)
    leader = sim.leader()
    assert leader is not None and leader.node_id == 0 and leader.core is not None
    assert leader.core.term == term and set(sim.leaders) == {term}
    sim.heal_and_check(10_000)


def test_without_priority_election_the_timeouts_are_randomized() -> None:
    """With enable_priority_election off, every replica waits election_timeout + U[0, timeout)
    from the injected random source: seeds give different first-election times, all within
    [timeout, 2 x timeout) plus the round trips, and some replica other than 0 wins sometimes."""
    config = RaftConfig(
        election_timeout_ms=1000, heartbeat_interval_ms=100, enable_priority_election=False
    )
    times, winners = set(), set()
    for seed in range(30):
        sim = Simulation(seed, 3, config)
        winners.add(leader_after(sim, 10_000))
        times.add(sim.now)
        assert 1000 <= sim.now < 2000 + 40, f"seed {seed}"
    assert len(times) > 20 and len(winners) == 3


def test_append_requests_stop_at_the_byte_bound() -> None:
    """An append request holds entries up to ``append_batch_bytes_max`` data bytes (at least
    one entry, however large), so that it fits a wire frame; the rest follows in later ones."""
    config = RaftConfig(
        election_timeout_ms=1000, heartbeat_interval_ms=100, append_batch_bytes_max=1000
    )
    durable = DurableState(term=Term(1), voted_for=NodeId(0))
    core = RaftCore(
        NodeId(0),
        [NodeId(0), NodeId(1)],
        now_ms=0,
        random=random.Random(1).randrange,
        snapshots=Disk(),
        durable=durable,
        config=config,
    )
    core.handle(Tick(), 5000)  # the election timer fires: the poll goes out
    core.handle(PollResponse(Term(1), NodeId(1), True), 5001)
    core.handle(VoteResponse(Term(2), NodeId(1), True), 5002)
    assert core.role is Role.LEADER
    effects = core.handle(Propose((b"a" * 600, b"b" * 600, b"c" * 2000)), 5003)
    sizes = [
        [len(e.data or b"") for e in effect.message.entries]
        for effect in effects
        if isinstance(effect, Send) and isinstance(effect.message, AppendRequest)
    ]
    assert sizes == [[600]]
    ack = AppendResponse(Term(2), NodeId(1), True, Index(core.last_index - 2))
    effects = core.handle(ack, 5004)
    sizes = [
        [len(e.data or b"") for e in effect.message.entries]
        for effect in effects
        if isinstance(effect, Send) and isinstance(effect.message, AppendRequest)
    ]
    assert sizes == [[600]]
