"""Backing up a partition with ~100 MB of log: how long the backup takes next to `cp -r` of the
same files, and processing throughput while the backup runs next to without.

With ``--store s3`` the S3-compatible server (moto) runs in a process of its own on loopback.

A script, not a test: it prints what it measured.

    python benchmarks/backup_during_processing.py [--log-mb 100] [--store filesystem|s3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker.backup import BackupService
from broker.partition import Partition, PartitionConfig
from storage.backup.api import BackupIdentifier, BackupStore
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.records import ValueType

BPMN = (Path(__file__).resolve().parent.parent / "examples" / "order-process.bpmn").read_bytes()
PAYLOAD = "x" * 1000  # a variable that makes each instance's records about 3 KB


async def create(partition: Partition, count: int, concurrency: int = 1000) -> float:
    """Create ``count`` instances; records per second achieved."""
    semaphore = asyncio.Semaphore(concurrency)
    before = partition.records_written

    async def one() -> None:
        async with semaphore:
            await partition.submit(
                ValueType.PROCESS_INSTANCE_CREATION,
                "CREATE",
                -1,
                {"bpmnProcessId": "order-process", "version": -1, "variables": {"p": PAYLOAD}},
            )

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return (partition.records_written - before) / (time.perf_counter() - started)


def log_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in (directory / "log").iterdir())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_store(kind: str, directory: Path) -> tuple[BackupStore, subprocess.Popen[bytes] | None]:
    if kind == "filesystem":
        return FilesystemBackupStore(directory / "backups"), None
    from storage.backup.config import S3StoreConfig
    from storage.backup.s3 import S3BackupStore

    # The S3 server in a process of its own, as a real one would be: it must not compete with
    # the partition for this interpreter.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import boto3  # type: ignore[import-untyped]

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket="bench")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # polling the server's start, with a deadline
    config = S3StoreConfig(
        bucket_name="bench", endpoint=endpoint, region="us-east-1", access_key="x",
        secret_key="x", force_path_style_access=True,
    )  # fmt: skip
    return S3BackupStore(config), server


async def main(log_mb: int, kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store, server = open_store(kind, directory)
        backups = BackupService(store, node_id=0, partition_count=1)
        partition = Partition(
            1, 1, directory / "p1", PartitionConfig(snapshot_period_s=3600), lambda s, c: None,
            on_checkpoint=backups.on_backup_job,
        )  # fmt: skip
        await partition.start()
        await partition.submit(
            ValueType.DEPLOYMENT, "CREATE", -1,
            {"resources": [{"resourceName": "order.bpmn", "resource": BPMN}]},
        )  # fmt: skip
        while log_bytes(partition.directory) < log_mb * 1_000_000:
            await create(partition, 5_000)
        size_mb = log_bytes(partition.directory) / 1e6
        print(f"partition log: {size_mb:.1f} MB in {len(partition.log.segments())} segments")

        quiet = await create(partition, 10_000)

        started = time.perf_counter()
        answer = await partition.submit(ValueType.CHECKPOINT, "CREATE", 1, {"checkpointId": 1})
        assert answer.intent == "CREATED"
        busy_rates = []
        while backups.running(1):
            busy_rates.append(await create(partition, 2_000))
        duration = time.perf_counter() - started
        identifier = BackupIdentifier(NodeId(0), PartitionId(1), BackupId(1))
        status = await store.get_status(identifier)
        assert status.status_code == BackupState.COMPLETED, status

        copy_to = directory / "copy"
        cp_started = time.perf_counter()
        subprocess.run(["cp", "-r", str(partition.directory / "log"), str(copy_to)], check=True)
        cp_s = time.perf_counter() - cp_started
        subprocess.run(["sync"], check=True)
        cp_sync_s = time.perf_counter() - cp_started

        print(
            f"backup to the {kind} store, {size_mb:.0f} MB: {duration:.2f} s "
            f"({size_mb / duration:.0f} MB/s) while processing went on"
        )
        print(f"cp -r of the same log: {cp_s:.2f} s; cp -r + sync: {cp_sync_s:.2f} s")
        during = sum(busy_rates) / len(busy_rates) if busy_rates else float("nan")
        print(
            f"processing: {quiet:,.0f} records/s without a backup, {during:,.0f} records/s "
            f"while it ran ({len(busy_rates)} samples)"
        )
        await partition.stop()
        await backups.close()
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-mb", type=int, default=100)
    parser.add_argument("--store", choices=["filesystem", "s3"], default="filesystem")
    args = parser.parse_args()
    asyncio.run(main(args.log_mb, args.store))
