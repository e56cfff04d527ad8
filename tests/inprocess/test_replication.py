"""Replicated partitions in process: three brokers, replication factor 3, short Raft timers
(the real brokers, partitions and Raft shells over a memory network)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import broker.partition as partition_module
from broker.faults import Faults
from broker.partition import PartitionConfig
from broker.raft.core import RaftConfig
from broker.server import Broker
from zeebe_sim.ground.errors import PartitionLeaderMismatch
from zeebe_sim.ground.ids import NodeId
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

DEMO = Path("examples/demo-process.bpmn")


def leaders(cluster: InProcessCluster) -> dict[int, int]:
    """partition id -> node of the replica that leads and processes."""
    return {
        p: node
        for node, broker in cluster.brokers.items()
        for p, partition in broker.partitions.items()
        if partition.leading and partition.ready
    }


def replica_states(cluster: InProcessCluster, partition_id: int) -> dict[int, tuple[int, str]]:
    """node -> (applied position, digest of the state) of every running replica."""
    out = {}
    for node, broker in cluster.brokers.items():
        partition = broker.partitions.get(partition_id)
        if partition is not None and partition.replica is not None:
            view = partition.state.copy_for_snapshot()
            view = {k: v for k, v in view.items() if k != "meta"}
            out[node] = (partition.replica.applied_position, repr(sorted(map(repr, view.items()))))
    return out


async def test_every_broker_hosts_every_partition_and_one_leader_each(tmp_path: Path) -> None:
    """With 3 brokers and factor 3 each broker holds a replica of every partition; each
    partition elects one leader, followers answer PARTITION_LEADER_MISMATCH with a hint, and
    topology reports roles and terms."""
    async with InProcessCluster(tmp_path, replication_factor=3) as cluster:
        for broker in cluster.brokers.values():
            assert sorted(broker.partitions) == [1, 2, 3]
        found = await eventually(lambda: _all_led(cluster), timeout_s=30)
        for p, node in found.items():
            follower: Broker = next(b for n, b in cluster.brokers.items() if n != node)
            roles = follower.topology()
            assert roles.partitions[p] == "FOLLOWER"
            assert roles.terms[p] >= 1
            assert cluster.brokers[node].topology().partitions[p] == "LEADER"


async def _all_led(cluster: InProcessCluster) -> dict[int, int] | None:
    found = leaders(cluster)
    return found if len(found) == cluster.partition_count else None


async def test_acknowledged_writes_are_on_a_quorum_and_followers_replay(tmp_path: Path) -> None:
    """Instances created through the gateway are answered only once committed; every
    follower applies the same records and reaches the leader's state at the same position."""
    async with InProcessCluster(tmp_path, replication_factor=3) as cluster:
        await eventually(lambda: _all_led(cluster), timeout_s=30)
        await cluster.api.deploy(DEMO)
        keys = [
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})
            for i in range(20)
        ]
        assert len(set(keys)) == 20

        async def converged() -> bool:
            for p in range(1, 4):
                states = replica_states(cluster, p)
                if len(set(states.values())) != 1:
                    return False
            return True

        await eventually(converged, timeout_s=30)


async def test_a_new_leader_takes_over_with_every_acknowledged_write(tmp_path: Path) -> None:
    """Stopping a partition's leader: another replica is elected, processes, and every
    instance acknowledged before is still there."""
    async with InProcessCluster(tmp_path, replication_factor=3) as cluster:
        await eventually(lambda: _all_led(cluster), timeout_s=30)
        await cluster.api.deploy(DEMO)
        keys = [
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})
            for i in range(9)
        ]
        old = leaders(cluster)[1]
        await cluster.kill_broker(old)

        async def new_leader() -> int | None:
            node = leaders(cluster).get(1)
            return node if node is not None and node != old else None

        await eventually(new_leader, timeout_s=30)
        for key in keys:
            instance = await eventually(lambda k=key: cluster.api.get_instance(k), timeout_s=30)
            assert instance["processInstanceKey"] in (key, str(key))
        await eventually(
            lambda: cluster.api.create_instance("demo-process", {"correlationKey": "after"}),
            timeout_s=30,
        )
        await cluster.start_broker(old)


