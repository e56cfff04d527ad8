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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from broker.backup import BackupService
from broker.core import BackupPlan, MetadataSync
from broker.disk import DiskConfig, DiskMonitor, free_bytes_of
from broker.engine.processor import Send
from broker.faults import NO_FAULTS, faults_from_request
from broker.partition import Partition, PartitionConfig
from broker.raft.core import RaftConfig
from broker.recovery import RECOVERY_MESSAGES, Recovery, finish_interrupted_restore
from broker.replica import ReplicaConfig
from broker.scheduler import SchedulerConfig
from broker.scheduling import BrokerCluster, Singletons
from broker.waiters import AWAIT_QUERIES, answer_await
from storage.backup.api import BackupStore
from storage.backup.config import FilesystemStoreConfig, S3StoreConfig
from storage.backup.open import open_store
from zeebe_sim.ground import VERSION, layout
from zeebe_sim.ground.errors import (
    BackupNotConfigured,
    BrokerUnavailable,
    InvalidArgument,
    PartitionLeaderMismatch,
    ProtocolError,
    UnsupportedMessage,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import BackupId, Key, NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    RAFT_MESSAGES,
    BackupRuntimeStateRequest,
    BackupRuntimeStateResponse,
    BackupStatusRequest,
    BackupStatusResponse,
    DeleteBackupRequest,
    DeleteBackupResponse,
    ExecuteCommandRequest,
    ExecuteCommandResponse,
    FaultsResponse,
    InterPartitionCommandSent,
    ListBackupsRequest,
    Message,
    QueryRequest,
    QueryResponse,
    SetFaultsRequest,
    TakeBackupRequest,
    TakeBackupResponse,
    TopologyRequest,
    TopologyResponse,
    parse_member_address,
)
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import (
    replica_priorities,
    replicas_of_partition,
    replicated_partitions_of_broker,
)
from zeebe_sim.ground.search import search
from zeebe_sim.ground.tasks import OwnedTasks
from zeebe_sim.ground.transport import (
    TCP,
    Connection,
    FrameLimits,
    Listener,
    NetworkBackend,
    ServerLimits,
    serve_connection,
)

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
    raft: RaftConfig = attrs.Factory(RaftConfig)
    partition: PartitionConfig = attrs.Factory(PartitionConfig)
    # None: no backup store (backup requests answer BACKUP_NOT_CONFIGURED)
    backup_store: FilesystemStoreConfig | S3StoreConfig | None = None
    # continuous and scheduled backups, retention (broker/scheduler.py)
    backup_schedule: SchedulerConfig = attrs.Factory(SchedulerConfig)
    disk: DiskConfig = attrs.Factory(DiskConfig)
    frame_limits: FrameLimits = attrs.Factory(FrameLimits)


