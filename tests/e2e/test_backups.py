"""Backups through real processes: the documented API, consistency across a restore,
concurrency, failures (REFERENCE.md §1, §4, §5)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from tests.scenarios.workload import complete_all, instance_states
from zeebe_sim.harness import ApiError, RunningCluster, eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow


async def raw(
    cluster: RunningCluster,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with cluster.api.session.request(
        method, cluster.management_url + path, data=body, headers=headers
    ) as response:
        text = await response.text()
        if response.status != 204:
            assert response.headers["Content-Type"].startswith("application/json"), text
        return response.status, (await response.json(content_type=None) if text else None)


async def test_the_documented_curl_commands_work_verbatim(tmp_path: Path) -> None:
    """curl --request POST .../actuator/backups -H 'Content-Type: application/json'
    -d '{ "backupId": "100" }', then GET, list, DELETE: the documented bodies."""
    async with running_cluster(tmp_path) as cluster:
        status, body = await raw(
            cluster,
            "POST",
            "/actuator/backups",
            b'{ "backupId": "100" }',
            {"Content-Type": "application/json"},
        )
        assert (status, body) == (
            202,
            {
                "backupId": 100,
                "message": "A backup with id 100 has been scheduled. Use GET actuator/backups/100 "
                "to monitor the status.",
            },
        )
        info = await cluster.api.wait_for_backup(100)
        assert info["state"] == "COMPLETED"
        assert [d["partitionId"] for d in info["details"]] == [1, 2, 3]
        for detail in info["details"]:
            assert set(detail) >= {
                "partitionId",
                "state",
                "createdAt",
                "lastUpdatedAt",
                "checkpointPosition",
                "brokerId",
                "brokerVersion",
            }
            assert detail["createdAt"].endswith("Z") and "failureReason" not in detail
            assert detail["brokerId"] == detail["partitionId"] - 1
        for path in (
            "/actuator/backups",
            "/actuator/backupRuntime",
            "/actuator/backups/1*",
            "/actuator/backups/*",
        ):
            status, listed = await raw(cluster, "GET", path)
            assert status == 200 and [b["backupId"] for b in listed] == [100], path
            assert set(listed[0]["details"][0]) == {
                "partitionId",
                "state",
                "createdAt",
                "brokerVersion",
            }
        status, listed = await raw(cluster, "GET", "/actuator/backups/2*")
        assert (status, listed) == (200, [])
        status, same = await raw(cluster, "GET", "/actuator/backupRuntime/100")
        assert status == 200 and same["state"] == "COMPLETED"
        assert await raw(cluster, "DELETE", "/actuator/backups/100") == (204, None)
        assert await raw(cluster, "GET", "/actuator/backups/100") == (
            404,
            {"message": "Backup with id 100 does not exist"},
        )
        assert await raw(cluster, "DELETE", "/actuator/backups/100") == (204, None)
        # Ids are never reusable, even after DELETE.
        status, body = await raw(
            cluster,
            "POST",
            "/actuator/backups",
            b'{"backupId": 100}',
            {"Content-Type": "application/json"},
        )
        assert status == 409 and body["message"] == (
            "Requested backup has ID 100. The latest backup has ID 100. The backup ID must be "
            "greater than the ID of previous backups that are completed, failed, or deleted."
        )


async def test_many_simultaneous_posts_of_one_id_give_exactly_one_202(tmp_path: Path) -> None:
    """25 concurrent POSTs of one id: one 202, 24 409s, and the backup completes."""
    async with running_cluster(tmp_path) as cluster:
        results = await asyncio.gather(
            *(
                raw(
                    cluster,
                    "POST",
                    "/actuator/backups",
                    b'{"backupId": 7}',
                    {"Content-Type": "application/json"},
                )
                for _ in range(25)
            )
        )
        assert sorted(s for s, _ in results) == [202] + [409] * 24
        assert (await cluster.api.wait_for_backup(7))["state"] == "COMPLETED"


async def test_without_a_store_backup_calls_are_400_and_no_id_is_consumed(
    tmp_path: Path,
) -> None:
    """No store: every backup call is 400 with Zeebe's message, and the refused POST wrote no
    checkpoint on any partition (REFERENCE §1, corrected)."""
    message = (
        "Cannot process backup requests. No backup store is configured. To use this "
        "feature, configure backup in broker configuration."
    )
    async with running_cluster(tmp_path, broker_args=["--backup-store", "none"]) as cluster:
        for method, path, body in [
            ("POST", "/actuator/backups", b'{"backupId": 5}'),
            ("GET", "/actuator/backups/5", None),
            ("GET", "/actuator/backups", None),
            ("DELETE", "/actuator/backups/5", None),
        ]:
            assert await raw(cluster, method, path, body, {"Content-Type": "application/json"}) == (
                400,
                {"message": message},
            )
        partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
        assert {p["checkpointId"] for p in partitions.values()} == {-1}


async def test_backup_restore_is_a_consistent_cut_and_the_cluster_works_on(tmp_path: Path) -> None:
    """Backup while messages are being published; stop, wipe, restore, verify, restart:
    everything created before the checkpoint is back, in-flight work finishes exactly once,
    nothing created after it exists, and a new backup needs a higher id."""
    data = tmp_path / "data"
    backups = tmp_path / "backups"
    args = [*FAST_BROKER_ARGS, "--backup-dir", str(backups)]
    keys = [f"order-{i}" for i in range(40)]
    async with running_cluster(data, broker_args=args, gateway_args=FAST_GATEWAY_ARGS) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        before = [
            await cluster.api.create_instance("demo-process", {"correlationKey": k}) for k in keys
        ]
        await complete_all(cluster, "demo-task")
        published: list[str] = []

        async def publish_all() -> None:
            for key in keys:
                await cluster.api.publish("demo-message", key)
                published.append(key)

        publisher = asyncio.create_task(publish_all())
        await eventually(lambda: _some(len(published) >= 10))
        assert (await cluster.api.take_backup(200)) is not None
        after = await cluster.api.create_instance("demo-process", {"correlationKey": "late"})
        await publisher
        info = await cluster.api.wait_for_backup(200)
        assert info["state"] == "COMPLETED", info
    taken = info["details"]
    for broker in data.glob("broker-*"):
        shutil.rmtree(broker)

    code, output = await run_cli(
        "restore", "--backup-id", "200", "--data-dir", str(data), "--backup-dir", str(backups)
    )
    assert code == 0, output
    assert "log truncated right after checkpoint position" in output
    code, report = await run_cli("verify", "--data-dir", str(data))
    assert code == 0 and "cut at checkpoint 200" in report, report

    async with running_cluster(data, broker_args=args, gateway_args=FAST_GATEWAY_ARGS) as cluster:
        # The first start processes the trailing CHECKPOINT CREATE(200), finds the COMPLETED
        # backup and does not take it again.
        await eventually(lambda: no_backup_running(cluster))
        assert (await cluster.api.backup(200))["details"] == taken
        partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
        assert {p["checkpointId"] for p in partitions.values()} == {200}
        with pytest.raises(ApiError) as missing:
            await cluster.api.get_instance(after)
        assert missing.value.status == 404
        for key in before:
            assert (await cluster.api.get_instance(key))["state"] in ("ACTIVE", "COMPLETED")
        # Messages published after the checkpoint are not in the backup: publish again those
        # whose instance still waits once the re-sent in-flight work has settled.
        for key, instance in zip(keys, before, strict=True):
            if (await cluster.api.get_instance(instance))["state"] == "ACTIVE":
                await cluster.api.publish("demo-message", key, ttl_ms=60_000)

        async def done() -> bool:
            return all(s == "COMPLETED" for s in await instance_states(cluster, before))

        await eventually(done, timeout_s=30, interval_s=0.2)
        with pytest.raises(ApiError) as conflict:
            await cluster.api.take_backup(200)
        assert conflict.value.status == 409
        await cluster.api.take_backup(201)
        assert (await cluster.api.wait_for_backup(201))["state"] == "COMPLETED"
    code, report = await run_cli("verify", "--data-dir", str(data))
    assert code == 0, report


async def _some(value: bool) -> bool | None:
    return value or None


async def test_restore_refuses_and_touches_nothing(tmp_path: Path) -> None:
    """Non-empty data directory, unknown backup, wrong partition count: refused, exit 1."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    args = ["--backup-dir", str(backups)]
    async with running_cluster(data, broker_args=args) as cluster:
        await cluster.api.take_backup(3)
        await cluster.api.wait_for_backup(3)
    code, output = await run_cli("restore", "--backup-id", "3", "--data-dir", str(data), *args)
    assert code == 1 and "is not empty" in output
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    empty = tmp_path / "empty"
    code, output = await run_cli("restore", "--backup-id", "4", "--data-dir", str(empty), *args)
    assert code == 1 and "partition 1 is DOES_NOT_EXIST" in output
    code, output = await run_cli(
        "restore", "--backup-id", "3", "--data-dir", str(empty), "--partitions", "4", *args
    )
    assert code == 1 and "3 partitions" in output
    assert not any(empty.glob("broker-*")) if empty.exists() else True
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