async def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot(
    tmp_path: Path,
) -> None:
    """A follower down while the leader snapshots and compacts its log gets the leader's
    snapshot in chunks when it returns, then the entries after it, and its state equals the
    leader's at the same position."""
    partition = PartitionConfig(
        snapshot_period_s=0.5, retry_initial_s=0.2, retry_max_s=1.0, segment_bytes_max=8192
    )
    raft = RaftConfig(
        election_timeout_ms=500, heartbeat_interval_ms=100, snapshot_chunk_size_bytes=4096
    )
    async with InProcessCluster(
        tmp_path, partitions=1, replication_factor=3, partition=partition, raft=raft
    ) as cluster:
        leader_node = (await eventually(lambda: _all_led(cluster), timeout_s=30))[1]
        await cluster.api.deploy(DEMO)
        follower = next(n for n in cluster.brokers if n != leader_node)
        await cluster.kill_broker(follower)
        for i in range(150):
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})
        leader = cluster.brokers[leader_node].partitions[1]
        leader.request_snapshot()

        async def compacted() -> bool:
            snapshot = leader.snapshots.latest()
            return (
                snapshot is not None
                and leader.log.first_index > 1
                and (snapshot.processed_position >= leader.processed_position - 10)
            )

        await eventually(compacted, timeout_s=30)
        taken = leader.snapshots.latest()
        assert taken is not None
        await cluster.start_broker(follower)
        back = cluster.brokers[follower].partitions[1]

        async def caught_up() -> bool:
            states = replica_states(cluster, 1)
            return len(set(states.values())) == 1 and back.snapshots.latest() is not None

        await eventually(caught_up, timeout_s=30)
        # it got the leader's snapshot: its log does not hold the entries the snapshot covers
        received = back.snapshots.latest()
        assert received is not None and received.id.index >= taken.id.index
        assert back.log.first_index != 1


async def test_a_cut_off_leader_steps_down_and_fails_what_waits(tmp_path: Path) -> None:
    """A leader cut off from both followers commits nothing more: a command submitted to it
    waits, and when the leader steps down (no quorum heard) it is answered
    PARTITION_LEADER_MISMATCH and never applied; the others elect a new leader in a newer
    term, and the old one follows it once healed."""
    async with InProcessCluster(tmp_path, partitions=1, replication_factor=3) as cluster:
        old = (await eventually(lambda: _all_led(cluster), timeout_s=30))[1]
        await cluster.api.deploy(DEMO)
        broker = cluster.brokers[old]
        partition = broker.partitions[1]
        assert partition.replica is not None
        term = partition.replica.term
        broker.faults = Faults(cut=frozenset(NodeId(n) for n in cluster.brokers if n != old))
        waiting = partition.submit(
            ValueType.PROCESS_INSTANCE_CREATION,
            "CREATE",
            -1,
            {"bpmnProcessId": "demo-process", "variables": {"correlationKey": "cut"}},
        )
        with pytest.raises(PartitionLeaderMismatch):
            await asyncio.wait_for(waiting, timeout=30)

        async def new_leader() -> int | None:
            node = leaders(cluster).get(1)
            return node if node is not None and node != old else None

        new = await eventually(new_leader, timeout_s=30)
        new_partition = cluster.brokers[new].partitions[1]
        assert new_partition.replica is not None and new_partition.replica.term > term
        broker.faults = Faults()

        async def follows() -> bool:
            replica = partition.replica
            return replica is not None and replica.role.name == "FOLLOWER" and replica.leader == new

        await eventually(follows, timeout_s=30)
        # nothing was created before the cut, and the refused command left no trace
        assert not new_partition.state.instances
        assert not partition.state.instances


async def test_replicas_snapshot_when_the_raft_log_in_memory_grows_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Raft core holds the entries after its snapshot in memory: past a bound, every
    replica takes a snapshot whatever the snapshot period (here an hour), so the bound holds."""
    monkeypatch.setattr(partition_module, "RAFT_ENTRIES_IN_MEMORY_MAX", 40)
    slow = PartitionConfig(snapshot_period_s=3600, retry_initial_s=0.2, retry_max_s=1.0)
    async with InProcessCluster(
        tmp_path, partitions=1, replication_factor=3, partition=slow
    ) as cluster:
        await eventually(lambda: _all_led(cluster), timeout_s=30)
        await cluster.api.deploy(DEMO)
        for i in range(40):
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})

        async def bounded() -> bool:
            for broker in cluster.brokers.values():
                replica = broker.partitions[1].replica
                assert replica is not None
                core = replica.core
                if core.snapshot is None or core.last_index - core.snapshot.index > 80:
                    return False
            return True

        await eventually(bounded, timeout_s=30)
