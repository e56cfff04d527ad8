"""Camunda's own Python client (``camunda-orchestration-sdk``) against a real cluster's ``/v2``.

The SDK parses every answer into its generated models, which insist on every field the
Orchestration Cluster API marks required: each call below succeeding is the conformance check
(a missing field raises ``MissingRequiredFieldError``), and the assertions check the values.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from camunda_orchestration_sdk import CamundaAsyncClient
from camunda_orchestration_sdk.errors import ConflictError, NotFoundError
from camunda_orchestration_sdk.models import (
    CancelProcessInstanceRequest,
    CursorBasedForwardPagination,
    IncidentSearchQuery,
    IncidentSearchQueryFilter,
    JobActivationRequest,
    JobChangeset,
    JobCompletionRequest,
    JobFailRequest,
    JobUpdateRequest,
    MessagePublicationRequest,
    OffsetBasedPagination,
    ProcessCreationById,
    ProcessInstanceSearchQuery,
    ProcessInstanceSearchQueryFilter,
    ProcessInstanceSearchQuerySortRequest,
    ProcessInstanceSearchQuerySortRequestField,
    SetVariableRequest,
    SetVariableRequestVariables,
    SortOrderEnum,
    TakeRuntimeBackupRequest,
)
from camunda_orchestration_sdk.models.process_instance_creation_instruction_base_variables import (
    ProcessInstanceCreationInstructionBaseVariables,
)
from camunda_orchestration_sdk.models.process_instance_state_exact_match import (
    ProcessInstanceStateExactMatch,
)
from camunda_orchestration_sdk.runtime.job_worker import ConnectedJobContext, WorkerConfig

from tests.conftest import DEMO_BPMN
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.harness import RunningCluster, eventually

pytestmark = pytest.mark.slow

# `cluster` (3 brokers, 3 partitions, a gateway) comes from tests/clients/conftest.py.


@pytest_asyncio.fixture
async def sdk(cluster: RunningCluster) -> AsyncIterator[CamundaAsyncClient]:
    client = CamundaAsyncClient(
        configuration={"CAMUNDA_REST_ADDRESS": cluster.rest_url, "CAMUNDA_AUTH_STRATEGY": "NONE"}
    )
    try:
        yield client
    finally:
        await client.aclose()


async def _create(
    sdk: CamundaAsyncClient, correlation_key: str, process_id: str = "demo-process"
) -> str:
    created = await sdk.create_process_instance(
        data=ProcessCreationById(
            process_definition_id=process_id,  # type: ignore[arg-type]
            variables=ProcessInstanceCreationInstructionBaseVariables.from_dict(
                {"correlationKey": correlation_key}
            ),
        )
    )
    assert created.tags == [] and created.business_id is None
    return str(created.process_instance_key)


async def _work_one_job(
    sdk: CamundaAsyncClient, instance_key: str, job_type: str = "demo-task"
) -> None:
    """Activate jobs of ``job_type`` until the one of ``instance_key`` comes; complete them."""

    async def activate() -> bool:
        result = await sdk.activate_jobs(
            data=JobActivationRequest(
                type_=job_type, timeout=60_000, max_jobs_to_activate=10, worker="sdk-test"
            )
        )
        for job in result.jobs:
            await sdk.complete_job(
                job_key=job.job_key, data=JobCompletionRequest.from_dict({"variables": {}})
            )
        return any(str(job.process_instance_key) == instance_key for job in result.jobs)

    await eventually(activate, timeout_s=30)


async def test_topology_deploy_create_work_correlate_and_search(
    cluster: RunningCluster, sdk: CamundaAsyncClient
) -> None:
    """Through the SDK alone: the topology lists 3 brokers with 3 partitions; the demo process
    deploys; an instance is created; its job is activated and completed; a message published
    to another partition than the instance's correlates and the instance completes; the search
    finds it by key, state and process id, pages by offset and by cursor, and sorts."""
    topology = await sdk.get_topology()
    assert (topology.cluster_size, topology.partitions_count) == (3, 3)
    assert sorted(p.partition_id for b in topology.brokers for p in b.partitions) == [1, 2, 3]
    assert all(p.role.value == "leader" for b in topology.brokers for p in b.partitions)

    deployment = await sdk.deploy_resources_from_files([DEMO_BPMN])
    assert [p.process_definition_id for p in deployment.processes] == ["demo-process"]

    instance_key = await _create(sdk, "never-published")
    # An instance whose message is published to another partition than the instance's:
    # instances are spread round-robin, so a few tries with fresh correlation keys find one.
    # (A message correlates to one instance per process, so every key is used once.)
    for attempt in range(30):
        correlation_key = f"order-{attempt}"
        second = await _create(sdk, correlation_key)
        if subscription_partition_id(correlation_key, 3) != partition_of_key(int(second)):
            break
    else:
        raise AssertionError("every instance landed on its message's partition")
    await _work_one_job(sdk, second)
    published = await sdk.publish_message(
        data=MessagePublicationRequest(
            name="demo-message", correlation_key=correlation_key, time_to_live=60_000
        )
    )
    assert int(published.message_key) > 0

    async def completed() -> bool:
        instance = await sdk.get_process_instance(process_instance_key=second)  # type: ignore[arg-type]
        return instance.state.value == "COMPLETED"

    await eventually(completed, timeout_s=30)
    instance = await sdk.get_process_instance(process_instance_key=second)  # type: ignore[arg-type]
    assert instance.process_definition_name == "Demo process"
    assert instance.end_date is not None and instance.end_date >= instance.start_date
    assert instance.has_incident is False

    by_key = await sdk.search_process_instances(
        data=ProcessInstanceSearchQuery(
            filter_=ProcessInstanceSearchQueryFilter.from_dict({"processInstanceKey": second})
        )
    )
    assert [str(i.process_instance_key) for i in by_key.items] == [second]
    assert by_key.page.total_items == 1

    done = await sdk.search_process_instances(
        data=ProcessInstanceSearchQuery(
            filter_=ProcessInstanceSearchQueryFilter(
                process_definition_id="demo-process",  # type: ignore[arg-type]
                state=ProcessInstanceStateExactMatch("COMPLETED"),
            )
        )
    )
    assert [str(i.process_instance_key) for i in done.items] == [second]

    everything = await sdk.search_process_instances(
        data=ProcessInstanceSearchQuery(
            sort=[
                ProcessInstanceSearchQuerySortRequest(
                    field=ProcessInstanceSearchQuerySortRequestField.PROCESSINSTANCEKEY,
                    order=SortOrderEnum.DESC,
                )
            ],
            page=OffsetBasedPagination(from_=0, limit=100),
        )
    )
    keys = [int(i.process_instance_key) for i in everything.items]
    assert keys == sorted(keys, reverse=True)
    assert everything.page.total_items == len(keys) >= 2
    assert {instance_key, second} <= {str(k) for k in keys}

    # Cursor paging walks the same instances one at a time, in the same order.
    walked: list[int] = []
    after = None
    while True:
        page = await sdk.search_process_instances(
            data=ProcessInstanceSearchQuery(
                sort=everything_sort(),
                page=CursorBasedForwardPagination(limit=1)
                if after is None
                else CursorBasedForwardPagination(after=after, limit=1),
            )
        )
        if not page.items:
            break
        walked += [int(i.process_instance_key) for i in page.items]
        after = page.page.end_cursor
    assert walked == keys


def everything_sort() -> list[ProcessInstanceSearchQuerySortRequest]:
    return [
        ProcessInstanceSearchQuerySortRequest(
            field=ProcessInstanceSearchQuerySortRequestField.PROCESSINSTANCEKEY,
            order=SortOrderEnum.DESC,
        )
    ]


async def test_one_job_round_trip_over_rest(
    cluster: RunningCluster, sdk: CamundaAsyncClient, tmp_path: Path
) -> None:
    """Create an instance of a one-task process, activate and complete its job, see the
    instance COMPLETED, all through the SDK: the round trip a worker drives, timed (printed;
    the figure depends on the machine, so only completion is asserted)."""
    bpmn = tmp_path / "one-task.bpmn"
    bpmn.write_bytes(process_xml("one-task", job_type="one-task-job", message=None))
    await sdk.deploy_resources_from_files([bpmn])
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        key = await _create(sdk, "unused", "one-task")
        await _work_one_job(sdk, key, "one-task-job")

        async def completed(key: str = key) -> bool:
            found = await sdk.get_process_instance(process_instance_key=key)  # type: ignore[arg-type]
            return found.state.value == "COMPLETED"

        await eventually(completed, timeout_s=30, interval_s=0.002)
        rounds.append(time.perf_counter() - start)
    print(f"job round trip over REST (SDK): median {sorted(rounds)[3] * 1000:.1f} ms")


async def test_the_sdk_job_worker_completes_jobs(
    cluster: RunningCluster, sdk: CamundaAsyncClient, tmp_path: Path
) -> None:
    """The SDK's own job worker (the README's example) activates a job, runs the handler and
    completes the job with the handler's variables: the instance ends COMPLETED."""
    bpmn = tmp_path / "one-task.bpmn"
    bpmn.write_bytes(process_xml("one-task", job_type="worker-job", message=None))
    await sdk.deploy_resources_from_files([bpmn])
    handled: list[str] = []

    async def handle(job: ConnectedJobContext) -> dict[str, Any]:
        handled.append(str(job.job_key))
        return {"handledBy": "sdk-worker"}

    worker = sdk.create_job_worker(
        WorkerConfig(job_type="worker-job", job_timeout_milliseconds=30_000), handle
    )
    try:
        key = await _create(sdk, "unused", "one-task")

        async def completed() -> bool:
            found = await sdk.get_process_instance(process_instance_key=key)  # type: ignore[arg-type]
            return found.state.value == "COMPLETED"

        await eventually(completed, timeout_s=30)
    finally:
        worker.stop()
        await worker.aclose()
    assert len(handled) == 1


