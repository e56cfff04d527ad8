"""The segmented append-only log of one partition.

Theory of operation
-------------------
The log is a sequence of *entries*. An entry is one atomic write: a batch of ``record_count``
records with consecutive positions, stored as opaque payload bytes (REFERENCE.md §2). Entry
indexes start at 1 and grow by one per entry; positions start at 1 and grow by one per record.

On disk the log is a directory of segment files ``segment-<first_index:012d>.log``. A segment
starts with a header (magic, version, first index, first position, crc32c of the header) and then
holds whole entries back to back::

    entry = u32 body length | u32 crc32c(body) | body
    body  = u64 index | u64 first position | u32 record count | u64 term | payload

The term is the Raft term of the leader that wrote the entry (replication, ``broker/raft``). An
entry may hold no record (``record_count`` 0): the no-op a new Raft leader appends first; it
shares its first position with the entry after it.

Appending is ``os.write`` on an ``O_APPEND`` descriptor of the last (*active*) segment; nothing is
durable until ``flush()`` fsyncs every segment written since the previous flush (and the
directory when a segment was created). That is group commit: the caller appends many entries and
pays for one fsync. Bytes handed to the OS are visible to readers at once, so readers see
unflushed entries too; ``segments()`` reports only the flushed length, because a backup must copy
bytes that will still be there after a crash.

Writes never modify bytes already written, so a crash (kill -9 or power loss) can only leave a
*torn tail*: a partly written last entry, a segment that is shorter than the OS was told, or a new
segment whose header never reached the disk. Recovery (``open``) therefore reads every entry and
checks its length, checksum, index and positions against the previous one; at the first entry
that fails, it cuts the file there and deletes every later segment. What stays is always a
prefix of what was appended, and it contains at least everything that was flushed.

Files are replaced only in ways that keep "the files form a valid prefix" true at every instant:
truncation deletes segments newest first and then cuts one file; compaction deletes segments
oldest first, never the active one. The first segment of a new log is created complete (temp
file, fsync, rename, fsync the directory), so a first segment with a bad header is real
corruption and is reported, not silently dropped: without it the log's start is unknown.

For seeking, each segment keeps in memory the first position and the file offset of every entry
in two ``array('q')`` (8 bytes per value; a list of ints costs ~36), searched with bisect.

Threads: ``flush`` may run in a worker thread while the event loop appends or reads. A short lock
guards the in-memory index; a second lock serialises the slow operations (flush, truncation,
compaction, close) so that fsync never holds up an append.
"""

from __future__ import annotations

import array
import bisect
import errno
import io
import logging
import os
import re
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import attrs
import google_crc32c

from storage.durable import ensure_directory, fsync_directory, fsync_file
from zeebe_sim.ground.errors import (
    InvalidArgument,
    InvalidState,
    ResourceExhausted,
    StorageCorruption,
)
from zeebe_sim.ground.ids import Position

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"ZSLG"
SEGMENT_VERSION = 2
# magic, version, reserved (0), first_index, first_position, crc32c of the 24 bytes before it
_SEGMENT_HEADER = struct.Struct("<4sHHQQI")
SEGMENT_HEADER_BYTES = _SEGMENT_HEADER.size
_SEGMENT_HEADER_CHECKED = struct.Struct("<4sHHQQ")
# body length, crc32c(body)
_ENTRY_HEADER = struct.Struct("<II")
# index, first_position, record_count, term; the payload follows
_ENTRY_FIXED = struct.Struct("<QQIQ")
# both at once, so that an append packs one struct
_ENTRY_PREFIX = struct.Struct("<IIQQIQ")
ENTRY_OVERHEAD_BYTES = _ENTRY_PREFIX.size
# A length above this is treated as corruption rather than trusted: a flipped bit in the length
# field must not make recovery try to read gigabytes. Appends beyond it are refused.
ENTRY_BODY_BYTES_MAX = 64 * 1024 * 1024
SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
RECORD_COUNT_MAX = 0xFFFF_FFFF
READ_BUFFER_BYTES = 1024 * 1024

