"""The gateway's broker client and its HTTP apps over the in-process cluster: topology,
routing, retries until the request timeout (REST 503, Backup API 504), a leader that never
answers (504), a
command never sent twice, and health as partitions lose and regain their leader.

Misbehaving brokers are small servers on the memory network (the real server loop with a
handler that stalls or hangs up): fakes at the edge of the network, not of our classes. The
apps are served by aiohttp's TestServer where no cluster is needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from gateway.actuator import management_app
from gateway.client import BrokerClient
from gateway.rest import rest_app
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import RequestTimeout
from zeebe_sim.ground.ids import PartitionId, encode_key, partition_of_key
from zeebe_sim.ground.protocol import Message, TopologyRequest, TopologyResponse
from zeebe_sim.ground.transport import MemoryNetwork, serve_connection
from zeebe_sim.harness import ApiError, eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"


async def instance_on(cluster: InProcessCluster, partition: int) -> int:
    """Create demo instances (round-robin) until one lands on ``partition``; its key."""
    for _ in range(3 * cluster.partition_count):
        key = await cluster.api.create_instance("demo-process", {"correlationKey": "k"})
        if partition_of_key(key) == partition:
            return key
    raise AssertionError(f"no instance landed on partition {partition}")


async def test_topology_health_and_routing_of_a_fresh_cluster(tmp_path: Path) -> None:
    """3 brokers found by gossip from one contact point; /v2/topology and health report every
    partition led by broker (p-1) % 3; instances go round-robin to every partition."""
    async with InProcessCluster(tmp_path) as cluster:
        for broker in cluster.brokers.values():
            await eventually(lambda b=broker: _true(len(b.members) == 3), timeout_s=10)
        topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
        assert topology["clusterSize"] == 3 and topology["partitionsCount"] == 3
        assert topology["gatewayVersion"] == VERSION
        leaders = {
            p["partitionId"]: b["nodeId"] for b in topology["brokers"] for p in b["partitions"]
        }
        assert leaders == {1: 0, 2: 1, 3: 2}
        health = await cluster.api.call("GET", f"{cluster.management_url}/actuator/health")
        assert health["status"] == "UP"
        assert health["components"]["partitions"]["status"] == "UP"
        await cluster.api.deploy(DEMO)
        keys = [await cluster.api.create_instance("demo-process") for _ in range(6)]
        assert sorted(partition_of_key(k) for k in keys) == [1, 1, 2, 2, 3, 3]


async def _true(value: bool) -> bool | None:
    return value or None


async def test_a_partition_without_leader_is_retried_until_the_timeout_then_503(
    tmp_path: Path,
) -> None:
    """With partition 2's broker gone, requests for it are retried for the whole request
    timeout and then fail: REST 503 Problem Details (no leader: try again), the Backup API 504
    with its message (REFERENCE.md §1); the other partitions keep answering; readiness goes
    503 and health names the partition DOWN."""
    timeout_s = 0.5
    async with InProcessCluster(tmp_path, request_timeout_s=timeout_s) as cluster:
        await cluster.api.deploy(DEMO)
        on_two, on_one = await instance_on(cluster, 2), await instance_on(cluster, 1)
        await cluster.kill_broker(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ApiError) as unavailable:
            await cluster.api.get_instance(on_two)
        assert loop.time() - started >= timeout_s
        assert unavailable.value.status == 503
        assert unavailable.value.body["title"] == "UNAVAILABLE"
        assert "partition 2" in unavailable.value.body["detail"]
        assert (await cluster.api.get_instance(on_one))["state"] == "ACTIVE"
        with pytest.raises(ApiError) as backup:
            await cluster.api.take_backup(1)
        assert backup.value.status == 504 and set(backup.value.body) == {"message"}

        async def readiness_down() -> bool:
            status = await cluster.api.call(
                "GET", f"{cluster.management_url}/actuator/health/readiness", ok=(200, 503)
            )
            return status["status"] == "DOWN"

        await eventually(readiness_down, timeout_s=10, interval_s=0.01)
        health = await cluster.api.call("GET", f"{cluster.management_url}/actuator/health")
        partitions = health["components"]["partitions"]
        assert partitions["status"] == "DOWN" and partitions["details"]["2"]["health"] == "DOWN"


async def test_a_request_waits_for_a_leader_that_comes_back_within_the_timeout(
    tmp_path: Path,
) -> None:
    """A request sent while its partition has no leader is answered once the broker is back,
    if that is within the request timeout."""
    async with InProcessCluster(tmp_path, request_timeout_s=20.0) as cluster:
        await cluster.api.deploy(DEMO)
        key = await instance_on(cluster, 2)
        await cluster.kill_broker(1)
        waiting = asyncio.create_task(cluster.api.get_instance(key))
        # the request is in the gateway's retry loop before the broker is back
        await eventually(lambda: _true(2 not in cluster.gateway_client.leaders), timeout_s=10)
        assert not waiting.done()
        await cluster.start_broker(1)
        assert (await waiting)["state"] == "ACTIVE"


# -- misbehaving brokers at the edge of the network -----------------------------------------------


class FakeBroker:
    """A one-partition "broker" that leads partition 1 and answers only topology requests:
    ``mode`` "silent" never answers anything else, "hang-up" closes the connection instead."""

    def __init__(self, network: MemoryNetwork, mode: str) -> None:
        self.network = network
        self.mode = mode
        self.received: list[Message] = []
        self.address = ""

    async def start(self) -> None:
        listener = await self.network.listen("127.0.0.1", 0, self._serve)
        self.address = f"127.0.0.1:{listener.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def handle(message: Message) -> Message | None:
            if isinstance(message, TopologyRequest):
                return TopologyResponse(0, 1, 1, 1, {0: self.address}, {1: "LEADER"}, VERSION)
            self.received.append(message)
            if self.mode == "hang-up":
                writer.transport.abort()
            await asyncio.Event().wait()  # never answers
            return None

        await serve_connection(reader, writer, handle)


Http = TestClient[Any, Any]
StartGateway = Callable[..., Awaitable[tuple[FakeBroker, Http]]]


@pytest_asyncio.fixture
async def gateway_to() -> AsyncIterator[StartGateway]:
    """Serve one of the gateway's apps (aiohttp TestServer) over a client of a FakeBroker."""
    started: list[tuple[BrokerClient, Http]] = []

    async def start(mode: str, timeout_s: float, app: str = "rest") -> tuple[FakeBroker, Http]:
        network = MemoryNetwork()
        broker = FakeBroker(network, mode)
        await broker.start()
        client = BrokerClient([broker.address], timeout_s, network)
        await client.start()
        await eventually(lambda: _true(client.all_partitions_have_leader), timeout_s=10)
        web_app = rest_app(client) if app == "rest" else management_app(client)
        http: Http = TestClient(TestServer(web_app))
        await http.start_server()
        started.append((client, http))
        return broker, http

    yield start
    for client, http in started:
        await http.close()
        await client.stop()


