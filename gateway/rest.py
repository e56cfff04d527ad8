"""The REST client API on port 8080: a subset of Camunda 8's ``/v2`` API.

Paths and field names are Camunda's, and every answer carries every field the Orchestration
Cluster API marks required (null where Camunda sends null for something zeebe-sim has no notion
of). Keys are answered as strings (as Camunda 8.8 does) and accepted as strings or integers.
Handlers see only typed requests: ``gateway/rest_input.py`` parses and validates every body
before any broker call. Broker rejections become Problem Details with the matching status (see
``gateway/errors.py``). ``gateway/openapi-v2.yaml`` documents what is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from gateway import backups, operations, recovery
from gateway.client import BrokerClient
from gateway.errors import problem_details
from gateway.operations import JobActivation, check
from gateway.rest_input import (
    DEPLOYMENT_BYTES_MAX,
    TENANT,
    ActivateJobsRequest,
    CompleteJobRequest,
    CreateInstanceRequest,
    FailJobRequest,
    IncidentSearchRequest,
    InstanceSearchRequest,
    OperationRequest,
    PublishMessageRequest,
    SetVariablesRequest,
    ThrowJobErrorRequest,
    UpdateJobRequest,
    deployment_request,
    encode_cursor,
    json_request,
    parse_key,
)
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import NotFound
from zeebe_sim.ground.ids import PartitionId, partition_of_key
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.ground.search import search, sort_values

PHYSICAL_TENANT = "default"
CLIENT = web.AppKey("client", BrokerClient)
OPENAPI_PATH = "/openapi/orchestration-cluster-api.yaml"
# Zeebe keeps no cluster-change history here: Camunda answers -1 before any change completed.
NO_CHANGE_ID = "-1"


def _key(raw: str, what: str, client: BrokerClient) -> int:
    """A key from the path, checked to name one of the cluster's partitions."""
    key = parse_key(raw, what)
    if not 1 <= partition_of_key(key) <= max(client.partition_count, 1):
        raise NotFound(f"No entity with {what} '{raw}' exists")
    return key