_SEGMENT_NAME = re.compile(r"segment-(\d{12})\.log")
_TEMP_SUFFIX = ".tmp"
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def segment_file_name(first_index: int) -> str:
    return f"segment-{first_index:012d}.log"


@attrs.frozen
class LogEntry:
    """One atomic batch of ``record_count`` records starting at ``first_position``."""

    index: int
    first_position: Position
    record_count: int
    payload: bytes
    term: int = 0

    @property
    def last_position(self) -> Position:
        return Position(self.first_position + self.record_count - 1)


@attrs.frozen
class SegmentInfo:
    """A segment as far as it is durable: a backup copies exactly ``size_bytes`` bytes of
    ``path``, which hold whole entries from ``first_position`` to ``last_position`` (an empty
    segment has ``last_position == first_position - 1``)."""

    path: Path
    first_index: int
    first_position: Position
    last_position: Position
    size_bytes: int


@attrs.frozen
class RecoveryReport:
    """What ``SegmentedLog.open`` found: ``cut_segment`` is None when every byte was valid.

    ``cut_offset`` is the file offset of the first invalid entry, or None when the segment's
    header itself was invalid. ``dropped_segments`` are the files deleted whole (the later
    ones, and the cut segment itself when its header was invalid). In read-only mode nothing is
    removed; the report says what a writable open would cut.
    """

    entries: int
    cut_segment: Path | None = None
    cut_offset: int | None = None
    reason: str | None = None
    dropped_segments: tuple[Path, ...] = ()

    @property
    def clean(self) -> bool:
        return self.cut_segment is None


@attrs.define(eq=False)
class _Segment:
    """In-memory state of one segment file (identity-hashed: it lives in sets)."""

    path: Path
    first_index: int
    first_position: int
    # first position and file offset of every entry, in order
    positions: array.array[int]
    offsets: array.array[int]
    # one past the last record of the segment (== first_position while it is empty)
    next_position: int
    # bytes handed to the OS: the end of the last whole entry
    size: int
    # bytes known to be on disk, and the entries within them (0: not even the header)
    durable_size: int
    durable_count: int
    # open for writing while the segment is active or still has to be fsynced
    fd: int | None = None

    @property
    def entry_count(self) -> int:
        return len(self.positions)


def _raise_write_error(exc: OSError, path: Path) -> NoReturn:
    if exc.errno in _OUT_OF_SPACE:
        raise ResourceExhausted(f"Out of disk space writing {path}") from exc
    raise exc


