"""The gateway's broker client: topology, routing and retries.

Theory of operation
-------------------
The client asks every broker it knows (starting from the contact points) for its topology, every
``TOPOLOGY_REFRESH_S`` and at once when a request learns that the leader it knew is gone. Each
answer is merged as it arrives (a paused broker does not hold up the others' news); a partition's
leader is the broker that claims it in the highest Raft term, so a deposed leader still claiming
its old term loses to the new one (:func:`leaders_of`). A broker that stops answering is dropped
at the end of the round.

A request for a partition goes to its leader over one multiplexed connection per broker. A
replica that is not the leader answers PARTITION_LEADER_MISMATCH with the leader it knows, and
the request follows that hint at once; without a hint, or when the leader's connection fails, the
client refreshes the topology (not waiting for the next round) and tries again every ~10 ms, as
Zeebe's gateway does, until the request timeout. It then fails with :class:`NoLeader` when no
leader is known (REST 503), or :class:`RequestTimeout` when one is known but did not answer in
time (504). A command whose connection dropped after it was sent is not sent again (it may have
been executed): ConnectionLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import attrs

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
# The least time between two rounds a request starts because it knows no leader.
ROUND_GAP_S = 0.02


def leaders_of(answers: dict[NodeId, TopologyResponse]) -> dict[PartitionId, NodeId]:
    """Each partition's leader in these brokers' answers: of the brokers claiming it, the one
    in the highest term (an old leader cut off from the others still claims its old term);
    on a tie, the lowest node id, so that the choice does not depend on answer order."""
    best: dict[PartitionId, tuple[int, int]] = {}
    for node, answer in answers.items():
        for partition, role in answer.partitions.items():
            if role != "LEADER":
                continue
            rank = (answer.terms.get(partition, 0), -node)
            if partition not in best or rank > best[partition]:
                best[partition] = rank
    return {p: NodeId(-negated) for p, (_, negated) in best.items()}


class NoLeader(BrokerUnavailable):
    """No leader of the partition was known until the request timeout (REST 503)."""


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
        # None: clients give backup ids; an int: the cluster generates them as epoch
        # milliseconds plus this offset (continuous backups or a schedule are configured).
        self.backup_id_offset: int | None = None
        self._connections: dict[NodeId, Connection] = {}
        self._round_robin = itertools.count()
        self._refreshing: asyncio.Task[None] | None = None
        # The round in flight: requests that need news join it rather than start another.
        self._round: asyncio.Task[None] | None = None
        self._round_started_s = float("-inf")
        self._topology_known = asyncio.Event()

    async def start(self) -> None:
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        for task in (self._refreshing, self._round):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        """Ask every known broker for its topology; joins the round in flight if there is one.
        A cancelled caller does not cancel the round (others may be waiting for it)."""
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_task(self._refresh_round())
        await asyncio.shield(self._round)

    def _start_round(self) -> None:
        """Start a round now unless one is in flight or one started less than
        ``ROUND_GAP_S`` ago (a dead broker refuses connections at once: without the gap,
        rounds would follow each other as fast as the CPU allows)."""
        loop = asyncio.get_running_loop()
        if (self._round is None or self._round.done()) and (
            loop.time() - self._round_started_s >= ROUND_GAP_S
        ):
            self._round = loop.create_task(self._refresh_round())

    async def _refresh_round(self) -> None:
        self._round_started_s = asyncio.get_running_loop().time()
        targets: dict[str, NodeId | None] = {a: None for a in self.contact_points}
        for node, address in self.addresses.items():
            targets[address] = node
        reached: set[NodeId] = set()

        async def ask(address: str, node: NodeId | None) -> None:
            answer = await self._ask_topology(address, node)
            if answer is not None:
                reached.add(answer.node_id)
                self._merge(answer)

        await asyncio.gather(*(ask(a, n) for a, n in targets.items()))
        for node in list(self.brokers):
            if node not in reached:
                del self.brokers[node]
        self.leaders = leaders_of(self.brokers)

    def _merge(self, answer: TopologyResponse) -> None:
        self.brokers[answer.node_id] = answer
        self.addresses.update(answer.members)
        self.partition_count = answer.partition_count
        self.cluster_size = answer.cluster_size
        self.replication_factor = answer.replication_factor
        self.backup_id_offset = answer.backup_id_offset
        self.leaders = leaders_of(self.brokers)
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

    def _forget_leader(
        self, partition_id: PartitionId, node: NodeId, hint: int | None, *, unreachable: bool
    ) -> bool:
        """``node`` does not lead ``partition_id`` (any more): forget its claim, or all it said
        if it is ``unreachable``, so that a later answer of another broker does not bring the
        stale claim back. Take ``hint`` as the leader if it names another broker we know.
        True when there is a new leader to try at once."""
        answer = self.brokers.get(node)
        if unreachable:
            self.brokers.pop(node, None)
        elif answer is not None and answer.partitions.get(partition_id) == "LEADER":
            roles = {**answer.partitions, partition_id: "FOLLOWER"}
            self.brokers[node] = attrs.evolve(answer, partitions=roles)
        self.leaders = leaders_of(self.brokers)
        if hint is not None and hint != node and NodeId(hint) in self.addresses:
            self.leaders[partition_id] = NodeId(hint)
            return True
        return False

    # -- requests -----------------------------------------------------------------------------

    async def to_partition(
        self,
        partition_id: PartitionId,
        message: Message,
        timeout_s: float | None = None,
        *,
        idempotent: bool = True,
    ) -> Message:
        """Send ``message`` to the leader of ``partition_id``, following it across leader
        changes until the request timeout.

        A request that is not ``idempotent`` (a command) is not sent again once a broker may
        have received it: a lost connection then fails it instead of risking a duplicate.

        Raises:
            NoLeader: no leader was known when the timeout came (REST 503).
            RequestTimeout: a leader was known, but no answer came in time (504).
            ConnectionLost: a command's connection dropped after it was sent.
            ZeebeSimError: the broker's own error answer.
        """
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reason = "the partition has no leader"
        hinted: set[int | None] = set()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if partition_id in self.leaders:
                    raise RequestTimeout(
                        f"Expected a response from partition {partition_id} within "
                        f"{timeout:g}s, but none arrived ({reason})"
                    )
                raise NoLeader(
                    f"Expected to route the request to partition {partition_id}, but {reason}"
                )
            node = self.leaders.get(partition_id)
            address = self.addresses.get(node) if node is not None else None
            if node is None or address is None:
                # Ask the brokers now rather than wait for the next round; answers are merged
                # as they come, so the new leader is seen without waiting for a silent broker.
                self._start_round()
                await asyncio.sleep(min(LEADER_RETRY_S, remaining))
                continue
            try:
                connection = await self._connection(node, address)
                return await connection.request(message, remaining)
            except ConnectionLost:
                self._forget_leader(partition_id, node, None, unreachable=True)
                if not idempotent:
                    raise
                reason = f"the connection to broker {node} was lost"
            except BrokerUnavailable as exc:
                self._forget_leader(partition_id, node, None, unreachable=True)
                reason = f"broker {node} is unreachable: {exc.message}"
            except PartitionLeaderMismatch as exc:
                reason = f"broker {node} is not its leader"
                if self._forget_leader(partition_id, node, exc.leader, unreachable=False):
                    # The hint: try the leader it names at once, but each broker only once
                    # without a pause (two replicas may name each other during an election).
                    if exc.leader not in hinted:
                        hinted.add(exc.leader)
                        continue
            except RequestTimeout as exc:
                raise RequestTimeout(
                    f"Expected a response from partition {partition_id} within "
                    f"{timeout:g}s, but none arrived"
                ) from exc
            await asyncio.sleep(min(LEADER_RETRY_S, max(deadline - loop.time(), 0)))

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

    async def to_broker(self, node: NodeId, message: Message, timeout_s: float) -> Message:
        """Send ``message`` to broker ``node`` itself (a broker-wide request, not a
        partition's).

        Raises:
            BrokerUnavailable: the broker is not known or not reachable.
            RequestTimeout: no answer within ``timeout_s``.
            ZeebeSimError: the broker's own error answer.
        """
        address = self.addresses.get(node)
        if address is None:
            raise BrokerUnavailable(f"Broker {node} is not known to the gateway")
        connection = await self._connection(node, address)
        return await connection.request(message, timeout_s)
