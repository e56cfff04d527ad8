"""In-process restore (8.10) on the in-process cluster: `PATCH /v2/mode` deactivates and
reactivates every partition, `POST /v2/restore` restores every partition in place from backups
and `GET /v2/restore` shows its progress, all without stopping a broker; refusals (409, 404,
400) change nothing. The same on real processes: tests/e2e/test_point_in_time.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_BPMN
from zeebe_sim.ground.ids import partition_of_key
from zeebe_sim.harness import ApiError, ClusterApi, eventually
from zeebe_sim.inprocess import InProcessCluster
from zeebe_sim.verify import check, load_data_dir

pytestmark = pytest.mark.inprocess


async def instance_exists(api: ClusterApi, key: int) -> bool:
    """Whether the gateway finds the instance (404 is "no")."""
    try:
        await api.get_instance(key)
    except ApiError as exc:
        assert exc.status == 404, exc.body
        return False
    return True


async def test_an_in_process_restore_brings_back_the_backup_without_a_restart(
    tmp_path: Path,
) -> None:
    """Instances before backup 10 and 11 survive, those after 11 are gone, the brokers are the
    same objects (not restarted), and the restored cluster takes commands again; the plan and
    the progress name every broker's partitions with their chain of backups."""
    async with InProcessCluster(tmp_path / "data") as cluster:
        api = cluster.api
        rest, management = cluster.rest_url, cluster.management_url
        await api.deploy(DEMO_BPMN)
        first = [await api.create_instance("demo-process", {"correlationKey": "a"})]
        await api.take_backup(10)
        assert (await api.wait_for_backup(10))["state"] == "COMPLETED"
        second = [
            await api.create_instance("demo-process", {"correlationKey": f"b{i}"}) for i in range(3)
        ]
        await api.take_backup(11)
        assert (await api.wait_for_backup(11))["state"] == "COMPLETED"
        later = [
            await api.create_instance("demo-process", {"correlationKey": f"c{i}"}) for i in range(3)
        ]
        brokers_before = [id(cluster.brokers[n]) for n in range(3)]

        # Not recovering yet: 409, and nothing happens.
        with pytest.raises(ApiError) as caught:
            await api.call("POST", f"{rest}/v2/restore", json={"backupIds": [10, 11]})
        assert caught.value.status == 409, caught.value.body
        assert "every broker must be in RECOVERING mode" in caught.value.body["detail"]

        for query in ("mode=SLEEPING", "mode=RECOVERING&dryRun=maybe", ""):
            with pytest.raises(ApiError) as caught:
                await api.call("PATCH", f"{rest}/v2/mode?{query}")
            assert caught.value.status == 400, (query, caught.value.body)
        body = await api.change_mode("RECOVERING")
        assert body["plannedChanges"][0]["operations"][:2] == [
            {"operation": "ModeChangeOperation", "brokerId": "0", "mode": "RECOVERING"},
            {"operation": "AwaitModeChangeOperation", "brokerId": "0", "mode": "RECOVERING"},
        ]
        # Deactivated: commands are refused, reads still answered.
        with pytest.raises(ApiError) as caught:
            await api.create_instance("demo-process", {"correlationKey": "refused"})
        assert caught.value.status == 503, caught.value.body
        assert "RECOVERING" in caught.value.body["detail"]
        assert await instance_exists(api, later[0])

        for bad, status in [
            ({"backupIds": [99]}, 404),
            ({"backupIds": [10], "to": "2026-01-01T00:00:00Z"}, 400),
            ({}, 400),
            ({"backupIds": []}, 400),
            ({"from": "yesterday", "to": "2026-01-01T00:00:00Z"}, 400),
        ]:
            with pytest.raises(ApiError) as caught:
                await api.call("POST", f"{rest}/v2/restore", json=bad)
            assert caught.value.status == status, (bad, caught.value.body)
        with pytest.raises(ApiError) as caught:
            await api.call("GET", f"{rest}/v2/restore")
        assert caught.value.status == 404

        dry = await api.call("POST", f"{rest}/v2/restore?dryRun=true", json={"backupIds": [11, 10]})
        planned, progress = await api.restore_in_process({"backupIds": [10, 11]})
        assert planned["changeId"] == dry["changeId"]  # a dry run used up no id
        operations = planned["plannedChanges"][0]["operations"]
        assert operations[:2] == [
            {"operation": "PartitionPreRestoreOperation", "brokerId": "0", "partitionId": 1},
            {
                "operation": "PartitionRestoreOperation",
                "brokerId": "0",
                "partitionId": 1,
                "backupIds": [10, 11],
            },
        ]
        assert operations[-2:] == [
            {"operation": "ModeChangeOperation", "brokerId": "2", "mode": "PROCESSING"},
            {"operation": "AwaitModeChangeOperation", "brokerId": "2", "mode": "PROCESSING"},
        ]
        assert progress, "GET /v2/restore never showed the restore in flight"
        assert progress[0]["status"] == "IN_PROGRESS"
        assert [b["brokerId"] for b in progress[0]["brokers"]] == ["0", "1", "2"]
        states = {
            p["state"] for status in progress for b in status["brokers"] for p in b["partitions"]
        }
        assert states <= {"PENDING", "RESTORING", "RESTORED"} and "RESTORING" in states
        assert all(
            p["backupIds"] == [10, 11] for b in progress[0]["brokers"] for p in b["partitions"]
        )
        with pytest.raises(ApiError) as caught:
            await api.call("GET", f"{rest}/v2/restore")
        assert caught.value.status == 404  # done: not kept

        assert [id(cluster.brokers[n]) for n in range(3)] == brokers_before
        for key in first + second:
            assert await instance_exists(api, key), key
        for key in later:
            assert not await instance_exists(api, key), key
        created = await api.create_instance("demo-process", {"correlationKey": "after"})
        assert await instance_exists(api, created)
        cluster_view = await api.call("GET", f"{management}/actuator/cluster")
        assert cluster_view["lastChange"]["id"] == int(planned["changeId"])
        assert "pendingChange" not in cluster_view
        topology = await api.call("GET", f"{rest}/v2/topology")
        assert topology["lastCompletedChangeId"] == planned["changeId"]
    report = check(load_data_dir(tmp_path / "data"))
    assert report.ok, report.render()


