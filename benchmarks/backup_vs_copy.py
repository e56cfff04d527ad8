"""Backup and restore of one partition against ``cp -r`` + ``sync`` of the same bytes (issue 12
target: a backup takes at most 1.2x the copy). Prints figures, asserts nothing.

Builds a partition log of ``--size-mb`` (default 300 MB; 1 MB entries, half random bytes, half
compressible, the last entry a ``CHECKPOINT CREATE``), then times, best of ``--runs``:

- ``cp -r <log> <dir> && sync``: the floor (no checksum, one sync for everything);
- a backup into a FilesystemBackupStore as a broker takes it (the log's durable segments,
  crc32c of every file, each file and directory fsynced, manifest written last);
- a restore of that backup into a partition directory as ``zeebe-sim restore`` does it
  (download with crc32c verification, lay-out, checkpoint check, truncation, fsync of the tree),
  against ``cp -r`` + ``sync`` of the backup's directory.

Run: ``PYTHONPATH=. python benchmarks/backup_vs_copy.py [--size-mb 300] [--runs 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from storage.backup.api import Backup, BackupDescriptor, BackupIdentifier, FileRef
from storage.backup.filesystem import FilesystemBackupStore
from storage.log import SegmentedLog
from storage.restore import fsync_tree, restore_partition, whole_chain
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.records import Record, RecordType, ValueType, encode_records

ENTRY_BYTES = 1024 * 1024


def build_log(directory: Path, size_mb: int) -> tuple[dict[str, FileRef], int]:
    """A log of about ``size_mb`` MB ending with CHECKPOINT CREATE 1; its segments and the
    checkpoint's position."""
    rng = random.Random(1)
    words = [rng.randbytes(8) for _ in range(64)]
    log = SegmentedLog.open(directory)
    for position in range(1, size_mb + 1):
        if position % 2:
            blob = rng.randbytes(ENTRY_BYTES)
        else:
            blob = b"".join(rng.choice(words) for _ in range(ENTRY_BYTES // 8))
        record = Record(
            position, -1, position, 0, RecordType.COMMAND, ValueType.JOB, "COMPLETE", {"blob": blob}
        )
        log.append(position, 1, encode_records([record]))
    checkpoint = size_mb + 1
    value = {"checkpointId": 1}
    record = Record(checkpoint, -1, 1, 0, RecordType.COMMAND, ValueType.CHECKPOINT, "CREATE", value)
    log.append(checkpoint, 1, encode_records([record]))
    log.flush()
    segments = {s.path.name: FileRef(s.path, s.size_bytes) for s in log.segments()}
    log.close()
    return segments, checkpoint


def copy_and_sync(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    subprocess.run(["sync"], check=True)


async def best_of(runs: int, *actions: Callable[[int], Awaitable[object]]) -> list[float]:
    """Each action's best time; the actions take turns, so that a burst of load from
    elsewhere on the machine hits all of them alike."""
    times: list[list[float]] = [[] for _ in actions]
    for run in range(runs):
        for action, spent in zip(actions, times, strict=True):
            started = time.perf_counter()
            await action(run)
            spent.append(time.perf_counter() - started)
    return [min(spent) for spent in times]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as temp:
        root = Path(temp)
        segments, checkpoint = build_log(root / "log", options.size_mb)
        size = sum(ref.size_bytes for ref in segments.values())
        subprocess.run(["sync"], check=True)
        store = FilesystemBackupStore(root / "store")

        async def copy(run: int) -> None:
            await asyncio.to_thread(copy_and_sync, root / "log", root / f"copy-{run}")

        async def back_up(run: int) -> None:
            id = BackupIdentifier(NodeId(0), PartitionId(1), BackupId(1 + run))
            descriptor = BackupDescriptor(None, checkpoint, 1, "bench", 1)
            await store.save(Backup(id, descriptor, {}, segments))

        copy_s, backup_s = await best_of(options.runs, copy, back_up)
        stored = root / "store" / "contents" / "1" / "1" / "0"  # backup 1's files

        async def copy_stored(run: int) -> None:
            await asyncio.to_thread(copy_and_sync, stored, root / f"stored-copy-{run}")

        # Backup 1 holds CHECKPOINT CREATE 1 at its checkpoint position.
        status = await store.get_status(BackupIdentifier(NodeId(0), PartitionId(1), BackupId(1)))

        async def restore(run: int) -> None:
            target = root / f"restored-{run}"
            await restore_partition(store, whole_chain([status]), target, lambda _: None)
            await asyncio.to_thread(fsync_tree, target)

        stored_copy_s, restore_s = await best_of(options.runs, copy_stored, restore)
        await store.close()
        print(f"partition log: {size / 1e6:.0f} MB in {len(segments)} segment(s)")
        print(f"cp -r + sync of the log:        {copy_s:6.2f} s")
        print(
            f"backup (filesystem store):      {backup_s:6.2f} s  {backup_s / copy_s:.2f}x (<= 1.2x)"
        )
        print(f"cp -r + sync of the backup:     {stored_copy_s:6.2f} s")
        print(
            f"restore (verify, lay out, sync): {restore_s:5.2f} s  {restore_s / stored_copy_s:.2f}x"
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
