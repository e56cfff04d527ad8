"""The gateway follows a partition's leader across leader changes: the leader in the highest
term wins, a follower's PARTITION_LEADER_MISMATCH hint is followed at once, a mismatch without
a hint makes the gateway ask the brokers at once (not at the next refresh), and every replica's
role and health shows in /v2/topology, gRPC Topology and the actuator.

The replicas are small fake brokers on the memory network, each with a scripted topology answer
and a scripted answer to queries: the edge of the network, not our classes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from gateway import client as client_module
from gateway.actuator import management_app
from gateway.client import BrokerClient, leaders_of
from gateway.grpc import gateway_pb2 as pb
from gateway.grpc import gateway_pb2_grpc
from gateway.grpc.servicer import start_grpc_server
from gateway.rest import rest_app
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import PartitionLeaderMismatch, RequestTimeout
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    Message,
    QueryRequest,
    QueryResponse,
    TopologyRequest,
    TopologyResponse,
)
from zeebe_sim.ground.transport import MemoryNetwork, serve_connection
from zeebe_sim.harness import eventually

pytestmark = pytest.mark.inprocess

P1 = PartitionId(1)


def test_the_leader_in_the_highest_term_wins() -> None:
    """Two brokers claim partition 1: the one in the higher term leads it, whatever the
    answer order; on equal terms the lower node id; followers and candidates never lead."""

    def answer(node: int, roles: dict[int, str], terms: dict[int, int]) -> TopologyResponse:
        return TopologyResponse(
            NodeId(node),
            3,
            2,
            3,
            {},
            {PartitionId(p): r for p, r in roles.items()},
            VERSION,
            terms={PartitionId(p): t for p, t in terms.items()},
        )

    old = answer(0, {1: "LEADER", 2: "FOLLOWER"}, {1: 3, 2: 5})
    new = answer(1, {1: "LEADER", 2: "CANDIDATE"}, {1: 4, 2: 6})
    assert leaders_of({NodeId(0): old, NodeId(1): new}) == {P1: 1}
    assert leaders_of({NodeId(1): new, NodeId(0): old}) == {P1: 1}
    tie = answer(2, {1: "LEADER"}, {1: 4})
    assert leaders_of({NodeId(2): tie, NodeId(1): new}) == {P1: 1}


class Replica:
    """A fake broker hosting partition 1 of a 2-broker cluster: ``role`` and ``term`` make its
    topology answer; ``answer`` makes its reply to a query (a result, or an error to raise)."""

    def __init__(self, network: MemoryNetwork, node: int, role: str, term: int) -> None:
        self.network = network
        self.node = NodeId(node)
        self.role = role
        self.term = term
        self.health = "HEALTHY"
        self.answer: Callable[[], Any] = lambda: {"from": node}
        self.members: dict[NodeId, str] = {}
        self.queries = 0
        self.address = ""

    async def start(self) -> None:
        listener = await self.network.listen("127.0.0.1", 0, self._serve)
        self.address = f"127.0.0.1:{listener.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def handle(message: Message) -> Message | None:
            if isinstance(message, TopologyRequest):
                return TopologyResponse(
                    self.node,
                    2,
                    1,
                    2,
                    self.members,
                    {P1: self.role},
                    VERSION,
                    health={P1: self.health},
                    terms={P1: self.term},
                )
            assert isinstance(message, QueryRequest)
            self.queries += 1
            result = self.answer()
            if isinstance(result, Exception):
                raise result
            return QueryResponse(result)

        await serve_connection(reader, writer, handle)


Replicas = tuple[Replica, Replica, BrokerClient]


@pytest_asyncio.fixture
async def replicas() -> AsyncIterator[Callable[..., Any]]:
    """Two replicas of partition 1 and a gateway client that knows both."""
    clients: list[BrokerClient] = []

    async def start(
        roles: tuple[str, str], terms: tuple[int, int], timeout_s: float = 5.0
    ) -> Replicas:
        network = MemoryNetwork()
        a, b = Replica(network, 0, roles[0], terms[0]), Replica(network, 1, roles[1], terms[1])
        await a.start()
        await b.start()
        a.members = b.members = {a.node: a.address, b.node: b.address}
        client = BrokerClient([a.address, b.address], timeout_s, network)
        clients.append(client)
        await client.start()
        await eventually(lambda: _true(len(client.brokers) == 2), timeout_s=10)
        return a, b, client

    yield start
    for client in clients:
        await client.stop()


async def _true(value: bool) -> bool | None:
    return value or None


async def test_a_query_goes_to_the_leader_of_the_higher_term(replicas: Any) -> None:
    """A deposed leader still claims partition 1 in term 1, the new one in term 2: the query
    goes to the new leader only."""
    a, b, client = await replicas(("LEADER", "LEADER"), (1, 2))
    assert await client.query(P1, "q", {}) == {"from": 1}
    assert (a.queries, b.queries) == (0, 1)


async def test_a_followers_leader_hint_is_followed_at_once(
    replicas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway believes broker 0 leads (its topology is stale), broker 0 answers
    PARTITION_LEADER_MISMATCH naming broker 1: the request goes to broker 1 and succeeds,
    with no topology refresh in between (the next round is a minute away)."""
    monkeypatch.setattr(client_module, "TOPOLOGY_REFRESH_S", 60.0)
    monkeypatch.setattr(client_module, "ROUND_GAP_S", 60.0)
    a, b, client = await replicas(("LEADER", "FOLLOWER"), (1, 1))
    a.answer = lambda: PartitionLeaderMismatch("broker 0 is not the leader", leader=1)
    assert await client.query(P1, "q", {}) == {"from": 1}
    assert (a.queries, b.queries) == (1, 1)


