"""Records processed per second on one partition (durably, group commit), and the longest
processing pause while a snapshot and a backup start.

A script, not a test: it prints what it measured.

    python benchmarks/partition_throughput.py [--instances 20000] [--concurrency 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from broker.backup import BackupService
from broker.partition import Partition, PartitionConfig
from storage.backup.api import BackupIdentifierWildcard
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.records import ValueType

BPMN = (Path(__file__).resolve().parent.parent / "examples" / "order-process.bpmn").read_bytes()


async def drive(partition: Partition, instances: int, concurrency: int) -> float:
    """Create ``instances`` process instances with ``concurrency`` in flight; seconds taken."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            response = await partition.submit(
                ValueType.PROCESS_INSTANCE_CREATION,
                "CREATE",
                -1,
                {"bpmnProcessId": "order-process", "version": -1, "variables": {"n": 1}},
            )
            assert response.rejection_type is None, response

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(instances)))
    return time.perf_counter() - started


async def loop_lag_ms(stop: asyncio.Event, samples: list[float]) -> None:
    """How late the event loop wakes a 1 ms sleeper: any pause of processing shows here."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append((time.perf_counter() - before) * 1000 - 1)


async def main(instances: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store = FilesystemBackupStore(directory / "backups")
        backups = BackupService(store, node_id=0, partition_count=1)
        partition = Partition(
            1,
            1,
            directory / "p1",
            PartitionConfig(snapshot_period_s=3600),
            lambda s, c: None,
            on_checkpoint=backups.on_backup_job,
        )
        await partition.start()
        deploy = await partition.submit(
            ValueType.DEPLOYMENT,
            "CREATE",
            -1,
            {"resources": [{"resourceName": "order.bpmn", "resource": BPMN}]},
        )
        assert deploy.rejection_type is None, deploy

        await drive(partition, 2000, concurrency)  # warm-up
        records_before = partition.records_written
        seconds = await drive(partition, instances, concurrency)
        records = partition.records_written - records_before
        print(f"one partition, {instances} instance creations, {concurrency} in flight:")
        print(
            f"  {records} records in {seconds:.2f} s = {records / seconds:,.0f} records/s "
            f"({instances / seconds:,.0f} commands/s), every group fsynced before its answers"
        )

        # Snapshot and backup while processing goes on: the loop lag shows any pause.
        stop = asyncio.Event()
        lag: list[float] = []
        lag_task = asyncio.create_task(loop_lag_ms(stop, lag))
        load = asyncio.create_task(drive(partition, instances // 2, concurrency))
        await asyncio.sleep(0.2)
        partition.longest_pause_ms = 0.0
        snapshot = await partition.request_snapshot()
        checkpoint = await partition.submit(ValueType.CHECKPOINT, "CREATE", 1, {"checkpointId": 1})
        assert checkpoint.intent == "CREATED"
        await load
        stop.set()
        await lag_task
        await backups.wait_idle()  # the backup upload runs in the background
        state_entries = len(partition.state.instances) + len(partition.state.jobs)
        print(
            f"snapshot {snapshot.id if snapshot else None} of {state_entries:,} state entries "
            f"and backup 1, taken while processing went on:"
        )
        print(
            f"  longest pause of processing caused by them (state copy, each serialised "
            f"chunk, backup start): {partition.longest_pause_ms:.2f} ms"
        )
        print(
            f"  (event loop lag of a 1 ms sleeper meanwhile, i.e. processing groups themselves"
            f" included: median {statistics.median(lag):.1f} ms, max {max(lag):.1f} ms)"
        )
        (status,) = await store.list(BackupIdentifierWildcard())
        print(f"  backup 1: {status.status_code.name}")
        await partition.stop()
        await backups.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(args.instances, args.concurrency))
