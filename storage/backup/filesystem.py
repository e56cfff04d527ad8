"""The filesystem backup store: Zeebe's layout on a local or mounted directory.

Layout (REFERENCE §4)::

    <base>/manifests/<p>/<c>/<n>/manifest.json
    <base>/contents/<p>/<c>/<n>/snapshot/<file>
    <base>/contents/<p>/<c>/<n>/segments/<file>
    <base>/metadata/<p>/<slot>.json          (runtime metadata, slots a and b)

Durability and atomicity, since several broker processes may share one base path and any of
them may be killed at any instant:

- A manifest is never written in place. It is written to a temp file in its own directory and
  fsynced; *creation* then hard-links the temp file to ``manifest.json`` (``link`` fails with
  EEXIST if one exists, so two savers cannot both win and nobody ever sees a half-written
  manifest), *replacement* renames it over the old one. Then the directory is fsynced so the
  new name survives a crash. The temp file is removed either way.
- Compare-and-swap (IN_PROGRESS -> COMPLETED/FAILED, delete) holds an exclusive ``flock`` on the
  manifest's directory while it reads, compares and renames, so it is atomic across processes.
  The version compared is a hash of the manifest bytes (every write has a new ``modifiedAt``).
- Content files are written under their final names and fsynced: a content file is only trusted
  once a COMPLETED manifest lists it with its size and checksum, so a temp-and-rename dance would
  buy nothing.
- Emptied ``<c>`` directories are removed, so that ``list`` stays cheap after many deletes; a
  writer whose parent directory vanishes under it simply creates it again.
- A partition's listing has a version, ``<base>/manifests/<p>/.listing`` (a random token), so
  that thousands of manifests are not read again for every list and status while nothing
  changed. Every manifest change holds an exclusive ``flock`` on that file, writes a new token
  *before* changing the manifest, and releases the lock after; a listing holds a shared lock
  while it reads the token and walks. So no listing sees a token and a manifest change that it
  does not reflect, a writer killed half-way (the lock dies with it) leaves a new token, and a
  cached listing is reused only when nothing changed. The file is also a journal: each
  writer appends a line (its new token, the checkpoint and node of the manifest it changes,
  the partition directory's mtime before and after), so a listing that held an earlier token
  reads only the manifests named since, instead of walking 10,000 directories, when the
  chain of mtimes is unbroken (else something was changed by hand: everything is walked).
  The journal keeps its newest ``_JOURNAL_LINES_MAX`` lines. Changes made by hand (a backup's
  directory removed) are seen through the partition directory's mtime, anything else after at
  most ``LISTING_REUSE_MAX_S`` (the partition is walked again, in the background, off the
  request path; a walk reads only the manifests whose file changed, and a listing keeps its
  version while nothing did).

All blocking I/O runs in a thread (``in_thread``: a cancelled caller waits for it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import attrs

from storage.backup.api import BackupIdentifier, BackupIdentifierWildcard
from storage.backup.base import (
    COMPRESSION_MIN_BYTES,
    COPY_CHUNK_BYTES,
    TRANSFER_CONCURRENCY_MAX,
    Clock,
    ContentSink,
    ContentSource,
    Kind,
    ManifestBackupStore,
    ManifestConflict,
    Slot,
    Version,
    metadata_key,
    utc_now,
)
from storage.backup.manifest import ZSTD
from storage.durable import fsync_directory
from zeebe_sim.ground.errors import BackupStoreError
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId
from zeebe_sim.ground.tasks import OwnedTasks, in_thread

log = logging.getLogger(__name__)

# A file being backed up is synced every this many bytes, not only at its end: its dirty pages
# stay few, so a large backup's writeback does not reach the disk all at once while partitions
# fsync their logs to it (measured: the backup is faster under load, processing no worse).
SYNC_EVERY_BYTES: Final = 8 << 20

MANIFEST_NAME: Final = "manifest.json"
_TEMP_PREFIX: Final = ".manifest.json."
_TEMP_SUFFIX: Final = ".tmp"
# How often a writer re-creates a directory that a concurrent delete pruned under it.
_MKDIR_RETRIES_MAX: Final = 5
_DECIMAL: Final = re.compile(r"[1-9][0-9]*|0")
_LISTING_FILE: Final = ".listing"
# Lines kept in a listing's journal (module docstring); about 60 bytes each.
_JOURNAL_LINES_MAX: Final = 2000
_NO_BACKUPS: Final = "none"  # the version of a partition whose manifest directory is absent
# A listing is read again at least this often, so that manifests changed by hand are seen.
LISTING_REUSE_MAX_S: Final = 10.0

T = TypeVar("T")
_FileKey = tuple[int, int, int, int]  # inode, size, mtime and ctime (ns)


class _FilesystemBackend:
    def __init__(self, base_path: Path, chunk_bytes: int) -> None:
        self.base = base_path
        self.manifests = base_path / "manifests"
        self.contents = base_path / "contents"
        self.description = f"filesystem backup store at {base_path}"
        self._chunk_bytes = chunk_bytes
        # Per partition, per (checkpoint, node): the manifest's stat, bytes and id at the last
        # listing, so that listing again reads only manifests whose file changed.
        self._read: dict[
            PartitionId, dict[tuple[int, int], tuple[_FileKey, bytes, BackupIdentifier]]
        ] = {}
        # Per partition: the token and directory mtime (ns), when it was last walked (monotonic
        # seconds), and the version given to that listing.
        self._versions: dict[PartitionId, tuple[str, int, float, str]] = {}
        self._rewalks = OwnedTasks(f"listing walks of the {self.description}")
        self._rewalking: set[PartitionId] = set()

    def _changing(self, id: BackupIdentifier) -> contextlib.AbstractContextManager[list[_Change]]:
        """Held around every change of a manifest of ``id``'s partition (module docstring)."""
        return _listing_lock(
            self.manifests / str(id.partition_id), changing=(id.checkpoint_id, id.node_id)
        )

    def manifest_dir(self, id: BackupIdentifier) -> Path:
        return self.manifests / str(id.partition_id) / str(id.checkpoint_id) / str(id.node_id)

    def content_dir(self, id: BackupIdentifier) -> Path:
        return self.contents / str(id.partition_id) / str(id.checkpoint_id) / str(id.node_id)

    async def _io(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await in_thread(fn)
        except OSError as exc:
            raise BackupStoreError(
                f"{what} failed in the {self.description}: {_os_reason(exc)}"
            ) from exc

    # -- manifests -------------------------------------------------------------------------------

    async def read_manifest(self, id: BackupIdentifier) -> tuple[bytes, Version] | None:
        path = self.manifest_dir(id) / MANIFEST_NAME

        def read() -> tuple[bytes, Version] | None:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return None
            return data, _version(data)

        return await self._io(f"Reading the manifest of {id}", read)

    async def create_manifest(self, id: BackupIdentifier, data: bytes) -> Version:
        directory = self.manifest_dir(id)

        def create() -> Version:
            with self._changing(id):
                return create_locked()

        def create_locked() -> Version:
            for _ in range(_MKDIR_RETRIES_MAX):
                temp = directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex}{_TEMP_SUFFIX}"
                try:
                    _make_dirs_durable(directory)
                    _write_durable(temp, data)
                    os.link(temp, directory / MANIFEST_NAME)
                except FileExistsError:
                    raise ManifestConflict(str(directory)) from None
                except FileNotFoundError:
                    continue  # a concurrent delete removed the directory (or our temp file)
                finally:
                    _unlink_quietly(temp)
                fsync_directory(directory)
                return _version(data)
            raise OSError(errno.ENOENT, "directory keeps disappearing", str(directory))

        return await self._io(f"Creating the manifest of {id}", create)

    async def replace_manifest(
        self, id: BackupIdentifier, data: bytes, expected: Version
    ) -> Version:
        directory = self.manifest_dir(id)

        def replace() -> Version:
            with self._changing(id), _LockedDir(directory) as locked:
                if not locked:
                    raise ManifestConflict(str(directory))
                try:
                    current = (directory / MANIFEST_NAME).read_bytes()
                except FileNotFoundError:
                    raise ManifestConflict(str(directory)) from None
                if _version(current) != expected:
                    raise ManifestConflict(str(directory))
                temp = directory / f"{_TEMP_PREFIX}{uuid.uuid4().hex}{_TEMP_SUFFIX}"
                try:
                    _write_durable(temp, data)
                    os.replace(temp, directory / MANIFEST_NAME)
                finally:
                    _unlink_quietly(temp)
                fsync_directory(directory)
                return _version(data)

        return await self._io(f"Updating the manifest of {id}", replace)

    async def delete_manifest(self, id: BackupIdentifier) -> None:
        directory = self.manifest_dir(id)

        def delete() -> None:
            with self._changing(id), _LockedDir(directory) as locked:
                if not locked:
                    return
                (directory / MANIFEST_NAME).unlink(missing_ok=True)
                # Temp files left by a creator killed mid-write would keep the directory alive.
                for entry in os.scandir(directory):
                    if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(_TEMP_SUFFIX):
                        _unlink_quietly(Path(entry.path))
                _remove_empty_dirs(directory, stop=self.manifests)

        await self._io(f"Deleting the manifest of {id}", delete)

    async def list_manifests(
        self, wildcard: BackupIdentifierWildcard
    ) -> list[tuple[BackupIdentifier, bytes]]:
        return await self._io("Listing backups", lambda: self._walk(wildcard))

    def _walk(self, wildcard: BackupIdentifierWildcard) -> list[tuple[BackupIdentifier, bytes]]:
        # Walks only the manifest tree, and only the branches the wildcard can match: the
        # partition and node levels are exact names, the checkpoint level a name prefix (or
        # an exact name).
        found = []
        for p in _decimal_entries(self.manifests):
            if wildcard.partition_id is not None and p != wildcard.partition_id:
                continue
            p_dir = self.manifests / str(p)
            exact = wildcard.checkpoint_id
            for c in [exact] if exact is not None else _decimal_entries(p_dir):
                if wildcard.checkpoint_prefix and not str(c).startswith(wildcard.checkpoint_prefix):
                    continue
                c_dir = p_dir / str(c)
                for n in _decimal_entries(c_dir):
                    if wildcard.node_id is not None and n != wildcard.node_id:
                        continue
                    try:
                        data = (c_dir / str(n) / MANIFEST_NAME).read_bytes()
                    except (FileNotFoundError, NotADirectoryError):
                        continue  # being created or deleted right now
                    found.append((BackupIdentifier(NodeId(n), PartitionId(p), BackupId(c)), data))
        return found

    def _walk_partition(
        self, partition_id: PartitionId, only: set[tuple[int, int]] | None = None
    ) -> tuple[list[tuple[BackupIdentifier, bytes]], bool]:
        """Every manifest of the partition, and whether any differs from the last walk's; one
        whose file is as at the last walk (same inode, size, mtime and ctime: a manifest is
        only ever replaced by a rename) is not read again. ``only``: the (checkpoint, node)
        pairs that may have changed since (the journal's); the others are as last walked."""
        known = self._read.get(partition_id, {})
        p_dir = self.manifests / str(partition_id)
        if only is None:
            read: dict[tuple[int, int], tuple[_FileKey, bytes, BackupIdentifier]] = {}
            candidates: Iterable[tuple[int, int]] = (
                (c, n) for c in _decimal_entries(p_dir) for n in _decimal_entries(p_dir / str(c))
            )
        else:
            read, candidates = dict(known), sorted(only)
        changed = False
        for c, n in candidates:
            path = p_dir / str(c) / str(n) / MANIFEST_NAME
            cached = known.get((c, n))
            try:
                stat = os.stat(path)
                key = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
                data = cached[1] if cached is not None and cached[0] == key else None
                if data is None:
                    data = path.read_bytes()
                    changed = True
            except (FileNotFoundError, NotADirectoryError):
                # Being created or deleted right now, or deleted.
                changed |= read.pop((c, n), None) is not None
                continue
            id = cached[2] if cached else BackupIdentifier(NodeId(n), partition_id, BackupId(c))
            read[(c, n)] = (key, data, id)
        self._read[partition_id] = read
        return [(id, data) for _, data, id in read.values()], changed or len(read) != len(known)

    async def list_partition(
        self, partition_id: PartitionId, known_version: str | None
    ) -> tuple[str | None, list[tuple[BackupIdentifier, bytes]] | None]:
        version, found, stale = await self._io(
            "Listing backups", lambda: self._listing(partition_id, known_version, reuse=True)
        )
        if stale and partition_id not in self._rewalking:
            # Off the request path: walking 10,000 backups takes a while, and a change made
            # through a store is seen at once anyway (the token).
            self._rewalking.add(partition_id)
            self._rewalks.spawn(self._rewalk(partition_id))
        return version, found

    async def _rewalk(self, partition_id: PartitionId) -> None:
        try:
            await self._io(
                "Listing backups", lambda: self._listing(partition_id, None, reuse=False)
            )
        except BackupStoreError as exc:
            log.warning("%s (walked again at the next list)", exc)
        finally:
            self._rewalking.discard(partition_id)

    def _listing(
        self, partition_id: PartitionId, known_version: str | None, *, reuse: bool
    ) -> tuple[str, list[tuple[BackupIdentifier, bytes]] | None, bool]:
        """The listing's version, its manifests unless that is ``known_version``, and whether
        the listing was reused although it is due to be walked again (``reuse``: without a
        walk where nothing changed through a store)."""
        p_dir = self.manifests / str(partition_id)
        if not p_dir.is_dir():
            return _NO_BACKUPS, [] if known_version != _NO_BACKUPS else None, False
        with _listing_lock(p_dir) as journal:
            token, mtime_ns = journal[-1].token, os.stat(p_dir).st_mtime_ns
            now = time.monotonic()
            last = self._versions.get(partition_id)
            same = last is not None and last[:2] == (token, mtime_ns)
            if reuse and same and last is not None and last[3] == known_version:
                return last[3], None, now - last[2] >= LISTING_REUSE_MAX_S
            # Changes made by hand, not through a store, are not in the journal: removing or
            # adding a backup's directory changes the directory's mtime (then everything is
            # walked), and anything else is found by walking again (in the background) at
            # least every LISTING_REUSE_MAX_S (cheap: only changed files are read), which then
            # gives the listing a new version.
            only = None
            if reuse and last is not None and not same:
                only = _changed_since(journal, last[0], last[1], mtime_ns)
            found, changed = self._walk_partition(partition_id, only)
            version = f"{token}:{mtime_ns}"
            if same and last is not None:
                version = f"{version}:{uuid.uuid4().hex}" if changed else last[3]
            self._versions[partition_id] = (token, mtime_ns, now, version)
            return version, None if version == known_version else found, False

    # -- contents --------------------------------------------------------------------------------

    async def write_content(self, id: BackupIdentifier, source: ContentSource) -> None:
        directory = self.content_dir(id) / source.kind

        def write() -> None:
            for _ in range(_MKDIR_RETRIES_MAX):
                try:
                    _make_dirs_durable(directory)
                    f = open(directory / source.name, "wb")
                except FileNotFoundError:
                    continue  # pruned by a concurrent delete: create it again
                with f:
                    unsynced = 0
                    for chunk in source.chunks():
                        f.write(chunk)
                        unsynced += len(chunk)
                        if unsynced >= SYNC_EVERY_BYTES:
                            f.flush()
                            os.fdatasync(f.fileno())
                            unsynced = 0
                    f.flush()
                    os.fsync(f.fileno())
                fsync_directory(directory)
                return
            raise OSError(errno.ENOENT, "directory keeps disappearing", str(directory))

        await self._io(f"Writing {source.kind} file {source.name} of {id}", write)

    async def read_content(
        self, id: BackupIdentifier, kind: Kind, name: str, sink: ContentSink
    ) -> None:
        path = self.content_dir(id) / kind / name

        def read() -> None:
            try:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    raise sink.missing() from None
                with f:
                    while chunk := f.read(self._chunk_bytes):
                        sink.write(chunk)
                sink.finish()
            except BaseException:
                sink.abort()
                raise

        await self._io(f"Reading {kind} file {name} of {id}", read)

    async def delete_contents(self, id: BackupIdentifier) -> None:
        directory = self.content_dir(id)

        def delete() -> None:
            # A late upload of a racing save may add files while we remove them (rmtree then
            # fails with ENOTEMPTY): try again; that save removes its own files too.
            for attempt in range(_MKDIR_RETRIES_MAX):
                try:
                    shutil.rmtree(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOTEMPTY or attempt == _MKDIR_RETRIES_MAX - 1:
                        raise
            _fsync_dir_quietly(directory.parent)
            _remove_empty_dirs(directory.parent, stop=self.contents)

        await self._io(f"Deleting the files of {id}", delete)

    # -- lifecycle -------------------------------------------------------------------------------

    # -- runtime metadata ------------------------------------------------------------------------

    async def read_metadata_slot(self, partition_id: PartitionId, slot: Slot) -> bytes | None:
        path = self.base / metadata_key(partition_id, slot)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await self._io(f"Reading the backup metadata of partition {partition_id}", read)

    async def write_metadata_slot(self, partition_id: PartitionId, slot: Slot, data: bytes) -> None:
        path = self.base / metadata_key(partition_id, slot)

        def write() -> None:
            _make_dirs_durable(path.parent)
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TEMP_SUFFIX}")
            try:
                _write_durable(temp, data)
                os.replace(temp, path)
            finally:
                _unlink_quietly(temp)
            fsync_directory(path.parent)

        await self._io(f"Writing the backup metadata of partition {partition_id}", write)

    async def check(self) -> None:
        def probe() -> None:
            for d in (self.manifests, self.contents):
                _make_dirs_durable(d)
            probe_file = self.base / f".zeebe-sim-check-{uuid.uuid4().hex}"
            _write_durable(probe_file, b"ok")
            probe_file.unlink()

        try:
            await in_thread(probe)
        except OSError as exc:
            raise BackupStoreError(
                f"The {self.description} is not usable: {_os_reason(exc)}"
            ) from None

    async def close(self) -> None:
        await self._rewalks.stop()


