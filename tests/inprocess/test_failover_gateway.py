"""The gateway across real leader changes, over the in-process cluster at replication factor 3
(real brokers and Raft, short timers): a request sent while its leader dies is answered by the
next leader; when a leader is cut off, requests go to the leader of the new term; topology
shows every replica's role."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeebe_sim import chaos
from zeebe_sim.ground.ids import NodeId, PartitionId, partition_of_key
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"
P1 = PartitionId(1)


async def instance_on(cluster: InProcessCluster, partition: int) -> int:
    for _ in range(3 * cluster.partition_count):
        key = await cluster.api.create_instance("demo-process")
        if partition_of_key(key) == partition:
            return key
    raise AssertionError(f"no instance landed on partition {partition}")


async def test_a_request_is_answered_by_the_next_leader(tmp_path: Path) -> None:
    """Partition 1's leader is stopped: a query for partition 1 sent right then is answered
    once another replica leads (within the request timeout, no error), and /v2/topology
    shows all three replicas of every partition, one leader each."""
    async with InProcessCluster(tmp_path, replication_factor=3, request_timeout_s=20) as cluster:
        await cluster.api.deploy(DEMO)
        key = await instance_on(cluster, 1)
        topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
        roles: dict[int, list[str]] = {}
        for broker in topology["brokers"]:
            for p in broker["partitions"]:
                roles.setdefault(p["partitionId"], []).append(p["role"])
        assert {p: sorted(r) for p, r in roles.items()} == {
            p: ["follower", "follower", "leader"] for p in (1, 2, 3)
        }
        old = cluster.gateway_client.leaders[P1]
        await cluster.kill_broker(old)
        assert (await cluster.api.get_instance(key))["state"] == "ACTIVE"
        assert cluster.gateway_client.leaders[P1] != old


async def test_requests_follow_the_leader_of_the_new_term(tmp_path: Path) -> None:
    """Partition 1's leader is cut from both other brokers (the gateway still reaches it, and
    it may claim its old term until it notices it lost its quorum): the others elect a leader
    in a higher term, which the gateway takes as partition 1's leader; writes succeed, and
    after heal the old leader follows."""
    async with InProcessCluster(tmp_path, replication_factor=3, request_timeout_s=20) as cluster:
        await cluster.api.deploy(DEMO)
        client = cluster.gateway_client
        old = client.leaders[P1]
        old_term = client.brokers[old].terms[P1]
        addresses = {n: cluster.broker_address(n) for n in cluster.brokers}
        await chaos.cut(addresses, [old], [n for n in addresses if n != old], cluster.network)

        async def new_term_leads() -> bool:
            leader = client.leaders.get(P1)
            return (
                leader is not None
                and leader != old
                and client.brokers[leader].terms.get(P1, 0) > old_term
            )

        await eventually(new_term_leads, timeout_s=20, interval_s=0.01)
        await instance_on(cluster, 1)
        await chaos.heal(addresses, cluster.network)

        async def old_follows() -> bool:
            answer = client.brokers.get(NodeId(old))
            return answer is not None and answer.partitions.get(P1) == "FOLLOWER"

        await eventually(old_follows, timeout_s=20)
        await instance_on(cluster, 1)
