"""The snapshot store of one partition.

Theory of operation
-------------------
A snapshot is a directory of files (the partition state) plus a *checksum file* beside it::

    snapshots/<index>-<term>-<processedPosition>-<exportedPosition>/<files>
    snapshots/<index>-<term>-<processedPosition>-<exportedPosition>.checksum

The checksum file holds the size and crc32c of every file and the snapshot's metadata
(processed position, last follow-up event position, a free ``extra`` map), and is itself
protected by a crc32c trailer. It is written **last**: a snapshot directory without its checksum
file is incomplete by definition, whatever it contains. That is Zeebe's rule too, and it makes
every crash point safe (REFERENCE.md §2):

1. ``begin`` creates ``snapshots/pending-<id>-<random>/``; ``write_file`` streams files into it
   and computes their checksums on the way (plain writes, cheap enough for the event loop).
2. ``persist`` fsyncs the files and the pending directory, renames it to ``snapshots/<id>``,
   fsyncs ``snapshots/``, then writes the checksum file as temp file + fsync + rename + fsync of
   ``snapshots/``. Only now is the snapshot complete.
3. Older snapshots are deleted unless reserved: checksum file first (so a crash mid-delete
   leaves an incomplete snapshot, which the next open removes), then the directory.

``open`` removes what a crash can leave behind: pending directories, snapshot directories
without a checksum file, checksum files without a directory, temp checksum files. It does not
read snapshot contents: ``Snapshot.verify()`` does, and a corrupt newest snapshot must stop the
partition loudly rather than be skipped in favour of replaying a compacted log from nothing.

Only the newest snapshot is kept, plus any *reserved* by a running backup (REFERENCE.md §4).
Reservations are counted and live in memory only: after a restart no backup is running.

Threads: ``persist`` (and ``install``) may run in a worker thread while the event loop calls
``latest``, ``reserve`` or ``begin``; a lock guards the registry, and a second lock serialises
persists, which hold it across fsyncs.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import attrs
import google_crc32c

from storage.durable import ensure_directory, fsync_directory, fsync_file
from zeebe_sim.ground.errors import InvalidState, NotFound, ResourceExhausted, StorageCorruption

log = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".checksum"
CHECKSUM_FORMAT_VERSION = 1
PENDING_PREFIX = "pending-"
_TEMP_SUFFIX = ".tmp"
# A checksum file lists a few files and a small metadata map; anything this big is not one.
CHECKSUM_FILE_BYTES_MAX = 16 * 1024 * 1024
COPY_CHUNK_BYTES = 1024 * 1024
# Ids are Java longs in Zeebe; digits beyond that are not an id but garbage.
_ID_PART = r"(0|[1-9][0-9]{0,18})"
_SNAPSHOT_ID = re.compile(rf"{_ID_PART}-{_ID_PART}-{_ID_PART}-{_ID_PART}")
_INT64_MAX = 2**63 - 1
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _id_part(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise ValueError(f"{attribute.name} must be an int in [0, 2**63), got {value!r}")


@attrs.frozen(order=True)
class SnapshotId:
    """Zeebe's snapshot id, ordered field by field as Zeebe compares them."""

    index: int = attrs.field(validator=_id_part)
    term: int = attrs.field(validator=_id_part)
    processed_position: int = attrs.field(validator=_id_part)
    exported_position: int = attrs.field(validator=_id_part)

    def __str__(self) -> str:
        return f"{self.index}-{self.term}-{self.processed_position}-{self.exported_position}"

    @classmethod
    def parse(cls, text: str) -> SnapshotId:
        """Parse ``index-term-processedPosition-exportedPosition``.

        Raises:
            ValueError: not exactly four non-negative decimal ints without leading zeros (the
                id names a directory, so only one spelling may exist).
        """
        match = _SNAPSHOT_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a snapshot id (index-term-processed-exported)")
        index, term, processed, exported = (int(part) for part in match.groups())
        return cls(index, term, processed, exported)


@attrs.frozen
class FileChecksum:
    size: int
    crc32c: int


