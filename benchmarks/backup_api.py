"""How fast are list and status with many backups? Prints figures, asserts nothing.

Targets (issue 12): with 10,000 backups, ``GET /actuator/backups`` (the whole list) under
300 ms and ``GET /actuator/backups/{id}`` (one status) under 20 ms, through the real gateway
and brokers (processes) with the filesystem store.

The backups are made directly in the store: one COMPLETED manifest per partition and backup,
written with the store's own manifest encoder into the filesystem layout, before the cluster
starts (taking 10,000 real backups would take far longer and measure something else; list and
status read only manifests). Then the cluster (3 brokers, 3 partitions) starts on that store
and the two calls are timed, one at a time, after a warm-up; also ``/v2/backups/runtime``, a
prefix listing, the first list after a new backup and after a delete (listings are versioned,
and a changed one travels as a delta), and lists in a row for 25 s (no periodic stall).

Run: ``PYTHONPATH=. python benchmarks/backup_api.py [--backups 10000] [--rounds 30]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from storage.backup.api import BackupDescriptor, BackupIdentifier
from storage.backup.base import MANIFEST_NAME
from storage.backup.filesystem import LISTING_REUSE_MAX_S
from storage.backup.manifest import FileEntry, Manifest, encode_manifest
from zeebe_sim.ground import VERSION
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.harness import running_cluster

PARTITIONS = 3


def write_manifests(store_dir: Path, backups: int) -> None:
    """One COMPLETED manifest per (partition, backup), taken by node partition - 1."""
    now = datetime.now(UTC)
    segment = (FileEntry("00000000000000000001.log", 4096, 0),)
    for partition in range(1, PARTITIONS + 1):
        for checkpoint in range(1, backups + 1):
            id = BackupIdentifier(
                NodeId(partition - 1), PartitionId(partition), BackupId(checkpoint)
            )
            manifest = Manifest(
                id,
                BackupDescriptor(None, checkpoint * 10, PARTITIONS, VERSION),
                BackupState.COMPLETED,
                now,
                now,
                segment_files=segment,
            )
            directory = store_dir / "manifests" / str(partition) / str(checkpoint) / str(id.node_id)
            directory.mkdir(parents=True)
            (directory / MANIFEST_NAME).write_bytes(encode_manifest(manifest))


async def timed(session: aiohttp.ClientSession, url: str, rounds: int) -> tuple[list[float], int]:
    """Wall times of ``rounds`` GETs (ms), after one warm-up; and the answer's length."""
    async with session.get(url) as response:
        assert response.status == 200, (response.status, await response.text())
        length = len(await response.json())
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200
        times.append((time.perf_counter() - start) * 1000)
    return times, length


def report(what: str, times: list[float], target_ms: float | None) -> None:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    goal = f"  (target < {target_ms:g} ms)" if target_ms else ""
    print(f"{what:<44} median {median:7.1f} ms   p99 {p99:7.1f} ms{goal}")


async def main(backups: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="backup-api-bench-") as tmp:
        store_dir = Path(tmp) / "backups"
        start = time.perf_counter()
        write_manifests(store_dir, backups)
        print(
            f"{backups} backups x {PARTITIONS} partitions written to the store in "
            f"{time.perf_counter() - start:.1f} s"
        )
        broker_args = ["--backup-store", "filesystem", "--backup-dir", str(store_dir)]
        async with (
            running_cluster(Path(tmp) / "data", broker_args=broker_args) as cluster,
            aiohttp.ClientSession() as session,
        ):
            management = cluster.management_url
            times, length = await timed(session, f"{management}/actuator/backups", rounds)
            assert length == backups, length
            report(f"GET /actuator/backups ({length} backups)", times, 300)
            ids = random.Random(1).sample(range(1, backups + 1), min(rounds * 5, backups))
            status_times = []
            for backup_id in ids:
                times, _ = await timed(session, f"{management}/actuator/backups/{backup_id}", 1)
                status_times += times
            report("GET /actuator/backups/{id}", status_times, 20)
            times, length = await timed(session, f"{management}/actuator/backups/1*", rounds)
            report(f"GET /actuator/backups/1* ({length} backups)", times, None)
            times, length = await timed(session, f"{cluster.rest_url}/v2/backups/runtime", rounds)
            report(f"GET /v2/backups/runtime ({length} backups)", times, None)
            # The first list after a change reads every manifest of the changed partitions
            # again (a new backup changes all of them).
            cold = []
            for backup_id in range(backups + 1, backups + 4):
                await cluster.api.take_backup(backup_id)
                await cluster.api.wait_for_backup(backup_id)
                start = time.perf_counter()
                async with session.get(f"{management}/actuator/backups") as response:
                    body = await response.read()
                cold.append((time.perf_counter() - start) * 1000)
                assert len(json.loads(body)) == backup_id
            report("GET /actuator/backups, first after a backup", cold, 300)
            cold = []
            for backup_id in range(backups + 1, backups + 4):
                async with session.delete(f"{management}/actuator/backups/{backup_id}") as answer:
                    assert answer.status == 204
                start = time.perf_counter()
                async with session.get(f"{management}/actuator/backups") as response:
                    body = await response.read()
                cold.append((time.perf_counter() - start) * 1000)
                assert len(json.loads(body)) == backups + 3 - (backup_id - backups)
            report("GET /actuator/backups, first after a delete", cold, 300)
            # Long enough to cover the periodic re-walk of the filesystem store twice.
            times = []
            deadline = time.monotonic() + 2.5 * LISTING_REUSE_MAX_S
            while time.monotonic() < deadline:
                times += (await timed(session, f"{management}/actuator/backups", 10))[0]
            report(f"GET /actuator/backups, {len(times)} in a row", times, 300)
            print(f"{'':<44} max    {max(times):7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backups", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.backups, arguments.rounds))
