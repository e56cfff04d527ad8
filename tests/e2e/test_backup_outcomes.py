"""Every accepted backup ends COMPLETED or FAILED, on real processes: never INCOMPLETE or 404
for ever, whatever crashed or failed between the 202 and the first manifest.

The store is made to refuse writes by putting a regular file where its ``manifests`` directory
must be: the tests run as root, so a read-only mode (chmod) would not stop anything, while
creating ``manifests/<p>/...`` under a file fails with ENOTDIR for everyone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_GATEWAY_ARGS
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

NOT_TAKEN = "Backup was not taken: the broker restarted before it started it"


def refuse_writes(backups: Path) -> None:
    """A file where the store's manifests directory must be."""
    manifests = backups / "manifests"
    if manifests.is_dir():
        shutil.rmtree(manifests)
    manifests.parent.mkdir(parents=True, exist_ok=True)
    manifests.write_text("not a directory")


def accept_writes(backups: Path) -> None:
    (backups / "manifests").unlink()


async def info_of(cluster: RunningCluster, backup_id: int) -> tuple[int, Any]:
    async with cluster.api.session.get(
        f"{cluster.management_url}/actuator/backups/{backup_id}"
    ) as response:
        return response.status, await response.json(content_type=None)


async def settled(cluster: RunningCluster, backup_id: int) -> dict[str, Any] | None:
    status, body = await info_of(cluster, backup_id)
    if status == 200 and body["state"] in ("COMPLETED", "FAILED"):
        return {d["partitionId"]: d for d in body["details"]} | {"state": body["state"]}
    return None


async def test_a_backup_accepted_while_the_store_refuses_writes_fails_once_it_accepts_them(
    tmp_path: Path,
) -> None:
    """POST while no manifest can be written: 202; the backup shows FAILED (never 404) and,
    once the store accepts writes again, every partition's FAILED copy is in the store, with
    the store's error as the reason. The next id completes."""
    backups = tmp_path / "backups"
    args = ["--backup-dir", str(backups)]
    async with running_cluster(
        tmp_path / "data", broker_args=args, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        refuse_writes(backups)
        await cluster.api.take_backup(1)

        async def shown_failed() -> bool:
            status, body = await info_of(cluster, 1)
            assert status != 404, body  # known to the brokers although the store has nothing
            return status == 200 and body["state"] == "FAILED"

        await eventually(shown_failed, timeout_s=30)
        assert not list(tmp_path.rglob("manifest.json"))
        accept_writes(backups)

        async def recorded() -> bool:
            return len(list(backups.glob("manifests/*/1/*/manifest.json"))) == 3

        await eventually(recorded, timeout_s=60, interval_s=0.2)
        details = await eventually(lambda: settled(cluster, 1))
        assert details["state"] == "FAILED"
        for partition in (1, 2, 3):
            assert details[partition]["state"] == "FAILED", details
            assert "manifests" in details[partition]["failureReason"], details
        await cluster.api.take_backup(2)
        assert (await cluster.api.wait_for_backup(2))["state"] == "COMPLETED"
    # The FAILED copies are in the store itself: a new cluster on it (nothing in memory) says so.
    async with running_cluster(tmp_path / "data", broker_args=args) as cluster:
        assert (await cluster.api.backup(1))["state"] == "FAILED"


async def test_a_broker_killed_right_after_the_202_ends_the_backup_failed(tmp_path: Path) -> None:
    """Broker 1 is killed after the 202 but before any manifest of its partition exists (the
    store refuses writes meanwhile, which holds the window open): after its restart, its
    partition holds the checkpoint durably and records the backup FAILED with a reason,
    instead of leaving it INCOMPLETE for ever. The next id completes."""
    backups = tmp_path / "backups"
    args = ["--backup-dir", str(backups)]
    async with running_cluster(
        tmp_path / "data", broker_args=args, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        refuse_writes(backups)
        await cluster.api.take_backup(1)
        cluster.kill_broker(1)  # leads partition 2; its save can only have failed in memory
        await cluster.wait_exit(cluster.brokers[1])
        accept_writes(backups)
        await cluster.start_broker(1)
        await cluster.wait_ready()
        partitions = await cluster.api.call("GET", f"{cluster.management_url}/actuator/partitions")
        assert {p["checkpointId"] for p in partitions.values()} == {1}

        details = await eventually(lambda: settled(cluster, 1), timeout_s=60, interval_s=0.2)
        assert details["state"] == "FAILED", details
        assert (details[2]["state"], details[2]["failureReason"]) == ("FAILED", NOT_TAKEN), details
        await cluster.api.take_backup(2)
        assert (await cluster.api.wait_for_backup(2))["state"] == "COMPLETED"
        assert (await settled(cluster, 1) or {}).get("state") == "FAILED"
