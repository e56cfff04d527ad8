"""How fast do the backup stores save a partition's log? Prints figures, asserts nothing.

Creates ~100 MB of segment files (half random, half compressible, like a log of JSON-ish
records), then times:

- ``cp -r`` of the same files (the floor: no checksums, no fsync) and ``cp -r && sync``;
- FilesystemBackupStore.save without and with zstd, and its restore (which verifies crc32c);
- S3BackupStore.save and restore against a moto server on loopback (moto, not S3: it measures
  our overhead plus moto's, not a network).

Run: ``PYTHONPATH=. python benchmarks/backup_store.py [--size-mb 100] [--files 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from storage.backup.api import Backup, BackupDescriptor, BackupIdentifier, FileRef
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId


def make_segments(folder: Path, total_mb: int, files: int) -> dict[str, FileRef]:
    folder.mkdir(parents=True)
    rng = random.Random(1)
    per_file = total_mb * 1024 * 1024 // files
    words = [rng.randbytes(8) for _ in range(64)]
    refs = {}
    for i in range(files):
        if i % 2 == 0:
            data = rng.randbytes(per_file)
        else:
            data = b"".join(rng.choice(words) for _ in range(per_file // 8))
        path = folder / f"{i + 1}.log"
        path.write_bytes(data)
        refs[path.name] = FileRef(path, len(data))
    return refs


def backup_of(checkpoint: int, segments: dict[str, FileRef]) -> Backup:
    return Backup(
        id=BackupIdentifier(NodeId(0), PartitionId(1), BackupId(checkpoint)),
        descriptor=BackupDescriptor(None, 1, 1, "bench"),
        snapshot_files={},
        segment_files=segments,
    )


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


def cp(source: Path, target: Path, sync: bool) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    if sync:
        subprocess.run(["sync"], check=True)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for local figures")
    parser.add_argument("--no-s3", action="store_true", help="skip the moto (S3) figures")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zeebe-sim-bench-") as tmp:
        root = Path(tmp)
        segments = make_segments(root / "segments", args.size_mb, args.files)
        size_mb = sum(r.size_bytes for r in segments.values()) / 1024 / 1024
        print(f"{args.files} segment files, {size_mb:.0f} MiB in {root}")
        rows: list[tuple[str, float]] = []

        def best(label: str, times: list[float]) -> None:
            rows.append((label, min(times)))

        best(
            "cp -r",
            [cp(root / "segments", root / f"cp{i}", sync=False) for i in range(args.repeat)],
        )
        best(
            "cp -r && sync",
            [cp(root / "segments", root / f"cps{i}", sync=True) for i in range(args.repeat)],
        )
        for i in range(args.repeat):
            shutil.rmtree(root / f"cp{i}")
            shutil.rmtree(root / f"cps{i}")

        checkpoint = 1
        for compression in (False, True):
            store = FilesystemBackupStore(root / "fs-store", compression=compression)
            saves, restores = [], []
            for _ in range(args.repeat):
                backup = backup_of(checkpoint, segments)
                checkpoint += 1
                saves.append(await timed(partial(store.save, backup)))
                target = root / f"restore-{checkpoint}"
                restores.append(await timed(partial(store.restore, backup.id, target)))
                shutil.rmtree(target)
                await store.delete(backup.id)
            name = "filesystem" + (" zstd" if compression else "")
            best(f"{name} save (crc32c + fsync)", saves)
            best(f"{name} restore (verify + fsync)", restores)

        if not args.no_s3:
            rows += await s3_figures(segments)

        floor = dict(rows)["cp -r"]
        print(f"\n{'operation':<42}{'seconds':>9}{'MiB/s':>9}{'x cp -r':>9}")
        for label, seconds in rows:
            print(f"{label:<42}{seconds:>9.3f}{size_mb / seconds:>9.0f}{seconds / floor:>9.1f}")


async def s3_figures(segments: dict[str, FileRef]) -> list[tuple[str, float]]:
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    from storage.backup.config import S3StoreConfig
    from storage.backup.s3 import S3BackupStore

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket="bench-backups")
        rows = []
        for compression in (None, "zstd"):
            config = S3StoreConfig(
                bucket_name="bench-backups",
                endpoint=endpoint,
                access_key="bench",
                secret_key="bench",
                force_path_style_access=True,
                compression=compression,
                base_path="zstd" if compression else "plain",
            )
            store = S3BackupStore(config)
            backup = backup_of(1, segments)
            label = "s3 (moto)" + (" zstd" if compression else "")
            rows.append((f"{label} save", await timed(partial(store.save, backup))))
            with tempfile.TemporaryDirectory() as target:
                rows.append(
                    (
                        f"{label} restore",
                        await timed(partial(store.restore, backup.id, Path(target))),
                    )
                )
            await store.close()
        return rows
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