class SegmentedLog:
    """A partition's log. Create with ``SegmentedLog.open``."""

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        *,
        segment_bytes_max: int,
        read_only: bool,
        recovery: RecoveryReport,
    ) -> None:
        self._directory = directory
        self._segments = segments
        self._segment_bytes_max = segment_bytes_max
        self._read_only = read_only
        self.recovery = recovery
        # guards the in-memory index; held only for short, non-blocking work
        self._lock = threading.Lock()
        # serialises flush / truncate_after / compact / close; held across fsync
        self._flush_lock = threading.Lock()
        # segments with bytes written since the last flush, and those the running flush syncs
        self._dirty: set[_Segment] = set()
        self._syncing: set[_Segment] = set()
        self._directory_dirty = False
        # None while writes are allowed, else why not (read-only, closed, a failed fsync)
        self._write_refusal: str | None = "the log was opened read-only" if read_only else None
        self._closed = False
        if segments:
            last = segments[-1]
            self._next_index = last.first_index + last.entry_count
            self._next_position = last.next_position
        else:
            # only a read-only log of an empty directory has no segment at all
            self._next_index = 1
            self._next_position = 1

    # -- opening and recovery -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
        read_only: bool = False,
    ) -> SegmentedLog:
        """Open (creating it if missing) and recover the log in ``directory``.

        Every entry is validated; at the first invalid one the file is cut there and later
        segments are deleted, so a torn or corrupt tail is never returned. With
        ``read_only=True`` no file is created, changed or deleted (for an offline verifier): the
        log simply ends before the first invalid entry, and ``recovery`` says what was skipped.

        Raises:
            StorageCorruption: the first segment's header is invalid, so the log's first
                index and position are unknown.
            FileNotFoundError: read-only and the directory does not exist.
        """
        if segment_bytes_max <= SEGMENT_HEADER_BYTES + ENTRY_OVERHEAD_BYTES:
            raise ValueError(f"segment_bytes_max {segment_bytes_max} is too small")
        directory = Path(directory)
        if read_only:
            if not directory.is_dir():
                raise FileNotFoundError(f"log directory {directory} does not exist")
        else:
            ensure_directory(directory)
            for leftover in directory.glob(f"*{_TEMP_SUFFIX}"):
                # a first segment whose creation was interrupted before its rename
                leftover.unlink()
        segments, report = _recover(_list_segment_files(directory))
        if not read_only:
            _apply_cut(directory, report)
            # Bytes read back after a process crash may still be only in the page cache; sync
            # them so that everything this log now reports as durable really is.
            for segment in segments:
                fsync_file(segment.path)
            fsync_directory(directory)
            if not segments:
                segments.append(_create_first_segment(directory))
            active = segments[-1]
            active.fd = _open_for_append(active.path)
        if not report.clean:
            log.warning(
                "log tail cut at recovery",
                extra={
                    "directory": str(directory),
                    "segment": str(report.cut_segment),
                    "offset": report.cut_offset,
                    "reason": report.reason,
                    "dropped_segments": len(report.dropped_segments),
                    "read_only": read_only,
                },
            )
        return cls(
            directory,
            segments,
            segment_bytes_max=segment_bytes_max,
            read_only=read_only,
            recovery=report,
        )

    # -- the shape of the log -----------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def is_empty(self) -> bool:
        return not self._segments or self._next_index == self._segments[0].first_index

    @property
    def first_position(self) -> Position:
        """Position of the first record still in the log; 0 when it holds no entry."""
        return Position(0 if self.is_empty else self._segments[0].first_position)

    @property
    def first_index(self) -> int:
        """Index of the first entry still in the log; 0 when it holds no entry."""
        return 0 if self.is_empty else self._segments[0].first_index

    @property
    def last_position(self) -> Position:
        """Position of the last record appended. An empty log (new, or truncated to nothing)
        reports the position before the one the next append must use."""
        return Position(self._next_position - 1)

    @property
    def last_index(self) -> int:
        return self._next_index - 1

    # -- writing ------------------------------------------------------------------------------

    def append(
        self, first_position: int, record_count: int, payload: bytes, term: int = 0
    ) -> LogEntry:
        """Append one entry of Raft term ``term`` (not durable until ``flush``).

        Raises:
            InvalidArgument: the payload exceeds ``ENTRY_BODY_BYTES_MAX``.
            ResourceExhausted: out of disk space (nothing was appended).
            InvalidState: the log is read-only, closed, or a previous fsync failed.
        """
        with self._lock:
            if self._write_refusal is not None:
                raise InvalidState(f"Cannot append: {self._write_refusal}")
            # our callers' bugs, not the world's: positions are assigned by the log's owner
            assert first_position == self._next_position, (first_position, self._next_position)
            assert 0 <= record_count <= RECORD_COUNT_MAX, record_count
            body_bytes = _ENTRY_FIXED.size + len(payload)
            if body_bytes > ENTRY_BODY_BYTES_MAX:
                raise InvalidArgument(
                    f"A log entry of {len(payload)} bytes exceeds the maximum of "
                    f"{ENTRY_BODY_BYTES_MAX - _ENTRY_FIXED.size} bytes"
                )
            index = self._next_index
            fixed = _ENTRY_FIXED.pack(index, first_position, record_count, term)
            crc = google_crc32c.extend(google_crc32c.value(fixed), payload)
            data = _ENTRY_PREFIX.pack(body_bytes, crc, index, first_position, record_count, term)
            data += payload
            segment = self._segments[-1]
            if segment.positions and segment.size + len(data) > self._segment_bytes_max:
                # an empty segment takes any entry, so an entry above the maximum still fits
                segment = self._roll()
            self._write(segment, data)
            segment.positions.append(first_position)
            segment.offsets.append(segment.size)
            segment.size += len(data)
            segment.next_position = first_position + record_count
            self._dirty.add(segment)
            self._next_index = index + 1
            self._next_position = segment.next_position
            return LogEntry(index, Position(first_position), record_count, payload, term)

    def _write(self, segment: _Segment, data: bytes) -> None:
        assert segment.fd is not None
        try:
            written = os.write(segment.fd, data)
            while written < len(data):
                written += os.write(segment.fd, memoryview(data)[written:])
        except OSError as exc:
            # A partial entry left in the file would make recovery cut every later entry,
            # flushed or not; remove it before anything else is appended behind it.
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                self._write_refusal = f"a failed write could not be undone in {segment.path}"
            _raise_write_error(exc, segment.path)

    def _roll(self) -> _Segment:
        """Start a new active segment (called with ``_lock`` held)."""
        old = self._segments[-1]
        path = self._directory / segment_file_name(self._next_index)
        header = _segment_header(self._next_index, self._next_position)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            _raise_write_error(exc, path)
        try:
            os.write(fd, header)
        except OSError as exc:
            os.close(fd)
            path.unlink()
            _raise_write_error(exc, path)
        segment = _Segment(
            path=path,
            first_index=self._next_index,
            first_position=self._next_position,
            positions=array.array("q"),
            offsets=array.array("q"),
            next_position=self._next_position,
            size=SEGMENT_HEADER_BYTES,
            durable_size=0,
            durable_count=0,
            fd=fd,
        )
        self._segments.append(segment)
        self._dirty.add(segment)
        self._directory_dirty = True
        if old not in self._dirty and old not in self._syncing and old.fd is not None:
            # already durable: nothing will write or sync it again
            os.close(old.fd)
            old.fd = None
        return segment

    def flush(self) -> None:
        """Make every entry appended before this call durable.

        Raises:
            OSError: an fsync failed. The log then refuses further writes: after a failed
                fsync the kernel may have dropped the dirty pages, so what is on disk is
                unknown until the log is reopened and recovered.
            InvalidState: the log is read-only, closed, or a previous fsync failed.
        """
        with self._flush_lock:
            with self._lock:
                if self._write_refusal is not None:
                    raise InvalidState(f"Cannot flush: {self._write_refusal}")
                work = [
                    (segment, segment.fd, segment.size, segment.entry_count)
                    for segment in self._dirty
                ]
                self._syncing = set(self._dirty)
                self._dirty = set()
                sync_directory = self._directory_dirty
                self._directory_dirty = False
            try:
                for _segment, fd, _size, _count in work:
                    assert fd is not None
                    os.fsync(fd)
                if sync_directory:
                    fsync_directory(self._directory)
            except OSError as exc:
                with self._lock:
                    self._write_refusal = f"an fsync failed ({exc}); reopen the log to recover"
                raise
            with self._lock:
                self._syncing = set()
                active = self._segments[-1]
                for segment, _fd, size, count in work:
                    segment.durable_size = max(segment.durable_size, size)
                    segment.durable_count = max(segment.durable_count, count)
                    if (
                        segment is not active
                        and segment not in self._dirty
                        and segment.fd is not None
                    ):
                        os.close(segment.fd)
                        segment.fd = None

    def truncate_after(self, position: int) -> None:
        """Remove every entry whose first position is after ``position`` (the entry holding
        ``position`` stays whole), durably. If that removes every entry, the log is empty and
        the next append continues at the first removed entry's position.

        Raises:
            InvalidState: the log is read-only or closed.
        """
        assert position >= 0, position
        self.flush()
        with self._flush_lock, self._lock:
            if self._write_refusal is not None:
                raise InvalidState(f"Cannot truncate: {self._write_refusal}")
            segments = self._segments
            at = max(0, _segment_holding(segments, position))
            keep = bisect.bisect_right(segments[at].positions, position)
            self._cut(at, keep)

    def truncate_from_index(self, index: int) -> None:
        """Remove every entry with an index ``>= index``, durably (Raft: a conflicting
        suffix). The log may become empty; it then continues at the first removed entry.

        Raises:
            InvalidState: the log is read-only or closed.
        """
        self.flush()
        with self._flush_lock, self._lock:
            if self._write_refusal is not None:
                raise InvalidState(f"Cannot truncate: {self._write_refusal}")
            if index >= self._next_index:
                return
            segments = self._segments
            at = max(0, bisect.bisect_right(segments, index, key=lambda s: s.first_index) - 1)
            self._cut(at, max(0, index - segments[at].first_index))

    def _cut(self, at: int, keep: int) -> None:
        """Cut the log after the first ``keep`` entries of segment ``at`` (both locks held)."""
        segments = self._segments
        if keep == segments[at].entry_count:
            # the whole segment stays: the cut starts at the next one
            at += 1
            keep = 0
            if at == len(segments) or segments[at].entry_count == 0:
                return
        cut = segments[at]
        # Newest first, so that the files form a valid log at every instant.
        removed = segments[at + 1 :]
        for segment in reversed(removed):
            self._forget_fd(segment)
            segment.path.unlink()
        if removed:
            fsync_directory(self._directory)
        cut_offset = cut.offsets[keep]
        if cut.fd is None:
            cut.fd = _open_for_append(cut.path)
        os.ftruncate(cut.fd, cut_offset)
        os.fsync(cut.fd)
        cut.next_position = cut.positions[keep]
        del cut.positions[keep:]
        del cut.offsets[keep:]
        cut.size = cut.durable_size = cut_offset
        cut.durable_count = keep
        del segments[at + 1 :]
        self._next_index = cut.first_index + keep
        self._next_position = cut.next_position

    def reset_to(self, next_index: int, next_position: int) -> None:
        """Drop every entry and continue at ``next_index`` / ``next_position`` (a Raft replica
        that installed a snapshot newer than its whole log), durably. A crash midway leaves a
        prefix of the old log, or none: the caller repeats the reset at its next start.

        Raises:
            InvalidState: the log is read-only or closed.
        """
        assert next_index >= 1 and next_position >= 1, (next_index, next_position)
        self.flush()
        with self._flush_lock, self._lock:
            if self._write_refusal is not None:
                raise InvalidState(f"Cannot reset: {self._write_refusal}")
            for segment in reversed(self._segments):
                self._forget_fd(segment)
                segment.path.unlink()
            fsync_directory(self._directory)
            first = _create_first_segment(self._directory, next_index, next_position)
            first.fd = _open_for_append(first.path)
            self._segments = [first]
            self._next_index = next_index
            self._next_position = next_position

    def compact(self, position: int) -> int:
        """Delete whole segments whose records all lie before ``position``; never the active
        segment. Returns how many were deleted.

        Raises:
            InvalidState: the log is read-only or closed.
        """
        # Flush first: the segment that becomes the first one must have a durable header,
        # since a bad first header is treated as corruption at recovery.
        self.flush()
        with self._flush_lock, self._lock:
            if self._write_refusal is not None:
                raise InvalidState(f"Cannot compact: {self._write_refusal}")
            segments = self._segments
            deleted = 0
            # Oldest first, so that the files form a valid log at every instant.
            while len(segments) - deleted > 1 and segments[deleted].next_position - 1 < position:
                segment = segments[deleted]
                self._forget_fd(segment)
                segment.path.unlink()
                deleted += 1
            if deleted:
                del segments[:deleted]
                fsync_directory(self._directory)
            return deleted

    def _forget_fd(self, segment: _Segment) -> None:
        self._dirty.discard(segment)
        if segment.fd is not None:
            os.close(segment.fd)
            segment.fd = None

    def close(self) -> None:
        """Release the files. Does not flush: entries appended since the last ``flush`` are
        as durable as after a crash (usually kept by the page cache, but nothing promises it).
        Closing twice is fine."""
        with self._flush_lock, self._lock:
            self._closed = True
            self._write_refusal = "the log is closed"
            for segment in self._segments:
                if segment.fd is not None:
                    os.close(segment.fd)
                    segment.fd = None
            self._dirty = set()

    # -- reading ------------------------------------------------------------------------------

    def entries_from(self, position: int) -> Iterator[LogEntry]:
        """The entries from the one containing ``position`` to the end of the log as it is now
        (entries appended later are not included). Starts at the first entry when ``position``
        is before it (compacted away). Every entry is read from disk and its crc verified.

        Raises (while iterating):
            StorageCorruption: an entry on disk does not match its checksum or the index; or a
                concurrent truncate_after/compact removed what was being read.
            InvalidState: the log is closed.
        """
        with self._lock:
            if self._closed:
                raise InvalidState("Cannot read: the log is closed")
            if self.is_empty or position > self._next_position - 1:
                return _read_entries([])
            segments = self._segments
            at = max(0, _segment_holding(segments, position))
            start = max(0, bisect.bisect_right(segments[at].positions, position) - 1)
            return _read_entries(self._read_plan(at, start))

    def entries_from_index(self, index: int) -> Iterator[LogEntry]:
        """The entries from index ``index`` (or the first one still held, if later) to the end
        of the log as it is now, no-op entries included.

        Raises (while iterating): as :meth:`entries_from`.
        """
        with self._lock:
            if self._closed:
                raise InvalidState("Cannot read: the log is closed")
            if self.is_empty or index >= self._next_index:
                return _read_entries([])
            segments = self._segments
            at = max(0, bisect.bisect_right(segments, index, key=lambda s: s.first_index) - 1)
            start = max(0, index - segments[at].first_index)
            return _read_entries(self._read_plan(at, start))

    def _read_plan(self, at: int, start: int) -> list[tuple[Path, int, int, int, int]]:
        """What to read, segment by segment, from entry ``start`` of segment ``at`` to the end:
        (path, offset, segment size, first index, first position). Called under the lock."""
        plan = []
        for segment in self._segments[at:]:
            if start < segment.entry_count:
                plan.append(
                    (
                        segment.path,
                        segment.offsets[start],
                        segment.size,
                        segment.first_index + start,
                        segment.positions[start],
                    )
                )
            start = 0
        return plan

    def entry_at_position(self, position: int) -> LogEntry | None:
        """The entry containing ``position``, or None if the log does not hold it.

        Raises:
            StorageCorruption: the entry on disk does not match its checksum.
            InvalidState: the log is closed.
        """
        with self._lock:
            if self._closed:
                raise InvalidState("Cannot read: the log is closed")
            if self.is_empty or not self.first_position <= position <= self.last_position:
                return None
            segment = self._segments[max(0, _segment_holding(self._segments, position))]
            k = bisect.bisect_right(segment.positions, position) - 1
            end = segment.offsets[k + 1] if k + 1 < segment.entry_count else segment.size
            plan = (
                segment.path,
                segment.offsets[k],
                end,
                segment.first_index + k,
                segment.positions[k],
            )
        return next(_read_entries([plan]))

    def segments(self) -> list[SegmentInfo]:
        """The segments in order, as far as they are durable (see ``SegmentInfo``). A segment
        created since the last flush is left out: not even its header is durable yet."""
        with self._lock:
            infos = []
            for segment in self._segments:
                if segment.durable_size == 0:
                    continue
                count = segment.durable_count
                if count == segment.entry_count:
                    next_position = segment.next_position
                else:
                    next_position = segment.positions[count]
                infos.append(
                    SegmentInfo(
                        path=segment.path,
                        first_index=segment.first_index,
                        first_position=Position(segment.first_position),
                        last_position=Position(next_position - 1),
                        size_bytes=segment.durable_size,
                    )
                )
            return infos