@attrs.frozen
class Snapshot:
    """A complete snapshot: its files in ``directory``, described by ``checksum_file``."""

    id: SnapshotId
    directory: Path
    processed_position: int
    last_followup_event_position: int
    files: dict[str, FileChecksum]
    checksum_file: Path
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def exported_position(self) -> int:
        return self.id.exported_position

    def verify(self) -> None:
        """Check every file against its recorded size and crc32c.

        Raises:
            StorageCorruption: the directory or a file is missing, a file has the wrong size
                or checksum, or the directory holds a file the checksum file does not list.
        """
        if not self.directory.is_dir():
            raise StorageCorruption(f"snapshot {self.id}: directory {self.directory} is missing")
        present = {path.name for path in self.directory.iterdir()}
        unexpected = sorted(present - self.files.keys())
        if unexpected:
            raise StorageCorruption(f"snapshot {self.id}: unexpected files {unexpected}")
        for name, expected in sorted(self.files.items()):
            if name not in present:
                raise StorageCorruption(f"snapshot {self.id}: file {name} is missing")
            actual = checksum_of(self.directory / name)
            if actual != expected:
                raise StorageCorruption(
                    f"snapshot {self.id}: file {name} has size {actual.size} crc32c "
                    f"{actual.crc32c:08x}, expected size {expected.size} crc32c "
                    f"{expected.crc32c:08x}"
                )


class PendingSnapshot:
    """A snapshot being written: files go into a private directory until ``persist``."""

    def __init__(
        self,
        snapshot_id: SnapshotId,
        directory: Path,
        last_followup_event_position: int,
        extra: dict[str, Any],
    ) -> None:
        self.snapshot_id = snapshot_id
        self.directory = directory
        self.last_followup_event_position = last_followup_event_position
        self.extra = extra
        self.files: dict[str, FileChecksum] = {}
        # None while files may be written, else what ended it ("persisted", "aborted")
        self.finished: str | None = None

    def write_file(self, name: str, chunks: Iterable[bytes]) -> FileChecksum:
        """Write one file from ``chunks`` and record its size and crc32c. Not fsynced here:
        ``persist`` does that (in a worker thread), so this is cheap to call on the loop.

        Raises:
            ValueError: ``name`` is not a plain file name, or was already written.
            ResourceExhausted: out of disk space.
        """
        if self.finished is not None:
            raise InvalidState(f"pending snapshot {self.snapshot_id} is {self.finished}")
        _check_file_name(name)
        if name in self.files:
            raise ValueError(f"snapshot file {name} was already written")
        path = self.directory / name
        crc = 0
        size = 0
        try:
            with path.open("xb") as file:
                for chunk in chunks:
                    file.write(chunk)
                    crc = google_crc32c.extend(crc, bytes(chunk))
                    size += len(chunk)
        except OSError as exc:
            _raise_write_error(exc, path)
        checksum = FileChecksum(size, crc)
        self.files[name] = checksum
        return checksum

    def abort(self) -> None:
        """Drop the pending snapshot and its files. Aborting twice is fine."""
        if self.finished is None:
            self.finished = "aborted"
        shutil.rmtree(self.directory, ignore_errors=True)