async def test_bad_cli_configuration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad flag value, an unsupported replication factor, a node id outside the cluster or
    a missing contact point: one line naming the setting, exit code 2."""
    for args in (
        ["up", "--brokers", "zero"],
        ["up", "--brokers", "2", "--replication-factor", "3"],
        ["broker", "--node-id", "5", "--brokers", "3"],
        ["up", "--backup-store", "tape"],
        ["up", "--snapshot-period", "soon"],
        ["gateway"],
    ):
        code, output = await run_cli(*args)
        assert code == 2, (args, output)
        assert len(output.strip().splitlines()) == 1, output


SLOW_BACKUP_ARGS = ["--backup-upload-delay", "2s"]


async def partition_backup_state(cluster: RunningCluster, backup_id: int, partition: int) -> str:
    info = await cluster.api.call(
        "GET", f"{cluster.management_url}/actuator/backups/{backup_id}", ok=(200, 404)
    )
    details = {d["partitionId"]: d for d in info.get("details", [])}
    return str(details.get(partition, {}).get("state", "DOES_NOT_EXIST"))


async def no_backup_running(cluster: RunningCluster) -> bool:
    partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
    return all(p["backupsRunning"] == 0 for p in partitions.values())


async def test_kill_9_mid_backup_leaves_it_failed_and_the_next_id_succeeds(tmp_path: Path) -> None:
    """A broker killed while its partition's backup uploads comes back and marks that backup
    FAILED (never COMPLETED); a backup with a higher id then completes."""
    async with running_cluster(
        tmp_path, broker_args=SLOW_BACKUP_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        await cluster.api.take_backup(1)

        async def uploading() -> bool:
            return await partition_backup_state(cluster, 1, 2) == "IN_PROGRESS"

        await eventually(uploading, timeout_s=10, interval_s=0.02)
        cluster.kill_broker(1)  # leads partition 2
        await cluster.wait_exit(cluster.brokers[1])
        await cluster.start_broker(1)
        await cluster.wait_ready()
        await eventually(lambda: no_backup_running(cluster), timeout_s=20)
        info = await cluster.api.backup(1)
        assert info["state"] == "FAILED", info
        failed = {d["partitionId"]: d for d in info["details"]}[2]
        assert failed["state"] == "FAILED"
        assert failed["failureReason"] == "Backup is cancelled due to leader change."
        assert "Backup on partition 2 failed due to Backup is cancelled" in info["failureReason"]
        await cluster.api.take_backup(2)
        assert (await cluster.api.wait_for_backup(2))["state"] == "COMPLETED"
        assert (await cluster.api.backup(1))["state"] == "FAILED"


async def test_deleting_an_in_progress_backup_fails_it_first_and_it_never_comes_back(
    tmp_path: Path,
) -> None:
    """DELETE while the upload runs: 204, then 404, and still 404 once the upload is over."""
    backups = tmp_path / "backups"
    args = [*SLOW_BACKUP_ARGS, "--backup-dir", str(backups)]
    async with running_cluster(tmp_path / "data", broker_args=args) as cluster:
        await cluster.api.take_backup(9)

        async def uploading() -> bool:
            return all(
                [await partition_backup_state(cluster, 9, p) == "IN_PROGRESS" for p in (1, 2, 3)]
            )

        await eventually(uploading, timeout_s=10, interval_s=0.02)
        assert await raw(cluster, "DELETE", "/actuator/backups/9") == (204, None)
        assert (await raw(cluster, "GET", "/actuator/backups/9"))[0] == 404
        await eventually(lambda: no_backup_running(cluster), timeout_s=20)
        assert (await raw(cluster, "GET", "/actuator/backups/9"))[0] == 404
        assert (await raw(cluster, "GET", "/actuator/backups"))[1] == []
        assert not list(backups.rglob("manifest.json"))
