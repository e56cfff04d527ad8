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
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from gateway.client import BrokerClient
from gateway.errors import ERROR_BY_REJECTION, problem_details
from gateway.rest_input import (
    DEPLOYMENT_BYTES_MAX,
    TENANT,
    ActivateJobsRequest,
    CompleteJobRequest,
    CreateInstanceRequest,
    InstanceSearchRequest,
    PublishMessageRequest,
    deployment_request,
    encode_cursor,
    json_request,
    parse_key,
)
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.errors import InvalidArgument, NotFound
from zeebe_sim.ground.ids import PartitionId, partition_of_key
from zeebe_sim.ground.protocol import ExecuteCommandResponse
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


def _check(response: ExecuteCommandResponse) -> ExecuteCommandResponse:
    if response.rejection_type is not None:
        error = ERROR_BY_REJECTION.get(response.rejection_type, InvalidArgument)
        raise error(response.rejection_reason or response.rejection_type)
    return response


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
    response = _check(
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
    answer = await client.query(partition, "process-instances", arguments)
    return int(answer["total"]), list(answer["items"])


async def get_instance(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    raw = request.match_info["processInstanceKey"]
    key = _key(raw, "processInstanceKey", client)
    sort = [["processInstanceKey", False]]
    _, items = await _search_partition(
        client, partition_of_key(key), [["processInstanceKey", "eq", key]], sort, 1
    )
    if not items:
        raise NotFound(f"Process instance with key '{raw}' not found")
    return web.json_response(_instance_result(items[0]))


async def search_instances(request: web.Request) -> web.Response:
    """Every partition answers its first matches in sort order; the page is cut from their
    merge, with the same order (``zeebe_sim.ground.search``)."""
    client = request.app[CLIENT]
    query = await json_request(request, InstanceSearchRequest, optional=True)
    page, sort, conditions = query.page, query.sort_spec(), query.filter.conditions()
    depth = page.from_ + page.limit
    answers = await asyncio.gather(
        *(
            _search_partition(client, p, conditions, sort, depth, page.after, page.before)
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
            "items": [_instance_result(item) for item in items],
            "page": {
                "totalItems": total,
                "hasMoreTotalItems": False,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }
    )


def _activated_job(job: dict[str, Any], fetch_variable: tuple[str, ...]) -> dict[str, Any]:
    variables = job["variables"]
    if fetch_variable:
        variables = {name: variables[name] for name in fetch_variable if name in variables}
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
        "variables": variables,
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
    client = request.app[CLIENT]
    body = await json_request(request, ActivateJobsRequest)
    jobs: list[dict[str, Any]] = []
    # Like Zeebe's gateway: ask partitions one after another until enough jobs are found,
    # starting at a rotating partition so that no partition is always served first.
    first = client.next_partition()
    count = client.partition_count
    for offset in range(count):
        if len(jobs) >= body.max_jobs_to_activate:
            break
        partition = PartitionId((first - 1 + offset) % count + 1)
        value = {
            "type": body.type,
            "worker": body.worker,
            "timeout": body.timeout_ms,
            "maxJobsToActivate": body.max_jobs_to_activate - len(jobs),
        }
        response = _check(
            await client.execute(partition, ValueType.JOB_BATCH, "ACTIVATE", -1, value)
        )
        jobs.extend(_activated_job(job, body.fetch_variable) for job in response.value["jobs"])
    return web.json_response({"jobs": jobs})


async def complete_job(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    key = _key(request.match_info["jobKey"], "jobKey", client)
    body = await json_request(request, CompleteJobRequest, optional=True)
    value = {"variables": body.variables}
    _check(await client.execute(partition_of_key(key), ValueType.JOB, "COMPLETE", key, value))
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
    response = _check(await client.execute(partition, ValueType.MESSAGE, "PUBLISH", -1, value))
    return web.json_response({"messageKey": str(response.key), "tenantId": TENANT})


_ROLES = {"LEADER": "leader", "FOLLOWER": "follower"}


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
            "lastCompletedChangeId": NO_CHANGE_ID,
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
    # Not "search": that path is the search's, and its 405 must not advertise GET.
    app.router.add_get("/v2/process-instances/{processInstanceKey:(?!search$)[^/]+}", get_instance)
    app.router.add_post("/v2/jobs/activation", activate_jobs)
    app.router.add_post("/v2/jobs/{jobKey}/completion", complete_job)
    app.router.add_post("/v2/messages/publication", publish_message)
    app.router.add_get("/v2/topology", topology)
    return app
