"""Faults on purpose, set in the brokers by the chaos API (``SetFaultsRequest``): a cut between
two brokers stops what one partition sends to another until it is healed, a slow broker
delivers late, and the senders' retries deliver everything once the faults are gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeebe_sim import chaos
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"


async def deployed_on(cluster: InProcessCluster, partition: int) -> bool:
    """Whether ``partition`` knows the demo process: an instance of it can be created there
    (NOT_FOUND until the deployment has been distributed to it)."""
    response = await cluster.gateway_client.execute(
        PartitionId(partition),
        ValueType.PROCESS_INSTANCE_CREATION,
        "CREATE",
        -1,
        {"bpmnProcessId": "demo-process", "version": -1, "variables": {}},
    )
    return response.rejection_type is None


def addresses(cluster: InProcessCluster) -> dict[int, str]:
    return {n: cluster.broker_address(n) for n in cluster.brokers}


async def test_a_cut_holds_back_a_deployment_until_healed(tmp_path: Path) -> None:
    """Broker 0 (partition 1, where deployments start) is cut from broker 1: the deployment
    reaches partition 3 on broker 2 but not partition 2; after heal, partition 1's retries
    bring it to partition 2. Each broker reports the faults in force."""
    async with InProcessCluster(tmp_path) as cluster:
        await chaos.cut(addresses(cluster), [0], [1], cluster.network)
        faults = await chaos.set_faults(cluster.broker_address(1), network=cluster.network)
        assert (faults.cut, faults.delay_ms) == ([0], 0)
        await cluster.api.deploy(DEMO)
        await eventually(lambda: deployed_on(cluster, 3), timeout_s=20)
        assert not await deployed_on(cluster, 2)

        assert await chaos.heal(addresses(cluster), cluster.network) == [0, 1, 2]
        faults = await chaos.set_faults(cluster.broker_address(1), network=cluster.network)
        assert (faults.cut, faults.delay_ms) == ([], 0)
        await eventually(lambda: deployed_on(cluster, 2), timeout_s=20)


async def test_a_slow_broker_sends_late(tmp_path: Path) -> None:
    """Broker 0 slowed by 60 s: its deployment reaches no other partition while the delay
    holds (the other partitions are checked after partition 1 answered); once the delay is
    set back to 0, the retries deliver it everywhere."""
    async with InProcessCluster(tmp_path) as cluster:
        await chaos.slow(addresses(cluster), 0, 60_000, cluster.network)
        await cluster.api.deploy(DEMO)
        assert await deployed_on(cluster, 1)
        assert not await deployed_on(cluster, 2)
        assert not await deployed_on(cluster, 3)
        await chaos.slow(addresses(cluster), 0, 0, cluster.network)
        for partition in (2, 3):
            await eventually(lambda p=partition: deployed_on(cluster, p), timeout_s=20)


async def test_faults_that_name_no_peer_are_refused(tmp_path: Path) -> None:
    """A cut of a broker outside the cluster, or of the broker itself, is INVALID_ARGUMENT
    from the broker, and the chaos API refuses unknown brokers and overlapping sides before
    asking any broker."""
    async with InProcessCluster(tmp_path) as cluster:
        address = cluster.broker_address(0)
        with pytest.raises(InvalidArgument, match="brokers of this cluster"):
            await chaos.set_faults(address, cut=[7], network=cluster.network)
        with pytest.raises(InvalidArgument, match="cut from itself"):
            await chaos.set_faults(address, cut=[0], network=cluster.network)
        with pytest.raises(chaos.ChaosError, match=r"No broker \[5\]"):
            await chaos.cut(addresses(cluster), [0], [5], cluster.network)
        with pytest.raises(chaos.ChaosError, match="both sides"):
            await chaos.cut(addresses(cluster), [0, 1], [1, 2], cluster.network)
        faults = await chaos.set_faults(address, network=cluster.network)
        assert (faults.cut, faults.delay_ms) == ([], 0)
