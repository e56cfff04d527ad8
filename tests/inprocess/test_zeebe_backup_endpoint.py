"""Zeebe's own backup endpoint tests, as ours, against the newest line: ``BackupEndpointTest``
(dist/.../shared/management) and ``BackupErrorResponseTest`` (zeebe/qa/.../it/cluster/backup)
in camunda/camunda, by their case names. Zeebe's endpoint test mocks the backup API; here every
case runs against the real brokers and gateway of the in-process cluster (the error mapping
cases against the real error middleware), and asserts the behaviour the Zeebe case asserts,
with the newest line's shapes (202 body with backupId, firstLogPosition, lists newest first).
The acceptance tests (``BackupAcceptance``) run on real processes:
tests/e2e/test_zeebe_backup_acceptance.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.scheduler import SchedulerConfig
from gateway.backups import GENERATED_ID_GIVEN
from gateway.client import NoLeader
from gateway.errors import actuator_errors
from tests.conftest import COMPLETED_DETAIL_FIELDS
from tests.inprocess.helpers import JSON, raw, restart_during_upload
from zeebe_sim.ground import errors
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

BASE = "/actuator/backupRuntime"
CONTINUOUS = SchedulerConfig(continuous=True)


async def completed(cluster: InProcessCluster, backup_id: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, info = await raw(cluster, "GET", f"{BASE}/{backup_id}")
        return info if status == 200 and info["state"] in ("COMPLETED", "FAILED") else None

    return await eventually(probe, timeout_s=20, interval_s=0.005)


async def take(cluster: InProcessCluster, body: bytes | None) -> tuple[int, Any]:
    return await raw(cluster, "POST", BASE, body, JSON if body is not None else None)


# -- BackupEndpointTest -------------------------------------------------------------------------

# Zeebe's Failures: what the backup API fails with -> the status the endpoint answers.
FAILURES = [
    (errors.BrokerUnavailable("failure"), 502),  # ConnectException
    (errors.RequestTimeout("failure"), 504),  # TimeoutException, ConnectTimeoutException
    (NoLeader("failure"), 504),  # retried until the request timeout
    (errors.PartitionLeaderMismatch("failure"), 502),
    (errors.ResourceExhausted("failure"), 503),
    (errors.InternalError("failure"), 500),  # PARTITION_UNAVAILABLE, INTERNAL_ERROR
    (errors.UnsupportedMessage("failure"), 400),
    (RuntimeException := RuntimeError("failure"), 500),
]


@pytest.mark.parametrize(("failure", "expected"), FAILURES, ids=lambda v: type(v).__name__)
async def test_BackupEndpointTest_shouldReturnCorrectErrorCode(
    failure: Exception, expected: int
) -> None:
    """Take, status, list and delete map each failure of the backup API to Zeebe's status,
    with the failure's message in ``{"message"}`` (a bug of ours: a fixed text, never the
    internals)."""

    async def failing(request: web.Request) -> web.Response:
        raise failure

    app = web.Application(middlewares=[actuator_errors])
    for method in ("POST", "GET", "DELETE"):
        app.router.add_route(method, "/actuator/backups/{any:.*}", failing)
    async with TestClient(TestServer(app)) as client:
        for method, path in [("POST", ""), ("GET", "1"), ("GET", "*"), ("DELETE", "1")]:
            response = await client.request(method, f"/actuator/backups/{path}")
            assert response.status == expected, (method, path)
            body = await response.json()
            assert set(body) == {"message"}
            if failure is not RuntimeException:
                assert "failure" in body["message"]


async def test_BackupEndpointTest_TakeTest_shouldReturn409WhenBackupAlreadyExists(
    tmp_path: Path,
) -> None:
    """Backup 2 exists; taking 1 is 409 with the newest line's message."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=2) as cluster:
        assert (await take(cluster, b'{"backupId": 2}'))[0] == 202
        status, body = await take(cluster, b'{"backupId": 1}')
        assert status == 409
        assert body["message"].startswith("Requested backup has ID 1. The latest backup has ID 2.")


async def test_BackupEndpointTest_TakeTest_shouldReturn400WhenContinuousBackupsAreEnabled(
    tmp_path: Path,
) -> None:
    """In generated-id mode an explicit id is 400 with Zeebe's message (main's wording)."""
    async with InProcessCluster(
        tmp_path, brokers=1, partitions=1, backup_schedule=CONTINUOUS
    ) as cluster:
        assert await take(cluster, b'{"backupId": 1}') == (400, {"message": GENERATED_ID_GIVEN})


