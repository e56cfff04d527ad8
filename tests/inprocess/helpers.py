"""Small helpers shared by the in-process tests."""

from __future__ import annotations

import io
from typing import Any

from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

JSON = {"Content-Type": "application/json"}


async def raw(
    cluster: InProcessCluster,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One call to the management API: (status, decoded JSON body or None). Every answer but
    a 204 must be JSON."""
    # A file-like body: aiohttp warns about large raw bytes blocking the loop.
    data = io.BytesIO(body) if body is not None else None
    async with cluster.api.session.request(
        method, cluster.management_url + path, data=data, headers=headers
    ) as response:
        text = await response.text()
        if response.status != 204:
            assert response.headers["Content-Type"].startswith("application/json"), text
        return response.status, (await response.json(content_type=None) if text else None)


async def partition_backup_state(cluster: InProcessCluster, backup_id: int, partition: int) -> str:
    """One partition's state in GET /actuator/backups/{id} (DOES_NOT_EXIST when absent)."""
    status, info = await raw(cluster, "GET", f"/actuator/backups/{backup_id}")
    if status == 404:
        return "DOES_NOT_EXIST"
    details = {d["partitionId"]: d for d in info.get("details", [])}
    return str(details.get(partition, {}).get("state", "DOES_NOT_EXIST"))


async def no_backup_running(cluster: InProcessCluster) -> bool:
    """True when no broker has a backup upload running."""
    return all(
        broker.backups.running(p) == 0
        for broker in cluster.brokers.values()
        for p in broker.partitions
    )


async def restart_during_upload(
    cluster: InProcessCluster, backup_id: int, partition: int, node: int
) -> None:
    """Once ``partition``'s copy of the backup is IN_PROGRESS (a cluster with an upload delay),
    stop broker ``node`` (its leader) and start it again; wait until every partition leads."""

    async def uploading() -> bool:
        return await partition_backup_state(cluster, backup_id, partition) == "IN_PROGRESS"

    await eventually(uploading, timeout_s=10, interval_s=0.005)
    await cluster.kill_broker(node)
    await cluster.start_broker(node)
    await cluster.wait_ready()
