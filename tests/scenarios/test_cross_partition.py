"""Cross-partition engine scenarios on an in-process cluster whose network the test controls.

No sockets, no clock, no sleeps: commands are delivered, dropped, duplicated and reordered by
hand, and every scenario must end in the same state as an undisturbed run.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.records import RecordType, ValueType
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.simulation import SimulatedCluster
from zeebe_sim.verify import PartitionData, check

PARTITIONS = 3


def deploy(cluster: SimulatedCluster, process_id: str = "p", **kwargs: Any) -> int:
    result = cluster.command(
        1,
        ValueType.DEPLOYMENT,
        "CREATE",
        resources=[
            {"resourceName": f"{process_id}.bpmn", "resource": process_xml(process_id, **kwargs)}
        ],
    )
    assert result.response is not None and result.response.rejection_type is None, result.response
    return int(result.response.key)


def key_for(partition: int, exclude: int | None = None) -> str:
    """A correlation key whose message partition is ``partition``."""
    for i in range(10_000):
        candidate = f"key-{i}"
        if subscription_partition_id(candidate, PARTITIONS) == partition:
            return candidate
    raise AssertionError("no key found")


def create(cluster: SimulatedCluster, partition: int, correlation_key: str) -> int:
    result = cluster.command(
        partition,
        ValueType.PROCESS_INSTANCE_CREATION,
        "CREATE",
        bpmnProcessId="p",
        version=-1,
        variables={"key": correlation_key},
    )
    assert result.response is not None and result.response.rejection_type is None, result.response
    return int(result.response.key)


def complete_jobs(cluster: SimulatedCluster) -> int:
    done = 0
    for partition in cluster.partitions:
        result = cluster.command(
            partition,
            ValueType.JOB_BATCH,
            "ACTIVATE",
            type="work",
            worker="w",
            timeout=60_000,
            maxJobsToActivate=100,
        )
        assert result.response is not None
        for job in result.response.value["jobs"]:
            cluster.command(
                partition, ValueType.JOB, "COMPLETE", job["jobKey"], variables={"done": True}
            )
            done += 1
    return done


def publish(
    cluster: SimulatedCluster, correlation_key: str, ttl: int = 60_000, **extra: Any
) -> Any:
    partition = subscription_partition_id(correlation_key, PARTITIONS)
    return cluster.command(
        partition,
        ValueType.MESSAGE,
        "PUBLISH",
        name="ping",
        correlationKey=correlation_key,
        timeToLive=ttl,
        variables={"got": correlation_key},
        **extra,
    )


def completions(cluster: SimulatedCluster) -> dict[int, int]:
    """processInstanceKey -> how many times the process instance completed."""
    counts: dict[int, int] = {}
    for partition in cluster.partitions.values():
        for record in partition.records:
            if (
                record.record_type == RecordType.EVENT
                and (record.value_type, record.intent)
                == (ValueType.PROCESS_INSTANCE, "ELEMENT_COMPLETED")
                and record.value["bpmnElementType"] == "PROCESS"
            ):
                counts[record.key] = counts.get(record.key, 0) + 1
    return counts


def verify(cluster_or_logs: SimulatedCluster | dict[int, list[Any]]) -> Any:
    logs = (
        {p: part.records for p, part in cluster_or_logs.partitions.items()}
        if isinstance(cluster_or_logs, SimulatedCluster)
        else cluster_or_logs
    )
    return check([PartitionData(p, records) for p, records in logs.items()])


def test_deployment_is_distributed_to_every_partition_and_acknowledged() -> None:
    """Partition 1 sends the deployment to the others, they acknowledge, distribution finishes."""
    cluster = SimulatedCluster(PARTITIONS)
    key = deploy(cluster)
    assert len(cluster.network) == PARTITIONS - 1
    assert cluster.partitions[1].state.distributions[key] == (2, 3)
    cluster.deliver_all()
    assert key not in cluster.partitions[1].state.distributions
    for partition in cluster.partitions.values():
        assert partition.state.latest_process["p"]
    assert verify(cluster).ok


def test_lost_and_duplicated_distribution_is_retried_and_applied_once() -> None:
    """A dropped distribution is re-sent by the retry; duplicates create nothing twice."""
    cluster = SimulatedCluster(PARTITIONS)
    key = deploy(cluster)
    cluster.network.clear()  # every distribution lost
    cluster.fire_retries()
    cluster.network += list(cluster.network)  # and then each delivered twice
    cluster.settle()
    assert key not in cluster.partitions[1].state.distributions
    created = [
        r
        for r in cluster.partitions[2].records
        if (r.value_type, r.intent, r.record_type)
        == (ValueType.PROCESS, "CREATED", RecordType.EVENT)
    ]
    assert len(created) == 1


def test_instance_on_one_partition_correlates_a_message_on_another() -> None:
    """Instance on partition 2 waits for a message whose key hashes to partition 3."""
    cluster = SimulatedCluster(PARTITIONS)
    deploy(cluster)
    cluster.deliver_all()
    correlation_key = key_for(3)
    instance = create(cluster, 2, correlation_key)
    assert complete_jobs(cluster) == 1
    cluster.deliver_all()  # subscription opened on partition 3 and acknowledged
    publish(cluster, correlation_key)
    cluster.deliver_all()
    state = cluster.partitions[2].state.instances[instance]
    assert state["state"] == "COMPLETED"
    assert state["variables"] == {"key": correlation_key, "done": True, "got": correlation_key}
    assert completions(cluster) == {instance: 1}
    assert not cluster.partitions[3].state.message_subscriptions
    assert verify(cluster).ok


def test_message_published_before_the_instance_waits_is_buffered_and_correlates() -> None:
    """A message with a time to live correlates to a subscription opened later."""
    cluster = SimulatedCluster(PARTITIONS)
    deploy(cluster)
    cluster.deliver_all()
    correlation_key = key_for(1)
    publish(cluster, correlation_key)
    instance = create(cluster, 3, correlation_key)
    complete_jobs(cluster)
    cluster.settle()
    assert completions(cluster) == {instance: 1}


def test_message_without_time_to_live_is_not_buffered() -> None:
    """timeToLive 0: the message only correlates to what waits right now (Zeebe)."""
    cluster = SimulatedCluster(PARTITIONS)
    deploy(cluster)
    cluster.deliver_all()
    correlation_key = key_for(2)
    publish(cluster, correlation_key, ttl=0)
    instance = create(cluster, 1, correlation_key)
    complete_jobs(cluster)
    cluster.settle()
    assert completions(cluster) == {}
    assert cluster.partitions[1].state.instances[instance]["state"] == "ACTIVE"


def test_duplicate_message_id_is_rejected_while_buffered() -> None:
    """A second message with the same name, correlation key and messageId is refused."""
    cluster = SimulatedCluster(PARTITIONS)
    first = publish(cluster, "k", messageId="m-1")
    second = publish(cluster, "k", messageId="m-1")
    assert first.response.rejection_type is None
    assert second.response.rejection_type == "ALREADY_EXISTS"


def test_a_message_correlates_once_per_process_even_with_two_waiting_instances() -> None:
    """Zeebe correlates one message to at most one instance of each process."""
    cluster = SimulatedCluster(PARTITIONS)
    deploy(cluster, job_type=None)
    cluster.deliver_all()
    correlation_key = key_for(2)
    first = create(cluster, 1, correlation_key)
    second = create(cluster, 3, correlation_key)
    cluster.settle()
    publish(cluster, correlation_key)
    cluster.settle()
    assert sum(completions(cluster).values()) == 1
    publish(cluster, correlation_key)
    cluster.settle()
    assert completions(cluster) == {first: 1, second: 1}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), drop=st.floats(0, 0.5), duplicate=st.floats(0, 0.5))
def test_any_loss_duplication_and_reordering_ends_in_the_same_state(
    seed: int, drop: float, duplicate: float
) -> None:
    """Whatever the network does, retries finish the work and every instance completes once."""
    rng = random.Random(seed)
    cluster = SimulatedCluster(PARTITIONS)
    deploy(cluster)
    # one correlation key per instance (a message correlates once per process), spread over
    # every message partition
    keys = [f"order-{i}" for i in range(6)]
    instances: list[int] = []
    for _ in range(60):
        choice = rng.random()
        if choice < 0.15 and len(instances) < 6:
            # Only partitions that have the process can start an instance.
            ready = [
                p for p, part in cluster.partitions.items() if "p" in part.state.latest_process
            ]
            instances.append(create(cluster, rng.choice(ready), keys[len(instances)]))
        elif choice < 0.25:
            complete_jobs(cluster)
        elif choice < 0.3 and instances:
            publish(cluster, keys[rng.randrange(len(instances))])
        elif cluster.network:
            index = rng.randrange(len(cluster.network))  # reordering
            if rng.random() < drop:
                cluster.network.pop(index)
            elif rng.random() < duplicate:
                cluster.network.append(cluster.network[index])
                cluster.deliver(index)
            else:
                cluster.deliver(index)
        else:
            cluster.fire_retries()
    # Then the network heals: everything pending is delivered.
    cluster.settle()
    complete_jobs(cluster)
    cluster.settle()
    for i, instance in enumerate(instances):
        if cluster.partitions[instance >> 51].state.instances[instance]["state"] == "ACTIVE":
            publish(cluster, keys[i])
    cluster.settle()
    assert completions(cluster) == {i: 1 for i in instances}
    assert verify(cluster).ok


def _checkpoint_races_a_correlation(
    propagation: bool,
) -> tuple[SimulatedCluster, dict[int, list[Any]]]:
    """Message partition B checkpoints, then correlates a message to an instance on A; the
    CORRELATE reaches A before A's own checkpoint command from the gateway."""
    cluster = SimulatedCluster(PARTITIONS, checkpoint_propagation=propagation)
    deploy(cluster, job_type=None)
    cluster.settle()
    a, b = 1, 2
    correlation_key = key_for(b)
    instance = create(cluster, a, correlation_key)
    cluster.settle()
    for partition in (b, 3):  # the gateway's CHECKPOINT CREATE reaches B (and 3) first ...
        cluster.command(partition, ValueType.CHECKPOINT, "CREATE", 7, checkpointId=7)
    publish(cluster, correlation_key)  # ... after B's checkpoint: not in B's backup
    cluster.deliver_all()  # CORRELATE reaches A before A's checkpoint command
    cluster.command(a, ValueType.CHECKPOINT, "CREATE", 7, checkpointId=7)
    assert cluster.partitions[a].state.instances[instance]["state"] == "COMPLETED"
    return cluster, cluster.backup_logs(7)