async def test_a_failed_in_process_restore_is_shown_and_leaves_the_partition_as_it_was(
    tmp_path: Path,
) -> None:
    """A corrupt file in partition 2's backup: the restore restores partition 1, then fails on
    partition 2, which runs on from its old directory; GET /v2/restore shows FAILED with the
    reason, the brokers stay RECOVERING (commands refused) until PATCH PROCESSING."""
    async with InProcessCluster(tmp_path / "data") as cluster:
        api, rest = cluster.api, cluster.rest_url
        medium = cluster.backups
        assert medium is not None
        await api.deploy(DEMO_BPMN)
        await api.take_backup(30)
        assert (await api.wait_for_backup(30))["state"] == "COMPLETED"
        later = [
            await api.create_instance("demo-process", {"correlationKey": f"l{i}"}) for i in range(6)
        ]
        segments = sorted(k for k in medium.objects if k.startswith("2/30/") and "/segments/" in k)
        assert segments, "no segment found: did the store's key layout change?"
        corrupt = bytearray(medium.objects[segments[-1]])
        corrupt[len(corrupt) // 2] ^= 0xFF
        medium.objects[segments[-1]] = bytes(corrupt)

        await api.change_mode("RECOVERING")
        planned = await api.call("POST", f"{rest}/v2/restore", json={"backupIds": [30]})

        async def failed() -> dict[str, Any] | None:
            status: dict[str, Any] = await api.call("GET", f"{rest}/v2/restore")
            return status if status["status"] == "FAILED" else None

        status = await eventually(failed, timeout_s=60)
        assert status["changeId"] == planned["changeId"]
        assert "Restoring partition 2 on broker 1 failed" in status["failureReason"], status
        states = {p["partitionId"]: p["state"] for b in status["brokers"] for p in b["partitions"]}
        assert states == {1: "RESTORED", 2: "RESTORING", 3: "PENDING"}, status
        last = await api.cluster_change_done(planned["changeId"])
        assert last["status"] == "FAILED"
        with pytest.raises(ApiError) as caught:
            await api.create_instance("demo-process", {"correlationKey": "refused"})
        assert caught.value.status == 503  # still RECOVERING
        await api.change_mode("PROCESSING")
        on_two = [k for k in later if partition_of_key(k) == 2]
        assert on_two and all([await instance_exists(api, k) for k in on_two])  # unchanged
        on_one = [k for k in later if partition_of_key(k) == 1]
        assert on_one and not any([await instance_exists(api, k) for k in on_one])  # restored
        await api.create_instance("demo-process", {"correlationKey": "after"})