async def test_fail_into_an_incident_raise_retries_resolve_cancel_and_set_variables(
    cluster: RunningCluster, sdk: CamundaAsyncClient, tmp_path: Path
) -> None:
    """A job failed with no retries left raises an incident (the instance shows hasIncident,
    the incident search finds it); raising the job's retries and resolving the incident makes
    the job activatable again, and completing it completes the instance. Variables set on an
    instance reach its next job; a cancelled instance is TERMINATED."""
    bpmn = tmp_path / "one-task.bpmn"
    bpmn.write_bytes(process_xml("flaky", job_type="flaky-job", message=None))
    await sdk.deploy_resources_from_files([bpmn])
    key = await _create(sdk, "unused", "flaky")

    async def activate_one() -> Any:
        result = await sdk.activate_jobs(
            data=JobActivationRequest(
                type_="flaky-job", timeout=60_000, max_jobs_to_activate=1, request_timeout=5_000
            )
        )
        return result.jobs[0] if result.jobs else None

    job = await eventually(activate_one, timeout_s=30)
    await sdk.fail_job(job_key=job.job_key, data=JobFailRequest(retries=0, error_message="boom"))

    async def incident() -> Any:
        found = await sdk.search_incidents(
            data=IncidentSearchQuery(
                filter_=IncidentSearchQueryFilter.from_dict({"processInstanceKey": key})
            )
        )
        return found.items[0] if found.items else None

    open_incident = await eventually(incident, timeout_s=30)
    assert open_incident.error_type.value == "JOB_NO_RETRIES"
    assert open_incident.error_message == "boom"
    assert str(open_incident.job_key) == str(job.job_key)
    instance = await sdk.get_process_instance(process_instance_key=key)  # type: ignore[arg-type]
    assert instance.has_incident is True

    await sdk.create_element_instance_variables(
        element_instance_key=key,  # type: ignore[arg-type]
        data=SetVariableRequest(variables=SetVariableRequestVariables.from_dict({"fixed": 1})),
    )
    await sdk.update_job(
        job_key=job.job_key, data=JobUpdateRequest(changeset=JobChangeset(retries=1))
    )
    await sdk.resolve_incident(incident_key=open_incident.incident_key)
    again = await eventually(activate_one, timeout_s=30)
    assert str(again.job_key) == str(job.job_key) and again.retries == 1
    assert again.variables.to_dict()["fixed"] == 1
    await sdk.complete_job(job_key=again.job_key)

    async def state_of(instance_key: str, state: str) -> bool:
        found = await sdk.get_process_instance(process_instance_key=instance_key)  # type: ignore[arg-type]
        return found.state.value == state and not found.has_incident

    await eventually(lambda: state_of(key, "COMPLETED"), timeout_s=30)
    cancelled = await _create(sdk, "unused", "flaky")
    # (the SDK cannot send this request without a body: it serialises its "unset" marker)
    await sdk.cancel_process_instance(
        process_instance_key=cancelled,  # type: ignore[arg-type]
        data=CancelProcessInstanceRequest(),
    )
    await eventually(lambda: state_of(cancelled, "TERMINATED"), timeout_s=30)
    remaining = await sdk.search_incidents(data=IncidentSearchQuery())
    assert remaining.items == []


