"""pyzeebe, the Python Zeebe client, against a real zeebe-sim cluster over gRPC: a worker with a
task function, creation with result, a message crossing partitions, a failing job turned into an
incident and back, and the status codes clients rely on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyzeebe import ZeebeClient, ZeebeWorker, create_insecure_channel
from pyzeebe.proto import gateway_pb2 as pb
from pyzeebe.proto.gateway_pb2_grpc import GatewayStub

from tests.clients.bpmn import service_task_bpmn
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.ground.protocol import QueryRequest, QueryResponse
from zeebe_sim.ground.routing import broker_of_partition, subscription_partition_id
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import RunningCluster, eventually

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def running_worker(worker: ZeebeWorker) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(worker.work())
    try:
        yield
    finally:
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


async def incidents_of(cluster: RunningCluster, instance_key: int) -> list[dict[str, Any]]:
    """Open incidents of an instance, read from its partition's broker (no gRPC call lists
    incidents; an operator would look them up in Operate)."""
    partition = partition_of_key(instance_key)
    node = broker_of_partition(partition, cluster.spec.brokers)
    connection = await Connection.open(cluster.broker_address(node))
    try:
        answer = await connection.request(
            QueryRequest(partition, "incidents", {"processInstanceKey": instance_key}), 10.0
        )
    finally:
        await connection.close()
    assert isinstance(answer, QueryResponse)
    incidents: list[dict[str, Any]] = answer.result
    return incidents


async def test_worker_completes_jobs_and_create_with_result_answers_the_end_state(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """A pyzeebe worker's task function gets the instance's variables and its return value is
    merged; run_process_with_result answers with the variables once the instance completes."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    client = ZeebeClient(channel)
    worker = ZeebeWorker(channel, name="doubler")

    @worker.task(task_type="double")
    async def double(number: int) -> dict[str, Any]:
        return {"doubled": number * 2}

    topology = await client.topology()
    assert topology.cluster_size == 3 and topology.partitions_count == 3
    deployment = await client.deploy_resource(
        write(tmp_path, "double.bpmn", service_task_bpmn("double-process", "double"))
    )
    assert deployment.deployments[0].bpmn_process_id == "double-process"
    async with running_worker(worker):
        results = [
            await client.run_process_with_result(
                "double-process", {"number": n}, timeout=30_000, variables_to_fetch=["doubled"]
            )
            for n in (1, 2, 3)
        ]
    assert [r.variables for r in results] == [{"doubled": 2}, {"doubled": 4}, {"doubled": 6}]
    assert {partition_of_key(r.process_instance_key) for r in results} == {1, 2, 3}
    await channel.close()