async def test_a_leader_that_never_answers_is_a_504_after_the_request_timeout(
    gateway_to: StartGateway,
) -> None:
    """The leader takes the request and stays silent: after the request timeout the REST API
    answers 504 with Problem Details; the actuator too, with its message body."""
    broker, http = await gateway_to("silent", 0.3)
    key = encode_key(PartitionId(1), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await http.get(f"/v2/process-instances/{key}")
    assert response.status == 504
    body = await response.json()
    assert body["title"] == "DEADLINE_EXCEEDED" and body["status"] == 504
    assert loop.time() - started >= 0.3
    assert len(broker.received) == 1  # asked once, not retried into the silence

    _, actuator = await gateway_to("silent", 0.3, "management")
    response = await actuator.get("/actuator/backups/5")
    assert response.status == 504 and set(await response.json()) == {"message"}


async def test_a_command_whose_connection_drops_is_not_sent_again(
    gateway_to: StartGateway,
) -> None:
    """The broker hangs up after receiving a command: it may have executed it, so the gateway
    fails it (503) instead of sending it again; a query in the same situation is retried."""
    broker, http = await gateway_to("hang-up", 1.0)
    response = await http.post(
        "/v2/process-instances", json={"processDefinitionId": "p", "variables": {}}
    )
    assert response.status == 503
    assert [type(m).__name__ for m in broker.received] == ["ExecuteCommandRequest"]

    response = await http.get(f"/v2/process-instances/{encode_key(PartitionId(1), 5)}")
    assert response.status in (503, 504)
    queries = [m for m in broker.received if type(m).__name__ == "QueryRequest"]
    assert len(queries) >= 2  # retried on a new connection until the timeout


async def test_the_client_raises_request_timeout_with_the_partition_named() -> None:
    """BrokerClient.to_partition against a silent leader raises RequestTimeout naming the
    partition and the timeout."""
    network = MemoryNetwork()
    broker = FakeBroker(network, "silent")
    await broker.start()
    client = BrokerClient([broker.address], 0.2, network)
    await client.start()
    try:
        await eventually(lambda: _true(client.all_partitions_have_leader), timeout_s=10)
        with pytest.raises(RequestTimeout, match=r"partition 1 within 0\.2s"):
            await client.query(1, "process-instance", {"key": 1})
    finally:
        await client.stop()