class Reservation:
    """Keeps a snapshot from being deleted until released (a running backup holds one)."""

    def __init__(self, store: SnapshotStore, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._store = store
        self._released = False

    def release(self) -> None:
        """Give the reservation back; the snapshot is deleted now if it is neither the newest
        nor reserved by anyone else. Releasing twice is a no-op."""
        if not self._released:
            self._released = True
            self._store._release(self.snapshot.id)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class SnapshotStore:
    """The snapshots of one partition. Create with ``SnapshotStore.open``."""

    def __init__(self, directory: Path, snapshots: list[Snapshot], *, read_only: bool) -> None:
        self._directory = directory
        self._read_only = read_only
        self._snapshots = {snapshot.id: snapshot for snapshot in snapshots}
        self._reservations: collections.Counter[SnapshotId] = collections.Counter()
        # guards _snapshots and _reservations; never held across I/O that may block long
        self._lock = threading.Lock()
        # serialises persist/install, which hold it across fsyncs and renames
        self._persist_lock = threading.Lock()

    @classmethod
    def open(cls, directory: Path, *, read_only: bool = False) -> SnapshotStore:
        """Open the store in ``directory`` (the partition's ``snapshots`` directory), creating
        it if missing, and remove what an interrupted persist or delete left behind.

        With ``read_only=True`` nothing is created or removed (for an offline verifier);
        incomplete snapshots are just not listed.

        Raises:
            StorageCorruption: a checksum file is damaged (fails its own crc32c or does not
                parse), so a complete snapshot cannot be described.
            FileNotFoundError: read-only and the directory does not exist.
        """
        directory = Path(directory)
        if read_only:
            if not directory.is_dir():
                raise FileNotFoundError(f"snapshot directory {directory} does not exist")
        else:
            ensure_directory(directory)
        complete: list[Path] = []
        leftovers: list[Path] = []
        for path in sorted(directory.iterdir()):
            name = path.name
            stem = name.removesuffix(CHECKSUM_SUFFIX)
            if name.startswith(PENDING_PREFIX) or name.endswith(_TEMP_SUFFIX):
                leftovers.append(path)
            elif name != stem and _is_snapshot_id(stem):
                if not path.with_name(stem).is_dir():
                    leftovers.append(path)
            elif _is_snapshot_id(name) and path.is_dir():
                if path.with_name(name + CHECKSUM_SUFFIX).is_file():
                    complete.append(path)
                else:
                    leftovers.append(path)
        if leftovers and not read_only:
            for path in leftovers:
                log.info("removing incomplete snapshot files", extra={"path": str(path)})
                _remove(path)
            fsync_directory(directory)
        snapshots = [load_snapshot_dir(path) for path in complete]
        return cls(directory, snapshots, read_only=read_only)

    @property
    def directory(self) -> Path:
        return self._directory

    def latest(self) -> Snapshot | None:
        """The newest complete snapshot, or None."""
        with self._lock:
            return self._snapshots[max(self._snapshots)] if self._snapshots else None

    def all(self) -> list[Snapshot]:
        """Every complete snapshot still present (the newest and reserved ones), oldest first."""
        with self._lock:
            return [self._snapshots[i] for i in sorted(self._snapshots)]

    def get(self, snapshot_id: SnapshotId) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(snapshot_id)

    # -- taking a snapshot --------------------------------------------------------------------

    def begin(
        self,
        snapshot_id: SnapshotId,
        last_followup_event_position: int,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> PendingSnapshot:
        """Start writing a snapshot; finish with ``persist`` or ``PendingSnapshot.abort``.

        Raises:
            TypeError: ``extra`` is not JSON-serialisable (checked now, not at persist).
            InvalidState: the store is read-only.
        """
        if self._read_only:
            raise InvalidState("the snapshot store was opened read-only")
        extra_copy = json.loads(json.dumps(dict(extra or {})))
        directory = Path(
            tempfile.mkdtemp(prefix=f"{PENDING_PREFIX}{snapshot_id}-", dir=self._directory)
        )
        return PendingSnapshot(snapshot_id, directory, last_followup_event_position, extra_copy)

    def persist(self, pending: PendingSnapshot) -> Snapshot:
        """Make ``pending`` a complete, durable snapshot, then delete every older snapshot
        that is not reserved.

        If a snapshot with the same id exists, it is returned and ``pending`` dropped
        (idempotent). If a newer one exists, ``pending`` is dropped and the newest returned,
        as Zeebe does: an older snapshot is never committed.

        Raises:
            OSError: a file operation failed; the pending snapshot is dropped and nothing of
                it is left complete.
        """
        assert pending.finished is None, f"pending snapshot is {pending.finished}"
        snapshot_id = pending.snapshot_id
        with self._persist_lock:
            with self._lock:
                newest = max(self._snapshots) if self._snapshots else None
                kept = self._snapshots.get(snapshot_id)
                if kept is None and newest is not None and newest > snapshot_id:
                    kept = self._snapshots[newest]
            if kept is not None:
                log.info(
                    "snapshot not committed: not newer than the latest",
                    extra={"snapshot": str(snapshot_id), "latest": str(kept.id)},
                )
                pending.abort()
                return kept
            try:
                snapshot = self._commit(pending)
            except BaseException:
                # Undo in the same order as a delete: checksum file first.
                (self._directory / f"{snapshot_id}{CHECKSUM_SUFFIX}").unlink(missing_ok=True)
                shutil.rmtree(self._directory / str(snapshot_id), ignore_errors=True)
                pending.abort()
                raise
            pending.finished = "persisted"
            with self._lock:
                self._snapshots[snapshot_id] = snapshot
                doomed = self._unreserved_older_than_newest()
        for old in doomed:
            _delete_snapshot_files(old)
        return snapshot

    def _commit(self, pending: PendingSnapshot) -> Snapshot:
        """Steps 2 of the theory of operation; the checksum file is the last thing written."""
        snapshot_id = pending.snapshot_id
        for name in pending.files:
            fsync_file(pending.directory / name)
        fsync_directory(pending.directory)
        final = self._directory / str(snapshot_id)
        if final.exists():
            # an incomplete leftover (no checksum file: the registry has no such id)
            shutil.rmtree(final)
        os.rename(pending.directory, final)
        fsync_directory(self._directory)
        checksum_file = self._directory / f"{snapshot_id}{CHECKSUM_SUFFIX}"
        snapshot = Snapshot(
            id=snapshot_id,
            directory=final,
            processed_position=snapshot_id.processed_position,
            last_followup_event_position=pending.last_followup_event_position,
            files=dict(pending.files),
            checksum_file=checksum_file,
            extra=pending.extra,
        )
        temp = checksum_file.with_name(checksum_file.name + _TEMP_SUFFIX)
        try:
            with temp.open("wb") as file:
                file.write(encode_checksum_file(snapshot))
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            temp.unlink(missing_ok=True)
            _raise_write_error(exc, temp)
        os.rename(temp, checksum_file)
        fsync_directory(self._directory)
        return snapshot

    def _unreserved_older_than_newest(self) -> list[Snapshot]:
        """Unregister and return the snapshots to delete (called with ``_lock`` held)."""
        newest = max(self._snapshots)
        doomed = [
            snapshot
            for snapshot_id, snapshot in self._snapshots.items()
            if snapshot_id != newest and self._reservations[snapshot_id] == 0
        ]
        for snapshot in doomed:
            del self._snapshots[snapshot.id]
        return doomed

    # -- reservations -------------------------------------------------------------------------

    def reserve(self, snapshot_id: SnapshotId) -> Reservation:
        """Keep the snapshot until the returned reservation is released. Reservations are
        counted: each must be released.

        Raises:
            NotFound: no complete snapshot with that id (it may just have been deleted).
        """
        with self._lock:
            snapshot = self._snapshots.get(snapshot_id)
            if snapshot is None:
                raise NotFound(f"Snapshot {snapshot_id} does not exist")
            self._reservations[snapshot_id] += 1
        return Reservation(self, snapshot)

    def _release(self, snapshot_id: SnapshotId) -> None:
        with self._lock:
            assert self._reservations[snapshot_id] > 0, snapshot_id
            self._reservations[snapshot_id] -= 1
            doomed: list[Snapshot] = []
            if self._reservations[snapshot_id] == 0:
                del self._reservations[snapshot_id]
                if snapshot_id in self._snapshots and snapshot_id != max(self._snapshots):
                    doomed.append(self._snapshots.pop(snapshot_id))
        for snapshot in doomed:
            _delete_snapshot_files(snapshot)

    # -- restore ------------------------------------------------------------------------------

    def install(self, source_dir: Path, checksum_file: Path) -> Snapshot:
        """Copy a snapshot laid out elsewhere (e.g. downloaded from a backup) into the store,
        checking every file against ``checksum_file``; it becomes complete atomically, exactly
        as a snapshot taken here. Files in ``source_dir`` that the checksum file does not list
        are ignored. Installing a snapshot that is already here returns it.

        Raises:
            StorageCorruption: the checksum file is damaged, or a file is missing or does not
                match it (nothing is installed).
            InvalidState: a newer snapshot is already in the store (restore expects an empty
                one), or the store is read-only.
        """
        snapshot = load_snapshot_dir(source_dir, checksum_file=checksum_file)
        existing = self.get(snapshot.id)
        if existing is not None:
            return existing
        pending = self.begin(
            snapshot.id, snapshot.last_followup_event_position, extra=snapshot.extra
        )
        try:
            for name, expected in sorted(snapshot.files.items()):
                source = source_dir / name
                if not source.is_file():
                    raise StorageCorruption(f"snapshot {snapshot.id}: {source} is missing")
                actual = pending.write_file(name, _chunks_of(source))
                if actual != expected:
                    raise StorageCorruption(
                        f"snapshot {snapshot.id}: {source} has size {actual.size} crc32c "
                        f"{actual.crc32c:08x}, expected size {expected.size} crc32c "
                        f"{expected.crc32c:08x}"
                    )
        except BaseException:
            pending.abort()
            raise
        installed = self.persist(pending)
        if installed.id != snapshot.id:
            raise InvalidState(
                f"Snapshot {snapshot.id} was not installed: the store already holds the newer "
                f"snapshot {installed.id}"
            )
        return installed


# -- reading snapshots without a store ---------------------------------------------------------


def load_snapshot_dir(directory: Path, *, checksum_file: Path | None = None) -> Snapshot:
    """Describe the snapshot in ``directory`` from its checksum file (by default the
    ``<directory name>.checksum`` beside it), without reading or changing its files; call
    ``verify()`` to check them.

    Raises:
        StorageCorruption: the checksum file is missing or damaged, or names another
            snapshot than the directory name does.
    """
    directory = Path(directory)
    if checksum_file is None:
        checksum_file = directory.with_name(directory.name + CHECKSUM_SUFFIX)
    try:
        with checksum_file.open("rb") as file:
            data = file.read(CHECKSUM_FILE_BYTES_MAX + 1)
    except FileNotFoundError as exc:
        raise StorageCorruption(f"checksum file {checksum_file} is missing") from exc
    snapshot = decode_checksum_file(data, directory, checksum_file)
    if _is_snapshot_id(directory.name) and directory.name != str(snapshot.id):
        raise StorageCorruption(
            f"{checksum_file} describes snapshot {snapshot.id}, not {directory.name}"
        )
    return snapshot


def checksum_of(path: Path) -> FileChecksum:
    """Size and crc32c of a file, read in chunks."""
    crc = 0
    size = 0
    for chunk in _chunks_of(path):
        crc = google_crc32c.extend(crc, chunk)
        size += len(chunk)
    return FileChecksum(size, crc)


def encode_checksum_file(snapshot: Snapshot) -> bytes:
    """The checksum file: one JSON line, then a line with the crc32c of that JSON line."""
    body = json.dumps(
        {
            "version": CHECKSUM_FORMAT_VERSION,
            "snapshotId": str(snapshot.id),
            "index": snapshot.id.index,
            "term": snapshot.id.term,
            "processedPosition": snapshot.processed_position,
            "exportedPosition": snapshot.id.exported_position,
            "lastFollowupEventPosition": snapshot.last_followup_event_position,
            "extra": snapshot.extra,
            "files": {
                name: {"size": checksum.size, "crc32c": checksum.crc32c}
                for name, checksum in sorted(snapshot.files.items())
            },
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return body + b"\n" + f"crc32c {google_crc32c.value(body):08x}\n".encode()


def decode_checksum_file(data: bytes, directory: Path, checksum_file: Path) -> Snapshot:
    """Parse a checksum file into the Snapshot it describes.

    Raises:
        StorageCorruption: the trailer crc32c does not match, or the content is malformed.
    """

    def corrupt(why: str) -> NoReturn:
        raise StorageCorruption(f"checksum file {checksum_file} is damaged: {why}")

    if len(data) > CHECKSUM_FILE_BYTES_MAX:
        corrupt("too large")
    body, newline, trailer = data.rstrip(b"\n").rpartition(b"\n")
    match = re.fullmatch(rb"crc32c ([0-9a-f]{8})", trailer)
    if not newline or match is None or not data.endswith(b"\n"):
        corrupt("no crc32c trailer")
    if int(match.group(1), 16) != google_crc32c.value(body):
        corrupt("crc32c mismatch")
    try:
        content = json.loads(body)
        if content["version"] != CHECKSUM_FORMAT_VERSION:
            corrupt(f"unknown version {content['version']!r}")
        snapshot_id = SnapshotId.parse(content["snapshotId"])
        parts = (
            content["index"],
            content["term"],
            content["processedPosition"],
            content["exportedPosition"],
        )
        if parts != attrs.astuple(snapshot_id):
            corrupt("metadata does not match the snapshot id")
        last_followup = content["lastFollowupEventPosition"]
        extra = content["extra"]
        files = {}
        for name, entry in content["files"].items():
            _check_file_name(name)
            size, crc = entry["size"], entry["crc32c"]
            if not all(type(v) is int and v >= 0 for v in (size, crc)):
                corrupt(f"bad checksum for {name}")
            files[name] = FileChecksum(size, crc)
        if type(last_followup) is not int or not isinstance(extra, dict):
            corrupt("bad metadata")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageCorruption(f"checksum file {checksum_file} is damaged: {exc}") from exc
    return Snapshot(
        id=snapshot_id,
        directory=directory,
        processed_position=snapshot_id.processed_position,
        last_followup_event_position=last_followup,
        files=files,
        checksum_file=checksum_file,
        extra=extra,
    )


# -- helpers ----------------------------------------------------------------------------------


def _is_snapshot_id(name: str) -> bool:
    return _SNAPSHOT_ID.fullmatch(name) is not None


def _check_file_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise ValueError(f"{name!r} is not a plain file name")


def _chunks_of(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(COPY_CHUNK_BYTES):
            yield chunk


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _delete_snapshot_files(snapshot: Snapshot) -> None:
    """Checksum file first: from then on the snapshot is incomplete, so a crash during the
    rest leaves something the next open removes, never a complete snapshot with files gone."""
    try:
        snapshot.checksum_file.unlink(missing_ok=True)
        fsync_directory(snapshot.checksum_file.parent)
        shutil.rmtree(snapshot.directory, ignore_errors=True)
    except OSError:
        log.warning("could not delete snapshot", extra={"snapshot": str(snapshot.id)})
    else:
        log.info("deleted snapshot", extra={"snapshot": str(snapshot.id)})


def _raise_write_error(exc: OSError, path: Path) -> NoReturn:
    if exc.errno in _OUT_OF_SPACE:
        raise ResourceExhausted(f"Out of disk space writing {path}") from exc
    raise exc
