"""An in-memory backup store, for tests and scenario runs.

It keeps objects under the S3 store's key layout (``<p>/<c>/<n>/manifest.json``,
``.../snapshot/<file>``, ``.../segments/<file>``) in a :class:`MemoryObjects` "bucket" that
several store instances may share (like processes sharing an S3 bucket), and goes through the
same manifest codec, checksums and compression as the real stores, so that it fails the same
way. Every manifest operation is a plain dict operation without an await between reading and
writing, so it is atomic on the event loop; that is this store's compare-and-swap.
"""

from __future__ import annotations

import attrs

from storage.backup.api import BackupIdentifier, BackupIdentifierWildcard
from storage.backup.base import (
    COMPRESSION_MIN_BYTES,
    TRANSFER_CONCURRENCY_MAX,
    Clock,
    ContentSink,
    ContentSource,
    Kind,
    ManifestBackupStore,
    ManifestConflict,
    Slot,
    Version,
    backup_prefix,
    content_key,
    manifest_key,
    metadata_key,
    parse_manifest_key,
    utc_now,
)
from storage.backup.manifest import ZSTD
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.tasks import in_thread


@attrs.define
class MemoryObjects:
    """The storage medium: object key -> bytes, plus a version per manifest key."""

    objects: dict[str, bytes] = attrs.Factory(dict)
    manifest_versions: dict[str, int] = attrs.Factory(dict)
    next_version: int = 1


class _MemoryBackend:
    description = "memory"

    def __init__(self, medium: MemoryObjects, chunk_bytes: int) -> None:
        self.medium = medium
        self._chunk_bytes = chunk_bytes

    async def read_manifest(self, id: BackupIdentifier) -> tuple[bytes, Version] | None:
        key = manifest_key(id)
        data = self.medium.objects.get(key)
        if data is None:
            return None
        return data, Version(str(self.medium.manifest_versions[key]))

    async def create_manifest(self, id: BackupIdentifier, data: bytes) -> Version:
        key = manifest_key(id)
        if key in self.medium.objects:
            raise ManifestConflict(key)
        return self._put_manifest(key, data)

    async def replace_manifest(
        self, id: BackupIdentifier, data: bytes, expected: Version
    ) -> Version:
        key = manifest_key(id)
        if key not in self.medium.objects or str(self.medium.manifest_versions[key]) != expected:
            raise ManifestConflict(key)
        return self._put_manifest(key, data)

    def _put_manifest(self, key: str, data: bytes) -> Version:
        version = self.medium.next_version
        self.medium.next_version += 1
        self.medium.objects[key] = data
        self.medium.manifest_versions[key] = version
        return Version(str(version))

    async def delete_manifest(self, id: BackupIdentifier) -> None:
        key = manifest_key(id)
        self.medium.objects.pop(key, None)
        self.medium.manifest_versions.pop(key, None)
        self.medium.next_version += 1  # a listing's version (below) changes with every change

    async def list_partition(
        self, partition_id: PartitionId, known_version: str | None
    ) -> tuple[str | None, list[tuple[BackupIdentifier, bytes]] | None]:
        # One event-loop step: no manifest changes in between.
        version = str(self.medium.next_version)
        if version == known_version:
            return version, None
        return version, await self.list_manifests(
            BackupIdentifierWildcard(partition_id=partition_id)
        )

    async def list_manifests(
        self, wildcard: BackupIdentifierWildcard
    ) -> list[tuple[BackupIdentifier, bytes]]:
        found = []
        for key, data in list(self.medium.objects.items()):
            id = parse_manifest_key(key)
            if id is not None and wildcard.matches(id):
                found.append((id, data))
        return found

    async def write_content(self, id: BackupIdentifier, source: ContentSource) -> None:
        # Reading the source file blocks: do it in a thread, like the other stores.
        data = await in_thread(lambda: b"".join(source.chunks()))
        self.medium.objects[content_key(id, source.kind, source.name)] = data

    async def read_content(
        self, id: BackupIdentifier, kind: Kind, name: str, sink: ContentSink
    ) -> None:
        data = self.medium.objects.get(content_key(id, kind, name))
        if data is None:
            await in_thread(sink.abort)
            raise sink.missing()
        await in_thread(_feed, sink, data, self._chunk_bytes)

    async def delete_contents(self, id: BackupIdentifier) -> None:
        prefix = backup_prefix(id) + "/"
        for key in [k for k in self.medium.objects if k.startswith(prefix)]:
            if key != manifest_key(id):
                del self.medium.objects[key]

    async def read_metadata_slot(self, partition_id: PartitionId, slot: Slot) -> bytes | None:
        return self.medium.objects.get(metadata_key(partition_id, slot))

    async def write_metadata_slot(self, partition_id: PartitionId, slot: Slot, data: bytes) -> None:
        self.medium.objects[metadata_key(partition_id, slot)] = data

    async def check(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _feed(sink: ContentSink, data: bytes, chunk_bytes: int) -> None:
    try:
        for start in range(0, len(data), chunk_bytes):
            sink.write(data[start : start + chunk_bytes])
        sink.finish()
    except BaseException:
        sink.abort()
        raise


class InMemoryBackupStore(ManifestBackupStore):
    """A :class:`~storage.backup.api.BackupStore` in memory. Pass the same ``medium`` to several
    stores to let them see one another's backups."""

    def __init__(
        self,
        *,
        medium: MemoryObjects | None = None,
        compression: bool = False,
        compression_min_bytes: int = COMPRESSION_MIN_BYTES,
        transfer_concurrency_max: int = TRANSFER_CONCURRENCY_MAX,
        now: Clock = utc_now,
        upload_delay_s: float = 0.0,
    ) -> None:
        self.medium = medium if medium is not None else MemoryObjects()
        backend = _MemoryBackend(self.medium, chunk_bytes=1 << 20)
        super().__init__(
            backend,
            compression=ZSTD if compression else None,
            compression_min_bytes=compression_min_bytes,
            transfer_concurrency_max=transfer_concurrency_max,
            now=now,
            upload_delay_s=upload_delay_s,
        )
