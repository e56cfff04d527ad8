"""The 8.10 backup endpoints of the REST API (``/v2/backups/runtime``, reference
backups-8.9-8.10.md A.7) over the in-process cluster: the same operations as the actuator, with
the 8.10 shapes (every field present, null when unknown) and Problem Details errors. Every
answer is checked against ``gateway/openapi-v2.yaml``. The SDK test (tests/clients) drives the
same endpoints through Camunda's client over real processes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_rest_openapi import assert_documented
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

BASE = "/v2/backups/runtime"
ONE = BASE + "/{backupId}"
DETAIL_FIELDS = {
    "partitionId",
    "state",
    "failureReason",
    "createdAt",
    "lastUpdatedAt",
    "snapshotId",
    "firstLogPosition",
    "checkpointPosition",
    "brokerId",
    "brokerVersion",
}


async def rest(
    cluster: InProcessCluster,
    template: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """One call to the REST API; the answer must be one the document promises."""
    headers = {"Content-Type": content_type} if body is not None else {}
    async with cluster.api.session.request(
        method,
        cluster.rest_url + path,
        data=io.BytesIO(body) if body is not None else None,
        headers=headers,
    ) as response:
        text = await response.text()
        answer = await response.json(content_type=None) if text else None
        assert_documented(
            template, method, response.status, response.headers.get("Content-Type"), answer
        )
        return response.status, answer


async def completed(cluster: InProcessCluster, backup_id: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, info = await rest(cluster, ONE, "GET", f"{BASE}/{backup_id}")
        return info if status == 200 and info["state"] == "COMPLETED" else None

    return await eventually(probe, timeout_s=20, interval_s=0.01)


async def test_the_runtime_backup_cycle_over_rest(tmp_path: Path) -> None:
    """POST {backupId} is 202 {backupId}; GET shows it COMPLETED with every detail field on
    every partition (null where unknown); the list is newest first, by prefix too; a repeated
    id is a 409 Problem Details; DELETE is 204 (twice), then GET is 404."""
    async with InProcessCluster(tmp_path) as cluster:
        for backup_id in (10, 17, 170):
            body = f'{{"backupId": {backup_id}}}'.encode()
            assert await rest(cluster, BASE, "POST", BASE, body) == (202, {"backupId": backup_id})
            info = await completed(cluster, backup_id)
        assert info["failureReason"] is None
        assert [d["partitionId"] for d in info["details"]] == [1, 2, 3]
        for detail in info["details"]:
            assert set(detail) == DETAIL_FIELDS
            assert detail["state"] == "COMPLETED" and detail["failureReason"] is None
            assert detail["brokerId"] == detail["partitionId"] - 1
            assert detail["checkpointPosition"] >= detail["firstLogPosition"] >= 1
            assert detail["brokerVersion"]

        status, listed = await rest(cluster, BASE, "GET", BASE)
        assert status == 200 and [b["backupId"] for b in listed] == [170, 17, 10]
        assert all(set(d) == DETAIL_FIELDS for b in listed for d in b["details"])
        for prefix, expected in (("*", [170, 17, 10]), ("17*", [170, 17]), ("2*", [])):
            status, listed = await rest(cluster, BASE, "GET", f"{BASE}?prefix={prefix}")
            assert (status, [b["backupId"] for b in listed]) == (200, expected), prefix

        status, problem = await rest(cluster, BASE, "POST", BASE, b'{"backupId": 17}')
        assert status == 409 and problem["status"] == 409
        assert problem["detail"].startswith("Requested backup has ID 17. The latest backup has ")
        assert problem["instance"] == BASE

        assert await rest(cluster, ONE, "DELETE", f"{BASE}/17") == (204, None)
        assert await rest(cluster, ONE, "DELETE", f"{BASE}/17") == (204, None)
        status, problem = await rest(cluster, ONE, "GET", f"{BASE}/17")
        assert (status, problem["detail"]) == (404, "Backup with id 17 does not exist")


async def test_bad_backup_input_over_rest_is_a_documented_4xx(tmp_path: Path) -> None:
    """Outside generated-id mode a POST without a body or backupId (null included) is 400 with
    the id rule's message; a bad id or prefix is 400; a non-JSON body is 415; ids <= 0 are 404
    for GET and 204 for DELETE. Nothing was taken by any of it."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        for body in (None, b"", b"{}", b'{"backupId": null}'):
            status, problem = await rest(cluster, BASE, "POST", BASE, body)
            assert status == 400, body
            assert problem["detail"] == "A backupId must be provided and it must be > 0"
        for body in (b'{"backupId": 0}', b'{"backupId": "x"}', b"{no json", b"[]"):
            assert (await rest(cluster, BASE, "POST", BASE, body))[0] == 400, body
        assert (await rest(cluster, BASE, "POST", BASE, b"backupId=5", "text/plain"))[0] == 415
        for prefix in ("1", "a*", "1x*"):
            assert (await rest(cluster, BASE, "GET", f"{BASE}?prefix={prefix}"))[0] == 400
        assert await rest(cluster, BASE, "GET", f"{BASE}?prefix=-1*") == (200, [])
        for method in ("GET", "DELETE"):
            status, problem = await rest(cluster, ONE, method, f"{BASE}/abc")
            assert status == 400 and problem["detail"] == "Expected a backup ID, but got 'abc'."
        for raw in ("0", "-5"):
            assert (await rest(cluster, ONE, "GET", f"{BASE}/{raw}"))[0] == 404
            assert await rest(cluster, ONE, "DELETE", f"{BASE}/{raw}") == (204, None)
        assert await rest(cluster, BASE, "GET", BASE) == (200, [])
