"""Contained processing errors on real processes: a command that fails in processing, sent
straight to the broker over the wire (past the REST API's validation), is answered with
PROCESSING_ERROR; the partition keeps serving, stays healthy, and restarts after kill -9."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.ground.protocol import ExecuteCommandRequest, ExecuteCommandResponse
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

# the message's deadline (now + this) no longer fits a msgpack integer
TOO_LONG_MS = 2**64 - 1


async def healthy(cluster: RunningCluster) -> dict[str, Any] | None:
    """The topology and partition status once partition 1 reports healthy everywhere."""
    topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
    (partition,) = topology["brokers"][0]["partitions"]
    statuses = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
    if partition["health"] == "healthy" and statuses["1"]["health"] == "HEALTHY":
        return statuses["1"]
    return None


async def test_a_failing_command_over_the_wire_is_rejected_and_the_partition_serves_on(
    tmp_path: Path,
) -> None:
    """PROCESSING_ERROR for the overflowing publish; REST publishes before and after it
    succeed; topology and actuator say healthy; after kill -9 and a restart (which replays the
    failed command's ERROR record) the partition serves again."""
    async with running_cluster(
        tmp_path,
        brokers=1,
        partitions=1,
        broker_args=FAST_BROKER_ARGS,
        gateway_args=FAST_GATEWAY_ARGS,
    ) as cluster:
        await cluster.api.publish("ping", "before")
        connection = await Connection.open(cluster.broker_address(0))
        try:
            answer = await connection.request(
                ExecuteCommandRequest(
                    1,
                    ValueType.MESSAGE,
                    "PUBLISH",
                    -1,
                    {"name": "ping", "correlationKey": "k", "timeToLive": TOO_LONG_MS},
                ),
                timeout_s=30,
            )
        finally:
            await connection.close()
        assert isinstance(answer, ExecuteCommandResponse)
        assert answer.rejection_type == "PROCESSING_ERROR"
        assert "OverflowError" in (answer.rejection_reason or "")

        after = await cluster.api.publish("ping", "after")
        status = await eventually(lambda: healthy(cluster), timeout_s=30)
        assert status["healthIssues"] == []

        cluster.kill_broker(0)
        await cluster.wait_exit(cluster.brokers[0])
        await cluster.start_broker(0)
        await cluster.wait_ready()
        await eventually(lambda: healthy(cluster), timeout_s=30)
        assert await cluster.api.publish("ping", "restarted") > after
