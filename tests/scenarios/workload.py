"""Workload steps shared by the in-process and the multi-process tests: both kinds of cluster
expose the same :class:`~zeebe_sim.harness.ClusterApi` as ``cluster.api``, so a scenario is
written once, tried in process first and then proven on real processes."""

from __future__ import annotations

from typing import Protocol

from tests.conftest import DEMO_BPMN
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.harness import ClusterApi, eventually


class Cluster(Protocol):
    @property
    def api(self) -> ClusterApi: ...


async def complete_all(cluster: Cluster, job_type: str) -> list[str]:
    """Activate and complete every activatable job of a type; the completed job keys."""
    done = []
    while jobs := await cluster.api.activate_jobs(job_type):
        for job in jobs:
            await cluster.api.complete_job(job["jobKey"], {"done": job_type})
            done.append(job["jobKey"])
    return done


async def instance_states(cluster: Cluster, keys: list[int]) -> list[str]:
    return [(await cluster.api.get_instance(k))["state"] for k in keys]


async def correlate_across_partitions(cluster: Cluster) -> tuple[list[str], list[int]]:
    """The demo process deployed, 12 instances on every partition wait for messages whose keys
    hash to other partitions; half the messages are published before their instance waits
    (buffered), half after its job is done. Returns the correlation keys and the instance keys
    once every instance has COMPLETED."""
    await cluster.api.deploy(DEMO_BPMN)
    correlation_keys = [f"order-{i}" for i in range(12)]
    instances = []
    for i, key in enumerate(correlation_keys):
        if i % 2 == 0:
            await cluster.api.publish("demo-message", key, variables={"early": True})
        instances.append(await cluster.api.create_instance("demo-process", {"correlationKey": key}))
    crossing = [
        k
        for k, c in zip(instances, correlation_keys, strict=True)
        if partition_of_key(k) != subscription_partition_id(c, 3)
    ]
    assert len(crossing) >= 6 and {partition_of_key(k) for k in instances} == {1, 2, 3}
    assert len(await complete_all(cluster, "demo-task")) == 12
    for i, key in enumerate(correlation_keys):
        if i % 2 == 1:
            await cluster.api.publish("demo-message", key, variables={"late": True})

    async def done() -> bool:
        return all(s == "COMPLETED" for s in await instance_states(cluster, instances))

    await eventually(done, timeout_s=20, interval_s=0.01)
    return correlation_keys, instances