async def test_BackupEndpointTest_TakeTest_backupIdShouldBeCloseToNowWhenContinuousBackupsEnabled(
    tmp_path: Path,
) -> None:
    """Two POSTs without a body: both 202 with the generated id in the body and the message;
    the second id is higher; both are epoch milliseconds within 2 s of now."""
    async with InProcessCluster(
        tmp_path, brokers=1, partitions=2, backup_schedule=CONTINUOUS
    ) as cluster:
        now_ms = time.time() * 1000
        status, first = await take(cluster, None)
        assert status == 202, first
        # Two requests at two different times, as in Zeebe's case (the same millisecond
        # would be the same id, which is a 409).
        await asyncio.sleep(0.1)
        status, second = await take(cluster, b"")
        assert status == 202, second
        for answer in (first, second):
            backup_id = answer["backupId"]
            assert answer["message"] == (
                f"A backup with id {backup_id} has been scheduled. Use GET "
                f"actuator/backups/{backup_id} to monitor the status."
            )
            assert abs(backup_id - now_ms) < 2000
        assert second["backupId"] > first["backupId"]


async def test_BackupEndpointTest_TakeTest_backupIdShouldIncludeOffsetOnContinuousBackups(
    tmp_path: Path,
) -> None:
    """With offset 20251104131520 the generated id minus the offset is within 2 s of now."""
    offset = 20251104131520
    async with InProcessCluster(
        tmp_path,
        brokers=1,
        partitions=1,
        backup_schedule=SchedulerConfig(continuous=True, offset=offset),
    ) as cluster:
        status, body = await take(cluster, None)
        assert status == 202, body
        assert abs(body["backupId"] - offset - time.time() * 1000) < 2000


async def test_BackupEndpointTest_StatusTest_shouldReturn404WhenBackupDoesNotExist(
    tmp_path: Path,
) -> None:
    """A backup no partition has is 404 with Zeebe's message."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=2) as cluster:
        assert await raw(cluster, "GET", f"{BASE}/1") == (
            404,
            {"message": "Backup with id 1 does not exist"},
        )


async def test_BackupEndpointTest_StatusTest_shouldReturnCompletedBackupStatus(
    tmp_path: Path,
) -> None:
    """A COMPLETED backup: every partition's detail has the dates, firstLogPosition,
    checkpointPosition, brokerId and brokerVersion; no failureReason anywhere."""
    async with InProcessCluster(tmp_path, brokers=2, partitions=2) as cluster:
        assert (await take(cluster, b'{"backupId": 1}'))[0] == 202
        info = await completed(cluster, 1)
        assert (info["backupId"], info["state"]) == (1, "COMPLETED") and "failureReason" not in info
        assert [d["partitionId"] for d in info["details"]] == [1, 2]
        for detail in info["details"]:
            assert detail["state"] == "COMPLETED"
            assert set(detail) - {"snapshotId"} == COMPLETED_DETAIL_FIELDS


async def test_BackupEndpointTest_StatusTest_shouldReturnFailedBackupStatus(
    tmp_path: Path,
) -> None:
    """One partition FAILED (its leader stopped mid-upload), one COMPLETED: the backup is
    FAILED with the partition's reason; the failed detail has its reason and no version."""
    async with InProcessCluster(
        tmp_path, brokers=2, partitions=2, backup_upload_delay_s=1.0
    ) as cluster:
        assert (await take(cluster, b'{"backupId": 1}'))[0] == 202
        await restart_during_upload(cluster, 1, partition=2, node=1)
        info = await completed(cluster, 1)
        assert info["state"] == "FAILED"
        assert info["failureReason"] == (
            # Zeebe's format "...failed due to %s. " after a reason that ends with a period.
            "Backup on partition 2 failed due to Backup is cancelled due to leader change.. "
        )
        detail = info["details"][1]
        assert detail["failureReason"] == "Backup is cancelled due to leader change."
        assert set(detail) <= {
            "partitionId",
            "state",
            "failureReason",
            "createdAt",
            "lastUpdatedAt",
            "snapshotId",
        }


async def test_BackupEndpointTest_ListTest_shouldReturnListOfBackups(tmp_path: Path) -> None:
    """Two backups, listed newest first (the newest line sorts), each detail with only
    partitionId, state, createdAt and brokerVersion."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        for backup_id in (1, 2):
            assert (await take(cluster, f'{{"backupId": {backup_id}}}'.encode()))[0] == 202
            await completed(cluster, backup_id)
        status, listed = await raw(cluster, "GET", BASE)
        assert status == 200 and [(b["backupId"], b["state"]) for b in listed] == [
            (2, "COMPLETED"),
            (1, "COMPLETED"),
        ]
        for backup in listed:
            assert [set(d) for d in backup["details"]] == [
                {"partitionId", "state", "createdAt", "brokerVersion"}
            ]


async def test_BackupEndpointTest_ListTest_shouldReturnEmptyList(tmp_path: Path) -> None:
    """No backup: the list is []."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        assert await raw(cluster, "GET", BASE) == (200, [])


