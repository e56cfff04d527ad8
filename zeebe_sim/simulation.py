"""An in-process cluster of engines with a network the test controls: no sockets, no clock.

Theory of operation
-------------------
Each simulated partition is an :class:`Engine` over an in-memory log (a list of records).
Commands are processed at once; inter-partition commands go into ``network``, a list the test
delivers, drops, duplicates or reorders as it likes. ``fire_retries`` plays the part of the
retry timers: it re-sends everything still unacknowledged (derived from state, as a restarted
partition does). Each partition is driven by the same pure core as a broker's partition
(``broker/core.py``): checkpoint first on receive, the checkpoint id on every send and the retry
schedule are one implementation, not a copy. ``backup``/``restore`` cut each log at its
checkpoint the way a real backup and restore do, so scenarios can show what a consistent cut is
and what breaks without propagation.
"""

from __future__ import annotations

from typing import Any

from broker.core import Command, Outgoing, PartitionConfig, PartitionCore
from broker.engine.processor import Engine, ProcessingResult
from broker.engine.state import State
from zeebe_sim.ground.records import Record, ValueType


class SimPartition:
    def __init__(self, partition_id: int, partition_count: int, config: PartitionConfig) -> None:
        self.partition_id = partition_id
        self.records: list[Record] = []
        self.engine = Engine(State(partition_id), partition_count)
        self.core = PartitionCore(self.engine, config)

    @property
    def state(self) -> State:
        return self.engine.state

    def write_command(self, command: Command, now_ms: int) -> ProcessingResult:
        prepared = self.core.prepare(command, len(self.records) + 1, now_ms)
        if prepared.rejected is not None:
            return prepared.rejected
        self.records.append(prepared.record)
        return self.process_written(prepared.record)

    def process_written(self, command: Record) -> ProcessingResult:
        result = self.engine.process(command, len(self.records) + 1)
        self.records.extend(result.records)
        return result


class SimulatedCluster:
    def __init__(self, partition_count: int, *, checkpoint_propagation: bool = True) -> None:
        self.partition_count = partition_count
        self.checkpoint_propagation = checkpoint_propagation
        config = PartitionConfig(checkpoint_propagation=checkpoint_propagation)
        self.partitions = {
            p: SimPartition(p, partition_count, config) for p in range(1, partition_count + 1)
        }
        self.network: list[Outgoing] = []  # inter-partition commands in flight
        self.now_ms = 1_000_000

    # -- driving ------------------------------------------------------------------------------

    def command(
        self, partition_id: int, value_type: str, intent: str, key: int = -1, **value: Any
    ) -> ProcessingResult:
        """A client command: written, processed, its sends put on the network."""
        command = Command(value_type, intent, key, value)
        result = self.partitions[partition_id].write_command(command, self.now_ms)
        self._emit(partition_id, result)
        return result

    def _emit(self, partition_id: int, result: ProcessingResult) -> None:
        self.network.extend(self.partitions[partition_id].core.outgoing(result, self.now_ms))

    def deliver(self, index: int = 0) -> ProcessingResult:
        """Deliver the ``index``-th command on the network to its receiver."""
        flight = self.network.pop(index)
        send = flight.send
        receiver = send.receiver_partition_id
        partition = self.partitions[receiver]
        command = Command(send.value_type, send.intent, send.key, send.value, flight.checkpoint_id)
        checkpoint = partition.core.checkpoint_before(command)
        if checkpoint is not None:
            self._emit(receiver, partition.write_command(checkpoint, self.now_ms))
        result = partition.write_command(command, self.now_ms)
        self._emit(receiver, result)
        return result

    def deliver_all(self, max_steps: int = 10_000) -> None:
        """Deliver in order until the network is quiet."""
        for _ in range(max_steps):
            if not self.network:
                return
            self.deliver(0)
        raise AssertionError(f"network not quiet after {max_steps} deliveries")

    def fire_retries(self) -> None:
        """Every partition re-sends what is still unacknowledged (its retry timers fire), as
        derived from state (the schedule of a partition that just started: all due now)."""
        for partition in self.partitions.values():
            partition.core.reset_retries(self.now_ms)
            self.network.extend(partition.core.due_retries(self.now_ms))

    def settle(self, rounds: int = 20) -> None:
        """Deliver everything and fire retries until nothing is pending."""
        for _ in range(rounds):
            self.deliver_all()
            self.fire_retries()
            if not self.network:
                return
        raise AssertionError("cluster did not settle")

    # -- backup and restore -------------------------------------------------------------------

    def take_backup(self, checkpoint_id: int) -> dict[int, list[Record]]:
        """CHECKPOINT CREATE on every partition, as the gateway's TAKE_BACKUP fan-out does; the
        backup of each partition is its log up to (and including) its checkpoint command."""
        for partition_id in self.partitions:
            self.command(
                partition_id,
                ValueType.CHECKPOINT,
                "CREATE",
                checkpoint_id,
                checkpointId=checkpoint_id,
            )
        return self.backup_logs(checkpoint_id)

    def backup_logs(self, checkpoint_id: int) -> dict[int, list[Record]]:
        """Each partition's log cut right after its CHECKPOINT CREATE(checkpoint_id) command
        (what restore keeps)."""
        cut: dict[int, list[Record]] = {}
        for partition_id, partition in self.partitions.items():
            position = partition.state.checkpoint_position
            assert partition.state.checkpoint_id == checkpoint_id, (
                f"partition {partition_id} is at checkpoint {partition.state.checkpoint_id}"
            )
            cut[partition_id] = [r for r in partition.records if r.position <= position]
        return cut

    @classmethod
    def restore(
        cls, logs: dict[int, list[Record]], *, checkpoint_propagation: bool = True
    ) -> SimulatedCluster:
        """A cluster rebuilt from restored logs: replay, then process the trailing commands."""
        cluster = cls(len(logs), checkpoint_propagation=checkpoint_propagation)
        for partition_id, records in logs.items():
            partition = cluster.partitions[partition_id]
            partition.records = list(records)
            _, unprocessed = partition.engine.replay(records, 0, 0)
            for command in unprocessed:
                cluster._emit(partition_id, partition.process_written(command))
        cluster.fire_retries()
        return cluster