async def test_published_message_completes_an_instance_waiting_on_another_partition(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """An instance waits for a message whose correlation key belongs to another partition; the
    message published with pyzeebe correlates across partitions and completes it."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    client = ZeebeClient(channel)
    await client.deploy_resource(
        write(tmp_path, "wait.bpmn", process_xml("waiting", job_type=None))
    )
    correlation_key = "order-7"
    message_partition = subscription_partition_id(correlation_key, 3)
    instance_key = -1
    for _ in range(3):  # creation is round-robin: one of three lands elsewhere
        created = await client.run_process("waiting", {"key": correlation_key})
        if partition_of_key(created.process_instance_key) != message_partition:
            instance_key = created.process_instance_key
            break
    assert instance_key > 0

    async def waiting() -> bool:
        return (await cluster.api.get_instance(instance_key))["state"] == "ACTIVE"

    await eventually(waiting)
    published = await client.publish_message(
        "ping", correlation_key, {"paid": True}, time_to_live_in_milliseconds=60_000
    )
    assert partition_of_key(published.key) == message_partition

    async def completed() -> bool:
        return (await cluster.api.get_instance(instance_key))["state"] == "COMPLETED"

    await eventually(completed)
    await channel.close()


async def test_failed_job_becomes_an_incident_then_retries_are_raised_and_it_is_resolved(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """The task function raises on a job with one retry: pyzeebe fails it with no retries left
    and an incident is raised. UpdateJobRetries then ResolveIncident make it activatable again,
    and the worker completes it the second time."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    client = ZeebeClient(channel)
    stub = GatewayStub(channel)
    worker = ZeebeWorker(channel, name="flaky")
    calls: list[int] = []

    @worker.task(task_type="flaky")
    async def flaky() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the printer is on fire")
        return {"fixed": True}

    await client.deploy_resource(
        write(tmp_path, "flaky.bpmn", service_task_bpmn("flaky-process", "flaky", retries=1))
    )
    async with running_worker(worker):
        instance_key = (await client.run_process("flaky-process")).process_instance_key

        async def raised() -> list[dict[str, Any]] | None:
            return await incidents_of(cluster, instance_key) or None

        [incident] = await eventually(raised)
        assert incident["errorType"] == "JOB_NO_RETRIES"
        assert "the printer is on fire" in incident["errorMessage"]
        assert (await cluster.api.get_instance(instance_key))["hasIncident"] is True
        await stub.UpdateJobRetries(
            pb.UpdateJobRetriesRequest(jobKey=incident["jobKey"], retries=2)
        )
        await stub.ResolveIncident(pb.ResolveIncidentRequest(incidentKey=incident["incidentKey"]))

        async def completed() -> dict[str, Any] | None:
            instance = await cluster.api.get_instance(instance_key)
            return instance if instance["state"] == "COMPLETED" else None

        instance = await eventually(completed)
    assert instance["hasIncident"] is False
    assert len(calls) == 2
    await channel.close()


async def test_status_codes_and_messages_follow_zeebes_gateway(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """Rejections carry Zeebe's status and message; client mistakes are INVALID_ARGUMENT;
    unserved RPCs UNIMPLEMENTED; the standard health service answers SERVING."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    stub = GatewayStub(channel)
    job_key = (1 << 51) + 12345  # a key of partition 1 that names no job

    async def status(call: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return caught.value.code(), caught.value.details() or ""

    assert await status(stub.CompleteJob(pb.CompleteJobRequest(jobKey=job_key))) == (
        grpc.StatusCode.NOT_FOUND,
        f"Command 'COMPLETE' rejected with code 'NOT_FOUND': Expected to complete job with key "
        f"'{job_key}', but no such job was found",
    )
    code, _ = await status(stub.CompleteJob(pb.CompleteJobRequest(jobKey=job_key, variables="[1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await status(stub.CompleteJob(pb.CompleteJobRequest(jobKey=job_key, variables="[1]")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = await status(
        stub.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=job_key, retries=0))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "positive amount of retries" in message
    code, _ = await status(stub.CreateProcessInstance(pb.CreateProcessInstanceRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = await status(
        stub.CreateProcessInstance(
            pb.CreateProcessInstanceRequest(bpmnProcessId="nope", version=-1)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "'nope'" in message
    code, _ = await status(stub.DeployResource(pb.DeployResourceRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = await status(
        stub.DeployResource(
            pb.DeployResourceRequest(resources=[pb.Resource(name="x.bpmn", content=b"<nope")])
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'x.bpmn'" in message
    code, _ = await status(stub.PublishMessage(pb.PublishMessageRequest(name="m", tenantId="t1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = await status(stub.EvaluateDecision(pb.EvaluateDecisionRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "EvaluateDecision" in message
    activation = stub.ActivateJobs(pb.ActivateJobsRequest(type="t", worker="w", timeout=0))
    code, _ = await status(_drain(activation))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    signal = await stub.BroadcastSignal(pb.BroadcastSignalRequest(signalName="go"))
    assert signal.key > 0
    message_key = await stub.PublishMessage(
        pb.PublishMessageRequest(name="m", correlationKey="c", messageId="id-1", timeToLive=60_000)
    )
    assert message_key.key > 0
    code, message = await status(
        stub.PublishMessage(
            pb.PublishMessageRequest(
                name="m", correlationKey="c", messageId="id-1", timeToLive=60_000
            )
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "id-1" in message
    unknown = channel.unary_unary("/gateway_protocol.Gateway/EvaluateConditional")
    code, message = await status(unknown(b""))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "EvaluateConditional" in message
    health = health_pb2_grpc.HealthStub(channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service="gateway_protocol.Gateway"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    await channel.close()


async def _drain(call: Any) -> list[Any]:
    return [reply async for reply in call]


async def test_activate_jobs_long_polls_until_a_job_appears_or_its_timeout(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """An ActivateJobs request with no job waiting is parked: it answers the job created while
    it waits (long before its 60 s timeout), and with zero jobs when a short timeout passes."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    client = ZeebeClient(channel)
    stub = GatewayStub(channel)
    await client.deploy_resource(write(tmp_path, "lp.bpmn", service_task_bpmn("lp", "lp")))
    empty = await _drain(
        stub.ActivateJobs(
            pb.ActivateJobsRequest(
                type="lp", worker="w", timeout=1000, maxJobsToActivate=1, requestTimeout=300
            )
        )
    )
    assert empty == []
    loop = asyncio.get_running_loop()
    started = loop.time()
    parked = loop.create_task(
        _drain(
            stub.ActivateJobs(
                pb.ActivateJobsRequest(
                    type="lp",
                    worker="w",
                    timeout=60_000,
                    maxJobsToActivate=1,
                    requestTimeout=60_000,
                ),
                timeout=120,
            )
        )
    )

    await eventually(
        lambda: _parked_request_seen(cluster), timeout_s=30
    )  # the request is waiting on the brokers
    instance_key = (await client.run_process("lp", {"n": 1})).process_instance_key
    [response] = await asyncio.wait_for(parked, 60)
    [job] = response.jobs
    assert job.processInstanceKey == instance_key and json.loads(job.variables) == {"n": 1}
    assert loop.time() - started < 50
    await channel.close()


async def _parked_request_seen(cluster: RunningCluster) -> bool:
    """Whether some partition holds a parked request (read from the brokers' status)."""
    for node in range(cluster.spec.brokers):
        connection = await Connection.open(cluster.broker_address(node))
        try:
            answer = await connection.request(QueryRequest(1, "parked-requests", {}), 10.0)
        finally:
            await connection.close()
        assert isinstance(answer, QueryResponse)
        if any(answer.result.values()):
            return True
    return False


async def test_job_stream_pushes_jobs_as_they_become_activatable(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """StreamActivatedJobs stays open and pushes each job, activated for the stream's worker,
    as instances create them on any partition."""
    channel = create_insecure_channel(grpc_address=cluster.grpc_address)
    client = ZeebeClient(channel)
    stub = GatewayStub(channel)
    await client.deploy_resource(write(tmp_path, "s.bpmn", service_task_bpmn("streamed", "s")))
    stream = stub.StreamActivatedJobs(
        pb.StreamActivatedJobsRequest(type="s", worker="streamer", timeout=60_000), timeout=120
    )
    created = [
        (await client.run_process("streamed", {"n": n})).process_instance_key for n in range(3)
    ]
    received = []
    async for job in stream:
        received.append(job)
        if len(received) == 3:
            break
    stream.cancel()
    assert sorted(j.processInstanceKey for j in received) == sorted(created)
    assert {j.worker for j in received} == {"streamer"}
    assert {partition_of_key(j.key) for j in received} == {1, 2, 3}
    await channel.close()