def _iso(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _str_key(key: int | None) -> str | None:
    return None if key is None else str(key)


async def deploy(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    deployment = await deployment_request(request)
    resources = [{"resourceName": r.name, "resource": r.content} for r in deployment.resources]
    response = check(
        await client.execute(
            PartitionId(1), ValueType.DEPLOYMENT, "CREATE", -1, {"resources": resources}
        )
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
    body = await json_request(request, CreateInstanceRequest)
    command: dict[str, Any] = {"variables": body.variables}
    if body.process_definition_key is not None:
        command["processDefinitionKey"] = body.process_definition_key
    else:
        command["bpmnProcessId"] = body.process_definition_id
        command["version"] = body.version
    partition = client.next_partition()
    response = check(
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
            # Camunda fills variables only when awaiting completion, which is not supported.
            "variables": {},
            "tags": [],
            "businessId": None,
        }
    )


def _instance_result(item: dict[str, Any]) -> dict[str, Any]:
    """A search item from a broker as Camunda's ProcessInstanceResult (every required field;
    null for what zeebe-sim has no notion of: parents, version tags, suspension)."""
    return {
        "processInstanceKey": str(item["processInstanceKey"]),
        "processDefinitionId": item["processDefinitionId"],
        "processDefinitionName": item["processDefinitionName"],
        "processDefinitionVersion": item["processDefinitionVersion"],
        "processDefinitionVersionTag": None,
        "processDefinitionKey": str(item["processDefinitionKey"]),
        "startDate": _iso(item["startDate"]),
        "endDate": _iso(item["endDate"]),
        "state": item["state"],
        "suspendedDate": None,
        "hasIncident": item["hasIncident"],
        "tenantId": item["tenantId"],
        "parentProcessInstanceKey": None,
        "parentElementInstanceKey": None,
        # No call activities: every instance is the root of its own hierarchy.
        "rootProcessInstanceKey": str(item["processInstanceKey"]),
        "tags": [],
        "businessId": None,
    }


async def _search_partition(
    client: BrokerClient,
    partition: PartitionId,
    query: str,
    conditions: list[list[Any]],
    sort: list[list[Any]],
    limit: int,
    after: tuple[Any, ...] | None = None,
    before: tuple[Any, ...] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    arguments = {
        "conditions": conditions,
        "sort": sort,
        "limit": limit,
        "after": list(after) if after is not None else None,
        "before": list(before) if before is not None else None,
    }
    answer = await client.query(partition, query, arguments)
    return int(answer["total"]), list(answer["items"])


async def get_instance(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    raw = request.match_info["processInstanceKey"]
    key = _key(raw, "processInstanceKey", client)
    sort = [["processInstanceKey", False]]
    _, items = await _search_partition(
        client,
        partition_of_key(key),
        "search-process-instances",
        [["processInstanceKey", "eq", key]],
        sort,
        1,
    )
    if not items:
        raise NotFound(f"Process instance with key '{raw}' not found")
    return web.json_response(_instance_result(items[0]))


async def _search(
    client: BrokerClient,
    query_name: str,
    query: InstanceSearchRequest | IncidentSearchRequest,
    result: Callable[[dict[str, Any]], dict[str, Any]],
) -> web.Response:
    """Every partition answers its first matches in sort order; the page is cut from their
    merge, with the same order (``zeebe_sim.ground.search``)."""
    page, sort, conditions = query.page, query.sort_spec(), query.filter.conditions()
    depth = page.from_ + page.limit
    answers = await asyncio.gather(
        *(
            _search_partition(
                client, p, query_name, conditions, sort, depth, page.after, page.before
            )
            for p in client.partition_ids()
        )
    )
    total = sum(t for t, _ in answers)
    _, merged = search(
        (item for _, items in answers for item in items),
        [],
        sort,
        depth,
        before=page.before,
    )
    items = merged[-page.limit :] if page.before is not None else merged[page.from_ : depth]
    cursors = [encode_cursor(sort_values(item, sort)) for item in (items[:1] + items[-1:])]
    return web.json_response(
        {
            "items": [result(item) for item in items],
            "page": {
                "totalItems": total,
                "hasMoreTotalItems": False,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }
    )


async def search_instances(request: web.Request) -> web.Response:
    query = await json_request(request, InstanceSearchRequest, optional=True)
    return await _search(request.app[CLIENT], "search-process-instances", query, _instance_result)


def _incident_result(item: dict[str, Any]) -> dict[str, Any]:
    """A search item from a broker as Camunda's IncidentResult."""
    return {
        "incidentKey": str(item["incidentKey"]),
        "processDefinitionId": item["processDefinitionId"],
        "processDefinitionKey": str(item["processDefinitionKey"]),
        "processInstanceKey": str(item["processInstanceKey"]),
        "rootProcessInstanceKey": str(item["processInstanceKey"]),
        "errorType": item["errorType"],
        "errorMessage": item["errorMessage"],
        "elementId": item["elementId"],
        "elementInstanceKey": str(item["elementInstanceKey"]),
        "creationTime": _iso(item["creationTime"]),
        "state": item["state"],
        "jobKey": _str_key(item["jobKey"]),
        "tenantId": item["tenantId"],
    }


async def search_incidents(request: web.Request) -> web.Response:
    query = await json_request(request, IncidentSearchRequest, optional=True)
    return await _search(request.app[CLIENT], "search-incidents", query, _incident_result)


def _activated_job(job: dict[str, Any]) -> dict[str, Any]:
    return {
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
        "physicalTenantId": PHYSICAL_TENANT,
        # Service tasks only: no listeners, user tasks, tags, call activities or priorities.
        "kind": "BPMN_ELEMENT",
        "listenerEventType": "UNSPECIFIED",
        "userTask": None,
        "tags": [],
        "rootProcessInstanceKey": str(job["processInstanceKey"]),
        "businessId": None,
        "priority": 0,
    }


async def activate_jobs(request: web.Request) -> web.Response:
    """Zeebe's activation with long polling (``gateway/operations.py``, shared with gRPC): the
    answer comes once a round found jobs, or empty when ``requestTimeout`` passes (0: the
    gateway's 10 s; < 0: at once)."""
    client = request.app[CLIENT]
    body = await json_request(request, ActivateJobsRequest)
    activation = JobActivation(
        job_type=body.type,
        worker=body.worker,
        timeout_ms=body.timeout_ms,
        max_jobs=body.max_jobs_to_activate,
        fetch_variables=body.fetch_variable,
        request_timeout_ms=body.request_timeout_ms,
    )
    jobs: list[dict[str, Any]] = []
    async for batch in operations.activate_jobs(client, activation):
        jobs.extend(_activated_job(job) for job in batch)
    return web.json_response({"jobs": jobs})


async def complete_job(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = _key(request.match_info["jobKey"], "jobKey", client)
    body = await json_request(request, CompleteJobRequest, optional=True)
    value = {"variables": body.variables}
    check(await client.execute(partition_of_key(key), ValueType.JOB, "COMPLETE", key, value))
    return web.Response(status=204)


async def _job_command(request: web.Request, intent: str, value: dict[str, Any]) -> None:
    client = request.app[CLIENT]
    key = _key(request.match_info["jobKey"], "jobKey", client)
    check(await client.execute(partition_of_key(key), ValueType.JOB, intent, key, value))


async def fail_job(request: web.Request) -> web.Response:
    body = await json_request(request, FailJobRequest, optional=True)
    value = {
        "retries": body.retries,
        "errorMessage": body.error_message,
        "retryBackOff": body.retry_back_off_ms,
        "variables": body.variables,
    }
    await _job_command(request, "FAIL", value)
    return web.Response(status=204)


async def throw_job_error(request: web.Request) -> web.Response:
    body = await json_request(request, ThrowJobErrorRequest)
    value = {
        "errorCode": body.error_code,
        "errorMessage": body.error_message,
        "variables": body.variables,
    }
    await _job_command(request, "THROW_ERROR", value)
    return web.Response(status=204)


async def update_job(request: web.Request) -> web.Response:
    """Retries first, then the timeout: two engine commands, as Camunda's gateway sends."""
    changes = (await json_request(request, UpdateJobRequest)).changeset
    if changes.retries is not None:
        await _job_command(request, "UPDATE_RETRIES", {"retries": changes.retries})
    if changes.timeout_ms is not None:
        await _job_command(request, "UPDATE_TIMEOUT", {"timeout": changes.timeout_ms})
    return web.Response(status=204)


async def cancel_instance(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = _key(request.match_info["processInstanceKey"], "processInstanceKey", client)
    await json_request(request, OperationRequest, optional=True)
    check(
        await client.execute(partition_of_key(key), ValueType.PROCESS_INSTANCE, "CANCEL", key, {})
    )
    return web.Response(status=204)


async def set_variables(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = _key(request.match_info["elementInstanceKey"], "elementInstanceKey", client)
    body = await json_request(request, SetVariablesRequest)
    value = {"scopeKey": key, "variables": body.variables, "local": body.local}
    check(
        await client.execute(
            partition_of_key(key), ValueType.VARIABLE_DOCUMENT, "UPDATE", -1, value
        )
    )
    return web.Response(status=204)


async def resolve_incident(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = _key(request.match_info["incidentKey"], "incidentKey", client)
    await json_request(request, OperationRequest, optional=True)
    check(await client.execute(partition_of_key(key), ValueType.INCIDENT, "RESOLVE", key, {}))
    return web.Response(status=204)


async def publish_message(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    body = await json_request(request, PublishMessageRequest)
    value = {
        "name": body.name,
        "correlationKey": body.correlation_key,
        "timeToLive": body.time_to_live_ms,
        "messageId": body.message_id,
        "variables": body.variables,
    }
    partition = subscription_partition_id(body.correlation_key, client.partition_count)
    response = check(await client.execute(partition, ValueType.MESSAGE, "PUBLISH", -1, value))
    return web.json_response({"messageKey": str(response.key), "tenantId": TENANT})


# A candidate is a follower to clients (Zeebe shows only leader, follower and inactive).
_ROLES = {"LEADER": "leader", "FOLLOWER": "follower", "CANDIDATE": "follower"}


async def topology(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    brokers = []
    for node, answer in sorted(client.brokers.items()):
        host, _, port = client.addresses.get(node, ":0").rpartition(":")
        brokers.append(
            {
                "nodeId": node,
                "brokerId": str(node),
                "host": host,
                "port": int(port),
                "version": answer.version,
                "partitions": [
                    {
                        "partitionId": p,
                        "role": _ROLES.get(role, "inactive"),
                        "health": (
                            answer.health.get(p, "HEALTHY").lower()
                            if role in _ROLES
                            else "unhealthy"
                        ),
                        # a partition that is not serving yet is still replaying its log
                        "state": "active" if role in _ROLES else "recovering",
                    }
                    for p, role in sorted(answer.partitions.items())
                ],
            }
        )
    return web.json_response(
        {
            "brokers": brokers,
            "clusterId": None,
            "clusterSize": client.cluster_size,
            "partitionsCount": client.partition_count,
            "replicationFactor": client.replication_factor,
            "gatewayVersion": VERSION,
            "lastCompletedChangeId": recovery.coordinator_of(client).last_completed_id()
            or NO_CHANGE_ID,
        }
    )


def openapi_document() -> bytes:
    """The OpenAPI document of the ``/v2`` endpoints served here (``gateway/openapi-v2.yaml``,
    package data)."""
    return resources.files("gateway").joinpath("openapi-v2.yaml").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/yaml")


def rest_app(client: BrokerClient) -> web.Application:
    # Bodies are bounded by their own limits in gateway/rest_input.py; this is the outer bound
    # aiohttp enforces while reading (413 beyond it).
    app = web.Application(
        middlewares=[problem_details], client_max_size=DEPLOYMENT_BYTES_MAX + 64 * 1024
    )
    app[CLIENT] = client
    openapi_document()  # a missing document fails the start, not the first request
    app.router.add_get(OPENAPI_PATH, openapi)
    app.router.add_post("/v2/deployments", deploy)
    app.router.add_post("/v2/process-instances", create_instance)
    app.router.add_post("/v2/process-instances/search", search_instances)
    # A key is not "search" or "activation": those paths are other operations', and their 405
    # must not advertise this method.
    app.router.add_get("/v2/process-instances/{processInstanceKey:(?!search$)[^/]+}", get_instance)
    app.router.add_post("/v2/jobs/activation", activate_jobs)
    app.router.add_post("/v2/jobs/{jobKey}/completion", complete_job)
    app.router.add_post("/v2/jobs/{jobKey}/failure", fail_job)
    app.router.add_post("/v2/jobs/{jobKey}/error", throw_job_error)
    app.router.add_patch("/v2/jobs/{jobKey:(?!activation$)[^/]+}", update_job)
    app.router.add_post("/v2/process-instances/{processInstanceKey}/cancellation", cancel_instance)
    app.router.add_put("/v2/element-instances/{elementInstanceKey}/variables", set_variables)
    app.router.add_post("/v2/incidents/{incidentKey}/resolution", resolve_incident)
    app.router.add_post("/v2/incidents/search", search_incidents)
    app.router.add_post("/v2/messages/publication", publish_message)
    app.router.add_get("/v2/topology", topology)
    recovery.add_rest_routes(app, client)
    backups.add_rest_routes(app, client)
    return app