async def test_activation_long_polls_until_a_job_appears(
    cluster: RunningCluster, sdk: CamundaAsyncClient, tmp_path: Path
) -> None:
    """An activation with requestTimeout waits: it answers as soon as an instance creates a
    job, not at once with nothing; with a short requestTimeout and no job it answers empty
    after that time."""
    bpmn = tmp_path / "one-task.bpmn"
    bpmn.write_bytes(process_xml("polled", job_type="polled-job", message=None))
    await sdk.deploy_resources_from_files([bpmn])
    request = JobActivationRequest(
        type_="polled-job", timeout=60_000, max_jobs_to_activate=5, request_timeout=60_000
    )
    waiting = asyncio.create_task(sdk.activate_jobs(data=request))
    # The request is parked: nothing to activate yet.
    done, _ = await asyncio.wait([waiting], timeout=0.5)
    assert not done
    key = await _create(sdk, "unused", "polled")
    result = await asyncio.wait_for(waiting, timeout=30)
    assert [str(j.process_instance_key) for j in result.jobs] == [key]
    start = time.perf_counter()
    empty = await sdk.activate_jobs(
        data=JobActivationRequest(
            type_="polled-job", timeout=60_000, max_jobs_to_activate=5, request_timeout=300
        )
    )
    assert empty.jobs == [] and time.perf_counter() - start >= 0.3


