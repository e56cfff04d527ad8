"""The Backup Management API over the in-process cluster: the gateway's fan-out and
aggregation, the brokers' backup service and a memory store, without a process (REFERENCE.md
§1, §4). Every answer is also checked against the OpenAPI document. The multi-process tests
(tests/e2e/test_backups.py, test_openapi.py) prove the same API through real processes, a
filesystem store and kill -9."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from storage.backup.base import MANIFEST_NAME
from tests.conftest import COMPLETED_DETAIL_FIELDS
from tests.e2e.test_openapi import assert_documented
from tests.inprocess.helpers import (
    JSON,
    no_backup_running,
    partition_backup_state,
    raw,
    restart_during_upload,
)
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess

BASES = ("/actuator/backups", "/actuator/backupRuntime")
NO_STORE = (
    "Cannot process backup requests. No backup store is configured. To use this feature, "
    "configure backup in broker configuration."
)


async def checked(
    cluster: InProcessCluster, method: str, path: str, body: bytes | None = None
) -> tuple[int, Any]:
    """Call the management API; the answer must be one the OpenAPI document promises."""
    status, answer = await raw(cluster, method, path, body, JSON if body is not None else None)
    content_type = "application/json" if status != 204 else None
    assert_documented(method, path, status, content_type, answer)
    return status, answer


async def settled(cluster: InProcessCluster, backup_id: int) -> dict[str, Any]:
    """Poll GET until the backup is COMPLETED or FAILED (each answer documented)."""

    async def probe() -> dict[str, Any] | None:
        status, info = await checked(cluster, "GET", f"/actuator/backups/{backup_id}")
        return info if status == 200 and info["state"] in ("COMPLETED", "FAILED") else None

    return await eventually(probe, timeout_s=20, interval_s=0.005)


async def test_the_documented_backup_cycle(tmp_path: Path) -> None:
    """POST { "backupId": "100" } (the docs' string id) is 202 with Zeebe's message; GET shows
    it COMPLETED on every partition with every detail field; it is listed under both bases and
    every matching prefix, not under another; DELETE is 204 (twice), then GET is 404; and the
    id can never be taken again (409)."""
    async with InProcessCluster(tmp_path) as cluster:
        assert await checked(cluster, "POST", "/actuator/backups", b'{ "backupId": "100" }') == (
            202,
            {
                "backupId": 100,
                "message": "A backup with id 100 has been scheduled. Use GET actuator/backups/100 "
                "to monitor the status.",
            },
        )
        info = await settled(cluster, 100)
        assert info["state"] == "COMPLETED"
        assert [d["partitionId"] for d in info["details"]] == [1, 2, 3]
        for detail in info["details"]:
            assert set(detail) == COMPLETED_DETAIL_FIELDS  # a log-only backup has no snapshotId
            assert detail["brokerId"] == detail["partitionId"] - 1
            assert detail["createdAt"].endswith("Z")
        for base in BASES:
            for suffix in ("", "/1*", "/10*", "/100*", "/*"):
                status, listed = await checked(cluster, "GET", base + suffix)
                assert status == 200 and [b["backupId"] for b in listed] == [100], suffix
                assert set(listed[0]["details"][0]) == {
                    "partitionId",
                    "state",
                    "createdAt",
                    "brokerVersion",
                }
            assert await checked(cluster, "GET", f"{base}/2*") == (200, [])
            assert await checked(cluster, "GET", f"{base}/1000*") == (200, [])
            assert (await checked(cluster, "GET", f"{base}/100"))[1] == info
        assert await checked(cluster, "DELETE", "/actuator/backups/100") == (204, None)
        assert await checked(cluster, "GET", "/actuator/backups/100") == (
            404,
            {"message": "Backup with id 100 does not exist"},
        )
        assert await checked(cluster, "DELETE", "/actuator/backupRuntime/100") == (204, None)
        status, body = await checked(cluster, "POST", "/actuator/backups", b'{"backupId": 100}')
        assert status == 409 and body["message"] == (
            "Requested backup has ID 100. The latest backup has ID 100. The backup ID must be "
            "greater than the ID of previous backups that are completed, failed, or deleted."
        )
        status, body = await checked(cluster, "POST", "/actuator/backupRuntime", b'{"backupId": 7}')
        assert status == 409 and "The latest backup has ID 100" in body["message"]
        assert (await checked(cluster, "POST", "/actuator/backups", b'{"backupId": 101}'))[0] == 202
        assert (await settled(cluster, 101))["state"] == "COMPLETED"


BAD_BODIES = [
    b'{"backupId": 0}',
    b'{"backupId": -3}',
    b'{"backupId": 1.5}',
    b'{"backupId": "abc"}',
    b'{"backupId": "12a"}',
    b'{"backupId": 9223372036854775808}',
    b'{"backupId": true}',
    b'{"backupId": null}',
    b"",
    b"{not json",
    b"[]",
    b'{"id": 5}',
    b'"5"',
    # Input that once got a 500 (int() refuses beyond 4,300 digits, json.loads recurses) or was
    # taken for another id ("\t7" as 7).
    b'{"backupId": ' + b"1" * 5000 + b"}",
    b'{"backupId": "' + b"1" * 5000 + b'"}',
    b'{"backupId": "\\t7"}',
    b"[" * 100_000,
]
HUGE = "1" * 5000
BAD_PATHS = [
    ("GET", "/abc"),
    ("GET", "/99999999999999999999"),
    ("GET", "/1x*"),
    ("GET", f"/{HUGE}"),
    ("GET", f"/{HUGE}x*"),
    ("GET", "/7%0A"),
    ("DELETE", "/9223372036854775808"),
    ("DELETE", "/abc"),
    ("DELETE", f"/{HUGE}"),
    ("DELETE", "/7%0A"),
]


async def test_bad_backup_input_is_a_documented_400_never_500(tmp_path: Path) -> None:
    """POST ids 0, negative, fractional, non-numeric, beyond int64 or beyond Python's int
    conversion limit, with whitespace other than spaces; a missing body, broken or deeply
    nested JSON: 400 with Zeebe's message under both bases, never a 500 nor another backup;
    a body over the size limit is 413; a path id that is not a long is 400 with the newest
    line's message."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        for base in BASES:
            for body in BAD_BODIES:
                status, answer = await checked(cluster, "POST", base, body or None)
                assert status == 400, (body[:40], answer)
                assert answer["message"].startswith(
                    "A backupId must be provided and it must be > 0"
                ), answer
            for method, suffix in BAD_PATHS:
                status, answer = await checked(cluster, method, base + suffix)
                assert status == 400, (method, suffix, answer)
                expected = (
                    "a backup ID or 'state'"
                    if method == "DELETE"
                    else ("a backup ID or prefix ending with '*'")
                )
                assert answer["message"].startswith(f"Expected {expected}, but got '"), answer
            too_large = b'{"backupId": 300, "padding": "' + b"x" * 2**20 + b'"}'
            assert (await checked(cluster, "POST", base, too_large))[0] == 413
        # Nothing was taken by any of it.
        assert await checked(cluster, "GET", "/actuator/backups") == (200, [])


async def test_ids_at_or_below_zero_are_404_and_204_and_signed_prefixes_list_nothing(
    tmp_path: Path,
) -> None:
    """GET of backup 0, -1 or +0 is 404 "Backup with id N does not exist" and DELETE of them
    204, as the newest line answers (REFERENCE §1: the range of a path id is not validated);
    a prefix with a sign, `-1*`, is a listing that matches nothing; a JSON POST whose
    Content-Type is not JSON is 415."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        assert (await checked(cluster, "POST", "/actuator/backups", b'{"backupId": 3}'))[0] == 202
        await settled(cluster, 3)
        for base in BASES:
            for given, shown in (("0", 0), ("-1", -1), ("+0", 0), ("-3", -3)):
                assert await checked(cluster, "GET", f"{base}/{given}") == (
                    404,
                    {"message": f"Backup with id {shown} does not exist"},
                )
                assert await checked(cluster, "DELETE", f"{base}/{given}") == (204, None)
            assert await checked(cluster, "GET", f"{base}/-1*") == (200, [])
            assert (await checked(cluster, "GET", f"{base}/+3"))[1]["state"] == "COMPLETED"
            status, answer = await raw(
                cluster, "POST", base, b'{"backupId": 9}', {"Content-Type": "text/plain"}
            )
            assert status == 415 and "text/plain" in answer["message"]
        assert (await checked(cluster, "GET", "/actuator/backups/3"))[1]["state"] == "COMPLETED"


async def test_an_undocumented_method_is_405_naming_the_allowed_ones(tmp_path: Path) -> None:
    """PUT on the collection is 405 with the error body and an Allow header."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        url = cluster.management_url + "/actuator/backups"
        async with cluster.api.session.put(url) as response:
            assert response.status == 405
            assert await response.json() == {"message": "Method Not Allowed"}
            allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
            assert allowed >= {"GET", "POST"}


async def test_many_simultaneous_posts_of_one_id_give_exactly_one_202(tmp_path: Path) -> None:
    """25 concurrent POSTs of one id: one 202, 24 409s, and the backup completes."""
    async with InProcessCluster(tmp_path) as cluster:
        path, body = "/actuator/backups", b'{"backupId": 7}'
        results = await asyncio.gather(*(raw(cluster, "POST", path, body, JSON) for _ in range(25)))
        assert sorted(s for s, _ in results) == [202] + [409] * 24
        assert (await settled(cluster, 7))["state"] == "COMPLETED"


async def test_without_a_store_every_operation_is_400_and_no_id_is_consumed(
    tmp_path: Path,
) -> None:
    """No backup store: every operation under both bases is a documented 400 with Zeebe's
    message, and the refused POST wrote no checkpoint (REFERENCE §1, corrected: the broker
    refuses before writing one)."""
    async with InProcessCluster(tmp_path, backups=False) as cluster:
        for base in BASES:
            for method, path, body in [
                ("POST", base, b'{"backupId": 5}'),
                ("GET", base, None),
                ("GET", f"{base}/5*", None),
                ("GET", f"{base}/5", None),
                ("DELETE", f"{base}/5", None),
            ]:
                assert await checked(cluster, method, path, body) == (400, {"message": NO_STORE})
        partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
        assert {p["checkpointId"] for p in partitions.values()} == {-1}


async def test_deleting_an_in_progress_backup_fails_it_first_and_it_never_comes_back(
    tmp_path: Path,
) -> None:
    """DELETE while the uploads run: 204, then 404, still 404 once the uploads are over, and
    nothing of it is left in the store."""
    async with InProcessCluster(tmp_path, backup_upload_delay_s=1.0) as cluster:
        await cluster.api.take_backup(9)

        async def uploading() -> bool:
            return all(
                [await partition_backup_state(cluster, 9, p) == "IN_PROGRESS" for p in (1, 2, 3)]
            )

        await eventually(uploading, timeout_s=10, interval_s=0.005)
        status, listed = await checked(cluster, "GET", "/actuator/backups")
        assert status == 200 and [b["state"] for b in listed] == ["IN_PROGRESS"]
        assert await checked(cluster, "DELETE", "/actuator/backups/9") == (204, None)
        assert (await checked(cluster, "GET", "/actuator/backups/9"))[0] == 404
        await eventually(lambda: no_backup_running(cluster), timeout_s=20, interval_s=0.01)
        assert (await checked(cluster, "GET", "/actuator/backups/9"))[0] == 404
        assert await checked(cluster, "GET", "/actuator/backups") == (200, [])
        # Only the partitions' runtime metadata is left, and it no longer names the backup.
        assert cluster.backups is not None
        assert {k for k in cluster.backups.objects if not k.startswith("metadata/")} == set()
        metadata = [json.loads(v) for v in cluster.backups.objects.values()]
        assert metadata and all(m["checkpoints"] == [] for m in metadata)


async def test_a_broker_stopped_mid_backup_marks_it_failed_and_the_next_id_succeeds(
    tmp_path: Path,
) -> None:
    """The leader of partition 2 stops while its copy uploads; when it is back, that copy is
    FAILED with Zeebe's leader-change reason, the backup is FAILED with the reason per
    partition (by id and in the list), and a higher id then completes."""
    async with InProcessCluster(tmp_path, backup_upload_delay_s=1.0) as cluster:
        await cluster.api.take_backup(1)
        await restart_during_upload(cluster, 1, partition=2, node=1)
        info = await settled(cluster, 1)
        assert info["state"] == "FAILED", info
        failed = {d["partitionId"]: d for d in info["details"]}[2]
        assert failed["state"] == "FAILED"
        assert failed["failureReason"] == "Backup is cancelled due to leader change."
        assert "Backup on partition 2 failed due to Backup is cancelled" in info["failureReason"]
        status, listed = await checked(cluster, "GET", "/actuator/backups/1*")
        assert status == 200 and [(b["backupId"], b["state"]) for b in listed] == [(1, "FAILED")]
        await cluster.api.take_backup(2)
        assert (await settled(cluster, 2))["state"] == "COMPLETED"
        status, listed = await checked(cluster, "GET", "/actuator/backups")
        assert [(b["backupId"], b["state"]) for b in listed] == [(2, "COMPLETED"), (1, "FAILED")]


def _manifest_keys(cluster: InProcessCluster, partition: int, backup_id: int) -> list[str]:
    assert cluster.backups is not None
    keys = [
        key
        for key in cluster.backups.objects
        if key.startswith(f"{partition}/{backup_id}/") and key.endswith(MANIFEST_NAME)
    ]
    assert keys, "no manifest found: did the store's key layout change?"
    return keys


async def test_a_partition_copy_gone_makes_the_backup_incomplete(tmp_path: Path) -> None:
    """One partition's copy disappears from the store: by id and in every list the backup is
    INCOMPLETE, that partition DOES_NOT_EXIST, the others unchanged; DELETE still works."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=2) as cluster:
        await cluster.api.take_backup(100)
        completed = await settled(cluster, 100)
        assert cluster.backups is not None
        for key in _manifest_keys(cluster, 2, 100):
            del cluster.backups.objects[key]
        for base in BASES:
            status, incomplete = await checked(cluster, "GET", f"{base}/100")
            assert status == 200 and incomplete["state"] == "INCOMPLETE"
            assert incomplete["details"] == [
                completed["details"][0],
                {"partitionId": 2, "state": "DOES_NOT_EXIST"},
            ]
            for suffix in ("", "/1*"):
                status, listed = await checked(cluster, "GET", base + suffix)
                assert [b["state"] for b in listed] == ["INCOMPLETE"]
                assert listed[0]["details"][1] == {"partitionId": 2, "state": "DOES_NOT_EXIST"}
        assert await checked(cluster, "DELETE", "/actuator/backups/100") == (204, None)
        assert (await checked(cluster, "GET", "/actuator/backups/100"))[0] == 404


async def test_a_backup_with_an_unreadable_manifest_is_shown_failed(tmp_path: Path) -> None:
    """An unreadable manifest is reported FAILED (so that the user can see and delete it): GET
    and the list show a documented FAILED backup, not a 500."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        await cluster.api.take_backup(100)
        await settled(cluster, 100)
        assert cluster.backups is not None
        for key in _manifest_keys(cluster, 1, 100):
            cluster.backups.objects[key] = b"not a manifest"
        status, info = await checked(cluster, "GET", "/actuator/backups/100")
        assert status == 200 and info["state"] == "FAILED"
        status, listed = await checked(cluster, "GET", "/actuator/backups")
        assert status == 200 and listed[0]["state"] == "FAILED"


async def test_listings_follow_every_change_although_they_are_reused(tmp_path: Path) -> None:
    """Lists are answered from the last listing while every partition says it is unchanged:
    interleaved with takes and deletes, every list (all, and by prefixes the gateway keeps)
    shows exactly the backups that exist, newest first, with their current state."""
    async with InProcessCluster(tmp_path, brokers=2, partitions=2) as cluster:
        existing: set[int] = set()
        prefixes = ["", "1", "12", "-1"]

        async def lists_match() -> None:
            for prefix in prefixes:
                path = "/actuator/backups" + (f"/{prefix}*" if prefix else "")
                for _ in range(2):  # the second answer comes from the kept listing
                    status, listed = await checked(cluster, "GET", path)
                    expected = sorted(
                        (b for b in existing if str(b).startswith(prefix) and prefix != "-1"),
                        reverse=True,
                    )
                    assert status == 200 and [b["backupId"] for b in listed] == expected, path
                    assert all(b["state"] == "COMPLETED" for b in listed)

        for backup_id in (1, 2, 3, 12, 13, 21, 30):
            body = f'{{"backupId": {backup_id}}}'.encode()
            assert (await checked(cluster, "POST", "/actuator/backups", body))[0] == 202
            await settled(cluster, backup_id)
            existing.add(backup_id)
            await lists_match()
        for backup_id in (12, 2, 30):
            assert await checked(cluster, "DELETE", f"/actuator/backups/{backup_id}") == (204, None)
            existing.discard(backup_id)
            await lists_match()
