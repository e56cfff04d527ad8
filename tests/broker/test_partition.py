"""One partition in process, on real files: recovery from snapshot + log gives the same state,
derived indexes included, and processing goes on exactly where it stopped."""

from __future__ import annotations

from pathlib import Path

from broker.engine.processor import Send
from broker.partition import Partition, PartitionConfig
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import eventually


class LocalPartition:
    """A single-partition cluster: every inter-partition command goes to the partition itself."""

    def __init__(self, directory: Path) -> None:
        self.partition = Partition(
            1, 1, directory, PartitionConfig(snapshot_period_s=3600), self._deliver
        )

    def _deliver(self, send: Send, checkpoint_id: int) -> None:
        self.partition.receive(send.value_type, send.intent, send.key, send.value, checkpoint_id)

    async def command(self, value_type: str, intent: str, key: int = -1, **value: object) -> dict:
        response = await self.partition.submit(value_type, intent, key, dict(value))
        assert response.rejection_type is None, response
        return {"key": response.key, **response.value}


async def test_restart_from_snapshot_and_log_restores_state_and_indexes(tmp_path: Path) -> None:
    """Snapshot in the middle, more processing after it, a restart: the recovered state equals
    the state before the restart, and buffered messages and open subscriptions still correlate."""
    node = LocalPartition(tmp_path)
    await node.partition.start()
    resource = {"resourceName": "p.bpmn", "resource": process_xml("p", job_type=None)}
    await node.command(ValueType.DEPLOYMENT, "CREATE", resources=[resource])
    waiting = await node.command(
        ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p", variables={"key": "a"}
    )
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="b", timeToLive=600_000
    )
    snapshot = await node.partition.request_snapshot()
    assert snapshot is not None
    # after the snapshot: one more waiting instance, one more buffered message
    late = await node.command(
        ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p", variables={"key": "c"}
    )
    await node.command(
        ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="d", timeToLive=600_000
    )
    before = node.partition.state.copy_for_snapshot()
    indexes = (
        node.partition.state.messages_by_name_key,
        node.partition.state.subscriptions_by_name_key,
    )
    await node.partition.stop()

    node = LocalPartition(tmp_path)
    await node.partition.start()
    state = node.partition.state
    assert node.partition.snapshots.latest() == snapshot
    assert state.copy_for_snapshot() == before
    assert (state.messages_by_name_key, state.subscriptions_by_name_key) == indexes
    # Open subscriptions (from the snapshot and from the log) still correlate...
    for key in ("a", "c"):
        await node.command(ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey=key)
    # ...and buffered messages correlate to instances that start waiting now.
    for key in ("b", "d"):
        await node.command(
            ValueType.PROCESS_INSTANCE_CREATION, "CREATE", bpmnProcessId="p", variables={"key": key}
        )
    instances = node.partition.state.instances

    async def all_completed() -> bool:
        return [i["state"] for i in instances.values()].count("COMPLETED") == 4

    await eventually(all_completed, timeout_s=10, interval_s=0.01)
    assert instances[waiting["key"]]["state"] == "COMPLETED"
    assert instances[late["key"]]["state"] == "COMPLETED"
    await node.partition.stop()
