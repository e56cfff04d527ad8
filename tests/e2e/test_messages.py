"""Cross-partition work through real processes: deployment distribution, message correlation
across partitions, retries after kill -9, and `zeebe-sim verify` on the stopped cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from tests.scenarios.workload import complete_all, correlate_across_partitions, instance_states
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.harness import eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow


async def test_messages_correlate_across_partitions_exactly_once(tmp_path: Path) -> None:
    """Instances on all partitions wait for messages whose keys hash to other partitions;
    half the messages are published before the instance waits (buffered): all complete once."""
    async with running_cluster(tmp_path, broker_args=FAST_BROKER_ARGS) as cluster:
        correlation_keys, instances = await correlate_across_partitions(cluster)
        # A further message with the same key finds nobody waiting: nothing completes twice.
        await cluster.api.publish("demo-message", correlation_keys[0], ttl_ms=0)
        assert await instance_states(cluster, instances) == ["COMPLETED"] * 12
    code, report = await run_cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, report
    assert "OK: every invariant holds." in report


async def test_kill_9_with_messages_in_flight_retries_finish_the_work(tmp_path: Path) -> None:
    """SIGKILL a broker while messages and distributions are in flight; after it restarts,
    retries deliver everything: every instance completes exactly once and verify holds."""
    async with running_cluster(
        tmp_path, broker_args=FAST_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        correlation_keys = [f"order-{i}" for i in range(30)]  # keys on every partition
        instances = [
            await cluster.api.create_instance("demo-process", {"correlationKey": k})
            for k in correlation_keys
        ]
        await complete_all(cluster, "demo-task")
        # Messages for partition 2's instances are published on 1 and 3 while broker 1
        # (partition 2) is down: their correlations wait in the senders' retries.
        cluster.kill_broker(1)
        await cluster.wait_exit(cluster.brokers[1])
        published = []
        for key in correlation_keys:
            if subscription_partition_id(key, 3) != 2:
                await cluster.api.publish("demo-message", key)
                published.append(key)
        await cluster.start_broker(1)
        await cluster.wait_ready()
        for key in correlation_keys:
            if key not in published:
                await cluster.api.publish("demo-message", key)
        # A second deployment while broker 2 is down is distributed once it is back.
        cluster.kill_broker(2)
        await cluster.wait_exit(cluster.brokers[2])
        await cluster.api.deploy(
            DEMO_BPMN.read_bytes().replace(b'name="Demo', b'name="Demo v2'), "v2.bpmn"
        )
        await cluster.start_broker(2)
        await cluster.wait_ready()

        async def done() -> bool:
            return all(s == "COMPLETED" for s in await instance_states(cluster, instances))

        await eventually(done, timeout_s=30, interval_s=0.2)

        async def version_two_everywhere() -> bool:
            started = [
                await cluster.api.create_instance("demo-process", {"correlationKey": "x"})
                for _ in range(3)
            ]
            versions = {
                (await cluster.api.get_instance(k))["processDefinitionVersion"] for k in started
            }
            return versions == {2}

        await eventually(version_two_everywhere, timeout_s=30, interval_s=0.2)
    code, report = await run_cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, report