class Broker:
    def __init__(
        self,
        config: BrokerConfig,
        *,
        free_bytes: Callable[[Path], int] = free_bytes_of,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        network: NetworkBackend = TCP,
        backup_store: BackupStore | None = None,
    ) -> None:
        """``network`` and ``backup_store`` (instead of the configured one) are the seams of
        the in-process cluster: a memory network and a memory store."""
        self.config = config
        self.node_id = NodeId(config.node_id)
        # The free-space reader and the clock are parameters so that tests can run out of disk
        # without filling one.
        self.disk = DiskMonitor(
            config.disk, self.directory, free_bytes=free_bytes, clock_ms=clock_ms
        )
        if backup_store is None and config.backup_store is not None:
            backup_store = open_store(config.backup_store)
        self.backups = BackupService(
            backup_store,
            config.node_id,
            config.partition_count,
            partition_dir=self._partition_dir,
            on_completed=self._confirm_backup,
        )
        self._network = network
        # What its connections may hold in unfinished frames, accounted together.
        self.limits = ServerLimits(config.frame_limits)
        self.partitions: dict[PartitionId, Partition] = {}
        self.recovery = Recovery(
            self.node_id,
            self.directory,
            self.partitions,
            self.backups,
            config.partition_count,
        )
        self.members: dict[NodeId, str] = {}
        self._peers: dict[int, Connection] = {}
        self._connecting: set[int] = set()
        self._waiting: dict[int, list[Message]] = {}
        self._server: Listener | None = None
        self._tasks = OwnedTasks(f"broker {config.node_id}")
        self.address = ""
        # Faults on purpose (zeebe-sim chaos): applied where peers' messages leave and arrive.
        self.faults = NO_FAULTS
        # node -> (its last topology, when it answered): who is live, who leads what
        self.peer_topologies: dict[NodeId, tuple[TopologyResponse, float]] = {}
        self.singletons = Singletons(
            self.node_id,
            config.backup_schedule,
            BrokerCluster(
                self.node_id, config.partition_count, self.handle, self._leader_of, network
            ),
            self._live_members,
        )

    @property
    def directory(self) -> Path:
        return layout.broker_dir(self.config.data_dir, self.node_id)

    def _partition_dir(self, partition_id: PartitionId) -> Path:
        return layout.partition_dir(self.directory, partition_id)

    async def start(self) -> None:
        await self.backups.check()
        self.directory.mkdir(parents=True, exist_ok=True)
        finish_interrupted_restore(self.directory)
        # Before the first request: a broker started on a full disk refuses work from the start.
        self.disk.check()
        self._server = await self._network.listen(self.config.host, self.config.port, self._serve)
        self.address = f"{self.config.host}:{self._server.port}"
        self.members[self.node_id] = self.address
        size, rf = self.config.cluster_size, self.config.replication_factor
        for partition_id in replicated_partitions_of_broker(
            self.node_id, size, self.config.partition_count, rf
        ):
            members = replicas_of_partition(partition_id, size, rf)
            replication = None
            if len(members) > 1:
                priorities = replica_priorities(partition_id, size, rf)
                replication = ReplicaConfig(
                    self.node_id,
                    tuple(members),
                    priorities[self.node_id],
                    priorities[members[0]],
                    self.config.raft,
                )
            self.partitions[partition_id] = Partition(
                partition_id,
                self.config.partition_count,
                self._partition_dir(partition_id),
                self.config.partition,
                self._send,
                on_checkpoint=self.backups.on_backup_job,
                disk=self.disk,
                replication=replication,
                send_to_peer=self.send_to_peer,
                on_leader_change=self.backups.leader_changed,
            )
        # Before any partition can start a new backup: what was IN_PROGRESS died with us.
        # (Replicated partitions: their new leader does it, see Partition.lead.)
        await self.backups.fail_in_progress(
            [p for p, partition in self.partitions.items() if partition.replica is None]
        )
        await asyncio.gather(*(p.start() for p in self.partitions.values()))
        # Recovered: a latest checkpoint whose backup never reached the store is FAILED now.
        for partition in self.partitions.values():
            if partition.replica is not None:
                continue  # replicated: its leader reconciles (Partition.lead)
            latest = partition.engine.backup_runtime_state()[0]
            # A MARKER has no backup to reconcile (state from before checkpoint types: None).
            if latest is None or latest.checkpoint_type.takes_backup:
                self.backups.reconcile(partition.partition_id, partition.state.checkpoint_id)
        self._tasks.supervise("gossip", self._gossip)
        self._tasks.supervise("disk monitor", self.disk.run)
        schedule = self.config.backup_schedule
        if schedule.schedules_checkpoints or schedule.retains:
            self._tasks.supervise("backup scheduler placement", self.singletons.supervise)
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
            await serve_connection(reader, writer, self.handle, server=self.limits)
        except asyncio.CancelledError:
            # Shutting down. This task is the stream server's own and nobody awaits it; CPython
            # 3.11's done-callback calls task.exception() on it, which logs a cancelled task as
            # an unhandled error. Ending normally is the same outcome without the noise.
            return

    async def handle(self, message: Message) -> Message | None:
        if isinstance(message, RECOVERY_MESSAGES):
            return await self.recovery.handle(message)
        if isinstance(message, ExecuteCommandRequest):
            partition = self._partition(message.partition_id)
            response = await partition.submit(
                message.value_type, message.intent, message.key, message.value
            )
            return ExecuteCommandResponse(
                partition_id=message.partition_id,
                key=Key(response.key),
                value_type=response.value_type,
                intent=response.intent,
                value=response.value,
                rejection_type=response.rejection_type,
                rejection_reason=response.rejection_reason,
            )
        if isinstance(message, InterPartitionCommandSent):
            self.receive_from_peer(message.sender_node_id, message)
            return None
        if isinstance(message, RAFT_MESSAGES):
            self.receive_from_peer(message.sender, message)
            return None
        if isinstance(message, SetFaultsRequest):
            faults = faults_from_request(
                self.faults, self.node_id, self.config.cluster_size, message.cut, message.delay_ms
            )
            if faults != self.faults:
                log.warning("faults set on purpose: %s", faults)
                self.faults = faults
            return FaultsResponse(sorted(self.faults.cut), self.faults.delay_ms)
        if isinstance(message, TopologyRequest):
            if message.node_id is not None and message.address:
                old = self._merge_member(message.node_id, message.address, "a topology request")
                if old is not None:
                    await old.close()  # the member moved: its old connection must not leak
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
            return await self.backups.list_backups(
                message.partition_id, message.prefix, message.known_version
            )
        if isinstance(message, DeleteBackupRequest):
            await self._delete_backup(message)
            return DeleteBackupResponse()
        if isinstance(message, BackupRuntimeStateRequest):
            return await self._backup_runtime_state(message)
        raise UnsupportedMessage(f"brokers do not handle {type(message).__name__}")

    async def _take_backup(self, request: TakeBackupRequest) -> TakeBackupResponse:
        partition = self._partition(request.partition_id)
        # Refused before any checkpoint is written: a refused request consumes no id (REFERENCE
        # §1, corrected).
        if self.backups.store is None:
            raise BackupNotConfigured()
        response = await partition.submit(
            ValueType.CHECKPOINT,
            "CREATE",
            request.backup_id,
            {"checkpointId": request.backup_id, "checkpointType": request.checkpoint_type.value},
        )
        return TakeBackupResponse(
            created=response.intent == "CREATED", checkpoint_id=response.value["checkpointId"]
        )

    async def _delete_backup(self, request: DeleteBackupRequest) -> None:
        """DELETE_BACKUP through the partition's log (so that ranges stay right); answered once
        the store's copies are gone, as before."""
        partition = self._partition(request.partition_id)
        if self.backups.store is None:
            raise BackupNotConfigured()
        removed = self.backups.removal_done(request.partition_id, request.backup_id)
        try:
            await partition.submit(
                ValueType.CHECKPOINT,
                "DELETE_BACKUP",
                request.backup_id,
                {"checkpointId": request.backup_id},
            )
        except BaseException:
            removed.cancel()
            raise
        await removed

    async def _backup_runtime_state(
        self, request: BackupRuntimeStateRequest
    ) -> BackupRuntimeStateResponse:
        """The partition's backup runtime state; RESET clears it through the log, SYNC writes
        it to the store's metadata again."""
        partition = self._partition(request.partition_id)
        if request.action == "RESET":
            await partition.submit(ValueType.CHECKPOINT, "RESET_STATE", -1, {})
        elif request.action == "SYNC" and self.backups.store is None:
            raise BackupNotConfigured()
        engine = partition.engine
        checkpoint, backup, ranges = engine.backup_runtime_state()
        if request.action == "SYNC":
            await self.backups.run_metadata_job(
                MetadataSync(partition.partition_id, engine.restore_points(), ranges)
            )
        known = {c.checkpoint_id: c for c in engine.known_checkpoints()}
        return BackupRuntimeStateResponse(
            request.partition_id,
            checkpoint,
            backup,
            [
                (known[start], known[end])
                for start, end in ranges
                if start in known and end in known
            ],
        )

    def _confirm_backup(self, plan: BackupPlan) -> None:
        """A backup is in the store: the partition records it (CONFIRM_BACKUP). Lost if the
        partition cannot take it now (Zeebe logs and drops it too)."""
        partition = self.partitions.get(PartitionId(plan.partition_id))
        if partition is None:
            return
        first = plan.first_log_position
        value = {
            "checkpointId": plan.checkpoint_id,
            "checkpointPosition": plan.checkpoint_position,
            "checkpointType": plan.checkpoint_type.value,
            "firstLogPosition": first if first is not None else -1,
        }
        partition.receive(ValueType.CHECKPOINT, "CONFIRM_BACKUP", plan.checkpoint_id, value, -1)

    def _leader_of(self, partition_id: PartitionId) -> tuple[NodeId, str] | None:
        """The leader of a partition and its address, as far as this broker knows."""
        node = self._leader_guess(partition_id)[0]
        if node == self.node_id:
            return self.node_id, self.address
        address = self.members.get(node)
        return None if address is None else (node, address)

    def _live_members(self, within_s: float) -> list[int]:
        """This broker and every member that answered gossip within ``within_s``."""
        now = time.monotonic()
        live = [n for n, (_, seen) in self.peer_topologies.items() if now - seen <= within_s]
        return [self.node_id, *live]

    def _partition(self, partition_id: PartitionId) -> Partition:
        """The partition, if this broker leads it."""
        partition = self.partitions.get(partition_id)
        if partition is None:
            raise PartitionLeaderMismatch(
                f"Broker {self.node_id} is not the leader of partition {partition_id}"
            )
        if partition.replica is not None and not partition.leading:
            raise partition.replica.not_leader()
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
            statuses = {}
            for p, partition in self.partitions.items():
                health, issues = self.partition_health(p)
                statuses[str(p)] = {
                    **partition.status(),
                    "backupsRunning": self.backups.running(p),
                    "health": health,
                    "healthIssues": issues,
                }
            return statuses
        raise InvalidArgument(f"unknown query {query.query!r}")

    def topology(self) -> TopologyResponse:
        return TopologyResponse(
            node_id=self.node_id,
            cluster_size=self.config.cluster_size,
            partition_count=self.config.partition_count,
            replication_factor=self.config.replication_factor,
            members=dict(self.members),
            partitions={p: partition.role for p, partition in self.partitions.items()},
            version=VERSION,
            health={p: self.partition_health(p)[0] for p in self.partitions},
            backup_id_offset=(
                self.config.backup_schedule.offset
                if self.config.backup_schedule.generates_ids
                else None
            ),
            terms={
                p: partition.replica.term if partition.replica is not None else 1
                for p, partition in self.partitions.items()
            },
        )

    def partition_health(self, partition_id: PartitionId) -> tuple[str, list[str]]:
        """The partition's health; a failing loop of the broker's own (gossip) makes every
        partition it hosts UNHEALTHY."""
        health, issues = self.partitions[partition_id].health()
        broker_issues = [f"{name}: {reason}" for name, reason in self._tasks.failing().items()]
        if broker_issues and health == "HEALTHY":
            health = "UNHEALTHY"
        return health, issues + broker_issues

    # -- talking to other brokers -------------------------------------------------------------

    def _send(self, send: Send, checkpoint_id: int) -> None:
        """Deliver an inter-partition command; losing it is fine (the sender retries)."""
        target = PartitionId(send.receiver_partition_id)
        local = self.partitions.get(target)
        if local is not None and local.leading:
            local.receive(send.value_type, send.intent, send.key, send.value, checkpoint_id)
            return
        message = InterPartitionCommandSent(
            receiver_partition_id=target,
            checkpoint_id=BackupId(checkpoint_id),
            value_type=send.value_type,
            intent=send.intent,
            key=Key(send.key),
            value=send.value,
            sender_node_id=self.node_id,
        )
        for node in self._leader_guess(target):
            if node != self.node_id:
                self.send_to_peer(node, message)

    def _leader_guess(self, partition_id: PartitionId) -> list[NodeId]:
        """Where a partition's leader is: this broker, the leader its own replica follows,
        the newest leader gossip reports; else every replica (a follower drops what it gets,
        senders retry)."""
        local = self.partitions.get(partition_id)
        if local is not None and local.leading:
            return [self.node_id]
        if local is not None and local.replica is not None and local.replica.leader is not None:
            return [local.replica.leader]
        best: tuple[int, NodeId] | None = None
        for node, (topology, _) in self.peer_topologies.items():
            if topology.partitions.get(partition_id) == "LEADER" and node in self.members:
                term = topology.terms.get(partition_id, 0)
                if best is None or term > best[0]:
                    best = (term, node)
        if best is not None:
            return [best[1]]
        size, rf = self.config.cluster_size, self.config.replication_factor
        return replicas_of_partition(partition_id, size, rf)

    def receive_from_peer(self, node: NodeId | None, message: Message) -> None:
        """The one place where what other brokers send (inter-partition commands, Raft
        messages) is dispatched; ``node`` is the sender (None: an older sender that does not
        say)."""
        if node is not None and not self.faults.accepts_from(node):
            return
        if isinstance(message, RAFT_MESSAGES):
            replicated = self.partitions.get(message.partition_id)
            if replicated is not None and replicated.replica is not None and replicated.ready:
                replicated.replica.receive(message)
            return
        if isinstance(message, InterPartitionCommandSent):
            partition = self.partitions.get(message.receiver_partition_id)
            if partition is not None:
                partition.receive(
                    message.value_type,
                    message.intent,
                    message.key,
                    message.value,
                    message.checkpoint_id,
                )

    def send_to_peer(self, node: NodeId, message: Message) -> None:
        """The one function through which this broker sends to another (fire and forget:
        inter-partition commands are retried by their senders, Raft resends on its own)."""
        delay_ms = self.faults.send_delay_ms(node)
        if delay_ms is None:
            return
        if delay_ms:
            # An owned task per delayed message: a stopping broker cancels what is in flight.
            self._tasks.spawn(self._deliver_later(delay_ms, node, message))
            return
        self._deliver(node, message)

    async def _deliver_later(self, delay_ms: int, node: NodeId, message: Message) -> None:
        await asyncio.sleep(delay_ms / 1000)
        self._deliver(node, message)

    def _deliver(self, node: NodeId, message: Message) -> None:
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

    def _connect_later(self, node: NodeId) -> None:
        address = self.members.get(node)
        if address is None or node in self._connecting:
            return
        self._connecting.add(node)

        async def connect() -> None:
            try:
                peer = await Connection.open(address, network=self._network)
                self._peers[node] = peer
                for message in self._waiting.pop(node, []):
                    peer.notify(message)
            except BrokerUnavailable as exc:
                self._waiting.pop(node, None)
                log.debug("peer %s unreachable: %s", node, exc)
            finally:
                self._connecting.discard(node)

        self._tasks.spawn(connect())

    def _merge_member(self, node: NodeId, address: str, source: str) -> Connection | None:
        """Take a member's address from gossip, or drop it with a warning: a member entry that
        names no broker of this cluster or no usable host:port must not stop gossip (every
        broker would pass it on and then fail to reach it). Returns the connection to the
        member's old address, for the caller to close, when the address changed."""
        if not 0 <= node < self.config.cluster_size:
            log.warning("ignoring member %s from %s: not a node of this cluster", node, source)
            return None
        try:
            parse_member_address(address)
        except ProtocolError as exc:
            log.warning("ignoring member %s from %s: %s", node, source, exc.message)
            return None
        if self.members.get(node) == address:
            return None
        self.members[node] = address
        return self._peers.pop(node, None)

    async def _gossip(self) -> None:
        while True:
            targets = set(self.config.contact_points) | {
                a for n, a in self.members.items() if n != self.config.node_id
            }
            await asyncio.gather(*(self._exchange(a) for a in targets))
            await asyncio.sleep(GOSSIP_INTERVAL_S)

    async def _exchange(self, address: str) -> None:
        try:
            connection = await Connection.open(address, PEER_REQUEST_TIMEOUT_S, self._network)
        except BrokerUnavailable:
            return
        try:
            answer = await connection.request(
                TopologyRequest(self.node_id, self.address), PEER_REQUEST_TIMEOUT_S
            )
            if isinstance(answer, TopologyResponse):
                self.peer_topologies[answer.node_id] = (answer, time.monotonic())
                for node, member_address in answer.members.items():
                    if node != self.node_id:
                        old = self._merge_member(node, member_address, f"broker {address}")
                        if old is not None:
                            await old.close()
        except ZeebeSimError as exc:
            log.debug("gossip with %s failed: %s", address, exc)
        finally:
            await connection.close()