@attrs.frozen
class _Change:
    """One line of a partition's listing journal (module docstring): the token a writer made,
    the manifest it changed, and the partition directory's mtime before and after."""

    token: str
    manifest: tuple[int, int] | None  # (checkpoint, node); None: unknown
    mtime_before_ns: int | None = None
    mtime_after_ns: int | None = None

    @staticmethod
    def parse(line: str) -> _Change:
        fields = line.split()
        try:
            c, n, before, *after = (int(f) for f in fields[1:])
            return _Change(fields[0], (c, n), before, after[0] if after else None)
        except (ValueError, IndexError):  # a line of an older store, or cut by a kill
            return _Change(fields[0] if fields else "", None)


@contextlib.contextmanager
def _listing_lock(
    partition_dir: Path, *, changing: tuple[int, int] | None = None
) -> Iterator[list[_Change]]:
    """Hold the partition's listing lock (module docstring); yields the listing's journal, the
    current token last. ``changing`` (checkpoint, node): a writer's exclusive lock, which
    writes a new token first and the directory's mtime after. Otherwise a reader's shared
    lock; a listing file that has no token yet (made by a reader, or a store written by
    hand) gets one."""
    if changing is not None:
        _make_dirs_durable(partition_dir)
    fd = os.open(partition_dir / _LISTING_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if changing is not None else fcntl.LOCK_SH)
        journal = _read_journal(fd)
        if changing is None and not journal:
            fcntl.flock(fd, fcntl.LOCK_EX)
            journal = _read_journal(fd)
            if not journal:
                journal = [_Change(uuid.uuid4().hex, None)]
                os.pwrite(fd, journal[0].token.encode("ascii"), 0)
        if changing is None:
            yield journal
            return
        mtime_ns = os.stat(partition_dir).st_mtime_ns
        change = _Change(uuid.uuid4().hex, changing, mtime_ns)
        # Each line starts with its newline: a line an older store left without one (or a
        # kill cut short) is ended first.
        line = f"\n{change.token} {changing[0]} {changing[1]} {mtime_ns}"
        if len(journal) >= _JOURNAL_LINES_MAX:
            # Keep the newer half: a reader further behind walks the whole partition.
            kept = "".join(f"\n{_line(c)}" for c in journal[-_JOURNAL_LINES_MAX // 2 :])
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{kept}{line}".encode("ascii"), 0)
            os.lseek(fd, 0, os.SEEK_END)  # the mtime after goes at the new end
        else:
            os.write(fd, line.encode("ascii"))  # the offset is at the end after the read
        try:
            yield [*journal, change]
        finally:
            os.write(fd, f" {os.stat(partition_dir).st_mtime_ns}".encode("ascii"))
    finally:
        os.close(fd)  # releases the flock


def _read_journal(fd: int) -> list[_Change]:
    with os.fdopen(os.dup(fd), "rb") as file:
        text = file.read().decode("ascii", "replace")
    os.lseek(fd, 0, os.SEEK_END)
    return [_Change.parse(line) for line in text.splitlines() if line.strip()]


def _line(change: _Change) -> str:
    if change.manifest is None or change.mtime_after_ns is None:
        return change.token
    c, n = change.manifest
    return f"{change.token} {c} {n} {change.mtime_before_ns} {change.mtime_after_ns}"


def _changed_since(
    journal: list[_Change], token: str, mtime_ns: int, now_mtime_ns: int
) -> set[tuple[int, int]] | None:
    """The manifests changed since the listing at ``token`` and directory ``mtime_ns``, if
    the journal tells them all: every change after it known, and the directory's mtime moved
    only by those changes (else something was changed by hand). ``None``: walk everything."""
    for start in range(len(journal) - 1, -1, -1):
        if journal[start].token == token:
            break
    else:
        return None
    changed = set()
    for change in journal[start + 1 :]:
        if change.manifest is None or change.mtime_before_ns != mtime_ns:
            return None
        changed.add(change.manifest)
        mtime_ns = change.mtime_after_ns  # type: ignore[assignment]
    return changed if mtime_ns == now_mtime_ns else None


class _LockedDir:
    """``with _LockedDir(d) as locked``: an exclusive flock on directory ``d``; ``locked`` is
    False if ``d`` does not exist (or was replaced by another directory while we waited)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._fd: int | None = None

    def __enter__(self) -> bool:
        try:
            fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return False
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A delete may have removed the directory while we waited for the lock, and a create
        # may have made a new one under the same name: our lock would not cover that one.
        try:
            same = os.stat(self._directory).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        return same

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock


class FilesystemBackupStore(ManifestBackupStore):
    """A :class:`~storage.backup.api.BackupStore` under ``base_path`` (Zeebe's layout)."""

    def __init__(
        self,
        base_path: Path,
        *,
        compression: bool = False,
        compression_min_bytes: int = COMPRESSION_MIN_BYTES,
        transfer_concurrency_max: int = TRANSFER_CONCURRENCY_MAX,
        chunk_bytes: int = COPY_CHUNK_BYTES,
        now: Clock = utc_now,
        upload_delay_s: float = 0.0,
    ) -> None:
        self.base_path = Path(base_path)
        super().__init__(
            _FilesystemBackend(self.base_path, chunk_bytes),
            compression=ZSTD if compression else None,
            compression_min_bytes=compression_min_bytes,
            transfer_concurrency_max=transfer_concurrency_max,
            chunk_bytes=chunk_bytes,
            now=now,
            upload_delay_s=upload_delay_s,
        )


# -- helpers --------------------------------------------------------------------------------------


def _version(data: bytes) -> Version:
    return Version(hashlib.sha256(data).hexdigest())


def _os_reason(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc)


def _decimal_entries(directory: Path) -> list[int]:
    """Sub-directory names of ``directory`` that are canonical decimal numbers."""
    try:
        with os.scandir(directory) as entries:
            return [int(e.name) for e in entries if _DECIMAL.fullmatch(e.name) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir_quietly(directory: Path) -> None:
    try:
        fsync_directory(directory)
    except FileNotFoundError:
        pass


def _make_dirs_durable(directory: Path) -> None:
    """``mkdir -p`` that fsyncs the parent of every directory it creates, so the new entries
    survive a crash. Raises OSError."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_directory(d.parent)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its ancestors below ``stop`` while they are empty."""
    d = directory
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return  # not empty (another backup, or a concurrent create) or already gone
        _fsync_dir_quietly(d.parent)
        d = d.parent


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