def test_without_propagation_the_backup_is_not_a_consistent_cut() -> None:
    """Unsafe mode: A's backup holds the correlation, B's backup never sent it: verify says so."""
    _, backup = _checkpoint_races_a_correlation(propagation=False)
    report = verify(backup)
    assert not report.ok
    assert any(
        v.invariant == "no orphan receive" and v.partition_id == 1 for v in report.violations
    )
    assert "partition 2 has no record of sending it" in report.render()


def test_with_propagation_the_backup_is_a_consistent_cut_and_restores_cleanly() -> None:
    """A checkpoints before processing the CORRELATE (it carried B's checkpoint id), so the
    correlation is after A's cut too; the restored cluster is consistent and works on."""
    cluster, backup = _checkpoint_races_a_correlation(propagation=True)
    a_log = cluster.partitions[1].records
    checkpoint_commands = [
        r for r in a_log if r.value_type == ValueType.CHECKPOINT and r.is_command
    ]
    assert checkpoint_commands[0].position < next(
        r.position
        for r in a_log
        if r.value_type == ValueType.PROCESS_MESSAGE_SUBSCRIPTION and r.intent == "CORRELATE"
    )
    assert verify(backup).ok
    restored = SimulatedCluster.restore(backup)
    assert verify(restored).ok
    restored.settle()
    # The message was published after the cut: the restored instance still waits for it.
    instance = next(iter(restored.partitions[1].state.instances.values()))
    assert instance["state"] == "ACTIVE"
    publish(restored, key_for(2))
    restored.settle()
    assert list(completions(restored).values()) == [1]
    assert restored.partitions[1].state.checkpoint_id == 7
