"""The REST client API on port 8080: a subset of Camunda 8's ``/v2`` API.

Paths and field names are Camunda's. Keys are answered as strings (as Camunda 8.8 does) and
accepted as strings or integers. Broker rejections become Problem Details with the matching
status (see ``gateway/errors.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway.client import BrokerClient
from gateway.errors import ERROR_BY_REJECTION, problem_details
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import InvalidArgument, NotFound
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.ground.protocol import ExecuteCommandResponse
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import subscription_partition_id

TENANT = "<default>"
RESOURCE_BYTES_MAX = 4 * 1024 * 1024
JOBS_TO_ACTIVATE_MAX = 1000
CLIENT = web.AppKey("client", BrokerClient)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, too deeply nested
        raise InvalidArgument(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object")
    return body


def _field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if name not in body or body[name] is None:
        if default is ...:
            raise InvalidArgument(f"No {name} provided")
        return default
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise InvalidArgument(f"The value of {name} has the wrong type")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse_key(raw: Any, what: str, partition_count: int) -> int:
    """A Zeebe key from a path or body (string or integer), checked to name a partition."""
    if isinstance(raw, bool):
        raise InvalidArgument(f"The provided {what} is not a number")
    try:
        key = int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"The provided {what} '{raw}' is not a number") from exc
    partition = partition_of_key(key)
    if key <= 0 or key >= 1 << 63 or not 1 <= partition <= max(partition_count, 1):
        raise NotFound(f"No entity with {what} '{raw}' exists")
    return key


def _check(response: ExecuteCommandResponse) -> ExecuteCommandResponse:
    if response.rejection_type is not None:
        error = ERROR_BY_REJECTION.get(response.rejection_type, InvalidArgument)
        raise error(response.rejection_reason or response.rejection_type)
    return response


def _variables(body: dict[str, Any]) -> dict[str, Any]:
    return dict(_field(body, "variables", dict, {}))


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def deploy(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    if not request.content_type.startswith("multipart/"):
        raise InvalidArgument("Expected a multipart/form-data body with a 'resources' field")
    resources = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, aiohttp.BodyPartReader) or part.name != "resources":
            continue
        content = await part.read(decode=False)
        if len(content) > RESOURCE_BYTES_MAX:
            raise InvalidArgument(f"Resource exceeds {RESOURCE_BYTES_MAX} bytes")
        resources.append(
            {"resourceName": part.filename or "resource.bpmn", "resource": bytes(content)}
        )
    if not resources:
        raise InvalidArgument("No resources provided: add at least one 'resources' file part")
    response = _check(
        await client.execute(1, ValueType.DEPLOYMENT, "CREATE", -1, {"resources": resources})
    )
    value = response.value
    return web.json_response(
        {
            "deploymentKey": str(value["deploymentKey"]),
            "tenantId": TENANT,
            "deployments": [
                {
                    "processDefinition": {
                        "processDefinitionId": m["bpmnProcessId"],
                        "processDefinitionVersion": m["version"],
                        "resourceName": m["resourceName"],
                        "tenantId": TENANT,
                        "processDefinitionKey": str(m["processDefinitionKey"]),
                    }
                }
                for m in value["processesMetadata"]
            ],
        }
    )


async def create_instance(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    body = await _json_object(request)
    command: dict[str, Any] = {"variables": _variables(body)}
    if body.get("processDefinitionKey") is not None:
        command["processDefinitionKey"] = parse_key(
            body["processDefinitionKey"], "processDefinitionKey", client.partition_count
        )
    else:
        command["bpmnProcessId"] = _field(body, "processDefinitionId", str)
        command["version"] = _field(body, "processDefinitionVersion", int, -1)
    partition = client.next_partition()
    response = _check(
        await client.execute(partition, ValueType.PROCESS_INSTANCE_CREATION, "CREATE", -1, command)
    )
    value = response.value
    return web.json_response(
        {
            "processDefinitionId": value["bpmnProcessId"],
            "processDefinitionVersion": value["version"],
            "processDefinitionKey": str(value["processDefinitionKey"]),
            "processInstanceKey": str(value["processInstanceKey"]),
            "tenantId": TENANT,
        }
    )


async def get_instance(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    raw = request.match_info["processInstanceKey"]
    key = parse_key(raw, "processInstanceKey", client.partition_count)
    instance = await client.query(partition_of_key(key), "process-instance", {"key": key})
    if instance is None:
        raise NotFound(f"Process instance with key '{raw}' not found")
    body = {
        "processInstanceKey": str(key),
        "processDefinitionId": instance["bpmnProcessId"],
        "processDefinitionVersion": instance["version"],
        "processDefinitionKey": str(instance["processDefinitionKey"]),
        "state": instance["state"],
        "startDate": _iso(instance["startDate"]),
        "hasIncident": bool(instance.get("incident")),
        "tenantId": TENANT,
    }
    if instance["endDate"] is not None:
        body["endDate"] = _iso(instance["endDate"])
    return web.json_response(body)


async def activate_jobs(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    body = await _json_object(request)
    job_type = _field(body, "type", str)
    if not job_type:
        raise InvalidArgument("No type provided")
    max_jobs = _field(body, "maxJobsToActivate", int)
    timeout = _field(body, "timeout", int)
    if not 1 <= max_jobs <= JOBS_TO_ACTIVATE_MAX:
        raise InvalidArgument(f"maxJobsToActivate must be between 1 and {JOBS_TO_ACTIVATE_MAX}")
    if timeout < 1:
        raise InvalidArgument("timeout must be a positive number of milliseconds")
    worker = _field(body, "worker", str, "")
    jobs: list[dict[str, Any]] = []
    # Like Zeebe's gateway: ask partitions one after another until enough jobs are found,
    # starting at a rotating partition so that no partition is always served first.
    first = client.next_partition()
    count = client.partition_count
    for offset in range(count):
        if len(jobs) >= max_jobs:
            break
        partition = (first - 1 + offset) % count + 1
        value = {
            "type": job_type,
            "worker": worker,
            "timeout": timeout,
            "maxJobsToActivate": max_jobs - len(jobs),
        }
        response = _check(
            await client.execute(partition, ValueType.JOB_BATCH, "ACTIVATE", -1, value)
        )
        for job in response.value["jobs"]:
            jobs.append(
                {
                    "jobKey": str(job["jobKey"]),
                    "type": job["type"],
                    "processInstanceKey": str(job["processInstanceKey"]),
                    "processDefinitionId": job["bpmnProcessId"],
                    "processDefinitionVersion": job["processDefinitionVersion"],
                    "processDefinitionKey": str(job["processDefinitionKey"]),
                    "elementId": job["elementId"],
                    "elementInstanceKey": str(job["elementInstanceKey"]),
                    "customHeaders": job["customHeaders"],
                    "worker": job["worker"],
                    "retries": job["retries"],
                    "deadline": job["deadline"],
                    "variables": job["variables"],
                    "tenantId": TENANT,
                }
            )
    return web.json_response({"jobs": jobs})


async def complete_job(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = parse_key(request.match_info["jobKey"], "jobKey", client.partition_count)
    body = await _json_object(request) if request.can_read_body else {}
    value = {"variables": _variables(body)}
    _check(await client.execute(partition_of_key(key), ValueType.JOB, "COMPLETE", key, value))
    return web.Response(status=204)


async def publish_message(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    body = await _json_object(request)
    name = _field(body, "name", str)
    if not name:
        raise InvalidArgument("No name provided")
    correlation_key = _field(body, "correlationKey", str, "")
    ttl = _field(body, "timeToLive", int, 0)
    if ttl < 0:
        raise InvalidArgument("timeToLive must not be negative")
    value = {
        "name": name,
        "correlationKey": correlation_key,
        "timeToLive": ttl,
        "messageId": _field(body, "messageId", str, ""),
        "variables": _variables(body),
    }
    partition = subscription_partition_id(correlation_key, client.partition_count)
    response = _check(await client.execute(partition, ValueType.MESSAGE, "PUBLISH", -1, value))
    return web.json_response({"messageKey": str(response.key), "tenantId": TENANT})


async def topology(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    brokers = []
    for node, answer in sorted(client.brokers.items()):
        host, _, port = client.addresses.get(node, ":0").rpartition(":")
        brokers.append(
            {
                "nodeId": node,
                "host": host,
                "port": int(port),
                "version": answer.version,
                "partitions": [
                    {
                        "partitionId": p,
                        "role": "leader",
                        "health": "healthy" if role == "LEADER" else "unhealthy",
                    }
                    for p, role in sorted(answer.partitions.items())
                ],
            }
        )
    return web.json_response(
        {
            "brokers": brokers,
            "clusterSize": client.cluster_size,
            "partitionsCount": client.partition_count,
            "replicationFactor": client.replication_factor,
            "gatewayVersion": VERSION,
        }
    )


def rest_app(client: BrokerClient) -> web.Application:
    app = web.Application(middlewares=[problem_details], client_max_size=RESOURCE_BYTES_MAX * 2)
    app[CLIENT] = client
    app.router.add_post("/v2/deployments", deploy)
    app.router.add_post("/v2/process-instances", create_instance)
    app.router.add_get("/v2/process-instances/{processInstanceKey}", get_instance)
    app.router.add_post("/v2/jobs/activation", activate_jobs)
    app.router.add_post("/v2/jobs/{jobKey}/completion", complete_job)
    app.router.add_post("/v2/messages/publication", publish_message)
    app.router.add_get("/v2/topology", topology)
    return app
