"""Well-formed frames with malformed fields, and bad gossip, against real broker processes: the
connection that sent them is closed, and every partition and gossip keep working."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS
from tests.scenarios.workload import complete_all
from zeebe_sim.ground.ids import NodeId, partition_of_key
from zeebe_sim.ground.protocol import PROTOCOL_VERSION, TopologyRequest, TopologyResponse
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import partitions_of_broker
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow


def _frame(type_name: str, fields: dict[str, Any]) -> bytes:
    body = msgpack.packb([PROTOCOL_VERSION, type_name, 1, fields], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def malformed_frames(partition: int) -> list[bytes]:
    """Frames that msgpack decodes into a known message, each with one bad field: each one of
    these reached the engine (and stopped the partition) before fields were checked."""
    command = {"partition_id": partition, "intent": "ACTIVATE", "key": -1}
    return [
        # a job activation with an empty value
        _frame(
            "ExecuteCommandRequest", {**command, "value_type": ValueType.JOB_BATCH, "value": {}}
        ),
        # a job activation whose time-out overflows every deadline
        _frame(
            "ExecuteCommandRequest",
            {
                **command,
                "value_type": ValueType.JOB_BATCH,
                "value": {"type": "demo-task", "timeout": 2**63 - 1, "maxJobsToActivate": 1},
            },
        ),
        # a checkpoint id that is a string
        _frame("TakeBackupRequest", {"partition_id": partition, "backup_id": "7"}),
        # a publication without its correlation key
        _frame(
            "ExecuteCommandRequest",
            {
                **command,
                "value_type": ValueType.MESSAGE,
                "intent": "PUBLISH",
                "value": {"name": "demo-message", "timeToLive": 1000},
            },
        ),
        # an inter-partition command without its keys
        _frame(
            "InterPartitionCommandSent",
            {
                "receiver_partition_id": partition,
                "checkpoint_id": -1,
                "value_type": ValueType.PROCESS_MESSAGE_SUBSCRIPTION,
                "intent": "CORRELATE",
                "key": 1,
                "value": {"messageName": "demo-message"},
            },
        ),
        # a checkpoint carried as a float
        _frame(
            "InterPartitionCommandSent",
            {
                "receiver_partition_id": partition,
                "checkpoint_id": 1.5,
                "value_type": ValueType.CHECKPOINT,
                "intent": "CREATE",
                "key": 1,
                "value": {"checkpointId": 1},
            },
        ),
    ]


def _send_and_read_until_closed(address: str, payload: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def canary(cluster: RunningCluster, instances: int = 6) -> None:
    """Instances on every partition complete their job and their message, which crosses
    partitions: every partition processes, and inter-partition traffic flows."""
    keys = [
        await cluster.api.create_instance("demo-process", {"correlationKey": f"canary-{i}"})
        for i in range(instances)
    ]
    assert {partition_of_key(k) for k in keys} == {1, 2, 3}
    assert len(await complete_all(cluster, "demo-task")) == instances
    for i in range(instances):
        await cluster.api.publish("demo-message", f"canary-{i}")

    async def all_completed() -> bool:
        states = [(await cluster.api.get_instance(k))["state"] for k in keys]
        return all(state == "COMPLETED" for state in states)

    await eventually(all_completed, timeout_s=30)


async def test_malformed_fields_close_the_connection_and_every_partition_keeps_processing(
    tmp_path: Path,
) -> None:
    """Each malformed frame, sent to every broker for each partition it leads, is answered by
    closing that connection; afterwards instances on every partition still complete."""
    async with running_cluster(tmp_path, broker_args=FAST_BROKER_ARGS) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        for node in range(3):
            address = cluster.broker_address(node)
            for partition in partitions_of_broker(NodeId(node), 3, 3):
                for frame in malformed_frames(partition):
                    answer = await asyncio.to_thread(_send_and_read_until_closed, address, frame)
                    assert answer == b"", answer
        await canary(cluster)


async def test_bad_member_entries_are_dropped_and_gossip_goes_on(tmp_path: Path) -> None:
    """A joining broker's unparsable address, or a node that is not in the cluster, is dropped
    with a warning: the brokers' member lists keep the real addresses, and messages still
    cross partitions (which needs every broker's address)."""
    async with running_cluster(tmp_path, broker_args=FAST_BROKER_ARGS) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        real = {n: cluster.broker_address(n) for n in range(3)}

        async def members_intact() -> bool:
            for node in range(3):
                connection = await Connection.open(real[node])
                try:
                    answer = await connection.request(TopologyRequest(), 10)
                finally:
                    await connection.close()
                assert isinstance(answer, TopologyResponse)
                if dict(answer.members) != real:
                    return False
            return True

        # Every broker knows every real address first (gossip may still be spreading them):
        # from then on, a bad entry taken would show at once.
        await eventually(members_intact, timeout_s=30)
        for node in range(3):
            connection = await Connection.open(real[node])
            try:
                for bad in (
                    TopologyRequest((node + 1) % 3, "no-port-here"),
                    TopologyRequest((node + 2) % 3, "127.0.0.1:99999"),
                    TopologyRequest(99, "127.0.0.1:26501"),
                ):
                    answer = await connection.request(bad, 10)
                    assert isinstance(answer, TopologyResponse)
            finally:
                await connection.close()

        assert await members_intact()
        await canary(cluster)  # takes several gossip rounds: a bad entry would spread meanwhile
        assert await members_intact()
