"""An in-process cluster of engines with a network the test controls: no sockets, no clock.

Theory of operation
-------------------
Each simulated partition is an :class:`Engine` over an in-memory log (a list of records).
Commands are processed at once; inter-partition commands go into ``network``, a list the test
delivers, drops, duplicates or reorders as it likes. ``fire_retries`` plays the part of the
retry timers: it re-sends everything still unacknowledged (derived from state, as a restarted
partition does). Checkpoint propagation follows REFERENCE.md §3 exactly as ``broker/partition.py``
does, and ``backup``/``restore`` cut each log at its checkpoint the way a real backup and
restore do, so scenarios can show what a consistent cut is and what breaks without
propagation.
"""

from __future__ import annotations

from typing import Any

import attrs

from broker.engine.processor import Engine, ProcessingResult, Send
from broker.engine.state import State
from zeebe_sim.ground.records import Record, RecordType, ValueType


@attrs.frozen
class InFlight:
    """An inter-partition command on the simulated network."""

    send: Send
    checkpoint_id: int


class SimPartition:
    def __init__(self, partition_id: int, partition_count: int) -> None:
        self.partition_id = partition_id
        self.records: list[Record] = []
        self.engine = Engine(State(partition_id), partition_count)

    @property
    def state(self) -> State:
        return self.engine.state

    def write_command(
        self, value_type: str, intent: str, key: int, value: dict[str, Any], now_ms: int
    ) -> ProcessingResult:
        command = Record(
            position=len(self.records) + 1,
            source_position=-1,
            key=key,
            timestamp_ms=now_ms,
            record_type=RecordType.COMMAND,
            value_type=value_type,
            intent=intent,
            value=value,
        )
        self.records.append(command)
        return self.process_written(command)

    def process_written(self, command: Record) -> ProcessingResult:
        result = self.engine.process(command, len(self.records) + 1)
        self.records.extend(result.records)
        return result


class SimulatedCluster:
    def __init__(self, partition_count: int, *, checkpoint_propagation: bool = True) -> None:
        self.partition_count = partition_count
        self.checkpoint_propagation = checkpoint_propagation
        self.partitions = {
            p: SimPartition(p, partition_count) for p in range(1, partition_count + 1)
        }
        self.network: list[InFlight] = []
        self.now_ms = 1_000_000

    # -- driving ------------------------------------------------------------------------------

    def command(
        self, partition_id: int, value_type: str, intent: str, key: int = -1, **value: Any
    ) -> ProcessingResult:
        """A client command: written, processed, its sends put on the network."""
        result = self.partitions[partition_id].write_command(
            value_type, intent, key, value, self.now_ms
        )
        self._emit(partition_id, result)
        return result

    def _emit(self, partition_id: int, result: ProcessingResult) -> None:
        checkpoint_id = (
            self.partitions[partition_id].state.checkpoint_id if self.checkpoint_propagation else -1
        )
        self.network.extend(InFlight(send, checkpoint_id) for send in result.sends)

    def deliver(self, index: int = 0) -> ProcessingResult:
        """Deliver the ``index``-th command on the network to its receiver."""
        flight = self.network.pop(index)
        send = flight.send
        receiver = send.receiver_partition_id
        partition = self.partitions[receiver]
        if self.checkpoint_propagation and partition.engine.checkpoint_first(flight.checkpoint_id):
            self._emit(
                receiver,
                partition.write_command(
                    ValueType.CHECKPOINT,
                    "CREATE",
                    flight.checkpoint_id,
                    {"checkpointId": flight.checkpoint_id},
                    self.now_ms,
                ),
            )
        result = partition.write_command(
            send.value_type, send.intent, send.key, send.value, self.now_ms
        )
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
        """Every partition re-sends what is still unacknowledged (its retry timers fire)."""
        for partition in self.partitions.values():
            checkpoint_id = partition.state.checkpoint_id if self.checkpoint_propagation else -1
            self.network.extend(
                InFlight(send, checkpoint_id) for send in partition.engine.pending_sends()
            )

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
