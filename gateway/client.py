"""The gateway's broker client: topology, routing and retries.

Theory of operation
-------------------
The client polls the brokers it knows (starting from the contact points) for their topology and
keeps, per partition, the broker that leads it. A request for a partition goes to that broker
over one multiplexed connection per broker. While a partition has no reachable leader the
client retries every ~10 ms until the request timeout (Zeebe's gateway does the same), then
fails with BrokerUnavailable (HTTP 502) when it never reached a leader, or RequestTimeout (HTTP
504) when a broker took the request and did not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from zeebe_sim.ground.commands import check_command_value
from zeebe_sim.ground.errors import (
    BrokerUnavailable,
    ConnectionLost,
    InvalidArgument,
    PartitionLeaderMismatch,
    ProtocolError,
    RequestTimeout,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import Key, NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    ExecuteCommandRequest,
    ExecuteCommandResponse,
    Message,
    QueryRequest,
    QueryResponse,
    TopologyRequest,
    TopologyResponse,
)
from zeebe_sim.ground.transport import TCP, Connection, NetworkBackend

log = logging.getLogger(__name__)

TOPOLOGY_REFRESH_S = 0.25
LEADER_RETRY_S = 0.01
TOPOLOGY_REQUEST_TIMEOUT_S = 1.0


class BrokerClient:
    def __init__(
        self,
        contact_points: list[str],
        request_timeout_s: float = 15.0,
        network: NetworkBackend = TCP,
    ) -> None:
        self.contact_points = list(contact_points)
        self._network = network
        self.request_timeout_s = request_timeout_s
        self.brokers: dict[NodeId, TopologyResponse] = {}  # node id -> its last answer
        self.addresses: dict[NodeId, str] = {}
        self.leaders: dict[PartitionId, NodeId] = {}
        self.partition_count = 0
        self.cluster_size = 0
        self.replication_factor = 1
        self._connections: dict[NodeId, Connection] = {}
        self._round_robin = itertools.count()
        self._refreshing: asyncio.Task[None] | None = None
        self._topology_known = asyncio.Event()

    async def start(self) -> None:
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        for connection in self._connections.values():
            await connection.close()

    @property
    def all_partitions_have_leader(self) -> bool:
        return self.partition_count > 0 and all(
            p in self.leaders for p in range(1, self.partition_count + 1)
        )

    def partition_health(self, partition_id: PartitionId) -> str:
        """Its leader's report: HEALTHY, UNHEALTHY or DEAD; DOWN without a leader."""
        node = self.leaders.get(partition_id)
        answer = self.brokers.get(node) if node is not None else None
        if answer is None:
            return "DOWN"
        return answer.health.get(partition_id, "HEALTHY")

    def partition_ids(self) -> list[PartitionId]:
        return [PartitionId(p) for p in range(1, self.partition_count + 1)]

    def next_partition(self) -> PartitionId:
        """Round-robin over partitions, as Zeebe's gateway does for instance creation."""
        count = max(self.partition_count, 1)
        return PartitionId(next(self._round_robin) % count + 1)

    # -- topology -----------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await self.refresh_topology()
            await asyncio.sleep(TOPOLOGY_REFRESH_S)

    async def refresh_topology(self) -> None:
        targets: dict[str, NodeId | None] = {a: None for a in self.contact_points}
        for node, address in self.addresses.items():
            targets[address] = node
        answers = await asyncio.gather(*(self._ask_topology(a, n) for a, n in targets.items()))
        leaders: dict[PartitionId, NodeId] = {}
        for answer in answers:
            if answer is None:
                continue
            self.brokers[answer.node_id] = answer
            self.addresses.update(answer.members)
            self.partition_count = answer.partition_count
            self.cluster_size = answer.cluster_size
            self.replication_factor = answer.replication_factor
            for partition, role in answer.partitions.items():
                if role == "LEADER":
                    leaders[partition] = answer.node_id
        reached = {a.node_id for a in answers if a is not None}
        for node in list(self.brokers):
            if node not in reached:
                del self.brokers[node]
        self.leaders = leaders
        if self.partition_count:
            self._topology_known.set()

    async def _ask_topology(self, address: str, node: NodeId | None) -> TopologyResponse | None:
        try:
            connection = await self._connection(node, address)
            answer = await connection.request(TopologyRequest(), TOPOLOGY_REQUEST_TIMEOUT_S)
        except ZeebeSimError:
            return None
        if not isinstance(answer, TopologyResponse):
            return None
        if node is None:
            # A contact point's connection is kept under its node id from now on.
            self._connections.setdefault(answer.node_id, connection)
        return answer

    async def _connection(self, node: NodeId | None, address: str) -> Connection:
        existing = self._connections.get(node) if node is not None else None
        if existing is not None and not existing.closed:
            return existing
        if node is None:
            for known, connection in self._connections.items():
                if self.addresses.get(known) == address and not connection.closed:
                    return connection
        connection = await Connection.open(address, network=self._network)
        if node is not None:
            self._connections[node] = connection
        return connection

    # -- requests -----------------------------------------------------------------------------

    async def to_partition(
        self,
        partition_id: PartitionId,
        message: Message,
        timeout_s: float | None = None,
        *,
        idempotent: bool = True,
    ) -> Message:
        """Send ``message`` to the leader of ``partition_id``, retrying while it has none.

        A request that is not ``idempotent`` (a command) is not sent again once a broker may
        have received it: a lost connection then fails it instead of risking a duplicate.

        Raises:
            BrokerUnavailable: no leader could be reached before the timeout (HTTP 502).
            RequestTimeout: the leader did not answer in time (HTTP 504).
            ZeebeSimError: the broker's own error answer.
        """
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: ZeebeSimError = BrokerUnavailable(
            f"Expected to route the request to partition {partition_id}, but the partition "
            "has no leader"
        )
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise last_error
            node = self.leaders.get(partition_id)
            address = self.addresses.get(node) if node is not None else None
            if node is not None and address is not None:
                try:
                    connection = await self._connection(node, address)
                    return await connection.request(message, remaining)
                except ConnectionLost:
                    if not idempotent:
                        raise
                    self.leaders.pop(partition_id, None)
                except (BrokerUnavailable, PartitionLeaderMismatch) as exc:
                    # The leader went away: forget it until the topology says otherwise.
                    self.leaders.pop(partition_id, None)
                    last_error = BrokerUnavailable(
                        f"Expected to send the request to partition {partition_id} on broker "
                        f"{node}, but {exc.message}"
                    )
                except RequestTimeout as exc:
                    raise RequestTimeout(
                        f"Expected a response from partition {partition_id} within "
                        f"{timeout:g}s, but none arrived"
                    ) from exc
            await asyncio.sleep(min(LEADER_RETRY_S, max(remaining, 0)))

    async def execute(
        self,
        partition_id: PartitionId,
        value_type: str,
        intent: str,
        key: int,
        value: dict[str, Any],
    ) -> ExecuteCommandResponse:
        """Have a partition process a command; its answer, rejections included.

        Raises:
            InvalidArgument: ``value`` does not fit the command's schema (a client's mistake:
                the broker would refuse the frame, and close the connection other requests
                share). Otherwise what :meth:`to_partition` raises.
        """
        try:
            check_command_value(value_type, intent, value, "value")
        except ProtocolError as exc:
            raise InvalidArgument(f"Invalid {value_type} {intent} command: {exc.message}") from exc
        answer = await self.to_partition(
            partition_id,
            ExecuteCommandRequest(partition_id, value_type, intent, Key(key), value),
            idempotent=False,
        )
        assert isinstance(answer, ExecuteCommandResponse), answer
        return answer

    async def query(
        self,
        partition_id: PartitionId,
        query: str,
        arguments: dict[str, Any],
        timeout_s: float | None = None,
    ) -> Any:
        answer = await self.to_partition(
            partition_id, QueryRequest(partition_id, query, arguments), timeout_s
        )
        assert isinstance(answer, QueryResponse), answer
        return answer.result
