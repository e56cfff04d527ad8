"""The running cluster through real processes: health and topology, durability across kill -9,
malformed input on every port. The REST workload is tested in process
(tests/inprocess/test_rest.py)."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS, ORDER_BPMN
from tests.scenarios.workload import complete_all
from zeebe_sim.ground import protocol
from zeebe_sim.ground.protocol import TopologyRequest, TopologyResponse
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import ApiError, eventually, running_cluster

pytestmark = pytest.mark.slow


async def test_fresh_cluster_answers_health_and_topology(tmp_path: Path) -> None:
    """3 brokers, 3 partitions: health UP, every partition led by broker (p-1) % 3."""
    async with running_cluster(tmp_path) as cluster:
        health = await cluster.api.call("GET", f"{cluster.management_url}/actuator/health")
        assert health["status"] == "UP"
        topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
        assert topology["clusterSize"] == 3 and topology["partitionsCount"] == 3
        leaders = {
            p["partitionId"]: b["nodeId"] for b in topology["brokers"] for p in b["partitions"]
        }
        assert leaders == {1: 0, 2: 1, 3: 2}


async def test_kill_9_mid_load_loses_no_acknowledged_instance_or_job(tmp_path: Path) -> None:
    """SIGKILL every broker while instances are being created; after a restart on the same
    data every instance that was acknowledged exists, and processing continues."""
    async with running_cluster(
        tmp_path, broker_args=FAST_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        await cluster.api.deploy(ORDER_BPMN)
        acknowledged: list[int] = []
        completed_jobs: list[str] = []

        async def load() -> None:
            with pytest.raises((ApiError, aiohttp.ClientError)):
                while True:
                    acknowledged.append(await cluster.api.create_instance("order-process"))
                    if len(acknowledged) % 5 == 0:
                        # short activation timeout: a job activated but not completed before
                        # the crash becomes activatable again soon
                        for job in await cluster.api.activate_jobs("reserve-stock", 3, 1000):
                            await cluster.api.complete_job(job["jobKey"])
                            completed_jobs.append(job["jobKey"])

        loader = asyncio.create_task(load())
        await eventually(lambda: _true(len(acknowledged) >= 60), timeout_s=60)
        for node in list(cluster.brokers):
            cluster.kill_broker(node)
        await loader
        for node in list(cluster.brokers):
            await cluster.wait_exit(cluster.brokers[node])
        for node in list(cluster.brokers):
            await cluster.start_broker(node)
        await cluster.wait_ready()

        for key in acknowledged:
            instance = await cluster.api.get_instance(key)
            assert instance["state"] == "ACTIVE"

        # Processing continues: every acknowledged instance can be driven to its end, and no
        # job whose completion was acknowledged before the crash comes back.
        async def all_completed() -> bool:
            again = await complete_all(cluster, "reserve-stock")
            assert not set(again) & set(completed_jobs)
            await complete_all(cluster, "ship-order")
            states = [(await cluster.api.get_instance(k))["state"] for k in acknowledged]
            return all(s == "COMPLETED" for s in states)

        await eventually(all_completed, timeout_s=30, interval_s=0.2)
        new = await cluster.api.create_instance("order-process")
        assert (await cluster.api.get_instance(new))["state"] == "ACTIVE"


async def _true(value: bool) -> bool | None:
    return value or None


def _raw_exchange(address: str, payload: bytes) -> bytes:
    """Send raw bytes to a broker; return what it answers before closing (b"" = closed)."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def test_garbage_and_oversized_frames_close_only_that_connection(tmp_path: Path) -> None:
    """Malformed input on a broker port closes that connection; a connection opened before
    and one opened after keep being served."""
    async with running_cluster(tmp_path, brokers=1, partitions=1) as cluster:
        address = cluster.broker_address(0)
        bystander = await Connection.open(address)
        bad_inputs = [
            b"\x00\x00\x00\x05garbage-not-msgpack",
            struct.pack(">I", protocol.FRAME_BYTES_MAX + 1) + b"x" * 100,
            struct.pack(">I", 4) + b"\x94\x01\xa3Bad",  # truncated, then EOF: closed
            protocol.encode(TopologyRequest())[:-1] + b"\xc1",
        ]
        for payload in bad_inputs:
            answer = await asyncio.to_thread(_raw_exchange, address, payload)
            assert answer == b""
        assert isinstance(await bystander.request(TopologyRequest(), 5), TopologyResponse)
        fresh = await Connection.open(address)
        assert isinstance(await fresh.request(TopologyRequest(), 5), TopologyResponse)
        await bystander.close()
        await fresh.close()
