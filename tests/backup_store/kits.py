"""Test helpers for the backup-store suites: one "kit" per store, giving the contract tests a
store plus direct access to the medium underneath it (to look at the real layout and to corrupt
files), a held-open save, a TCP proxy that can be switched off, and backup builders."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.store import S3Store

from storage.backup.api import (
    Backup,
    BackupDescriptor,
    BackupIdentifier,
    BackupStore,
    FileRef,
)
from storage.backup.base import ManifestBackupStore, content_key, manifest_key
from storage.backup.config import S3StoreConfig
from storage.backup.filesystem import FilesystemBackupStore
from storage.backup.memory import InMemoryBackupStore, MemoryObjects
from storage.backup.s3 import S3BackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId

S3_BASE_PATH = "backups"
S3_ACCESS_KEY = "test-access"
S3_SECRET_KEY = "test-secret"
# Generous for moto on a loaded CI machine; tests about timeouts configure their own.
S3_TIMEOUT_S = 20.0


def bid(node: int = 0, partition: int = 1, checkpoint: int = 10) -> BackupIdentifier:
    return BackupIdentifier(NodeId(node), PartitionId(partition), BackupId(checkpoint))


def descriptor(snapshot_id: str | None = "1-1-5-4", position: int = 42) -> BackupDescriptor:
    return BackupDescriptor(
        snapshot_id=snapshot_id,
        checkpoint_position=position,
        number_of_partitions=3,
        broker_version="8.6.0-sim",
    )


def payload(size: int, seed: int = 0, compressible: bool = False) -> bytes:
    """Deterministic test bytes; ``compressible`` ones shrink a lot under zstd."""
    rng = random.Random(seed)
    if compressible:
        words = [rng.randbytes(8) for _ in range(16)]
        out = b"".join(rng.choice(words) for _ in range(size // 8 + 1))
        return out[:size]
    return rng.randbytes(size)


def make_backup(
    source_dir: Path,
    id: BackupIdentifier,
    *,
    snapshot: dict[str, bytes] | None = None,
    segments: dict[str, bytes] | None = None,
    snapshot_id: str | None = "1-1-5-4",
) -> Backup:
    """Write the given files under ``source_dir`` and describe them as a Backup."""
    folder = source_dir / f"src-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    refs: list[dict[str, FileRef]] = []
    for files in (snapshot or {}, segments or {}):
        group = {}
        for name, data in files.items():
            path = folder / f"{len(refs)}-{name}"
            path.write_bytes(data)
            group[name] = FileRef(path, len(data))
        refs.append(group)
    return Backup(
        id=id,
        descriptor=descriptor(snapshot_id if snapshot else None),
        snapshot_files=refs[0],
        segment_files=refs[1],
    )


def small_backup(source_dir: Path, id: BackupIdentifier, seed: int = 0) -> Backup:
    return make_backup(
        source_dir,
        id,
        snapshot={"CURRENT": b"MANIFEST-000004\n", "000003.sst": payload(3000, seed)},
        segments={"1.log": payload(5000, seed + 1), "2.log": payload(700, seed + 2)},
    )


async def poll(
    condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 10.0
) -> None:
    """Wait until ``condition()`` holds, polling (never sleeping a fixed time to hope)."""
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class FakeClock:
    """A clock the test moves: every reading advances it by one millisecond."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


# -- kits ------------------------------------------------------------------------------------------


