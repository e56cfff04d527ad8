"""The gRPC gateway: Zeebe's ``gateway_protocol.Gateway`` service over the broker client.

Theory of operation
-------------------
Each RPC turns its request into one broker command, routed exactly as the REST API routes it
(deployments to partition 1, creations round-robin, job/instance/incident commands to the
partition encoded in the key, messages by correlation key), and turns the answer back into the
protobuf response. Job activation and waiting for a result are shared with the REST API in
``gateway/operations.py``.

Errors follow Zeebe's GrpcErrorMapper (REFERENCE C.5): a rejection becomes the status of its
rejection type with ``Command '<intent>' rejected with code '<type>': <reason>``; broker and
gateway failures map by error class (:data:`STATUS_BY_ERROR`); a client's mistake is always
INVALID_ARGUMENT, never UNKNOWN or INTERNAL. RPCs zeebe-sim does not serve answer UNIMPLEMENTED
with a message naming them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gateway.client import BrokerClient
from gateway.grpc import gateway_pb2 as pb
from gateway.grpc import gateway_pb2_grpc
from gateway.operations import (
    JobActivation,
    activate_jobs,
    await_instance_result,
    stream_jobs,
)
from zeebe_sim.ground import VERSION, errors
from zeebe_sim.ground.ids import PartitionId, partition_of_key
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import subscription_partition_id

log = logging.getLogger(__name__)

TENANT = "<default>"
# Jobs a stream asks a partition for in one go.
STREAM_BATCH_JOBS = 32

# A broker's role for a partition -> the topology's role (anything else: INACTIVE, unhealthy).
# A candidate is a follower to clients (Zeebe shows only leader, follower and inactive).
ROLES = {
    "LEADER": pb.Partition.LEADER,
    "FOLLOWER": pb.Partition.FOLLOWER,
    "CANDIDATE": pb.Partition.FOLLOWER,
}
HEALTHS = {
    "HEALTHY": pb.Partition.HEALTHY,
    "UNHEALTHY": pb.Partition.UNHEALTHY,
    "DEAD": pb.Partition.DEAD,
}

# Rejection types written by the engine -> gRPC status (GrpcErrorMapper).
STATUS_BY_REJECTION = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "INVALID_STATE": grpc.StatusCode.FAILED_PRECONDITION,
    "PROCESSING_ERROR": grpc.StatusCode.INTERNAL,
    "UNAUTHORIZED": grpc.StatusCode.PERMISSION_DENIED,
    "FORBIDDEN": grpc.StatusCode.PERMISSION_DENIED,
}

# Our errors -> gRPC status; the most specific class in an error's MRO wins.
STATUS_BY_ERROR: dict[type[errors.ZeebeSimError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.MalformedRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidState: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.BrokerUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PartitionLeaderMismatch: grpc.StatusCode.UNAVAILABLE,
    # sent, then the connection dropped: it may or may not have been executed
    errors.ConnectionLost: grpc.StatusCode.ABORTED,
    errors.RequestTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class _Rejected(Exception):
    """A broker rejection of a command, formatted as Zeebe's gateway reports it."""

    def __init__(self, intent: str, rejection_type: str, reason: str) -> None:
        super().__init__(f"Command '{intent}' rejected with code '{rejection_type}': {reason}")
        self.status = STATUS_BY_REJECTION.get(rejection_type, grpc.StatusCode.UNKNOWN)


class _Unsupported(Exception):
    """Part of a request zeebe-sim does not implement (UNIMPLEMENTED)."""


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for an error raised while serving a request."""
    if isinstance(exc, _Rejected):
        return exc.status, str(exc)
    if isinstance(exc, _Unsupported):
        return grpc.StatusCode.UNIMPLEMENTED, str(exc)
    if isinstance(exc, errors.ZeebeSimError):
        for cls in type(exc).__mro__:
            status = STATUS_BY_ERROR.get(cls)
            if status is not None:
                if status == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return status, f"Time out between gateway and broker: {exc.message}"
                return status, exc.message
        return (
            grpc.StatusCode.INTERNAL,
            f"Unexpected error occurred between gateway and broker (code: {exc.code}) "
            f"(message: {exc.message})",
        )
    return (
        grpc.StatusCode.INTERNAL,
        f"Unexpected error occurred during the request processing: {type(exc).__name__}",
    )


Request = TypeVar("Request")
Reply = TypeVar("Reply")
# grpc ships no type information: its context is Any to the type checker.
Context = Any


def _unary(
    method: Callable[[Any, Request, Context], Awaitable[Reply]],
) -> Callable[[Any, Request, Context], Awaitable[Reply]]:
    """Map whatever the RPC raises to its gRPC status, in one place."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: Context) -> Reply:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort(context, exc, method.__name__)
            raise  # abort raised already; this is for the type checker

    return wrapper


