"""The fuzz suite's cluster and its health check.

One real cluster (3 broker processes, a gateway process) per fuzz module. After every generated
case the suite asserts the cluster is whole: no process has exited and a canary command on every
partition is processed. When a module ends, every broker is killed with SIGKILL and restarted, and
every partition must process again: an input that poisoned a log would show there.

Sizes are bounded (``FUZZ_EXAMPLES``) so that the whole suite stays around a minute in CI.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.harness import RunningCluster, running_cluster

PARTITIONS = 3
# Generated cases per fuzz test; FUZZ_EXAMPLES=2000 for a long local run.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
# No shrinking: once a case has broken the cluster, every later case fails too (slowly, at the
# request timeout), so shrinking would take minutes and find nothing smaller. The failing case
# is printed as generated.
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)


def canary_keys(partition_count: int) -> dict[int, str]:
    """A correlation key per partition: a message published with it lands on that partition."""
    keys: dict[int, str] = {}
    for n in itertools.count():
        key = f"canary-{n}"
        keys.setdefault(subscription_partition_id(key, partition_count), key)
        if len(keys) == partition_count:
            return keys
    raise AssertionError("unreachable")


CANARY_KEYS = canary_keys(PARTITIONS)


async def assert_whole(cluster: RunningCluster) -> None:
    """No process of the cluster has exited, and every partition processes a command."""
    for managed in [cluster.gateway, *cluster.brokers.values()]:
        assert managed is not None
        assert managed.process.returncode is None, f"{managed.name} exited"
    for partition, key in CANARY_KEYS.items():
        # A message with no time to live is processed and answered, and buffered nowhere.
        message_key = await cluster.api.publish("canary", key, ttl_ms=0)
        assert partition_of_key(message_key) == partition


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningCluster]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    async with running_cluster(
        data_dir,
        partitions=PARTITIONS,
        broker_args=FAST_BROKER_ARGS,
        gateway_args=FAST_GATEWAY_ARGS,
    ) as running:
        await running.api.deploy(DEMO_BPMN)
        await assert_whole(running)
        yield running
        # Whatever the cases wrote is in the logs now: every broker must start on it again.
        for node in sorted(running.brokers):
            running.kill_broker(node)
            await running.wait_exit(running.brokers[node])
            await running.start_broker(node)
        await running.wait_ready()
        await assert_whole(running)
