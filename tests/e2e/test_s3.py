"""The S3 backup store through real processes, against a real S3-compatible server (moto):
backup to S3, wipe, restore from S3; and the S3 server going away in the middle of a backup."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.backup_store.kits import S3_ACCESS_KEY, S3_SECRET_KEY, TcpProxy
from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from tests.e2e.test_backups import partition_backup_state
from zeebe_sim.harness import eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow


def s3_args(endpoint: str, bucket: str, *extra: str) -> list[str]:
    return [
        "--backup-store", "s3",
        "--s3-bucket-name", bucket,
        "--s3-endpoint", endpoint,
        "--s3-region", "us-east-1",
        "--s3-access-key", S3_ACCESS_KEY,
        "--s3-secret-key", S3_SECRET_KEY,
        "--s3-force-path-style-access",
        "--s3-base-path", "cluster-a",
        *extra,
    ]  # fmt: skip


async def test_backup_to_s3_wipe_and_restore_from_s3(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """The whole cycle with the S3 store, compression on: restored instances are back."""
    args = s3_args(moto_endpoint, s3_bucket, "--s3-compression", "zstd")
    async with running_cluster(tmp_path, broker_args=[*FAST_BROKER_ARGS, *args]) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        keys = [
            await cluster.api.create_instance("demo-process", {"correlationKey": f"k{i}"})
            for i in range(9)
        ]
        await cluster.api.take_backup(10)
        info = await cluster.api.wait_for_backup(10)
        assert info["state"] == "COMPLETED", info
    for broker in tmp_path.glob("broker-*"):
        shutil.rmtree(broker)
    code, output = await run_cli("restore", "--backup-id", "10", "--data-dir", str(tmp_path), *args)
    assert code == 0, output
    code, report = await run_cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, report
    async with running_cluster(tmp_path, broker_args=[*FAST_BROKER_ARGS, *args]) as cluster:
        for key in keys:
            assert (await cluster.api.get_instance(key))["state"] == "ACTIVE"
        listed = await cluster.api.call("GET", f"{cluster.management_url}/actuator/backups")
        assert [(b["backupId"], b["state"]) for b in listed] == [(10, "COMPLETED")]


async def test_s3_server_stopping_mid_backup_fails_it_with_a_reason_in_time(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    """The S3 server goes away while a backup uploads: within the configured API call timeout
    the backup is FAILED with a readable reason, the gateway keeps answering, and once S3 is
    back the failure is written there too (never COMPLETED)."""
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    timeout_s = 2.0
    args = s3_args(
        proxy.endpoint, s3_bucket,
        "--s3-api-call-timeout", f"{timeout_s}s", "--backup-upload-delay", "1s",
    )  # fmt: skip
    try:
        async with running_cluster(
            tmp_path, brokers=1, partitions=1, broker_args=args, gateway_args=FAST_GATEWAY_ARGS
        ) as cluster:
            await cluster.api.take_backup(5)

            async def uploading() -> bool:
                return await partition_backup_state(cluster, 5, 1) == "IN_PROGRESS"

            await eventually(uploading, timeout_s=10, interval_s=0.02)
            await proxy.stop()
            stopped = time.monotonic()

            async def failed() -> str | None:
                info = await cluster.api.backup(5)
                return str(info["failureReason"]) if info["state"] == "FAILED" else None

            reason = await eventually(failed, timeout_s=3 * timeout_s + 5, interval_s=0.1)
            elapsed = time.monotonic() - stopped
            # The upload waits 1 s, then each S3 call is bounded by the timeout: the failing
            # upload and the attempt to record FAILED.
            assert elapsed < 1 + 2 * timeout_s + 2, elapsed
            assert reason.startswith("Backup on partition 1 failed due to ")
            assert "S3" in reason or "connect" in reason, reason
            health = await cluster.api.call("GET", f"{cluster.management_url}/actuator/health")
            assert health["status"] == "UP"
            await proxy.start()  # the server is back: the failure is recorded in S3

            async def recorded() -> bool:
                code, output = await run_cli(
                    "restore",
                    "--backup-id",
                    "5",
                    "--data-dir",
                    str(tmp_path / "elsewhere"),
                    "--brokers",
                    "1",
                    "--partitions",
                    "1",
                    "--replication-factor",
                    "1",
                    *args,
                )
                return code == 1 and "partition 1 is FAILED" in output

            await eventually(recorded, timeout_s=30, interval_s=0.5)
    finally:
        await proxy.stop()