def open_for_read(directory: Path) -> SegmentedLog:
    """Open a log without modifying anything (for an offline verifier of a stopped cluster).

    Raises:
        StorageCorruption, FileNotFoundError: as ``SegmentedLog.open``.
    """
    return SegmentedLog.open(directory, read_only=True)


# -- helpers ----------------------------------------------------------------------------------


def _segment_holding(segments: list[_Segment], position: int) -> int:
    """Index of the last segment starting at or before ``position`` (-1 if none)."""
    return bisect.bisect_right(segments, position, key=lambda s: s.first_position) - 1


def _segment_header(first_index: int, first_position: int) -> bytes:
    checked = _SEGMENT_HEADER_CHECKED.pack(
        SEGMENT_MAGIC, SEGMENT_VERSION, 0, first_index, first_position
    )
    return checked + struct.pack("<I", google_crc32c.value(checked))


def _parse_segment_header(data: bytes) -> tuple[int, int] | str:
    """(first_index, first_position), or why the header is invalid."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return "segment header is torn"
    magic, version, _reserved, first_index, first_position, crc = _SEGMENT_HEADER.unpack_from(data)
    if google_crc32c.value(data[: _SEGMENT_HEADER_CHECKED.size]) != crc:
        return "segment header checksum mismatch"
    if magic != SEGMENT_MAGIC or version != SEGMENT_VERSION:
        return f"not a version {SEGMENT_VERSION} segment"
    if first_index < 1 or first_position < 1:
        return "segment header holds an impossible index or position"
    return first_index, first_position


def _list_segment_files(directory: Path) -> list[tuple[int, Path]]:
    files = []
    for path in directory.iterdir():
        match = _SEGMENT_NAME.fullmatch(path.name)
        if match is not None and path.is_file():
            files.append((int(match.group(1)), path))
    files.sort()
    return files


def _recover(files: list[tuple[int, Path]]) -> tuple[list[_Segment], RecoveryReport]:
    """Validate the segment files in order; return the valid prefix and where it ends."""
    segments: list[_Segment] = []
    entries = 0
    for at, (name_index, path) in enumerate(files):
        data = path.read_bytes()
        header = _parse_segment_header(data)
        problem: str | None = None
        if isinstance(header, str):
            problem = header
        elif header[0] != name_index:
            problem = f"header says first index {header[0]}, the file name {name_index}"
        elif segments and header != (
            segments[-1].first_index + segments[-1].entry_count,
            segments[-1].next_position,
        ):
            problem = "segment does not continue the previous one"
        if problem is not None:
            if not segments:
                raise StorageCorruption(f"{path}: {problem}; the log's first entry is unknown")
            # the invalid segment itself is dropped along with every later one
            dropped = tuple(p for _, p in files[at:])
            return segments, RecoveryReport(entries, path, None, problem, dropped)
        assert not isinstance(header, str)
        segment = _Segment(
            path=path,
            first_index=header[0],
            first_position=header[1],
            positions=array.array("q"),
            offsets=array.array("q"),
            next_position=header[1],
            size=SEGMENT_HEADER_BYTES,
            durable_size=SEGMENT_HEADER_BYTES,
            durable_count=0,
        )
        problem = _scan_entries(data, segment)
        segments.append(segment)
        entries += segment.entry_count
        if problem is not None:
            later = tuple(p for _, p in files[at + 1 :])
            return segments, RecoveryReport(entries, path, segment.size, problem, later)
    return segments, RecoveryReport(entries)


def _scan_entries(data: bytes, segment: _Segment) -> str | None:
    """Index the valid entries of ``data`` into ``segment``; why scanning stopped early."""
    offset = SEGMENT_HEADER_BYTES
    index = segment.first_index
    position = segment.first_position
    end = len(data)
    problem: str | None = None
    while offset < end:
        if end - offset < _ENTRY_HEADER.size:
            problem = "torn entry header"
            break
        body_bytes, crc = _ENTRY_HEADER.unpack_from(data, offset)
        if not _ENTRY_FIXED.size <= body_bytes <= ENTRY_BODY_BYTES_MAX:
            problem = f"impossible entry length {body_bytes}"
            break
        body_end = offset + _ENTRY_HEADER.size + body_bytes
        if body_end > end:
            problem = "torn entry"
            break
        if google_crc32c.value(data[offset + _ENTRY_HEADER.size : body_end]) != crc:
            problem = "entry checksum mismatch"
            break
        entry_index, first_position, record_count, _term = _ENTRY_FIXED.unpack_from(
            data, offset + _ENTRY_HEADER.size
        )
        if entry_index != index or first_position != position:
            problem = "entry does not continue the previous one"
            break
        segment.positions.append(first_position)
        segment.offsets.append(offset)
        index += 1
        position += record_count
        offset = body_end
    segment.next_position = position
    segment.size = segment.durable_size = offset
    segment.durable_count = segment.entry_count
    return problem


def _apply_cut(directory: Path, report: RecoveryReport) -> None:
    """Remove what recovery found invalid: later segments newest first, then the cut file's
    tail (or the whole file when its header was invalid)."""
    if report.cut_segment is None:
        return
    for path in reversed(report.dropped_segments):
        path.unlink()
    if report.cut_offset is not None:
        fd = os.open(report.cut_segment, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, report.cut_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_directory(directory)


def _create_first_segment(
    directory: Path, first_index: int = 1, first_position: int = 1
) -> _Segment:
    """Create the first segment complete and durable before it is visible under its name."""
    path = directory / segment_file_name(first_index)
    temp = path.with_name(path.name + _TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, _segment_header(first_index, first_position))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)
    fsync_directory(directory)
    return _Segment(
        path=path,
        first_index=first_index,
        first_position=first_position,
        positions=array.array("q"),
        offsets=array.array("q"),
        next_position=first_position,
        size=SEGMENT_HEADER_BYTES,
        durable_size=SEGMENT_HEADER_BYTES,
        durable_count=0,
    )


def _open_for_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)


def _read_entries(plan: list[tuple[Path, int, int, int, int]]) -> Iterator[LogEntry]:
    """Read and verify the entries of each (path, start, end, first index, first position)."""
    for path, start, end, index, position in plan:
        try:
            # a buffer no bigger than the range: entry_at_position reads a single entry
            buffer_bytes = max(io.DEFAULT_BUFFER_SIZE, min(READ_BUFFER_BYTES, end - start))
            file = open(path, "rb", buffering=buffer_bytes)
        except FileNotFoundError as exc:
            raise StorageCorruption(f"{path} vanished while being read") from exc
        with file:
            file.seek(start)
            offset = start
            while offset < end:
                head = file.read(_ENTRY_HEADER.size)
                if len(head) < _ENTRY_HEADER.size:
                    raise StorageCorruption(f"{path}: entry at offset {offset} is cut short")
                body_bytes, crc = _ENTRY_HEADER.unpack(head)
                if not _ENTRY_FIXED.size <= body_bytes <= ENTRY_BODY_BYTES_MAX:
                    raise StorageCorruption(f"{path}: impossible entry length at {offset}")
                body = file.read(body_bytes)
                if len(body) < body_bytes:
                    raise StorageCorruption(f"{path}: entry at offset {offset} is cut short")
                if google_crc32c.value(body) != crc:
                    raise StorageCorruption(f"{path}: entry at offset {offset} fails its crc")
                entry_index, first_position, record_count, term = _ENTRY_FIXED.unpack_from(body)
                if entry_index != index or first_position != position:
                    raise StorageCorruption(
                        f"{path}: entry at offset {offset} is index {entry_index} position "
                        f"{first_position}, expected {index} / {position}"
                    )
                yield LogEntry(
                    index, Position(first_position), record_count, body[_ENTRY_FIXED.size :], term
                )
                index += 1
                position += record_count
                offset += _ENTRY_HEADER.size + body_bytes
