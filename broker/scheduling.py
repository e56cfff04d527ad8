"""Where the checkpoint scheduler and retention run: on the lowest-id live broker.

Theory of operation
-------------------
Every broker runs :meth:`Singletons.supervise`. Each round it asks which members are live (the
broker's gossip: a member answered a topology exchange within :data:`LIVE_AFTER_S`) and, if it
is the lowest of them, runs the scheduler and retention loops (:mod:`broker.scheduler`); if a
lower member is live again, it stops them. So the jobs move when the lowest broker dies and come
back when it returns, as in Zeebe (reference backups-8.9-8.10.md A.5). A broker that just started
waits one liveness period before it decides, so that it knows its peers first.

:class:`BrokerCluster` is what the loops ask of the cluster: requests to each partition's
leader (the broker's leader guess: its own replica, the replica it follows, the newest gossip),
answered locally when this broker leads the partition, else over a connection to the leader.
A round that fails (no leader yet, a leader change) is retried by the loops' back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from broker.scheduler import SchedulerConfig, SchedulerLoop, lowest_live
from zeebe_sim.ground.backups import CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import from_code
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.protocol import (
    BackupRuntimeStateRequest,
    BackupRuntimeStateResponse,
    DeleteBackupRequest,
    ErrorResponse,
    ListBackupsRequest,
    ListBackupsResponse,
    Message,
    PartitionBackupStatus,
    TakeBackupRequest,
)
from zeebe_sim.ground.tasks import OwnedTasks
from zeebe_sim.ground.transport import Connection, NetworkBackend

log = logging.getLogger(__name__)

LIVE_AFTER_S: Final = 3.0
SUPERVISE_INTERVAL_S: Final = 0.5
REQUEST_TIMEOUT_S: Final = 10.0

Handle = Callable[[Message], Awaitable[Message | None]]


class BrokerCluster:
    """The scheduler's view of the cluster, through one broker (see the module docstring)."""

    def __init__(
        self,
        node_id: NodeId,
        partition_count: int,
        handle: Handle,
        leader_address: Callable[[PartitionId], tuple[NodeId, str] | None],
        network: NetworkBackend,
    ) -> None:
        self._node_id = node_id
        self._partition_count = partition_count
        self._handle = handle
        self._leader_address = leader_address
        self._network = network

    async def request(self, partition_id: PartitionId, message: Message) -> Message:
        """``message`` answered by the partition's leader.

        Raises:
            ZeebeSimError: no leader known, unreachable, or the leader's error.
        """
        leader = self._leader_address(partition_id)
        if leader is None:
            raise from_code("PARTITION_LEADER_MISMATCH", f"no leader of {partition_id}")
        node, address = leader
        if node == self._node_id:
            answer = await self._handle(message)
        else:
            connection = await Connection.open(address, REQUEST_TIMEOUT_S, self._network)
            try:
                answer = await connection.request(message, REQUEST_TIMEOUT_S)
            finally:
                await connection.close()
        if isinstance(answer, ErrorResponse):
            raise from_code(answer.code, answer.message)
        assert answer is not None
        return answer

    def _partitions(self) -> list[PartitionId]:
        return [PartitionId(p) for p in range(1, self._partition_count + 1)]

    async def runtime_states(self) -> list[tuple[CheckpointInfo | None, CheckpointInfo | None]]:
        answers = await asyncio.gather(
            *(self.request(p, BackupRuntimeStateRequest(p, "GET")) for p in self._partitions())
        )
        states = []
        for answer in answers:
            assert isinstance(answer, BackupRuntimeStateResponse)
            states.append((answer.checkpoint, answer.backup))
        return states

    async def checkpoint(self, checkpoint_id: int, checkpoint_type: CheckpointType) -> None:
        await asyncio.gather(
            *(
                self.request(p, TakeBackupRequest(p, BackupId(checkpoint_id), checkpoint_type))
                for p in self._partitions()
            )
        )

    async def backups(self) -> dict[PartitionId, list[PartitionBackupStatus]]:
        found = {}
        for p in self._partitions():
            answer = await self.request(p, ListBackupsRequest(p))
            assert isinstance(answer, ListBackupsResponse)
            found[p] = answer.statuses
        return found

    async def delete_backup(self, partition_id: PartitionId, backup_id: int) -> None:
        await self.request(partition_id, DeleteBackupRequest(partition_id, BackupId(backup_id)))


class Singletons:
    """Runs the scheduler and retention on this broker while it is the lowest live one."""

    def __init__(
        self,
        node_id: NodeId,
        config: SchedulerConfig,
        cluster: BrokerCluster,
        live_members: Callable[[float], Iterable[int]],
    ) -> None:
        self.node_id = node_id
        self.loop = SchedulerLoop(config, cluster)
        self._live_members = live_members
        self._tasks: OwnedTasks | None = None

    @property
    def running(self) -> bool:
        return self._tasks is not None

    async def supervise(self) -> None:
        started = time.monotonic()
        try:
            while True:
                await asyncio.sleep(SUPERVISE_INTERVAL_S)
                if time.monotonic() - started < LIVE_AFTER_S:
                    continue
                lowest = lowest_live(self.node_id, self._live_members(LIVE_AFTER_S))
                if lowest and self._tasks is None:
                    log.warning("node %s runs the checkpoint scheduler now", self.node_id)
                    self._tasks = OwnedTasks(f"backup scheduler of node {self.node_id}")
                    config = self.loop.config
                    if config.schedules_checkpoints:
                        self._tasks.supervise("checkpoint scheduler", self.loop.run_scheduler)
                    if config.retains:
                        self._tasks.supervise("backup retention", self.loop.run_retention)
                elif not lowest and self._tasks is not None:
                    log.warning("node %s hands the checkpoint scheduler over", self.node_id)
                    await self._stop()
        finally:
            await self._stop()

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            await tasks.stop()