class StoreKit:
    """A store under test and the medium beneath it."""

    name: str

    def __init__(self) -> None:
        self.opened: list[BackupStore] = []

    def open(self, *, compression: bool = False, **options: Any) -> ManifestBackupStore:
        store = self._open(compression=compression, **options)
        self.opened.append(store)
        return store

    def _open(self, *, compression: bool, **options: Any) -> ManifestBackupStore:
        raise NotImplementedError

    async def stored_paths(self) -> set[str]:
        """Every object/file in the medium, as paths relative to the store's root."""
        raise NotImplementedError

    async def read_raw(self, path: str) -> bytes:
        raise NotImplementedError

    async def write_raw(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    async def delete_raw(self, path: str) -> None:
        raise NotImplementedError

    def manifest_path(self, id: BackupIdentifier) -> str:
        return manifest_key(id)

    def content_path(self, id: BackupIdentifier, kind: str, name: str) -> str:
        return content_key(id, kind, name)  # type: ignore[arg-type]

    async def corrupt(self, id: BackupIdentifier, kind: str, name: str) -> None:
        """Flip one byte in the middle of a stored content file."""
        path = self.content_path(id, kind, name)
        data = bytearray(await self.read_raw(path))
        data[len(data) // 2] ^= 0x5A
        await self.write_raw(path, bytes(data))

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


class MemoryKit(StoreKit):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.medium = MemoryObjects()

    def _open(self, *, compression: bool, **options: Any) -> ManifestBackupStore:
        return InMemoryBackupStore(medium=self.medium, compression=compression, **options)

    async def stored_paths(self) -> set[str]:
        return set(self.medium.objects)

    async def read_raw(self, path: str) -> bytes:
        return self.medium.objects[path]

    async def write_raw(self, path: str, data: bytes) -> None:
        self.medium.objects[path] = data
        self.medium.manifest_versions.setdefault(path, 0)

    async def delete_raw(self, path: str) -> None:
        del self.medium.objects[path]


class FilesystemKit(StoreKit):
    name = "filesystem"

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def _open(self, *, compression: bool, **options: Any) -> ManifestBackupStore:
        return FilesystemBackupStore(self.base, compression=compression, **options)

    def manifest_path(self, id: BackupIdentifier) -> str:
        return f"manifests/{id.partition_id}/{id.checkpoint_id}/{id.node_id}/manifest.json"

    def content_path(self, id: BackupIdentifier, kind: str, name: str) -> str:
        return f"contents/{id.partition_id}/{id.checkpoint_id}/{id.node_id}/{kind}/{name}"

    async def stored_paths(self) -> set[str]:
        if not self.base.exists():
            return set()
        # The listing versions are bookkeeping, as directories are (storage/backup/filesystem.py).
        return {
            p.relative_to(self.base).as_posix()
            for p in self.base.rglob("*")
            if p.is_file() and p.name != ".listing"
        }

    def directories(self) -> set[str]:
        return {p.relative_to(self.base).as_posix() for p in self.base.rglob("*") if p.is_dir()}

    async def read_raw(self, path: str) -> bytes:
        return (self.base / path).read_bytes()

    async def write_raw(self, path: str, data: bytes) -> None:
        (self.base / path).parent.mkdir(parents=True, exist_ok=True)
        (self.base / path).write_bytes(data)

    async def delete_raw(self, path: str) -> None:
        (self.base / path).unlink()


class S3Kit(StoreKit):
    name = "s3"

    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.bucket = bucket
        # Direct access to the bucket, below the store's base path.
        self.raw = S3Store(
            bucket,
            prefix=S3_BASE_PATH,
            endpoint=endpoint,
            region="us-east-1",
            access_key_id=S3_ACCESS_KEY,
            secret_access_key=S3_SECRET_KEY,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    def config(self, **overrides: Any) -> S3StoreConfig:
        values: dict[str, Any] = {
            "bucket_name": self.bucket,
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "base_path": S3_BASE_PATH,
            "force_path_style_access": True,
            "api_call_timeout_s": S3_TIMEOUT_S,
        }
        values.update(overrides)
        return S3StoreConfig(**values)

    def _open(self, *, compression: bool, **options: Any) -> ManifestBackupStore:
        config_options = {
            k: options.pop(k)
            for k in list(options)
            if k in ("multipart_part_bytes", "transfer_concurrency_max", "api_call_timeout_s")
        }
        config = self.config(compression="zstd" if compression else None, **config_options)
        return S3BackupStore(config, **options)

    async def stored_paths(self) -> set[str]:
        paths: set[str] = set()
        async for page in obstore.list(self.raw, None, chunk_size=1000):
            paths.update(m["path"] for m in page)
        return paths

    async def read_raw(self, path: str) -> bytes:
        return bytes(await (await obstore.get_async(self.raw, path)).bytes_async())

    async def write_raw(self, path: str, data: bytes) -> None:
        await obstore.put_async(self.raw, path, data)

    async def delete_raw(self, path: str) -> None:
        await obstore.delete_async(self.raw, path)


# -- a save held open in the middle of its upload --------------------------------------------------


class HeldSave:
    """``async with HeldSave(store, backup_dir, id) as held``: a save whose manifest is
    IN_PROGRESS and whose upload is blocked reading a FIFO until ``release()`` (or the end of
    the block) writes the file's bytes into it. ``held.task`` is the save."""

    SIZE = 1000

    def __init__(self, store: BackupStore, source_dir: Path, id: BackupIdentifier) -> None:
        self.store = store
        self.id = id
        self.fifo = source_dir / f"fifo-{uuid.uuid4().hex}"
        os.mkfifo(self.fifo)
        self.data = payload(self.SIZE, seed=99)
        self.backup = Backup(
            id=id,
            descriptor=descriptor(None),
            snapshot_files={},
            segment_files={"1.log": FileRef(self.fifo, self.SIZE)},
        )
        self.task: asyncio.Task[None] | None = None
        self._released = False

    async def __aenter__(self) -> HeldSave:
        self.task = asyncio.create_task(self.store.save(self.backup))

        async def in_progress() -> bool:
            assert self.task is not None
            if self.task.done():
                self.task.result()  # raise what went wrong
                raise AssertionError("the held save finished before it was released")
            status = await self.store.get_status(self.id)
            return status.status_code == BackupState.IN_PROGRESS

        await poll(in_progress, "the held save to be IN_PROGRESS")
        return self

    async def release(self) -> None:
        """Let the upload read the file: waits for the reader to open the FIFO."""
        if self._released:
            return
        self._released = True
        assert self.task is not None

        async def reader_ready() -> bool:
            assert self.task is not None
            return self.task.done() or self._try_write()

        await poll(reader_ready, "the save to open the FIFO")

    def _try_write(self) -> bool:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False  # no reader yet
            raise
        try:
            os.write(fd, self.data)  # smaller than a pipe buffer: never blocks
        finally:
            os.close(fd)
        return True

    async def outcome(self) -> BaseException | None:
        """Release if needed and wait for the save; its exception, or None if it succeeded."""
        await self.release()
        assert self.task is not None
        try:
            await self.task
        except Exception as exc:
            return exc
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        await self.outcome()


# -- a TCP proxy that can be switched off and on ---------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. ``stop()`` refuses new connections and resets the
    open ones (like a crashed server); ``start()`` again listens on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, server_w))
        for reader, writer in ((client_r, server_w), (server_r, client_w)):
            pump = asyncio.create_task(_pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


@contextlib.asynccontextmanager
async def blackhole() -> AsyncIterator[str]:
    """An endpoint that accepts TCP connections (in the kernel backlog) and never answers."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def closed_port_endpoint() -> str:
    """An endpoint where nothing listens (connection refused)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
