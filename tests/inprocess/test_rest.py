"""The REST API (/v2) over the in-process cluster: the workload end to end (deployment,
instances on every partition, jobs, messages correlated across partitions exactly once) and
bad input answered 4xx with Problem Details. The multi-process tests prove the same through
real processes and kill -9 (tests/e2e/test_cluster.py, test_messages.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ORDER_BPMN
from tests.scenarios.workload import complete_all, correlate_across_partitions, instance_states
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.inprocess import InProcessCluster
from zeebe_sim.verify import check, load_data_dir

pytestmark = pytest.mark.inprocess


async def test_modeler_bpmn_instances_on_every_partition_jobs_complete(tmp_path: Path) -> None:
    """Deploy a Modeler-exported BPMN; instances round-robin over all partitions; both service
    tasks' jobs are activated and completed; variables merge; every instance completes."""
    async with InProcessCluster(tmp_path) as cluster:
        deployment = await cluster.api.deploy(ORDER_BPMN)
        definition = deployment["deployments"][0]["processDefinition"]
        assert definition["processDefinitionId"] == "order-process"
        keys = [await cluster.api.create_instance("order-process", {"order": i}) for i in range(6)]
        assert {partition_of_key(k) for k in keys} == {1, 2, 3}
        assert len(await complete_all(cluster, "reserve-stock")) == 6
        assert len(await complete_all(cluster, "ship-order")) == 6
        for key in keys:
            instance = await cluster.api.get_instance(key)
            assert instance["state"] == "COMPLETED", instance
            assert instance["processDefinitionId"] == "order-process"


async def test_messages_correlate_across_partitions_exactly_once(tmp_path: Path) -> None:
    """Instances on all partitions wait for messages whose keys hash to other partitions;
    half the messages are published before the instance waits (buffered): all complete once,
    a further message completes nothing twice, and the data directories pass verify."""
    async with InProcessCluster(tmp_path) as cluster:
        correlation_keys, instances = await correlate_across_partitions(cluster)
        await cluster.api.publish("demo-message", correlation_keys[0], ttl_ms=0)
        assert await instance_states(cluster, instances) == ["COMPLETED"] * 12
    report = check(load_data_dir(tmp_path))
    assert report.ok, report.render()


BAD_REST_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v2/process-instances", {"data": "not json"}),
    ("POST", "/v2/process-instances", {"json": []}),
    ("POST", "/v2/process-instances", {"json": {}}),
    ("POST", "/v2/process-instances", {"json": {"processDefinitionId": 5}}),
    ("POST", "/v2/process-instances", {"json": {"processDefinitionId": "nope"}}),
    ("POST", "/v2/process-instances", {"json": {"processDefinitionId": "x", "variables": [1]}}),
    ("POST", "/v2/process-instances", {"json": {"processDefinitionKey": "abc"}}),
    ("GET", "/v2/process-instances/abc", {}),
    ("GET", "/v2/process-instances/-1", {}),
    ("GET", "/v2/process-instances/99999999999999999999999", {}),
    ("GET", "/v2/process-instances/2251799813685249", {}),
    ("POST", "/v2/jobs/activation", {"json": {"type": "t"}}),
    ("POST", "/v2/jobs/activation", {"json": {"type": "t", "maxJobsToActivate": 0, "timeout": 1}}),
    (
        "POST",
        "/v2/jobs/activation",
        {"json": {"type": "t", "maxJobsToActivate": True, "timeout": 1}},
    ),
    ("POST", "/v2/jobs/123/completion", {"json": {}}),
    ("POST", "/v2/jobs/2251799813685249/completion", {"json": {"variables": "x"}}),
    ("POST", "/v2/jobs/2251799813685249/completion", {"json": {}}),
    ("POST", "/v2/messages/publication", {"json": {"correlationKey": "k"}}),
    ("POST", "/v2/messages/publication", {"json": {"name": "m", "timeToLive": -5}}),
    ("POST", "/v2/messages/publication", {"json": {"name": "m", "timeToLive": 2**63 - 1}}),
    (
        "POST",
        "/v2/jobs/activation",
        {"json": {"type": "t", "maxJobsToActivate": 1, "timeout": 2**63 - 1}},
    ),
    (
        "POST",
        "/v2/process-instances",
        {"json": {"processDefinitionId": "x", "variables": {"n": 2**64}}},
    ),
    ("POST", "/v2/deployments", {"json": {"resources": "x"}}),
    ("POST", "/v2/deployments", {"form": b"<not-bpmn/>"}),
    (
        "POST",
        "/v2/deployments",
        {"form": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"},
    ),
    ("GET", "/v2/nowhere", {}),
    ("DELETE", "/v2/topology", {}),
]


async def test_bad_rest_input_gets_4xx_problem_details_never_500(tmp_path: Path) -> None:
    """Every malformed request (bad JSON, wrong types, unknown keys and definitions, hostile
    XML, unknown routes and methods) is a 4xx with a Problem Details body."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        for method, path, kwargs in BAD_REST_REQUESTS:
            if "form" in kwargs:
                form = aiohttp.FormData()
                form.add_field("resources", kwargs["form"], filename="bad.bpmn")
                kwargs = {"data": form}
            async with cluster.api.session.request(
                method, cluster.rest_url + path, **kwargs
            ) as response:
                body = await response.json(content_type=None)
                assert 400 <= response.status < 500, (method, path, response.status, body)
                assert response.headers["Content-Type"].startswith("application/problem+json")
                assert set(body) >= {"type", "title", "status", "detail"}, body
                assert body["status"] == response.status
