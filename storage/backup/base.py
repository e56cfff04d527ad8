"""One implementation of the backup-store semantics over a small "object backend" interface.

Theory of operation
-------------------
Every store (memory, filesystem, S3) must behave identically, so the decisions live here once
and each store only provides an :class:`ObjectBackend`: read / create-if-absent /
compare-and-swap / delete of one manifest, write / read / delete of content files, and a listing
of manifests. The manifest is the only thing that says what a backup is; content files without a
COMPLETED manifest mean nothing and are never trusted.

Compare-and-swap is what makes the races safe. ``create_manifest`` returns a version (an S3 ETag,
a hash of the file, a generation counter) and every later change of the manifest says which
version it expects, so that:

- ``save`` writes COMPLETED only over *its own* IN_PROGRESS manifest. A ``mark_failed`` or
  ``delete`` that happened while the files were uploading changed or removed the manifest, the
  swap fails, and theirs wins: the backup never comes back COMPLETED.
- ``save`` marks FAILED on error the same way, so a late error cannot overwrite someone else's
  decision (or a COMPLETED that did land although its response was lost).

Delete order (the brief asked to think it through): the manifest is *demoted* first and
*removed last*. A COMPLETED or FAILED manifest is first swapped to DELETED (Zeebe 8.9's
``markDeleted``), then the contents go, then the manifest. Why not remove the manifest first: a
delete interrupted half-way (crash, S3 outage) would then leave content objects that no manifest
points at, invisible to status and list and so never cleaned up (REFERENCE §8: "Delete of a large
S3 backup could leave objects behind"); and a delete of an absent backup would have to sweep the
content folder blindly, which races with a save that starts at that moment. Why not keep the
manifest COMPLETED until the end: then an interrupted delete leaves a COMPLETED backup with
missing files. Demote-first/remove-last has neither problem: an interrupted delete leaves a
visible DELETED backup that a repeated delete finishes, and while it exists no save can reuse the
slot (create-if-absent fails).

A save that loses a race to a delete may still be uploading: it removes what it uploaded after
it notices (best effort), so a delete never leaves the still-running upload's files behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, Literal, NewType, Protocol, TypeVar

import attrs

from storage.backup.api import (
    Backup,
    BackupIdentifier,
    BackupIdentifierWildcard,
    BackupStatus,
    FileRef,
    PartitionListing,
    RestoredBackup,
    RuntimeMetadata,
)
from storage.backup.manifest import (
    COMPRESSIONS,
    Decoder,
    Encoder,
    FileEntry,
    Manifest,
    check_file_name,
    decode_manifest,
    decode_metadata,
    encode_manifest,
    encode_metadata,
)
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import (
    AlreadyExists,
    BackupStoreError,
    InvalidState,
    SaveOvertaken,
    StorageCorruption,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.tasks import in_thread

log = logging.getLogger(__name__)

Version = NewType("Version", str)
Slot = Literal["a", "b"]
METADATA_SLOTS: Final[tuple[Slot, ...]] = ("a", "b")
Kind = Literal["snapshot", "segments"]
KINDS: Final[tuple[Kind, ...]] = ("snapshot", "segments")
Clock = Callable[[], datetime]

# Files are streamed in chunks of this size: big enough that per-chunk overhead (a thread hop,
# a crc call) is noise, small enough that many concurrent transfers stay cheap in memory.
COPY_CHUNK_BYTES: Final = 1 << 20
# How many files one store transfers at once (per save or restore).
TRANSFER_CONCURRENCY_MAX: Final = 8
# Files smaller than this are stored uncompressed even when compression is on: the frame
# overhead and CPU are not worth it, and tiny snapshot metadata files stay readable.
COMPRESSION_MIN_BYTES: Final = 4096
# Compare-and-swap loops (mark_failed, delete) retry this often when the manifest keeps changing
# under them; more means something is badly wrong.
MANIFEST_RETRIES_MAX: Final = 8

T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- object-key layout (memory and S3 stores; REFERENCE §4) ------------------------------------

MANIFEST_NAME: Final = "manifest.json"
_MANIFEST_KEY: Final = re.compile(r"^(\d+)/(\d+)/(\d+)/manifest\.json$")


def backup_prefix(id: BackupIdentifier) -> str:
    """``<p>/<c>/<n>``: the key prefix of one backup (S3 layout, without the base path)."""
    return f"{id.partition_id}/{id.checkpoint_id}/{id.node_id}"


def manifest_key(id: BackupIdentifier) -> str:
    return f"{backup_prefix(id)}/{MANIFEST_NAME}"


def content_key(id: BackupIdentifier, kind: Kind, name: str) -> str:
    return f"{backup_prefix(id)}/{kind}/{name}"


def metadata_key(partition_id: PartitionId, slot: Slot) -> str:
    """``metadata/<p>/<slot>.json``: never mistaken for a manifest (its first part is not a
    number)."""
    return f"metadata/{partition_id}/{slot}.json"


def parse_manifest_key(key: str) -> BackupIdentifier | None:
    """The backup a ``<p>/<c>/<n>/manifest.json`` key belongs to; None for any other key."""
    match = _MANIFEST_KEY.match(key)
    if match is None:
        return None
    p, c, n = (int(g) for g in match.groups())
    return BackupIdentifier(NodeId(n), PartitionId(p), BackupId(c))


class ManifestConflict(Exception):
    """Internal: the manifest exists (create) or is absent / at another version (swap)."""


class ContentSource:
    """The stored bytes of one file to back up: exactly the first ``ref.size_bytes`` bytes of
    ``ref.path``, checksummed and maybe compressed. After the chunks are consumed, ``entry``
    describes the file for the manifest.

    ``chunks()`` blocks (run it in a thread); ``achunks()`` hops to a thread per chunk.
    """

    def __init__(
        self, kind: Kind, name: str, ref: FileRef, compression: str | None, chunk_bytes: int
    ) -> None:
        self.kind = kind
        self.name = name
        self.ref = ref
        self._encoder = Encoder(compression)
        self._chunk_bytes = chunk_bytes
        self.entry: FileEntry | None = None

    def chunks(self) -> Generator[bytes, None, None]:
        what = f"{self.kind} file {self.name}"
        try:
            f = open(self.ref.path, "rb")
        except FileNotFoundError as exc:
            raise BackupStoreError(
                f"Cannot back up {what}: {self.ref.path} does not exist"
            ) from exc
        except OSError as exc:
            raise BackupStoreError(
                f"Cannot back up {what}: {self.ref.path}: {exc.strerror}"
            ) from exc
        with f:
            done = 0
            while done < self.ref.size_bytes:
                try:
                    data = f.read(min(self._chunk_bytes, self.ref.size_bytes - done))
                except OSError as exc:
                    raise BackupStoreError(
                        f"Cannot back up {what}: {self.ref.path}: {exc.strerror}"
                    ) from exc
                if not data:
                    raise BackupStoreError(
                        f"Cannot back up {what}: {self.ref.path} has only {done} bytes,"
                        f" fewer than the {self.ref.size_bytes} to back up"
                    )
                done += len(data)
                out = self._encoder.feed(data)
                if out:
                    yield out
        tail = self._encoder.finish()
        if tail:
            yield tail
        self.entry = self._encoder.entry(self.name)

    async def achunks(self) -> AsyncGenerator[bytes, None]:
        gen = self.chunks()
        try:
            while True:
                chunk = await in_thread(next, gen, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            gen.close()  # the read in its thread has ended (in_thread waits for it)


class ContentSink:
    """Receives the stored bytes of one file on restore, decodes and verifies them and writes
    the original bytes to ``target``.

    ``write`` and ``finish`` block (call them from a thread). ``abort`` may be called from any
    thread, at any time (a cancelled restore): it removes the partial file, and once aborted the
    sink refuses to write, so a worker thread that outlives its task cannot re-create the file.
    """

    def __init__(self, entry: FileEntry, target: Path, where: str) -> None:
        self.entry = entry
        self.target = target
        self.where = where
        self._decoder = Decoder(entry, where)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._aborted = False

    def write(self, stored: bytes) -> None:
        data = self._decoder.feed(stored)
        with self._lock:
            self._open().write(data)

    def finish(self) -> None:
        self._decoder.finish()
        with self._lock:
            f = self._open()
            f.flush()
            # A restored broker starts on these files right away: they must be durable first.
            os.fsync(f.fileno())
            f.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._file is not None:
                self._file.close()
            self.target.unlink(missing_ok=True)

    def missing(self) -> StorageCorruption:
        return StorageCorruption(f"{self.where} is missing from the backup store")

    def _open(self) -> BinaryIO:
        if self._aborted:
            raise BackupStoreError(f"Restoring {self.where} was aborted")
        if self._file is None:
            self._file = open(self.target, "wb")
        return self._file


class ObjectBackend(Protocol):
    """Where one store keeps manifests and content files. Raises BackupStoreError (with a clear
    one-line message) for I/O failures, ManifestConflict where documented."""

    description: str

    async def read_manifest(self, id: BackupIdentifier) -> tuple[bytes, Version] | None: ...

    async def create_manifest(self, id: BackupIdentifier, data: bytes) -> Version:
        """Create-if-absent. Raises ManifestConflict if a manifest exists."""
        ...

    async def replace_manifest(
        self, id: BackupIdentifier, data: bytes, expected: Version
    ) -> Version:
        """Compare-and-swap. Raises ManifestConflict if absent or not at ``expected``."""
        ...

    async def delete_manifest(self, id: BackupIdentifier) -> None:
        """Unconditional; absent is fine. Only called on FAILED manifests, which nobody but
        deleters changes, so there is nothing to compare against."""
        ...

    async def list_manifests(
        self, wildcard: BackupIdentifierWildcard
    ) -> list[tuple[BackupIdentifier, bytes]]:
        """Manifests (id from their location, raw bytes) of at least the matching backups."""
        ...

    async def list_partition(
        self, partition_id: PartitionId, known_version: str | None
    ) -> tuple[str | None, list[tuple[BackupIdentifier, bytes]] | None]:
        """The partition's listing version and its manifests, read consistently (no manifest
        of the partition changes between the two); ``None`` manifests when the version is
        ``known_version`` (nothing changed since). A version of ``None``: the backend cannot
        tell cheaply, and every call lists."""
        ...

    async def write_content(self, id: BackupIdentifier, source: ContentSource) -> None: ...

    async def read_content(
        self, id: BackupIdentifier, kind: Kind, name: str, sink: ContentSink
    ) -> None:
        """Feed the stored bytes to ``sink`` and finish it (abort it on error). Raises
        ``sink.missing()`` if the file does not exist."""
        ...

    async def delete_contents(self, id: BackupIdentifier) -> None:
        """Remove every content file of the backup (not the manifest); absent is fine."""
        ...

    async def read_metadata_slot(self, partition_id: PartitionId, slot: Slot) -> bytes | None:
        """The bytes of one runtime-metadata slot; None if it was never written."""
        ...

    async def write_metadata_slot(self, partition_id: PartitionId, slot: Slot, data: bytes) -> None:
        """Replace one runtime-metadata slot (durably, where the medium allows)."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