async def test_a_mismatch_without_hint_asks_the_brokers_at_once(
    replicas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broker 0 lost leadership and knows no leader yet; broker 1 has just won term 2. With
    the periodic refresh a minute away, the request still finds broker 1 within its timeout:
    the mismatch makes the gateway ask the brokers at once."""
    monkeypatch.setattr(client_module, "TOPOLOGY_REFRESH_S", 60.0)
    a, b, client = await replicas(("LEADER", "FOLLOWER"), (1, 1))
    a.role, b.role, b.term = "FOLLOWER", "LEADER", 2
    a.answer = lambda: PartitionLeaderMismatch("broker 0 is not the leader")
    assert await client.query(P1, "q", {}, timeout_s=10.0) == {"from": 1}
    assert client.leaders == {P1: 1}


async def test_without_any_leader_the_request_is_retried_until_the_timeout(
    replicas: Any,
) -> None:
    """Both replicas are followers with no leader to name (an election is running): the
    request fails with NoLeader after the whole request timeout, and is answered as soon as
    one of them wins, if that is within the timeout."""
    _, b, client = await replicas(("FOLLOWER", "CANDIDATE"), (1, 2), 0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(client_module.NoLeader, match="partition 1"):
        await client.query(P1, "q", {})
    assert loop.time() - started >= 0.3
    waiting = asyncio.create_task(client.query(P1, "q", {}, timeout_s=20.0))
    await eventually(lambda: _true(client.brokers[NodeId(1)].terms.get(P1) == 2), timeout_s=10)
    b.role, b.term = "LEADER", 3
    assert await waiting == {"from": 1}


async def test_topology_shows_every_replica_with_its_role_and_health(replicas: Any) -> None:
    """/v2/topology and gRPC Topology list both replicas of partition 1, leader and follower,
    each with its own health; the actuator's health names the leader and /actuator/partitions
    shows each partition as its leader reports it (not a follower's view)."""
    a, b, client = await replicas(("FOLLOWER", "LEADER"), (2, 2))
    a.health = "UNHEALTHY"
    a.answer = lambda: {"1": {"role": "FOLLOWER"}}
    b.answer = lambda: {"1": {"role": "LEADER"}}
    await eventually(lambda: _true(client.brokers[NodeId(0)].health.get(P1) == "UNHEALTHY"))

    rest: TestClient[Any, Any] = TestClient(TestServer(rest_app(client)))
    management: TestClient[Any, Any] = TestClient(TestServer(management_app(client)))
    await rest.start_server()
    await management.start_server()
    try:
        topology = await (await rest.get("/v2/topology")).json()
        roles = {
            b["nodeId"]: [(p["partitionId"], p["role"], p["health"]) for p in b["partitions"]]
            for b in topology["brokers"]
        }
        assert roles == {0: [(1, "follower", "unhealthy")], 1: [(1, "leader", "healthy")]}
        health = await (await management.get("/actuator/health")).json()
        assert health["components"]["partitions"]["details"]["1"]["leader"] == 1
        partitions = await (await management.get("/actuator/partitions")).json()
        assert partitions == {"1": {"role": "LEADER"}}
    finally:
        await rest.close()
        await management.close()

    server, port = await start_grpc_server(client, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            answer = await stub.Topology(pb.TopologyRequest(), timeout=10)
        grpc_roles = {
            b.nodeId: [(p.partitionId, p.role, p.health) for p in b.partitions]
            for b in answer.brokers
        }
        assert grpc_roles == {
            0: [(1, pb.Partition.FOLLOWER, pb.Partition.UNHEALTHY)],
            1: [(1, pb.Partition.LEADER, pb.Partition.HEALTHY)],
        }
        assert answer.replicationFactor == 2
    finally:
        await server.stop(grace=None)


async def test_two_replicas_naming_each_other_are_not_asked_in_a_tight_loop(
    replicas: Any,
) -> None:
    """During an election two replicas may each name the other as leader: the gateway follows
    each hint once at once, then pauses ~10 ms between tries, and fails at the request timeout
    (504: a leader was named but none answered) after a bounded number of requests."""
    a, b, client = await replicas(("LEADER", "FOLLOWER"), (1, 1), 0.5)
    a.answer = lambda: PartitionLeaderMismatch("not me", leader=1)
    b.answer = lambda: PartitionLeaderMismatch("not me", leader=0)
    with pytest.raises(RequestTimeout, match="partition 1"):
        await client.query(P1, "q", {})
    # 0.5 s at one pause per retry: about 2 x 50 requests at most, not thousands
    assert 2 <= a.queries + b.queries <= 2 * 0.5 / client_module.LEADER_RETRY_S + 10