def _streaming(
    method: Callable[[Any, Request, Context], AsyncIterator[Reply]],
) -> Callable[[Any, Request, Context], AsyncIterator[Reply]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: Context) -> AsyncIterator[Reply]:
        try:
            async for reply in method(self, request, context):
                yield reply
        except Exception as exc:
            await _abort(context, exc, method.__name__)
            raise

    return wrapper


async def _abort(context: Context, exc: Exception, rpc: str) -> None:
    status, message = status_of(exc)
    if status in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and not isinstance(
        exc, _Rejected
    ):
        log.error("gRPC %s failed", rpc, exc_info=exc)
    await context.abort(status, message)


def _document(raw: str, field: str = "variables") -> dict[str, Any]:
    """A JSON object from a request field ("" means none)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidArgument(f"Property '{field}' is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise errors.InvalidArgument(
            f"Property '{field}' is invalid: Expected document to be a root level object, but "
            f"was '{type(value).__name__}'"
        )
    return value


def _tenant(tenant_id: str, rpc: str) -> None:
    """Multi-tenancy is off: only the default tenant (or none) is accepted, as in Zeebe."""
    if tenant_id not in ("", TENANT):
        raise errors.InvalidArgument(
            f"Expected to handle gRPC request {rpc} with tenant identifier '{tenant_id}', but "
            "multi-tenancy is disabled"
        )


def _tenants(tenant_ids: Any, rpc: str) -> None:
    for tenant_id in tenant_ids:
        _tenant(tenant_id, rpc)


def _activated_job(job: dict[str, Any]) -> pb.ActivatedJob:
    return pb.ActivatedJob(
        key=job["jobKey"],
        type=job["type"],
        processInstanceKey=job["processInstanceKey"],
        bpmnProcessId=job["bpmnProcessId"],
        processDefinitionVersion=job["processDefinitionVersion"],
        processDefinitionKey=job["processDefinitionKey"],
        elementId=job["elementId"],
        elementInstanceKey=job["elementInstanceKey"],
        customHeaders=json.dumps(job["customHeaders"]),
        worker=job["worker"],
        retries=job["retries"],
        deadline=job["deadline"],
        variables=json.dumps(job["variables"]),
        tenantId=TENANT,
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, client: BrokerClient) -> None:
        self.client = client

    # -- helpers ------------------------------------------------------------------------------

    def _partition_of(self, key: int, what: str) -> int:
        """The partition a key was made on; NOT_FOUND for a key of no partition here."""
        partition = partition_of_key(key) if key > 0 else 0
        if not 1 <= partition <= max(self.client.partition_count, 1):
            raise errors.NotFound(f"Expected to find {what} with key '{key}', but none found")
        return partition

    async def _execute(
        self, partition: int, value_type: str, intent: str, key: int, value: dict[str, Any]
    ) -> Any:
        response = await self.client.execute(PartitionId(partition), value_type, intent, key, value)
        if response.rejection_type is not None:
            raise _Rejected(intent, response.rejection_type, response.rejection_reason or "")
        return response

    # -- cluster and deployments --------------------------------------------------------------

    @_unary
    async def Topology(self, request: pb.TopologyRequest, context: Context) -> pb.TopologyResponse:
        client = self.client
        brokers = []
        for node, answer in sorted(client.brokers.items()):
            host, _, port = client.addresses.get(node, ":0").rpartition(":")
            partitions = [
                pb.Partition(
                    partitionId=p,
                    role=ROLES.get(role, pb.Partition.INACTIVE),
                    health=(
                        HEALTHS.get(answer.health.get(p, "HEALTHY"), pb.Partition.UNHEALTHY)
                        if role in ROLES
                        else pb.Partition.UNHEALTHY
                    ),
                )
                for p, role in sorted(answer.partitions.items())
            ]
            brokers.append(
                pb.BrokerInfo(
                    nodeId=node,
                    host=host,
                    port=int(port),
                    partitions=partitions,
                    version=answer.version,
                )
            )
        return pb.TopologyResponse(
            brokers=brokers,
            clusterSize=client.cluster_size,
            partitionsCount=client.partition_count,
            replicationFactor=client.replication_factor,
            gatewayVersion=VERSION,
        )

    @_unary
    async def DeployResource(
        self, request: pb.DeployResourceRequest, context: Context
    ) -> pb.DeployResourceResponse:
        _tenant(request.tenantId, "DeployResource")
        if not request.resources:
            raise errors.InvalidArgument("Expected to deploy at least one resource, but none given")
        resources = [{"resourceName": r.name, "resource": r.content} for r in request.resources]
        response = await self._execute(
            1, ValueType.DEPLOYMENT, "CREATE", -1, {"resources": resources}
        )
        value = response.value
        return pb.DeployResourceResponse(
            key=value["deploymentKey"],
            tenantId=TENANT,
            deployments=[
                pb.Deployment(
                    process=pb.ProcessMetadata(
                        bpmnProcessId=m["bpmnProcessId"],
                        version=m["version"],
                        processDefinitionKey=m["processDefinitionKey"],
                        resourceName=m["resourceName"],
                        tenantId=TENANT,
                    )
                )
                for m in value["processesMetadata"]
            ],
        )

    # -- process instances --------------------------------------------------------------------

    def _creation(self, request: pb.CreateProcessInstanceRequest, rpc: str) -> dict[str, Any]:
        _tenant(request.tenantId, rpc)
        if request.startInstructions:
            raise _Unsupported("zeebe-sim does not support start instructions")
        command: dict[str, Any] = {"variables": _document(request.variables)}
        if request.processDefinitionKey > 0:
            command["processDefinitionKey"] = request.processDefinitionKey
        elif request.bpmnProcessId:
            command["bpmnProcessId"] = request.bpmnProcessId
            command["version"] = request.version
        else:
            raise errors.InvalidArgument(
                "Expected either a processDefinitionKey or a bpmnProcessId, but none given"
            )
        return command

    @_unary
    async def CreateProcessInstance(
        self, request: pb.CreateProcessInstanceRequest, context: Context
    ) -> pb.CreateProcessInstanceResponse:
        command = self._creation(request, "CreateProcessInstance")
        partition = self.client.next_partition()
        response = await self._execute(
            partition, ValueType.PROCESS_INSTANCE_CREATION, "CREATE", -1, command
        )
        value = response.value
        return pb.CreateProcessInstanceResponse(
            processDefinitionKey=value["processDefinitionKey"],
            bpmnProcessId=value["bpmnProcessId"],
            version=value["version"],
            processInstanceKey=value["processInstanceKey"],
            tenantId=TENANT,
        )

    @_unary
    async def CreateProcessInstanceWithResult(
        self, request: pb.CreateProcessInstanceWithResultRequest, context: Context
    ) -> pb.CreateProcessInstanceWithResultResponse:
        command = self._creation(request.request, "CreateProcessInstanceWithResult")
        # 0: the gateway's request timeout, as in Zeebe
        timeout_ms = request.requestTimeout or int(self.client.request_timeout_s * 1000)
        partition = self.client.next_partition()
        response = await self._execute(
            partition,
            ValueType.PROCESS_INSTANCE_CREATION,
            "CREATE_WITH_AWAITING_RESULT",
            -1,
            command,
        )
        value = response.value
        instance_key = value["processInstanceKey"]
        instance = await await_instance_result(self.client, partition, instance_key, timeout_ms)
        variables = instance["variables"]
        if request.fetchVariables:
            variables = {n: variables[n] for n in request.fetchVariables if n in variables}
        return pb.CreateProcessInstanceWithResultResponse(
            processDefinitionKey=value["processDefinitionKey"],
            bpmnProcessId=value["bpmnProcessId"],
            version=value["version"],
            processInstanceKey=instance_key,
            variables=json.dumps(variables),
            tenantId=TENANT,
        )

    @_unary
    async def CancelProcessInstance(
        self, request: pb.CancelProcessInstanceRequest, context: Context
    ) -> pb.CancelProcessInstanceResponse:
        key = request.processInstanceKey
        partition = self._partition_of(key, "a process instance")
        await self._execute(partition, ValueType.PROCESS_INSTANCE, "CANCEL", key, {})
        return pb.CancelProcessInstanceResponse()

    @_unary
    async def SetVariables(
        self, request: pb.SetVariablesRequest, context: Context
    ) -> pb.SetVariablesResponse:
        key = request.elementInstanceKey
        value = {"scopeKey": key, "variables": _document(request.variables), "local": request.local}
        partition = self._partition_of(key, "an element instance")
        response = await self._execute(partition, ValueType.VARIABLE_DOCUMENT, "UPDATE", -1, value)
        return pb.SetVariablesResponse(key=response.key)

    @_unary
    async def ResolveIncident(
        self, request: pb.ResolveIncidentRequest, context: Context
    ) -> pb.ResolveIncidentResponse:
        key = request.incidentKey
        partition = self._partition_of(key, "an incident")
        await self._execute(partition, ValueType.INCIDENT, "RESOLVE", key, {})
        return pb.ResolveIncidentResponse()

    # -- jobs ---------------------------------------------------------------------------------

    @_streaming
    async def ActivateJobs(
        self, request: pb.ActivateJobsRequest, context: Context
    ) -> AsyncIterator[pb.ActivateJobsResponse]:
        _tenants(request.tenantIds, "ActivateJobs")
        activation = JobActivation(
            job_type=request.type,
            worker=request.worker,
            timeout_ms=request.timeout,
            max_jobs=request.maxJobsToActivate,
            fetch_variables=tuple(request.fetchVariable),
            request_timeout_ms=request.requestTimeout,
        )
        activation.validate()
        async for jobs in activate_jobs(self.client, activation):
            yield pb.ActivateJobsResponse(jobs=[_activated_job(job) for job in jobs])

    @_streaming
    async def StreamActivatedJobs(
        self, request: pb.StreamActivatedJobsRequest, context: Context
    ) -> AsyncIterator[pb.ActivatedJob]:
        _tenants(request.tenantIds, "StreamActivatedJobs")
        activation = JobActivation(
            job_type=request.type,
            worker=request.worker,
            timeout_ms=request.timeout,
            max_jobs=STREAM_BATCH_JOBS,
            fetch_variables=tuple(request.fetchVariable),
        )
        activation.validate()
        async for job in stream_jobs(self.client, activation):
            yield _activated_job(job)

    async def _job_command(self, key: int, intent: str, value: dict[str, Any]) -> Any:
        partition = self._partition_of(key, "a job")
        return await self._execute(partition, ValueType.JOB, intent, key, value)

    @_unary
    async def CompleteJob(
        self, request: pb.CompleteJobRequest, context: Context
    ) -> pb.CompleteJobResponse:
        variables = _document(request.variables)
        await self._job_command(request.jobKey, "COMPLETE", {"variables": variables})
        return pb.CompleteJobResponse()

    @_unary
    async def FailJob(self, request: pb.FailJobRequest, context: Context) -> pb.FailJobResponse:
        value = {
            "retries": request.retries,
            "errorMessage": request.errorMessage,
            "retryBackOff": request.retryBackOff,
            "variables": _document(request.variables),
        }
        await self._job_command(request.jobKey, "FAIL", value)
        return pb.FailJobResponse()

    @_unary
    async def ThrowError(
        self, request: pb.ThrowErrorRequest, context: Context
    ) -> pb.ThrowErrorResponse:
        if not request.errorCode.strip():
            raise errors.InvalidArgument("Expected an errorCode, but none given")
        value = {
            "errorCode": request.errorCode,
            "errorMessage": request.errorMessage,
            "variables": _document(request.variables),
        }
        await self._job_command(request.jobKey, "THROW_ERROR", value)
        return pb.ThrowErrorResponse()

    @_unary
    async def UpdateJobRetries(
        self, request: pb.UpdateJobRetriesRequest, context: Context
    ) -> pb.UpdateJobRetriesResponse:
        await self._job_command(request.jobKey, "UPDATE_RETRIES", {"retries": request.retries})
        return pb.UpdateJobRetriesResponse()

    @_unary
    async def UpdateJobTimeout(
        self, request: pb.UpdateJobTimeoutRequest, context: Context
    ) -> pb.UpdateJobTimeoutResponse:
        if request.timeout < 0:
            raise errors.InvalidArgument(
                f"Expected a timeout of at least 0 ms, but it was {request.timeout}"
            )
        await self._job_command(request.jobKey, "UPDATE_TIMEOUT", {"timeout": request.timeout})
        return pb.UpdateJobTimeoutResponse()

    # -- messages and signals -----------------------------------------------------------------

    @_unary
    async def PublishMessage(
        self, request: pb.PublishMessageRequest, context: Context
    ) -> pb.PublishMessageResponse:
        _tenant(request.tenantId, "PublishMessage")
        if not request.name.strip():
            raise errors.InvalidArgument("Expected a message name, but none given")
        if request.timeToLive < 0:
            raise errors.InvalidArgument(
                f"Expected a timeToLive of at least 0 ms, but it was {request.timeToLive}"
            )
        value = {
            "name": request.name,
            "correlationKey": request.correlationKey,
            "timeToLive": request.timeToLive,
            "messageId": request.messageId,
            "variables": _document(request.variables),
        }
        partition = subscription_partition_id(request.correlationKey, self.client.partition_count)
        response = await self._execute(partition, ValueType.MESSAGE, "PUBLISH", -1, value)
        return pb.PublishMessageResponse(key=response.key, tenantId=TENANT)

    @_unary
    async def BroadcastSignal(
        self, request: pb.BroadcastSignalRequest, context: Context
    ) -> pb.BroadcastSignalResponse:
        _tenant(request.tenantId, "BroadcastSignal")
        if not request.signalName.strip():
            raise errors.InvalidArgument("Expected a signal name, but none given")
        value = {"signalName": request.signalName, "variables": _document(request.variables)}
        # Zeebe broadcasts from the deployment partition.
        response = await self._execute(1, ValueType.SIGNAL, "BROADCAST", -1, value)
        return pb.BroadcastSignalResponse(key=response.key, tenantId=TENANT)

    # -- not served ---------------------------------------------------------------------------

    @_unary
    async def EvaluateDecision(self, request: Any, context: Context) -> Any:
        raise _Unsupported("EvaluateDecision is not supported by zeebe-sim (no DMN)")

    @_unary
    async def DeployProcess(self, request: Any, context: Context) -> Any:
        raise _Unsupported(
            "DeployProcess is deprecated and not supported by zeebe-sim: use DeployResource"
        )

    @_unary
    async def ModifyProcessInstance(self, request: Any, context: Context) -> Any:
        raise _Unsupported("ModifyProcessInstance is not supported by zeebe-sim")

    @_unary
    async def MigrateProcessInstance(self, request: Any, context: Context) -> Any:
        raise _Unsupported("MigrateProcessInstance is not supported by zeebe-sim")

    @_unary
    async def DeleteResource(self, request: Any, context: Context) -> Any:
        raise _Unsupported("DeleteResource is not supported by zeebe-sim")


class _UnknownMethods(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Any other method (e.g. one only newer gateways have): UNIMPLEMENTED, with its name."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method

        async def unimplemented(request: bytes, context: Context) -> bytes:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Method {method} is not implemented by zeebe-sim",
            )
            raise AssertionError("abort returned")

        return grpc.unary_unary_rpc_method_handler(unimplemented)


async def start_grpc_server(
    client: BrokerClient, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """Serve the Gateway and the standard health service; returns the server and its port."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    server = grpc.aio.server(
        options=[
            # Zeebe's default maximum message size (4 MiB)
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    gateway_pb2_grpc.add_GatewayServicer_to_server(  # type: ignore[no-untyped-call]
        GatewayServicer(client), server
    )
    health = HealthServicer()
    for service in ("", "gateway_protocol.Gateway"):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_generic_rpc_handlers((_UnknownMethods(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise errors.ConfigError(f"grpc-port: cannot listen on {host}:{port}")
    await server.start()
    return server, bound