async def test_BackupEndpointTest_DeleteTest_shouldDeleteBackup(tmp_path: Path) -> None:
    """DELETE of a backup is 204, and it is gone (404)."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        assert (await take(cluster, b'{"backupId": 1}'))[0] == 202
        await completed(cluster, 1)
        assert await raw(cluster, "DELETE", f"{BASE}/1") == (204, None)
        assert (await raw(cluster, "GET", f"{BASE}/1"))[0] == 404


async def test_BackupEndpointTest_StateTest_shouldReturnEmptyState(tmp_path: Path) -> None:
    """No checkpoint yet: the runtime state has three empty lists."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=2) as cluster:
        assert await raw(cluster, "GET", f"{BASE}/state") == (
            200,
            {"checkpointStates": [], "backupStates": [], "ranges": []},
        )


async def test_BackupEndpointTest_StateTest_shouldReturnBothCheckpointAndBackupState(
    tmp_path: Path,
) -> None:
    """A manual backup, then MARKER checkpoints from the checkpoint interval: the latest
    checkpoint is a MARKER newer than the backup, the latest backup is MANUAL_BACKUP (with its
    firstLogPosition), each list by partition; a range starts and ends at the backup (no
    partitionId inside, no missingCheckpoints: the released 8.9 shape)."""
    markers = SchedulerConfig(checkpoint_interval_ms=300)
    async with InProcessCluster(
        tmp_path, brokers=1, partitions=2, backup_schedule=markers
    ) as cluster:
        status, taken = await take(cluster, None)
        assert status == 202, taken
        backup_id = taken["backupId"]
        assert (await completed(cluster, backup_id))["state"] == "COMPLETED"

        async def marked() -> dict[str, Any] | None:
            status, state = await raw(cluster, "GET", f"{BASE}/state")
            assert status == 200
            types = {c["checkpointType"] for c in state["checkpointStates"]}
            backups = [b["checkpointId"] for b in state["backupStates"]]
            return state if types == {"MARKER"} and backup_id in backups else None

        state = await eventually(marked, timeout_s=30, interval_s=0.05)
        assert [c["partitionId"] for c in state["checkpointStates"]] == [1, 2]
        assert all(c["checkpointId"] > backup_id for c in state["checkpointStates"])
        for backup in state["backupStates"]:
            assert backup["checkpointType"] in ("MANUAL_BACKUP", "SCHEDULED_BACKUP")
            assert backup["firstLogPosition"] >= 1
        assert {r["partitionId"] for r in state["ranges"]} == {1, 2}
        for backup_range in state["ranges"]:
            assert "partitionId" not in backup_range["start"]
            assert "missingCheckpoints" not in backup_range


# -- BackupErrorResponseTest --------------------------------------------------------------------


@pytest.mark.parametrize(("existing", "requested"), [(1, 1), (2, 1)])
async def test_BackupErrorResponseTest_DuplicateBackupIdTest_shouldFailTakeBackupIfCheckpointAlreadyExists(  # noqa: E501 (Zeebe's case name)
    tmp_path: Path, existing: int, requested: int
) -> None:
    """Taking an id at or below an existing checkpoint is 409."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        await take(cluster, f'{{"backupId": {existing}}}'.encode())
        assert (await take(cluster, f'{{"backupId": {requested}}}'.encode()))[0] == 409


async def test_BackupErrorResponseTest_BackupNotConfiguredTest_shouldReturn400(
    tmp_path: Path,
) -> None:
    """No backup store configured: a status request is 400."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1, backups=False) as cluster:
        assert (await raw(cluster, "GET", f"{BASE}/1"))[0] == 400


async def test_BackupErrorResponseTest_RequestTimeoutTest_shouldReturn504(tmp_path: Path) -> None:
    """The only broker is gone: the status request is retried until the (short) request
    timeout and then answered 504."""
    async with InProcessCluster(
        tmp_path, brokers=1, partitions=1, request_timeout_s=0.3
    ) as cluster:
        await cluster.kill_broker(0)
        status, body = await raw(cluster, "GET", f"{BASE}/1")
        assert status == 504 and set(body) == {"message"}


async def test_BackupErrorResponseTest_ContinuousBackupsEnabled_shouldReturn400(
    tmp_path: Path,
) -> None:
    """Continuous backups: taking backup 1 by id is 400."""
    async with InProcessCluster(
        tmp_path, brokers=1, partitions=1, backup_schedule=CONTINUOUS
    ) as cluster:
        assert (await take(cluster, b'{"backupId": 1}'))[0] == 400