class _LostRace(Exception):
    """Internal: the manifest changed under a running save; ``status`` is what it is now."""

    def __init__(self, status: BackupStatus) -> None:
        super().__init__(status.status_code.name)
        self.status = status


class ManifestBackupStore:
    """:class:`~storage.backup.api.BackupStore` over an :class:`ObjectBackend`."""

    def __init__(
        self,
        backend: ObjectBackend,
        *,
        compression: str | None = None,
        compression_min_bytes: int = COMPRESSION_MIN_BYTES,
        transfer_concurrency_max: int = TRANSFER_CONCURRENCY_MAX,
        chunk_bytes: int = COPY_CHUNK_BYTES,
        now: Clock = utc_now,
        upload_delay_s: float = 0.0,
    ) -> None:
        assert compression is None or compression in COMPRESSIONS, compression
        assert transfer_concurrency_max >= 1 and chunk_bytes >= 1
        self._backend = backend
        self._compression = compression
        self._compression_min_bytes = compression_min_bytes
        self._transfer_concurrency_max = transfer_concurrency_max
        self._chunk_bytes = chunk_bytes
        self._now = now
        # Fault injection ("easier to break on purpose"): wait this long between writing the
        # IN_PROGRESS manifest and uploading, so that a backup can be caught in flight.
        self._upload_delay_s = upload_delay_s
        self._closed = False
        # The last listing of each partition, reused while the backend's version is unchanged
        # (thousands of manifests are not read and decoded again for every list and status).
        self._listings: dict[PartitionId, PartitionListing] = {}
        # Per partition, per (checkpoint, node): the manifest's bytes and status last listed.
        self._raws: dict[PartitionId, dict[tuple[int, int], tuple[bytes, BackupStatus]]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend.description})"

    # -- save ------------------------------------------------------------------------------------

    async def save(self, backup: Backup) -> None:
        """Store ``backup`` and mark it COMPLETED.

        Raises AlreadyExists if a manifest for its id exists in any state (never overwriting
        it), BackupStoreError for any other failure, after marking the backup FAILED with the
        error's text if it is still ours.
        """
        self._check_open()
        id = backup.id
        manifest = Manifest.in_progress(id, backup.descriptor, self._now())
        try:
            version = await self._backend.create_manifest(id, encode_manifest(manifest))
        except ManifestConflict:
            raise AlreadyExists(f"Cannot save {id}: a backup with this id already exists") from None
        try:
            if self._upload_delay_s:
                await asyncio.sleep(self._upload_delay_s)
            snapshot, segments = await self._upload(backup)
            await self._complete(id, manifest, version, snapshot, segments)
            return
        except _LostRace as race:
            lost_to = race.status
        except Exception as exc:
            # CancelledError is not an Exception: a cancelled save leaves the manifest
            # IN_PROGRESS, which the backup's owner marks FAILED on restart or leader change
            # (REFERENCE §4); awaiting the store from a cancelled task could hang shutdown.
            reason = _reason(exc)
            taken_over = await self._fail_own(id, manifest, version, reason)
            if taken_over is None:
                raise BackupStoreError(reason) from exc
            if taken_over.status_code == BackupState.COMPLETED:
                # Only this save can complete this manifest: our COMPLETED write landed although
                # its answer was lost (a timeout). The backup is good.
                log.info("%s completed although saving reported: %s", id, reason)
                return
            lost_to = taken_over
        # Someone else decided about this backup (mark_failed, delete): theirs wins. What we
        # uploaded is useless now; remove it, so that a delete that raced with the upload
        # leaves nothing behind.
        await self._remove_contents_quietly(id)
        if lost_to.status_code == BackupState.DOES_NOT_EXIST:
            raise SaveOvertaken(f"Cannot save {id}: it was deleted while it was being saved")
        raise SaveOvertaken(
            f"Cannot save {id}: it was marked {lost_to.status_code.name} while it was being saved"
            + (f": {lost_to.failure_reason}" if lost_to.failure_reason else "")
        )

    async def _upload(self, backup: Backup) -> tuple[tuple[FileEntry, ...], tuple[FileEntry, ...]]:
        sources: list[ContentSource] = []
        groups: tuple[tuple[Kind, dict[str, FileRef]], ...] = (
            ("snapshot", backup.snapshot_files),
            ("segments", backup.segment_files),
        )
        for kind, files in groups:
            for name, ref in files.items():
                try:
                    check_file_name(name)
                except ValueError as exc:
                    raise BackupStoreError(f"Cannot back up {kind} file: {exc}") from None
                if ref.size_bytes < 0:
                    raise BackupStoreError(f"Cannot back up {kind} file {name}: negative size")
                compress = ref.size_bytes >= self._compression_min_bytes
                sources.append(
                    ContentSource(
                        kind, name, ref, self._compression if compress else None, self._chunk_bytes
                    )
                )
        await self._bounded([self._backend.write_content(backup.id, s) for s in sources])
        entries = []
        for s in sources:
            assert s.entry is not None, f"{s.name} was not fully read"
            entries.append(s.entry)
        snapshot = tuple(e for s, e in zip(sources, entries, strict=True) if s.kind == "snapshot")
        segments = tuple(e for s, e in zip(sources, entries, strict=True) if s.kind == "segments")
        return snapshot, segments

    async def _complete(
        self,
        id: BackupIdentifier,
        manifest: Manifest,
        version: Version,
        snapshot: tuple[FileEntry, ...],
        segments: tuple[FileEntry, ...],
    ) -> None:
        """Re-read the manifest: still ours and IN_PROGRESS? Then swap in COMPLETED.

        Raises _LostRace if anyone changed or removed it meanwhile.
        """
        current = await self._backend.read_manifest(id)
        if current is None or current[1] != version:
            raise _LostRace(await self._current_status(id, current))
        completed = manifest.completed(snapshot, segments, self._now())
        try:
            await self._backend.replace_manifest(id, encode_manifest(completed), version)
        except ManifestConflict:
            raise _LostRace(await self._current_status(id)) from None

    async def _fail_own(
        self, id: BackupIdentifier, manifest: Manifest, version: Version, reason: str
    ) -> BackupStatus | None:
        """Best effort: mark our own IN_PROGRESS manifest FAILED. Returns None if we did (or
        could not reach the store), else the status of whoever changed it before us."""
        failed = manifest.failed(reason, self._now())
        try:
            await self._backend.replace_manifest(id, encode_manifest(failed), version)
            return None
        except ManifestConflict:
            pass  # mark_failed, delete or our own COMPLETED (answer lost) got there first
        except ZeebeSimError as exc:
            # The store is unreachable: the backup stays IN_PROGRESS until its owner marks it
            # FAILED (on restart or leader change, REFERENCE §4). Nothing else can be done here.
            log.warning("could not mark %s failed: %s", id, exc, extra={"backup": str(id)})
            return None
        try:
            return await self._current_status(id)
        except ZeebeSimError:
            return None

    async def _current_status(
        self,
        id: BackupIdentifier,
        current: tuple[bytes, Version] | Literal["read"] | None = "read",
    ) -> BackupStatus:
        if current == "read":
            current = await self._backend.read_manifest(id)
        if current is None:
            return BackupStatus(id, BackupState.DOES_NOT_EXIST)
        return self._decode_status(id, current[0])

    async def _remove_contents_quietly(self, id: BackupIdentifier) -> None:
        try:
            await self._backend.delete_contents(id)
        except ZeebeSimError as exc:
            log.warning("could not remove the files of %s: %s", id, exc)

    # -- reads -----------------------------------------------------------------------------------

    async def get_status(self, id: BackupIdentifier) -> BackupStatus:
        """The backup's status, DOES_NOT_EXIST if absent. Raises BackupStoreError on I/O."""
        self._check_open()
        current = await self._backend.read_manifest(id)
        if current is None:
            return BackupStatus(id, BackupState.DOES_NOT_EXIST)
        return self._decode_status(id, current[0])

    async def partition_listing(self, partition_id: PartitionId) -> PartitionListing:
        """Every copy of the partition's backups, sorted by (checkpoint, node); the cached
        listing while the backend's version says nothing changed."""
        self._check_open()
        cached = self._listings.get(partition_id)
        version, found = await self._backend.list_partition(
            partition_id, cached.version if cached is not None else None
        )
        if found is None and cached is not None:
            return cached
        # A manifest whose bytes are the ones decoded last time is not decoded again (keyed
        # by plain ints: hashing 10,000 identifiers would cost more than the rest).
        before = self._raws.get(partition_id, {})
        decoded: dict[tuple[int, int], tuple[bytes, BackupStatus]] = {}
        for id, raw in found or ():
            key = (id.checkpoint_id, id.node_id)
            known = before.get(key)
            if known is None or known[0] != raw:  # the same bytes object: no comparison
                known = (raw, self._decode_status(id, raw))
            decoded[key] = known
        self._raws[partition_id] = decoded
        statuses = [decoded[key][1] for key in sorted(decoded)]
        listing = PartitionListing(version, statuses)
        if version is not None:
            self._listings[partition_id] = listing
        return listing

    async def list(self, wildcard: BackupIdentifierWildcard) -> list[BackupStatus]:
        """Statuses of the matching backups, sorted by (checkpoint, partition, node)."""
        self._check_open()
        if wildcard.partition_id is not None and wildcard.checkpoint_id is None:
            listing = await self.partition_listing(wildcard.partition_id)
            return [s for s in listing.statuses if wildcard.matches(s.id)]
        found = await self._backend.list_manifests(wildcard)
        statuses = [self._decode_status(id, raw) for id, raw in found if wildcard.matches(id)]
        statuses.sort(key=lambda s: (s.id.checkpoint_id, s.id.partition_id, s.id.node_id))
        return statuses

    def _decode_status(self, id: BackupIdentifier, raw: bytes) -> BackupStatus:
        manifest = self._decode(id, raw)
        if isinstance(manifest, StorageCorruption):
            # Shown as FAILED rather than failing the whole status/list call: the user sees it
            # and can delete it.
            return BackupStatus(id, BackupState.FAILED, failure_reason=manifest.message)
        return manifest.status()

    def _decode(self, id: BackupIdentifier, raw: bytes) -> Manifest | StorageCorruption:
        where = f"{self._backend.description} for {id}"
        try:
            manifest = decode_manifest(raw, where)
        except StorageCorruption as exc:
            return exc
        if manifest.id != id:
            return StorageCorruption(f"The manifest at {where} belongs to {manifest.id}")
        return manifest

    # -- state changes ---------------------------------------------------------------------------

    async def mark_failed(self, id: BackupIdentifier, reason: str) -> BackupState:
        """Mark the backup FAILED with ``reason``; absent: create a FAILED manifest; COMPLETED
        or already FAILED: leave it. Returns the resulting status code.

        Raises BackupStoreError on I/O.
        """
        self._check_open()
        for _ in range(MANIFEST_RETRIES_MAX):
            current = await self._backend.read_manifest(id)
            try:
                if current is None:
                    failed = Manifest.failed_new(id, reason, self._now())
                    await self._backend.create_manifest(id, encode_manifest(failed))
                    return BackupState.FAILED
                raw, version = current
                manifest = self._decode(id, raw)
                if isinstance(manifest, StorageCorruption):
                    return BackupState.FAILED  # already shown as FAILED
                if manifest.status_code != BackupState.IN_PROGRESS:
                    return manifest.status_code
                failed = manifest.failed(reason, self._now())
                await self._backend.replace_manifest(id, encode_manifest(failed), version)
                return BackupState.FAILED
            except ManifestConflict:
                continue  # changed under us: look again
        raise BackupStoreError(f"Cannot mark {id} failed: its manifest keeps changing")

    async def delete(self, id: BackupIdentifier) -> None:
        """Remove the backup and all its files; absent is a no-op.

        Raises InvalidState if it is IN_PROGRESS, BackupStoreError on I/O.
        """
        self._check_open()
        for _ in range(MANIFEST_RETRIES_MAX):
            current = await self._backend.read_manifest(id)
            if current is None:
                return
            raw, version = current
            manifest = self._decode(id, raw)
            if isinstance(manifest, Manifest):
                if manifest.status_code == BackupState.IN_PROGRESS:
                    raise InvalidState(
                        f"Cannot delete {id}: it is in progress; mark it failed first"
                    )
                if manifest.status_code in (BackupState.COMPLETED, BackupState.FAILED):
                    # Demote first (see the module docstring for why this order).
                    demoted = manifest.deleted(self._now())
                    try:
                        await self._backend.replace_manifest(id, encode_manifest(demoted), version)
                    except ManifestConflict:
                        continue
            await self._backend.delete_contents(id)
            await self._backend.delete_manifest(id)
            return
        raise BackupStoreError(f"Cannot delete {id}: its manifest keeps changing")

    # -- restore ---------------------------------------------------------------------------------

    async def restore(self, id: BackupIdentifier, target_dir: Path) -> RestoredBackup:
        """Download a COMPLETED backup into ``target_dir/snapshot`` and ``target_dir/segments``,
        verifying every file's size and crc32c.

        Raises BackupStoreError if it is not COMPLETED or on I/O, StorageCorruption if a file is
        missing or does not match the manifest. On error the files written so far are removed.
        """
        self._check_open()
        current = await self._backend.read_manifest(id)
        if current is None:
            raise BackupStoreError(f"Cannot restore {id}: it does not exist")
        manifest = self._decode(id, current[0])
        if isinstance(manifest, StorageCorruption):
            raise manifest
        if manifest.status_code != BackupState.COMPLETED:
            raise BackupStoreError(
                f"Cannot restore {id}: it is {manifest.status_code.name}, not COMPLETED"
            )
        descriptor = manifest.descriptor
        if descriptor is None:
            raise StorageCorruption(f"The manifest of {id} is COMPLETED but has no descriptor")
        dirs = {kind: target_dir / kind for kind in KINDS}
        jobs: list[tuple[Kind, FileEntry]] = [("snapshot", e) for e in manifest.snapshot_files]
        jobs += [("segments", e) for e in manifest.segment_files]
        written: list[Path] = []

        async def fetch(kind: Kind, entry: FileEntry) -> None:
            target = dirs[kind] / entry.name
            where = f"{kind} file {entry.name} of {id}"
            sink = ContentSink(entry, target, where)
            written.append(target)
            try:
                await self._backend.read_content(id, kind, entry.name, sink)
            except BaseException:
                sink.abort()
                raise

        try:
            await in_thread(_make_dirs, [dirs[k] for k in {k for k, _ in jobs}])
            await self._bounded([fetch(kind, entry) for kind, entry in jobs])
        except BaseException as exc:
            await in_thread(_remove_files, written)
            if isinstance(exc, OSError):
                raise BackupStoreError(f"Cannot restore {id} into {target_dir}: {exc}") from exc
            raise
        return RestoredBackup(
            id=id,
            descriptor=descriptor,
            snapshot_dir=dirs["snapshot"] if descriptor.snapshot_id is not None else None,
            segment_files=[dirs["segments"] / e.name for e in manifest.segment_files],
        )

    # -- runtime metadata ------------------------------------------------------------------------

    async def write_metadata(self, metadata: RuntimeMetadata) -> None:
        """Write into the slot that does not hold the newest valid copy, numbered above it, so
        that a write torn by a crash leaves the previous copy readable."""
        self._check_open()
        slots = await self._metadata_slots(metadata.partition_id)
        newest = max(slots.values(), key=lambda m: m.sequence_number, default=None)
        target: Slot = "a"
        if newest is not None:
            target = next(s for s in METADATA_SLOTS if slots.get(s) is not newest)
            sequence_number = max(metadata.sequence_number, newest.sequence_number + 1)
            metadata = attrs.evolve(metadata, sequence_number=sequence_number)
        await self._backend.write_metadata_slot(
            metadata.partition_id, target, encode_metadata(metadata)
        )

    async def read_metadata(self, partition_id: PartitionId) -> RuntimeMetadata | None:
        """The valid slot with the higher sequence number; None if neither is valid."""
        self._check_open()
        slots = await self._metadata_slots(partition_id)
        return max(slots.values(), key=lambda m: m.sequence_number, default=None)

    async def _metadata_slots(self, partition_id: PartitionId) -> dict[Slot, RuntimeMetadata]:
        """The slots that hold valid metadata of this partition (a torn one is skipped)."""
        found: dict[Slot, RuntimeMetadata] = {}
        for slot in METADATA_SLOTS:
            raw = await self._backend.read_metadata_slot(partition_id, slot)
            if raw is None:
                continue
            where = f"{self._backend.description}, {metadata_key(partition_id, slot)}"
            try:
                metadata = decode_metadata(raw, where)
            except StorageCorruption as exc:
                log.warning("ignoring a torn metadata slot: %s", exc)
                continue
            if metadata.partition_id == partition_id:
                found[slot] = metadata
        return found

    # -- lifecycle -------------------------------------------------------------------------------

    async def check(self) -> None:
        """Verify the store is usable. Raises BackupStoreError with a one-line reason."""
        self._check_open()
        await self._backend.check()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackupStoreError(f"{self!r} is closed")

    async def _bounded(self, jobs: Sequence[Awaitable[None]]) -> None:
        await gather_bounded(jobs, self._transfer_concurrency_max)


async def gather_bounded(jobs: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """Run ``jobs`` at most ``limit`` at a time and return their results in order. The first
    failure cancels the rest (no job outlives the call) and is raised as itself, not as an
    ExceptionGroup."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Awaitable[T]) -> T:
        async with semaphore:
            return await job

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(job)) for job in jobs]
    except BaseExceptionGroup as group_error:
        raise _first_leaf(group_error) from None
    return [t.result() for t in tasks]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _reason(exc: BaseException) -> str:
    """The error's text as a FAILED backup's reason: one line, never empty."""
    text = exc.message if isinstance(exc, ZeebeSimError) else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text


def _make_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)


def _remove_files(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
