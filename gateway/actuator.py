"""The management app on port 9600: health, partitions and (with backups) the Backup API."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from aiohttp import web

from gateway import backups, recovery
from gateway.client import BrokerClient
from gateway.errors import actuator_errors

CLIENT = web.AppKey("client", BrokerClient)
# Served as a document, not under /actuator: it describes the API, it is not part of it.
OPENAPI_PATH = "/openapi/backup-management-api.yaml"


def _partitions(client: BrokerClient) -> dict[str, Any]:
    return {
        str(p): {
            "leader": client.leaders.get(p),
            "health": "UP" if client.partition_health(p) == "HEALTHY" else "DOWN",
        }
        for p in client.partition_ids()
    }


async def health(request: web.Request) -> web.Response:
    """UP once the gateway knows the cluster's topology (Zeebe's gateway health)."""
    client = request.app[CLIENT]
    up = client.partition_count > 0
    body = {
        "status": "UP" if up else "DOWN",
        "components": {
            "brokers": {
                "status": "UP" if client.brokers else "DOWN",
                "details": {"count": len(client.brokers)},
            },
            "partitions": {
                "status": "UP"
                if all(client.partition_health(p) == "HEALTHY" for p in client.partition_ids())
                and client.all_partitions_have_leader
                else "DOWN",
                "details": _partitions(client),
            },
        },
    }
    return web.json_response(body, status=200 if up else 503)


async def readiness(request: web.Request) -> web.Response:
    """Ready when every partition has a leader."""
    client = request.app[CLIENT]
    ready = client.all_partitions_have_leader
    return web.json_response({"status": "UP" if ready else "DOWN"}, status=200 if ready else 503)


async def liveness(request: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


async def partitions(request: web.Request) -> web.Response:
    """Every partition's status, as the brokers' ``/actuator/partitions`` reports it."""
    client = request.app[CLIENT]
    result: dict[str, Any] = {}
    for node in sorted(client.brokers):
        leads = [p for p, n in client.leaders.items() if n == node]
        if leads:
            # The broker reports every replica it hosts; each partition as its leader sees it.
            statuses = await client.query(leads[0], "partitions", {})
            result.update({p: s for p, s in statuses.items() if int(p) in leads})
    return web.json_response(dict(sorted(result.items(), key=lambda kv: int(kv[0]))))


@functools.cache
def openapi_document() -> bytes:
    """The Backup Management API's OpenAPI document (``gateway/openapi.yaml``, package data),
    read once per process."""
    return resources.files("gateway").joinpath("openapi.yaml").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/yaml")


def management_app(client: BrokerClient, backup_fanout_jitter_s: float = 0.0) -> web.Application:
    app = web.Application(middlewares=[actuator_errors])
    app[CLIENT] = client
    openapi_document()  # a missing document fails the start, not the first request
    app.router.add_get(OPENAPI_PATH, openapi)
    app.router.add_get("/actuator/health", health)
    app.router.add_get("/actuator/health/readiness", readiness)
    app.router.add_get("/actuator/health/liveness", liveness)
    app.router.add_get("/actuator/partitions", partitions)
    backups.add_routes(app, client, backup_fanout_jitter_s)
    recovery.add_management_routes(app, client)
    return app
