"""One broker process: its partitions, its TCP server and its view of the other brokers.

Theory of operation
-------------------
A broker hosts the partitions assigned to it round-robin (partition p on broker (p-1) % N) and
leads each of them (replication is not built: replication factor 1). It serves the gateway and
other brokers on one TCP port with the msgpack protocol.

Membership is a tiny gossip: a broker knows its contact points; every second it tells each known
broker its own address and merges the member lists it gets back, so a cluster started with
OS-chosen ports (``--broker-port 0``) still finds itself. Inter-partition commands go to the
broker hosting the receiving partition; a command for a partition on this broker goes straight
into that partition's inbox (its own log, when sender and receiver are the same partition).
Sends are fire-and-forget: the sending partition retries until acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import attrs

from broker.backup import BackupService
from broker.engine.processor import Send
from broker.partition import Partition, PartitionConfig
from broker.waiters import AWAIT_QUERIES, answer_await
from storage.backup.config import FilesystemStoreConfig, S3StoreConfig
from storage.backup.open import open_store
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import (
    BackupNotConfigured,
    BrokerUnavailable,
    InvalidArgument,
    PartitionLeaderMismatch,
    UnsupportedMessage,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    BackupStatusRequest,
    BackupStatusResponse,
    DeleteBackupRequest,
    DeleteBackupResponse,
    ExecuteCommandRequest,
    ExecuteCommandResponse,
    InterPartitionCommandSent,
    ListBackupsRequest,
    ListBackupsResponse,
    Message,
    QueryRequest,
    QueryResponse,
    TakeBackupRequest,
    TakeBackupResponse,
    TopologyRequest,
    TopologyResponse,
)
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import broker_of_partition, partitions_of_broker
from zeebe_sim.ground.search import search
from zeebe_sim.ground.tasks import OwnedTasks
from zeebe_sim.ground.transport import Connection, serve_connection

log = logging.getLogger(__name__)

GOSSIP_INTERVAL_S = 1.0
PEER_REQUEST_TIMEOUT_S = 2.0
# Inter-partition commands held per peer while connecting to it; beyond, they are dropped and
# the senders' retries deliver them later.
PEER_WAITING_MAX = 10_000


@attrs.frozen
class BrokerConfig:
    node_id: int
    cluster_size: int
    partition_count: int
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 26501
    contact_points: tuple[str, ...] = ()
    replication_factor: int = 1
    partition: PartitionConfig = attrs.Factory(PartitionConfig)
    # None: no backup store (backup requests answer BACKUP_NOT_CONFIGURED)
    backup_store: FilesystemStoreConfig | S3StoreConfig | None = None


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node_id = NodeId(config.node_id)
        self.backups = BackupService(
            open_store(config.backup_store) if config.backup_store is not None else None,
            config.node_id,
            config.partition_count,
            partition_dir=self._partition_dir,
        )
        self.partitions: dict[int, Partition] = {}
        self.members: dict[int, str] = {}
        self._peers: dict[int, Connection] = {}
        self._connecting: set[int] = set()
        self._waiting: dict[int, list[InterPartitionCommandSent]] = {}
        self._server: asyncio.Server | None = None
        self._tasks = OwnedTasks(f"broker {config.node_id}")
        self.address = ""

    @property
    def directory(self) -> Path:
        return self.config.data_dir / f"broker-{self.config.node_id}"

    def _partition_dir(self, partition_id: int) -> Path:
        return self.directory / "partitions" / str(partition_id)

    async def start(self) -> None:
        await self.backups.check()
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.config.port, limit=1 << 20
        )
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{self.config.host}:{port}"
        self.members[self.config.node_id] = self.address
        for partition_id in partitions_of_broker(
            self.node_id, self.config.cluster_size, self.config.partition_count
        ):
            self.partitions[partition_id] = Partition(
                partition_id,
                self.config.partition_count,
                self._partition_dir(partition_id),
                self.config.partition,
                self._send,
                on_checkpoint=self.backups.checkpoint_created,
            )
        # Before any partition can start a new backup: what was IN_PROGRESS died with us.
        await self.backups.fail_in_progress(list(self.partitions))
        await asyncio.gather(*(p.start() for p in self.partitions.values()))
        # Recovered: a latest checkpoint whose backup never reached the store is FAILED now.
        for partition in self.partitions.values():
            self.backups.reconcile(partition.partition_id, partition.state.checkpoint_id)
        self._tasks.spawn(self._gossip())
        log.info("broker started", extra={"node": self.node_id, "address": self.address})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._tasks.stop()
        for peer in self._peers.values():
            await peer.close()
        await asyncio.gather(*(p.stop() for p in self.partitions.values()))
        await self.backups.close()

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, self.handle)
        except asyncio.CancelledError:
            # Shutting down. This task is the stream server's own and nobody awaits it; CPython
            # 3.11's done-callback calls task.exception() on it, which logs a cancelled task as
            # an unhandled error. Ending normally is the same outcome without the noise.
            return

    async def handle(self, message: Message) -> Message | None:
        if isinstance(message, ExecuteCommandRequest):
            partition = self._partition(message.partition_id)
            response = await partition.submit(
                message.value_type, message.intent, message.key, message.value
            )
            return ExecuteCommandResponse(
                partition_id=message.partition_id,
                key=response.key,
                value_type=response.value_type,
                intent=response.intent,
                value=response.value,
                rejection_type=response.rejection_type,
                rejection_reason=response.rejection_reason,
            )
        if isinstance(message, InterPartitionCommandSent):
            partition_ = self.partitions.get(message.receiver_partition_id)
            if partition_ is not None:
                partition_.receive(
                    message.value_type,
                    message.intent,
                    message.key,
                    message.value,
                    message.checkpoint_id,
                )
            return None
        if isinstance(message, TopologyRequest):
            if message.node_id is not None and message.address:
                self.members[message.node_id] = message.address
            return self.topology()
        if isinstance(message, QueryRequest) and message.query in AWAIT_QUERIES:
            partition = self._partition(message.partition_id)
            return QueryResponse(
                await answer_await(
                    message.query, message.arguments, partition.state, partition.waiters
                )
            )
        if isinstance(message, QueryRequest):
            return QueryResponse(self._query(message))
        if isinstance(message, TakeBackupRequest):
            return await self._take_backup(message)
        if isinstance(message, BackupStatusRequest):
            self._partition(message.partition_id)
            status = await self.backups.status(message.partition_id, message.backup_id)
            return BackupStatusResponse(status)
        if isinstance(message, ListBackupsRequest):
            self._partition(message.partition_id)
            return ListBackupsResponse(
                await self.backups.list_backups(message.partition_id, message.prefix)
            )
        if isinstance(message, DeleteBackupRequest):
            self._partition(message.partition_id)
            await self.backups.delete(message.partition_id, message.backup_id)
            return DeleteBackupResponse()
        raise UnsupportedMessage(f"brokers do not handle {type(message).__name__}")

    async def _take_backup(self, request: TakeBackupRequest) -> TakeBackupResponse:
        partition = self._partition(request.partition_id)
        response = await partition.submit(
            ValueType.CHECKPOINT,
            "CREATE",
            request.backup_id,
            {"checkpointId": request.backup_id},
        )
        # Checkpoints advance even without a store (Zeebe); only the answer is an error then.
        if self.backups.store is None:
            raise BackupNotConfigured()
        return TakeBackupResponse(
            created=response.intent == "CREATED", checkpoint_id=response.value["checkpointId"]
        )

    def _partition(self, partition_id: int) -> Partition:
        partition = self.partitions.get(partition_id)
        if partition is None:
            raise PartitionLeaderMismatch(
                f"Broker {self.node_id} is not the leader of partition {partition_id}"
            )
        return partition

    def _query(self, query: QueryRequest) -> Any:
        if query.query in ("search-process-instances", "search-incidents"):
            args = query.arguments
            engine = self._partition(query.partition_id).engine
            summaries = (
                engine.instance_summaries()
                if query.query == "search-process-instances"
                else engine.incident_summaries()
            )
            total, items = search(
                summaries,
                args["conditions"],
                args["sort"],
                args["limit"],
                args.get("after"),
                args.get("before"),
            )
            return {"total": total, "items": items}
        if query.query == "incidents":
            # Open incidents, optionally of one instance (operators and tests find keys here).
            instance_key = query.arguments.get("processInstanceKey")
            incidents = self._partition(query.partition_id).state.incidents
            return [
                {"incidentKey": key, **incident}
                for key, incident in incidents.items()
                if instance_key is None or incident["processInstanceKey"] == instance_key
            ]
        if query.query == "parked-requests":
            return {str(p): len(partition.waiters) for p, partition in self.partitions.items()}
        if query.query == "partitions":
            return {
                str(p): {**partition.status(), "backupsRunning": self.backups.running(p)}
                for p, partition in self.partitions.items()
            }
        raise InvalidArgument(f"unknown query {query.query!r}")

    def topology(self) -> TopologyResponse:
        return TopologyResponse(
            node_id=self.node_id,
            cluster_size=self.config.cluster_size,
            partition_count=self.config.partition_count,
            replication_factor=self.config.replication_factor,
            members=dict(self.members),
            partitions={
                p: ("LEADER" if partition.ready else "INACTIVE")
                for p, partition in self.partitions.items()
            },
            version=VERSION,
        )

    # -- talking to other brokers -------------------------------------------------------------

    def _send(self, send: Send, checkpoint_id: int) -> None:
        """Deliver an inter-partition command; losing it is fine (the sender retries)."""
        target = send.receiver_partition_id
        local = self.partitions.get(target)
        if local is not None:
            local.receive(send.value_type, send.intent, send.key, send.value, checkpoint_id)
            return
        message = InterPartitionCommandSent(
            receiver_partition_id=target,
            checkpoint_id=checkpoint_id,
            value_type=send.value_type,
            intent=send.intent,
            key=send.key,
            value=send.value,
        )
        node = broker_of_partition(PartitionId(target), self.config.cluster_size)
        peer = self._peers.get(node)
        if peer is not None and not peer.closed:
            peer.notify(message)
            return
        # Not connected (yet): hold the command while connecting rather than dropping it, so
        # the first commands after a start do not wait for a retry.
        waiting = self._waiting.setdefault(node, [])
        if len(waiting) < PEER_WAITING_MAX:
            waiting.append(message)
        self._connect_later(node)

    def _connect_later(self, node: int) -> None:
        address = self.members.get(node)
        if address is None or node in self._connecting:
            return
        self._connecting.add(node)

        async def connect() -> None:
            try:
                peer = await Connection.open(address)
                self._peers[node] = peer
                for message in self._waiting.pop(node, []):
                    peer.notify(message)
            except BrokerUnavailable as exc:
                self._waiting.pop(node, None)
                log.debug("peer %s unreachable: %s", node, exc)
            finally:
                self._connecting.discard(node)

        self._tasks.spawn(connect())

    async def _gossip(self) -> None:
        while True:
            targets = set(self.config.contact_points) | {
                a for n, a in self.members.items() if n != self.config.node_id
            }
            await asyncio.gather(*(self._exchange(a) for a in targets))
            await asyncio.sleep(GOSSIP_INTERVAL_S)

    async def _exchange(self, address: str) -> None:
        try:
            connection = await Connection.open(address, PEER_REQUEST_TIMEOUT_S)
        except BrokerUnavailable:
            return
        try:
            answer = await connection.request(
                TopologyRequest(self.config.node_id, self.address), PEER_REQUEST_TIMEOUT_S
            )
            if isinstance(answer, TopologyResponse):
                for node, member_address in answer.members.items():
                    if node != self.config.node_id:
                        if self.members.get(node) != member_address:
                            old = self._peers.pop(node, None)
                            if old is not None:
                                await old.close()
                        self.members[node] = member_address
        except ZeebeSimError as exc:
            log.debug("gossip with %s failed: %s", address, exc)
        finally:
            await connection.close()
