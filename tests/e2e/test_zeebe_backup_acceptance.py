"""Zeebe's backup acceptance tests (``BackupAcceptance`` in camunda/camunda,
zeebe/qa/.../it/cluster/backup), as ours, by their case names, on real processes: two brokers,
two partitions and a gateway, a fresh cluster per case as in Zeebe, driven through the
actuator under ``/actuator/backupRuntime`` (the newest line's shapes: lists newest first,
firstLogPosition, the runtime state with ranges of backups)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import FAST_BROKER_ARGS
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

BASE = "/actuator/backupRuntime"
PARTITIONS = 2


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RunningCluster]:
    async with running_cluster(
        tmp_path, brokers=2, partitions=PARTITIONS, broker_args=FAST_BROKER_ARGS
    ) as running:
        yield running


async def call(cluster: RunningCluster, method: str, path: str, body: Any = None) -> Any:
    return await cluster.api.call(method, cluster.management_url + BASE + path, json=body)


async def take(cluster: RunningCluster, backup_id: int) -> Any:
    return await call(cluster, "POST", "", {"backupId": backup_id})


async def wait_until_completed(cluster: RunningCluster, backup_id: int) -> dict[str, Any]:
    """Zeebe's waitUntilBackupIsCompleted: the backup is COMPLETED on partitions 1 and 2."""

    async def done() -> dict[str, Any] | None:
        status = await cluster.api.call(
            "GET", f"{cluster.management_url}{BASE}/{backup_id}", ok=(200, 404)
        )
        if status.get("state") != "COMPLETED":
            return None
        assert sorted(d["partitionId"] for d in status["details"]) == [1, 2]
        return dict(status)

    return await eventually(done, timeout_s=30)


async def test_shouldTakeBackup(cluster: RunningCluster) -> None:
    """After a message is published, POST of backup 1 answers the 202 body (backupId and
    message), and the backup completes."""
    await cluster.api.publish("name", "key")
    response = await take(cluster, 1)
    assert response["backupId"] == 1 and response["message"].startswith("A backup with id 1 ")
    await wait_until_completed(cluster, 1)


async def test_shouldListBackups(cluster: RunningCluster) -> None:
    """Backups 1 and 2, once completed, are listed as exactly (2, COMPLETED), (1, COMPLETED)."""
    await cluster.api.publish("name", "key")
    await take(cluster, 1)
    await take(cluster, 2)
    await wait_until_completed(cluster, 1)
    await wait_until_completed(cluster, 2)
    listed = await call(cluster, "GET", "")
    assert [(b["backupId"], b["state"]) for b in listed] == [(2, "COMPLETED"), (1, "COMPLETED")]


async def test_shouldListBackupsByPrefix(cluster: RunningCluster) -> None:
    """Backups 100, 105 and 200: the prefix 10* lists exactly (105, ...), (100, ...)."""
    await cluster.api.publish("name", "key")
    for backup_id in (100, 105, 200):
        await take(cluster, backup_id)
    for backup_id in (100, 105, 200):
        await wait_until_completed(cluster, backup_id)
    listed = await call(cluster, "GET", "/10*")
    assert [(b["backupId"], b["state"]) for b in listed] == [
        (105, "COMPLETED"),
        (100, "COMPLETED"),
    ]


async def test_shouldDeleteBackup(cluster: RunningCluster) -> None:
    """A completed backup deleted is 404 from then on, and the backup ranges reflect the
    deletion (none left)."""
    await take(cluster, 1)
    await wait_until_completed(cluster, 1)
    await call(cluster, "DELETE", "/1")

    async def gone() -> bool:
        status = await cluster.api.call("GET", f"{cluster.management_url}{BASE}/1", ok=(200, 404))
        return status.get("state") is None

    await eventually(gone, timeout_s=30)

    async def no_ranges() -> bool:
        return (await call(cluster, "GET", "/state"))["ranges"] == []

    await eventually(no_ranges, timeout_s=30)


async def test_shouldRetrieveState(cluster: RunningCluster) -> None:
    """After backup 1: one backup state per partition (id 1, MANUAL_BACKUP), one checkpoint
    state per partition (id 1); then one range per partition, starting and ending at 1."""
    await take(cluster, 1)
    await wait_until_completed(cluster, 1)

    async def confirmed() -> dict[str, Any] | None:
        state: dict[str, Any] = await call(cluster, "GET", "/state")
        return state if len(state["backupStates"]) == PARTITIONS else None

    state = await eventually(confirmed, timeout_s=30)
    assert len(state["checkpointStates"]) == PARTITIONS
    assert all(
        (s["checkpointId"], s["checkpointType"]) == (1, "MANUAL_BACKUP")
        for s in state["backupStates"]
    )
    assert all(s["checkpointId"] == 1 for s in state["checkpointStates"])

    async def ranged() -> list[dict[str, Any]] | None:
        ranges: list[dict[str, Any]] = (await call(cluster, "GET", "/state"))["ranges"]
        return ranges if len(ranges) == PARTITIONS else None

    ranges = await eventually(ranged, timeout_s=30)
    assert sorted(r["partitionId"] for r in ranges) == [1, 2]  # unique per partition
    for backup_range in ranges:
        assert backup_range["start"]["checkpointId"] == backup_range["end"]["checkpointId"] == 1
        assert backup_range.get("missingCheckpoints", []) == []


async def test_shouldExposeFirstLogPositionInBackupStatus(cluster: RunningCluster) -> None:
    """Every partition's detail of a completed backup has a positive firstLogPosition."""
    await cluster.api.publish("name", "key")
    await take(cluster, 1)
    await wait_until_completed(cluster, 1)
    status = await call(cluster, "GET", "/1")
    assert all(d["firstLogPosition"] > 0 for d in status["details"])
