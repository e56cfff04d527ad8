"""An in-process cluster: the real brokers and gateway in one event loop, for tests that are
about logic rather than processes.

    async with InProcessCluster(tmp_path) as cluster:
        api = cluster.api                          # the harness's ClusterApi
        await api.deploy(Path("examples/demo-process.bpmn"))
        await cluster.kill_broker(1)               # its connections reset, its tasks cancelled
        await cluster.start_broker(1)              # same data, same address

Theory of operation
-------------------
The objects are the ones the processes run (``broker.server.Broker``, ``gateway.server.Gateway``
with its ``BrokerClient`` and aiohttp apps); only two edges are swapped. Brokers and the gateway
reach each other over a :class:`~zeebe_sim.ground.transport.MemoryNetwork` (asyncio's own
stream classes over in-memory transports: the real framing and server loop, no socket), and
every broker's backup store is an :class:`~storage.backup.memory.InMemoryBackupStore` on one
shared medium (:attr:`InProcessCluster.backups`), as brokers share a bucket. Data directories
are real directories under ``data_dir``. The gateway's HTTP apps listen on OS-chosen loopback
ports, so the harness's :class:`~zeebe_sim.harness.ClusterApi` drives both kinds of cluster
alike.

What this cluster does not prove, by design: anything about processes (flags, signals,
``kill -9`` at an arbitrary instant, fsync surviving a crash). A "kill" here stops the broker
object: its connections are reset and its tasks cancelled between two steps of the event loop.
The multi-process tests (``zeebe_sim.harness.running_cluster``) prove those shells.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from broker.partition import PartitionConfig
from broker.raft.core import RaftConfig
from broker.scheduler import SchedulerConfig
from broker.server import Broker, BrokerConfig
from gateway.client import BrokerClient
from gateway.server import Gateway, GatewayConfig
from storage.backup.memory import InMemoryBackupStore, MemoryObjects
from zeebe_sim.ground.transport import DEFAULT_FRAME_LIMITS, FrameLimits, MemoryNetwork
from zeebe_sim.harness import ClusterApi, eventually

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
# Fast timers, as the multi-process tests' FAST_BROKER_ARGS: snapshots often, quick retries.
NO_SCHEDULE = SchedulerConfig()
FAST_PARTITIONS = PartitionConfig(snapshot_period_s=2.0, retry_initial_s=0.2, retry_max_s=1.0)
# Short Raft timers (replication factor above 1), so that elections take well under a second.
FAST_RAFT = RaftConfig(election_timeout_ms=500, heartbeat_interval_ms=100)


class InProcessCluster:
    """Brokers and a gateway in this event loop; ``async with`` starts and stops them."""

    def __init__(
        self,
        data_dir: Path,
        *,
        brokers: int = 3,
        partitions: int = 3,
        backups: MemoryObjects | bool = True,
        backup_upload_delay_s: float = 0.0,
        request_timeout_s: float = 5.0,
        partition: PartitionConfig = FAST_PARTITIONS,
        frame_limits: FrameLimits = DEFAULT_FRAME_LIMITS,
        backup_schedule: SchedulerConfig = NO_SCHEDULE,
        replication_factor: int = 1,
        raft: RaftConfig = FAST_RAFT,
    ) -> None:
        """``backups``: True for a new, empty store medium, an existing medium to share it
        (e.g. with the cluster a backup was taken on), False for no store.
        ``backup_schedule``: continuous and scheduled backups, retention."""
        self.data_dir = data_dir
        self.cluster_size = brokers
        self.partition_count = partitions
        self.network = MemoryNetwork()
        # The "bucket" every broker's store writes to; None: no store (BACKUP_NOT_CONFIGURED).
        self.backups: MemoryObjects | None = (
            backups if isinstance(backups, MemoryObjects) else MemoryObjects() if backups else None
        )
        self.backup_upload_delay_s = backup_upload_delay_s
        self.request_timeout_s = request_timeout_s
        self.partition = partition
        self.frame_limits = frame_limits
        self.backup_schedule = backup_schedule
        self.replication_factor = replication_factor
        self.raft = raft
        self.brokers: dict[int, Broker] = {}
        self._addresses: dict[int, str] = {}
        self.gateway: Gateway | None = None
        self._session: aiohttp.ClientSession | None = None
        self.api: ClusterApi

    # -- addresses ----------------------------------------------------------------------------

    def broker_address(self, node: int) -> str:
        """``host:port`` of broker ``node`` on the memory network."""
        return self._addresses[node]

    @property
    def management_url(self) -> str:
        assert self.gateway is not None
        return f"http://{HOST}:{self.gateway.management_port}"

    @property
    def rest_url(self) -> str:
        assert self.gateway is not None
        return f"http://{HOST}:{self.gateway.rest_port}"

    @property
    def gateway_client(self) -> BrokerClient:
        """The gateway's broker client (its view of topology and leaders)."""
        assert self.gateway is not None
        return self.gateway.client

    def backup_store(self) -> InMemoryBackupStore:
        """A store on the cluster's shared medium (what a restore would read)."""
        assert self.backups is not None, "this cluster has no backup store"
        return InMemoryBackupStore(medium=self.backups)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> InProcessCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        for node in range(self.cluster_size):
            await self.start_broker(node)
        self.gateway = Gateway(
            GatewayConfig(
                contact_points=tuple(self._addresses[n] for n in sorted(self._addresses)),
                host=HOST,
                management_port=0,
                rest_port=0,
                request_timeout_s=self.request_timeout_s,
            ),
            self.network,
        )
        await self.gateway.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.api = ClusterApi(self._session, self.rest_url, self.management_url)
        await self.wait_ready()

    async def start_broker(self, node: int) -> Broker:
        """Start broker ``node``; a restart reuses its address, so peers find it again."""
        assert node not in self.brokers, f"broker {node} is running"
        port = int(self._addresses[node].rpartition(":")[2]) if node in self._addresses else 0
        store = None
        if self.backups is not None:
            store = InMemoryBackupStore(
                medium=self.backups, upload_delay_s=self.backup_upload_delay_s
            )
        broker = Broker(
            BrokerConfig(
                node_id=node,
                cluster_size=self.cluster_size,
                partition_count=self.partition_count,
                data_dir=self.data_dir,
                host=HOST,
                port=port,
                contact_points=(self._addresses[0],) if node != 0 else (),
                partition=self.partition,
                frame_limits=self.frame_limits,
                backup_schedule=self.backup_schedule,
                replication_factor=self.replication_factor,
                raft=self.raft,
            ),
            network=self.network,
            backup_store=store,
        )
        await broker.start()
        self.brokers[node] = broker
        self._addresses[node] = broker.address
        return broker

    async def kill_broker(self, node: int) -> None:
        """Stop broker ``node`` at once: connections reset, running work (backups included)
        cancelled where it stands. Its data directory stays for :meth:`start_broker`."""
        await self.brokers.pop(node).stop()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the gateway sees a leader for every partition."""
        client = self.gateway_client

        async def ready() -> bool:
            return client.all_partitions_have_leader

        await eventually(ready, timeout_s=timeout_s, interval_s=0.01)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.gateway is not None:
            await self.gateway.stop()
        for node in list(self.brokers):
            await self.kill_broker(node)
