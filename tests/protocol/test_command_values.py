"""Every command value has a declared schema, and every command the engine sends fits it."""

from __future__ import annotations

from typing import Any

from broker.engine.processor import Engine
from broker.engine.state import State
from tests.scenarios.bpmn_samples import process_xml
from tests.scenarios.test_cross_partition import PARTITIONS, key_for
from zeebe_sim.ground.commands import COMMAND_VALUES
from zeebe_sim.ground.ids import BackupId, Key, PartitionId
from zeebe_sim.ground.protocol import (
    ExecuteCommandRequest,
    FrameDecoder,
    InterPartitionCommandSent,
    Message,
    encode,
)
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.simulation import SimulatedCluster


def test_every_command_the_engine_processes_has_a_schema() -> None:
    """A new engine command without a declared value would reach the engine unchecked."""
    engine = Engine(State(1), 1)
    handled = set(engine._handlers)
    assert handled <= set(COMMAND_VALUES), sorted(handled - set(COMMAND_VALUES))


def _through_the_wire(message: Message) -> Message:
    decoded = FrameDecoder().feed(encode(message, 7))
    assert decoded == [(7, message)]
    return decoded[0][1]


class _WireCluster(SimulatedCluster):
    """The in-process cluster, with every client command and every inter-partition command
    encoded and decoded (and so checked) on its way."""

    seen: set[tuple[str, str]]

    def command(
        self, partition_id: int, value_type: str, intent: str, key: int = -1, **value: Any
    ) -> Any:
        _through_the_wire(
            ExecuteCommandRequest(PartitionId(partition_id), value_type, intent, Key(key), value)
        )
        self.seen.add((value_type, intent))
        return super().command(partition_id, value_type, intent, key, **value)

    def deliver(self, index: int = 0) -> Any:
        flight = self.network[index]
        send = flight.send
        _through_the_wire(
            InterPartitionCommandSent(
                PartitionId(send.receiver_partition_id),
                BackupId(flight.checkpoint_id),
                send.value_type,
                send.intent,
                Key(send.key),
                send.value,
            )
        )
        self.seen.add((send.value_type, send.intent))
        return super().deliver(index)


def test_every_command_of_a_full_workflow_passes_its_schema_on_the_wire() -> None:
    """Deploy (distributed to every partition), create instances on every partition, complete
    their jobs, publish their messages (correlated across partitions), take a checkpoint, and
    lose and re-send everything once: every command on the way decodes, none is refused."""
    cluster = _WireCluster(PARTITIONS)
    cluster.seen = set()
    xml = process_xml("p")
    deployed = cluster.command(
        1,
        ValueType.DEPLOYMENT,
        "CREATE",
        resources=[{"resourceName": "p.bpmn", "resource": xml}],
    )
    assert deployed.response is not None and deployed.response.rejection_type is None
    cluster.settle()
    keys = [key_for(p) for p in range(1, PARTITIONS + 1)]
    for partition, correlation_key in zip(range(1, PARTITIONS + 1), reversed(keys), strict=True):
        created = cluster.command(
            partition,
            ValueType.PROCESS_INSTANCE_CREATION,
            "CREATE",
            bpmnProcessId="p",
            version=-1,
            variables={"key": correlation_key},
        )
        assert created.response is not None and created.response.rejection_type is None
    for partition in range(1, PARTITIONS + 1):
        batch = cluster.command(
            partition,
            ValueType.JOB_BATCH,
            "ACTIVATE",
            type="work",
            worker="w",
            timeout=60_000,
            maxJobsToActivate=10,
        )
        assert batch.response is not None
        for job in batch.response.value["jobs"]:
            cluster.command(partition, ValueType.JOB, "COMPLETE", job["jobKey"], variables={})
    cluster.fire_retries()  # every pending send once more: duplicates are answered too
    cluster.settle()
    cluster.command(1, ValueType.CHECKPOINT, "CREATE", 5, checkpointId=5)
    for correlation_key in keys:
        partition = subscription_partition_id(correlation_key, PARTITIONS)
        cluster.command(
            partition,
            ValueType.MESSAGE,
            "PUBLISH",
            name="ping",
            correlationKey=correlation_key,
            timeToLive=60_000,
            messageId="",
            variables={"got": correlation_key},
        )
    cluster.settle()
    completed = [
        r
        for p in cluster.partitions.values()
        for r in p.records
        if r.value_type == ValueType.PROCESS_INSTANCE
        and r.intent == "ELEMENT_COMPLETED"
        and r.value["bpmnElementType"] == "PROCESS"
    ]
    assert len(completed) == PARTITIONS  # the workflow really ran end to end
    # Every cross-partition command kind went through the codec at least once.
    assert {
        (ValueType.DEPLOYMENT, "CREATE"),
        (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGE"),
        (ValueType.MESSAGE_SUBSCRIPTION, "CREATE"),
        (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATE"),
        (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATE"),
        (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATE"),
    } <= cluster.seen
