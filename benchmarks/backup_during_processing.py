"""Backing up a partition with ~100 MB of log: how long the backup takes next to `cp -r` of the
same files, and processing throughput while the backup runs next to without.

With ``--store s3`` the S3-compatible server (moto) runs in a process of its own on loopback,
kept on the last CPU (``--share-cpus`` lets it run anywhere). A real S3 server runs on other
machines; on a small box an unpinned Python server takes turns with the partition on the same
cores, and the figure then measures that contention rather than the backup. (An upload to the
same server from a third process, with no backup at all, costs the partition as much.)

A script, not a test: it prints what it measured.

    python benchmarks/backup_during_processing.py [--log-mb 100] [--store filesystem|s3]
        [--rounds 3] [--share-cpus]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker.backup import BackupService
from broker.partition import Partition, PartitionConfig
from storage.backup.api import BackupIdentifier, BackupStore
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground import collector
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


def open_store(
    kind: str, directory: Path, share_cpus: bool
) -> tuple[BackupStore, subprocess.Popen[bytes] | None]:
    if kind == "filesystem":
        return FilesystemBackupStore(directory / "backups"), None
    from storage.backup.config import S3StoreConfig
    from storage.backup.s3 import S3BackupStore

    # The S3 server in a process of its own, as a real one would be: it must not compete with
    # the partition for this interpreter (nor, unless told, for its CPU).
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = set(cpus) if share_cpus or len(cpus) < 2 else {cpus[-1]}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, server_cpus),
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


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process, or by process ``pid``."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(log_mb: int, kind: str, rounds: int, share_cpus: bool) -> None:
    collector.tune()  # as a broker process does
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store, server = open_store(kind, directory, share_cpus)
        try:
            await measure(directory, store, server, log_mb, rounds)
        finally:
            if server is not None:
                server.terminate()
                server.wait()


async def measure(
    directory: Path,
    store: BackupStore,
    server: subprocess.Popen[bytes] | None,
    log_mb: int,
    rounds: int,
) -> None:
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

    ratios, durations = [], []
    for checkpoint in range(1, rounds + 1):
        # Without a backup: batches just before it and just after it (the same batch size), so
        # that the state's growth over the round weighs on both sides alike.
        quiet_started, quiet_cpu = time.perf_counter(), cpu_s()
        quiet_rates = [await create(partition, 2_000) for _ in range(3)]
        quiet_cores = (cpu_s() - quiet_cpu) / (time.perf_counter() - quiet_started)
        started = time.perf_counter()
        cpu_before, server_before = cpu_s(), cpu_s(server.pid) if server else 0.0
        answer = await partition.submit(
            ValueType.CHECKPOINT, "CREATE", checkpoint, {"checkpointId": checkpoint}
        )
        assert answer.intent == "CREATED", answer
        busy = [await create(partition, 2_000)]  # the backup has started meanwhile
        while backups.running(1):
            busy.append(await create(partition, 2_000))
        duration = time.perf_counter() - started
        cpu = cpu_s() - cpu_before
        server_cpu = (cpu_s(server.pid) if server else 0.0) - server_before
        identifier = BackupIdentifier(NodeId(0), PartitionId(1), BackupId(checkpoint))
        status = await store.get_status(identifier)
        assert status.status_code == BackupState.COMPLETED, status
        quiet_rates += [await create(partition, 2_000) for _ in range(3)]
        quiet = statistics.median(quiet_rates)
        during = statistics.median(busy) if busy else float("nan")
        ratios.append(during / quiet)
        durations.append(duration)
        print(
            f"round {checkpoint}: backup {duration:.2f} s; processing {quiet:,.0f} records/s"
            f" without, {during:,.0f} while it ran ({len(busy)} samples): {during / quiet:.2f}x;"
            f" CPU: this process {quiet_cores:.2f} cores without, {cpu / duration:.2f} with,"
            f" the store's server {server_cpu / duration:.2f}"
        )

    copy_to = directory / "copy"
    cp_started = time.perf_counter()
    subprocess.run(["cp", "-r", str(partition.directory / "log"), str(copy_to)], check=True)
    cp_s = time.perf_counter() - cp_started
    subprocess.run(["sync"], check=True)
    cp_sync_s = time.perf_counter() - cp_started
    print(f"cp -r of the log: {cp_s:.2f} s; cp -r + sync: {cp_sync_s:.2f} s")
    print(
        f"median over {rounds} rounds: backup {statistics.median(durations):.2f} s,"
        f" processing while it ran {statistics.median(ratios):.2f}x of without"
    )
    await partition.stop()
    await backups.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-mb", type=int, default=100)
    parser.add_argument("--store", choices=["filesystem", "s3"], default="filesystem")
    parser.add_argument("--rounds", type=int, default=3, help="backups to take, one per round")
    parser.add_argument(
        "--share-cpus", action="store_true", help="let the S3 server run on any CPU, not the last"
    )
    args = parser.parse_args()
    asyncio.run(main(args.log_mb, args.store, args.rounds, args.share_cpus))