async def test_the_sdk_takes_lists_gets_and_deletes_runtime_backups(
    cluster: RunningCluster, sdk: CamundaAsyncClient
) -> None:
    """Camunda's client against /v2/backups/runtime (8.10): take_runtime_backup answers the
    id; get_runtime_backup parses the BackupInfo (every field required, null allowed) and
    reaches COMPLETED on all three partitions; list_runtime_backups is newest first and by
    prefix; a repeated id raises ConflictError; the runtime state (and its sync) parses and
    names backup 25 confirmed on every partition; delete, then get_runtime_backup raises
    NotFoundError."""
    for backup_id in (21, 25):
        taken = await sdk.take_runtime_backup(data=TakeRuntimeBackupRequest(backup_id=backup_id))
        assert taken.backup_id == backup_id

        async def completed(backup_id: int = backup_id) -> Any:
            info = await sdk.get_runtime_backup(backup_id)
            return info if info.state.value == "COMPLETED" else None

        info = await eventually(completed, timeout_s=60)
    assert [d.partition_id for d in info.details] == [1, 2, 3]
    assert all(d.state.value == "COMPLETED" and d.broker_version for d in info.details)
    assert [b.backup_id for b in await sdk.list_runtime_backups()] == [25, 21]
    assert [b.backup_id for b in await sdk.list_runtime_backups(prefix="2*")] == [25, 21]
    assert await sdk.list_runtime_backups(prefix="3*") == []
    with pytest.raises(ConflictError):
        await sdk.take_runtime_backup(data=TakeRuntimeBackupRequest(backup_id=25))

    async def confirmed() -> Any:
        state = await sdk.get_runtime_backup_state()
        return state if len(state.backup_states) == 3 else None

    state = await eventually(confirmed, timeout_s=30)
    assert [c.partition_id for c in state.checkpoint_states] == [1, 2, 3]
    assert {(b.checkpoint_id, b.checkpoint_type.value) for b in state.backup_states} == {
        (25, "MANUAL_BACKUP")
    }
    synced = await sdk.sync_runtime_backup_state()
    assert [b.checkpoint_id for b in synced.backup_states] == [25, 25, 25]
    await sdk.delete_runtime_backup(21)
    with pytest.raises(NotFoundError):
        await sdk.get_runtime_backup(21)
    assert [b.backup_id for b in await sdk.list_runtime_backups()] == [25]
