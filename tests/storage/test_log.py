"""The segmented log: unit tests, a list model, and crash / corruption properties."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from storage.log import (
    ENTRY_BODY_BYTES_MAX,
    ENTRY_OVERHEAD_BYTES,
    SEGMENT_HEADER_BYTES,
    LogEntry,
    SegmentedLog,
    open_for_read,
    segment_file_name,
)
from zeebe_sim.ground.errors import InvalidArgument, InvalidState, StorageCorruption
from zeebe_sim.ground.ids import Position

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small enough that a handful of entries fill a segment, so the properties cross segment bounds.
SMALL_SEGMENT_BYTES = 160
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def payload_of(index: int, size: int = 16) -> bytes:
    return (f"entry-{index}-".encode() * size)[:size]


def fill(log: SegmentedLog, sizes: list[int], records: int = 1) -> list[LogEntry]:
    entries = []
    for size in sizes:
        index = log.last_index + 1
        entries.append(log.append(log.last_position + 1, records, payload_of(index, size)))
    return entries


def read_all(log: SegmentedLog) -> list[LogEntry]:
    return list(log.entries_from(0))


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.log"))


def entry_locations(directory: Path, entries: list[LogEntry]) -> list[tuple[Path, int, int]]:
    """(file, offset, length) of each entry, walking the files by the documented format."""
    files = {int(p.name[8:20]): p for p in segment_files(directory)}
    locations = []
    path, offset = None, 0
    for entry in entries:
        if entry.index in files:
            path, offset = files[entry.index], SEGMENT_HEADER_BYTES
        assert path is not None
        length = ENTRY_OVERHEAD_BYTES + len(entry.payload)
        locations.append((path, offset, length))
        offset += length
    return locations


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(log_dir: Path) -> Iterator[SegmentedLog]:
    opened = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    yield opened
    opened.close()


# -- unit tests -------------------------------------------------------------------------------


def test_a_new_log_is_empty_and_starts_at_position_one(log: SegmentedLog, log_dir: Path) -> None:
    """A new log has no entries, reports 0 for every position and index, and already has its
    first segment on disk."""
    assert (log.first_position, log.last_position, log.first_index, log.last_index) == (0, 0, 0, 0)
    assert log.is_empty
    assert read_all(log) == []
    assert log.entry_at_position(1) is None
    assert [p.name for p in segment_files(log_dir)] == [segment_file_name(1)]
    entry = log.append(1, 3, b"abc")
    assert entry == LogEntry(1, Position(1), 3, b"abc")
    assert entry.last_position == 3
    assert (log.first_position, log.last_position, log.first_index, log.last_index) == (1, 3, 1, 1)


def test_positions_grow_by_record_and_indexes_by_entry(log: SegmentedLog) -> None:
    """Each entry takes the next index and record_count consecutive positions."""
    first = log.append(1, 2, b"a")
    second = log.append(3, 1, b"b")
    third = log.append(4, 5, b"c")
    assert [(e.index, e.first_position, e.last_position) for e in (first, second, third)] == [
        (1, 1, 2),
        (2, 3, 3),
        (3, 4, 8),
    ]
    assert log.last_position == 8
    assert log.last_index == 3


def test_append_at_the_wrong_position_is_a_bug(log: SegmentedLog) -> None:
    """Positions are assigned by the log's owner; a gap or overlap is an assertion failure."""
    log.append(1, 1, b"a")
    with pytest.raises(AssertionError):
        log.append(3, 1, b"gap")
    with pytest.raises(AssertionError):
        log.append(1, 1, b"overlap")
    assert log.last_position == 1


def test_raft_entries_keep_their_term_and_noops_hold_no_record(log: SegmentedLog) -> None:
    """Each entry keeps its Raft term across a reopen; a no-op (no record) shares its first
    position with the next entry and is read back by index, while position readers skip it."""
    log.append(1, 2, b"ab", term=1)
    log.append(3, 0, b"", term=2)
    log.append(3, 1, b"c", term=2)
    log.flush()
    reopened = SegmentedLog.open(log.directory)
    by_index = [
        (e.index, e.first_position, e.record_count, e.term) for e in reopened.entries_from_index(2)
    ]
    assert by_index == [(2, 3, 0, 2), (3, 3, 1, 2)]
    assert [e.index for e in reopened.entries_from(3)] == [3]
    reopened.close()


def test_truncate_from_index_and_reset(log: SegmentedLog) -> None:
    """A conflicting suffix goes by index (a no-op before it stays); a reset starts the log
    afresh at a later index and position, also after a reopen."""
    log.append(1, 2, b"ab", term=1)
    log.append(3, 0, b"", term=2)
    log.append(3, 1, b"c", term=2)
    log.truncate_from_index(3)
    assert (log.last_index, log.last_position) == (2, 2)
    log.append(3, 1, b"d", term=3)
    assert [e.payload for e in log.entries_from_index(1)] == [b"ab", b"", b"d"]
    log.reset_to(10, 50)
    assert (log.last_index, log.last_position, log.is_empty) == (9, 49, True)
    log.append(50, 1, b"x", term=4)
    log.flush()
    reopened = SegmentedLog.open(log.directory)
    assert [(e.index, e.first_position, e.term) for e in reopened.entries_from_index(1)] == [
        (10, 50, 4)
    ]
    reopened.close()


def test_entry_at_position_finds_the_entry_containing_it(log: SegmentedLog) -> None:
    """Any position inside a batch finds that batch's entry, across segments."""
    entries = fill(log, [30] * 12, records=3)
    for entry in entries:
        for position in range(entry.first_position, entry.last_position + 1):
            assert log.entry_at_position(position) == entry
    assert log.entry_at_position(0) is None
    assert log.entry_at_position(log.last_position + 1) is None


def test_entries_from_starts_with_the_entry_containing_the_position(log: SegmentedLog) -> None:
    """entries_from(p) starts with the entry that contains p, or with the first entry when p
    lies before the log; past the end it yields nothing."""
    entries = fill(log, [20] * 10, records=2)
    assert read_all(log) == entries
    assert list(log.entries_from(6)) == entries[2:]  # entry 3 holds positions 5 and 6
    assert list(log.entries_from(7)) == entries[3:]
    assert list(log.entries_from(20)) == entries[9:]
    assert list(log.entries_from(21)) == []


def test_entries_from_stops_at_the_end_seen_when_it_started(log: SegmentedLog) -> None:
    """An iterator covers the log as it was when entries_from was called, even if appends go
    on while it is consumed; unflushed entries are readable."""
    entries = fill(log, [20] * 4)
    reader = log.entries_from(1)
    assert next(reader) == entries[0]
    fill(log, [20] * 4)
    assert list(reader) == entries[1:]


def test_segments_roll_when_full_and_a_big_entry_goes_alone(log: SegmentedLog) -> None:
    """A segment never grows past segment_bytes_max, except that an entry bigger than the
    maximum is written alone into a segment of its own."""
    fill(log, [10] * 8)
    log.append(log.last_position + 1, 1, b"x" * (2 * SMALL_SEGMENT_BYTES))
    fill(log, [10] * 3)
    log.flush()
    infos = log.segments()
    assert len(infos) > 3
    for info in infos:
        entries = info.last_position - info.first_position + 1
        assert info.size_bytes <= SMALL_SEGMENT_BYTES or entries == 1
        assert info.size_bytes == info.path.stat().st_size
    for before, after in itertools.pairwise(infos):
        assert after.first_position == before.last_position + 1
        assert after.path.name == segment_file_name(after.first_index)


def test_an_entry_above_the_segment_maximum_in_an_empty_log(log: SegmentedLog) -> None:
    """The very first entry may exceed segment_bytes_max: it goes into the (empty) first
    segment, and the next entry starts a new segment."""
    big = log.append(1, 1, b"y" * (3 * SMALL_SEGMENT_BYTES))
    small = log.append(2, 1, b"z")
    log.flush()
    assert [(i.first_index, i.last_position) for i in log.segments()] == [(1, 1), (2, 2)]
    assert read_all(log) == [big, small]


def test_segments_report_only_flushed_bytes(log: SegmentedLog) -> None:
    """segments() describes what is durable: bytes appended since the last flush are not in
    size_bytes, and a segment created since then is not listed at all."""
    log.append(1, 1, b"a" * 20)
    log.flush()
    flushed = log.segments()
    assert [(i.first_position, i.last_position) for i in flushed] == [(1, 1)]
    log.append(2, 1, b"b")  # same segment, not flushed
    assert log.segments() == flushed
    fill(log, [60] * 4)  # rolls at least once
    assert log.segments() == flushed
    log.flush()
    after = log.segments()
    assert after[-1].last_position == log.last_position
    assert sum(i.last_position - i.first_position + 1 for i in after) == log.last_position
    assert all(i.size_bytes == i.path.stat().st_size for i in after)


def test_reopen_returns_every_entry(log_dir: Path) -> None:
    """Closing and reopening keeps all entries, and appends continue where they stopped."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    entries = fill(log, [5, 50, 0, 17, 33, 80, 2], records=2)
    log.flush()
    log.close()
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    assert log.recovery.clean
    assert read_all(log) == entries
    assert log.last_index == 7 and log.last_position == 14
    assert log.append(15, 1, b"more").index == 8
    log.close()


def test_truncate_after_keeps_the_entry_holding_the_position(log_dir: Path) -> None:
    """truncate_after(p) removes the entries starting after p, keeps the one holding p whole,
    is durable at once, and the next append continues after the kept entry."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    entries = fill(log, [30] * 10, records=3)  # entry 4 holds positions 10..12
    log.truncate_after(11)
    assert read_all(log) == entries[:4]
    assert log.last_position == 12
    assert len(segment_files(log_dir)) == len(log.segments())
    log.close()
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    assert read_all(log) == entries[:4]
    assert log.append(13, 1, b"next").index == 5
    log.truncate_after(13)  # nothing after 13: no change
    assert log.last_index == 5
    log.close()


def test_truncating_everything_keeps_the_position_sequence(log_dir: Path) -> None:
    """When truncation removes every entry of a compacted log, the log is empty but the next
    append still continues at the first removed position (positions never go back)."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    entries = fill(log, [40] * 12)
    assert log.compact(6) > 0
    first = log.first_position
    assert 1 < first <= 6
    log.truncate_after(0)
    assert log.is_empty
    assert (log.first_position, log.last_position) == (0, first - 1)
    assert log.first_index == 0 and log.last_index == first - 1
    log.close()
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    assert log.is_empty and log.last_position == first - 1
    assert log.append(first, 1, b"again") == LogEntry(entries[first - 1].index, first, 1, b"again")
    log.close()


def test_compact_deletes_whole_segments_but_never_the_active_one(
    log: SegmentedLog, log_dir: Path
) -> None:
    """compact(p) deletes the segments whose records all lie before p; the segment holding p
    stays, and so does the active segment even when everything lies before p."""
    entries = fill(log, [20] * 12)  # two entries per segment
    log.flush()
    infos = log.segments()
    assert log.compact(1) == 0
    assert log.compact(infos[2].first_position) == 2
    assert log.first_position == infos[2].first_position
    assert read_all(log) == entries[infos[2].first_index - 1 :]
    assert log.compact(log.last_position + 100) == len(infos) - 3
    assert [p.name for p in segment_files(log_dir)] == [infos[-1].path.name]
    assert read_all(log) == entries[infos[-1].first_index - 1 :]
    assert list(log.entries_from(1)) == read_all(log)


def test_an_entry_above_the_limit_is_refused(log: SegmentedLog) -> None:
    """A payload over ENTRY_BODY_BYTES_MAX is refused and nothing is appended."""
    with pytest.raises(InvalidArgument):
        log.append(1, 1, bytes(ENTRY_BODY_BYTES_MAX))
    assert log.last_position == 0
    assert log.append(1, 1, b"fine").index == 1


def test_a_corrupted_entry_is_detected_when_read(log: SegmentedLog, log_dir: Path) -> None:
    """Reads verify the checksum: bytes changed on disk after opening raise StorageCorruption."""
    entries = fill(log, [20] * 3)
    log.flush()
    path, offset, _length = entry_locations(log_dir, entries)[1]
    with path.open("r+b") as file:
        file.seek(offset + ENTRY_OVERHEAD_BYTES)
        file.write(b"!")
    with pytest.raises(StorageCorruption):
        read_all(log)
    with pytest.raises(StorageCorruption):
        log.entry_at_position(2)
    assert log.entry_at_position(1) == entries[0]


def test_a_closed_log_refuses_everything(log: SegmentedLog) -> None:
    """After close() every write and read raises InvalidState; closing twice is harmless."""
    log.append(1, 1, b"a")
    log.close()
    log.close()
    for call in (
        lambda: log.append(2, 1, b"b"),
        log.flush,
        lambda: log.truncate_after(0),
        lambda: log.compact(1),
        lambda: log.entries_from(1),
        lambda: log.entry_at_position(1),
    ):
        with pytest.raises(InvalidState):
            call()


def test_read_only_open_changes_no_file(log_dir: Path) -> None:
    """A read-only open of a log with a torn tail returns the valid prefix and says what it
    skipped, but writes nothing: the files stay byte for byte as they were."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    entries = fill(log, [40] * 8)
    log.flush()
    log.close()
    path, offset, length = entry_locations(log_dir, entries)[5]
    os.truncate(path, offset + length // 2)
    before = {p.name: p.read_bytes() for p in log_dir.iterdir()}
    reader = open_for_read(log_dir)
    assert reader.read_only
    assert read_all(reader) == entries[:5]
    assert reader.recovery.cut_segment == path
    assert reader.recovery.cut_offset == offset
    assert reader.recovery.entries == 5
    assert reader.recovery.dropped_segments == tuple(p for p in segment_files(log_dir) if p > path)
    for call in (lambda: reader.append(6, 1, b"x"), reader.flush, lambda: reader.compact(9)):
        with pytest.raises(InvalidState):
            call()
    reader.close()
    assert {p.name: p.read_bytes() for p in log_dir.iterdir()} == before


def test_read_only_open_of_a_missing_or_empty_directory(tmp_path: Path) -> None:
    """Read-only open never creates anything: a missing directory is an error, an empty one an
    empty log."""
    with pytest.raises(FileNotFoundError):
        open_for_read(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    reader = open_for_read(tmp_path / "empty")
    assert reader.is_empty and reader.last_position == 0 and reader.segments() == []
    assert read_all(reader) == []
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_bad_first_segment_header_is_corruption(log_dir: Path) -> None:
    """The first segment is always created complete, so a bad header there is corruption and
    is reported rather than cut: without it the log's first position is unknown."""
    log = SegmentedLog.open(log_dir)
    fill(log, [10] * 3)
    log.flush()
    log.close()
    path = log_dir / segment_file_name(1)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(StorageCorruption):
        SegmentedLog.open(log_dir)
    with pytest.raises(StorageCorruption):
        open_for_read(log_dir)


def test_a_bad_later_segment_header_drops_it_and_every_later_segment(log_dir: Path) -> None:
    """A later segment whose header never reached the disk (a crash right after a roll) is
    dropped with everything after it; earlier entries stay."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    entries = fill(log, [40] * 12)
    log.flush()
    infos = log.segments()
    log.close()
    assert len(infos) >= 4
    os.truncate(infos[2].path, SEGMENT_HEADER_BYTES - 3)
    log = SegmentedLog.open(log_dir, segment_bytes_max=SMALL_SEGMENT_BYTES)
    assert read_all(log) == entries[: infos[2].first_index - 1]
    assert log.recovery.cut_segment == infos[2].path and log.recovery.cut_offset is None
    assert segment_files(log_dir) == [infos[0].path, infos[1].path]
    assert log.append(infos[2].first_position, 1, b"x").index == infos[2].first_index
    log.close()


def test_a_valid_entry_out_of_sequence_ends_the_log(log_dir: Path) -> None:
    """An entry whose checksum is fine but which does not continue the index and position
    sequence (a stale block, a replayed write) is treated like a torn tail."""
    log = SegmentedLog.open(log_dir)
    entries = fill(log, [12] * 3)
    log.flush()
    log.close()
    path, offset, length = entry_locations(log_dir, entries)[0]
    size = path.stat().st_size
    with path.open("ab") as file:
        file.write(path.read_bytes()[offset : offset + length])
    log = SegmentedLog.open(log_dir)
    assert read_all(log) == entries
    assert log.recovery.cut_offset == size
    assert path.stat().st_size == size
    log.close()


def test_leftovers_of_an_interrupted_first_segment_are_removed(log_dir: Path) -> None:
    """A temp file left by a crash while creating the first segment is removed at open; files
    that are not segments are left alone."""
    log_dir.mkdir()
    (log_dir / (segment_file_name(1) + ".tmp")).write_bytes(b"ZS")
    (log_dir / "notes.txt").write_text("mine")
    log = SegmentedLog.open(log_dir)
    assert sorted(p.name for p in log_dir.iterdir()) == ["notes.txt", segment_file_name(1)]
    assert log.append(1, 1, b"a").index == 1
    log.close()


def test_flush_in_a_thread_while_appending(log_dir: Path) -> None:
    """flush() may run in a worker thread while another thread appends and rolls segments;
    every entry appended before the final flush is on disk and valid afterwards."""
    log = SegmentedLog.open(log_dir, segment_bytes_max=4096)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                log.flush()
                log.segments()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        entries = fill(log, [50] * 3000)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    log.flush()
    assert log.segments()[-1].last_position == log.last_position
    log.close()
    log = SegmentedLog.open(log_dir, segment_bytes_max=4096)
    assert log.recovery.clean
    assert read_all(log) == entries
    log.close()


def test_kill_9_while_appending_keeps_every_flushed_entry(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL at an arbitrary moment leaves a log that opens
    cleanly (or with a cut tail) and holds every entry it reported as flushed."""
    script = """
import sys
from pathlib import Path
from storage.log import SegmentedLog
log = SegmentedLog.open(Path(sys.argv[1]), segment_bytes_max=8192)
while True:
    for _ in range(7):
        log.append(log.last_position + 1, 2, bytes([log.last_index % 251]) * 90)
    log.flush()
    print(log.last_position, flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "log")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert writer.stdout is not None
    flushed = 0
    for _ in range(300):
        line = writer.stdout.readline()
        assert line, "the writer died"
        flushed = int(line)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    log = SegmentedLog.open(tmp_path / "log", segment_bytes_max=8192)
    entries = read_all(log)
    assert log.last_position >= flushed
    assert [e.index for e in entries] == list(range(1, len(entries) + 1))
    assert all(e.payload == bytes([(e.index - 1) % 251]) * 90 for e in entries)
    log.close()


def test_a_failed_write_leaves_no_partial_entry(tmp_path: Path) -> None:
    """When the OS accepts only part of an entry and then fails (here a file size limit, as
    with a full disk), the partial bytes are removed, so later appends are not hidden behind a
    torn entry; the failed append raises and changes nothing."""
    script = """
import resource, signal, sys
from pathlib import Path
from storage.log import SegmentedLog
log = SegmentedLog.open(Path(sys.argv[1]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = log.segments()[0].size_bytes
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 250, resource.RLIM_INFINITY))
appended = 0
try:
    while True:
        log.append(log.last_position + 1, 1, b"p" * 100)
        appended += 1
except OSError as exc:
    assert exc.errno == 27, exc  # EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
log.append(log.last_position + 1, 1, b"after")
log.flush()
print(appended)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "log")],
        capture_output=True,
        env=env,
        text=True,
        check=True,
    )
    appended = int(result.stdout)
    assert appended == 250 // (ENTRY_OVERHEAD_BYTES + 100)
    log = SegmentedLog.open(tmp_path / "log")
    assert log.recovery.clean
    assert [e.payload for e in read_all(log)] == [b"p" * 100] * appended + [b"after"]
    log.close()


# -- properties: torn writes and flipped bytes ------------------------------------------------


@PROPERTY_SETTINGS
@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=12),
    data=st.data(),
)
def test_a_torn_tail_is_cut_at_the_last_whole_entry(
    tmp_path: Path, sizes: list[int], data: st.DataObject
) -> None:
    """Cutting the last segment at any byte offset (a torn write) leaves exactly the entries
    that lie wholly before the cut; the file is cut back to the end of the last of them."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as temp:
        directory = Path(temp)
        log = SegmentedLog.open(directory)
        entries = fill(log, sizes)
        log.flush()
        log.close()
        path = directory / segment_file_name(1)
        size = path.stat().st_size
        cut = data.draw(st.integers(SEGMENT_HEADER_BYTES, size), label="cut")
        os.truncate(path, cut)
        ends = [offset + length for _, offset, length in entry_locations(directory, entries)]
        whole = [e for e, end in zip(entries, ends, strict=True) if end <= cut]
        log = SegmentedLog.open(directory)
        assert read_all(log) == whole
        assert log.recovery.clean == (cut in [SEGMENT_HEADER_BYTES, *ends])
        assert path.stat().st_size == max([SEGMENT_HEADER_BYTES, *ends[: len(whole)]])
        assert log.append(log.last_position + 1, 1, b"after").index == len(whole) + 1
        log.close()


@PROPERTY_SETTINGS
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=12), data=st.data())
def test_a_torn_last_entry_leaves_exactly_the_entries_before_it(
    tmp_path: Path, sizes: list[int], data: st.DataObject
) -> None:
    """A crash while the last entry was being written (the file ends anywhere inside it)
    reopens to exactly the entries before it."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as temp:
        directory = Path(temp)
        log = SegmentedLog.open(directory, segment_bytes_max=SMALL_SEGMENT_BYTES)
        entries = fill(log, sizes)
        log.flush()
        log.close()
        path, offset, length = entry_locations(directory, entries)[-1]
        os.truncate(path, offset + data.draw(st.integers(0, length - 1), label="kept"))
        log = SegmentedLog.open(directory, segment_bytes_max=SMALL_SEGMENT_BYTES)
        assert read_all(log) == entries[:-1]
        assert log.last_position == len(entries) - 1
        log.close()


@PROPERTY_SETTINGS
@given(
    sizes=st.lists(st.integers(0, 50), min_size=1, max_size=14),
    records=st.integers(1, 3),
    data=st.data(),
)
def test_a_flipped_byte_cuts_the_log_from_that_entry_on(
    tmp_path: Path, sizes: list[int], records: int, data: st.DataObject
) -> None:
    """Flipping any bits of any byte of entry k makes recovery cut the log right before k:
    entries before it are intact, entry k and everything after it (later segments too) are
    gone, and appends continue at entry k's position."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as temp:
        directory = Path(temp)
        log = SegmentedLog.open(directory, segment_bytes_max=SMALL_SEGMENT_BYTES)
        entries = fill(log, sizes, records=records)
        log.flush()
        log.close()
        locations = entry_locations(directory, entries)
        k = data.draw(st.integers(0, len(entries) - 1), label="entry")
        path, offset, length = locations[k]
        at = offset + data.draw(st.integers(0, length - 1), label="byte")
        mask = data.draw(st.integers(1, 255), label="mask")
        corrupted = bytearray(path.read_bytes())
        corrupted[at] ^= mask
        path.write_bytes(bytes(corrupted))
        log = SegmentedLog.open(directory, segment_bytes_max=SMALL_SEGMENT_BYTES)
        assert read_all(log) == entries[:k]
        assert log.recovery.cut_segment == path and log.recovery.cut_offset == offset
        assert segment_files(directory)[-1] == path
        assert path.stat().st_size == offset
        assert log.last_position == entries[k].first_position - 1
        assert log.append(entries[k].first_position, 1, b"x").index == entries[k].index
        log.close()


# -- property: the log against a list model ---------------------------------------------------


class LogAgainstModel(RuleBasedStateMachine):
    """Random appends, flushes, reopens, crashes, truncations and compactions; after each step
    the log holds exactly the model's entries. A crash keeps, for each file, any length between
    its durable size (from segments()) and what was written: the log must come back as a
    prefix of the model that still holds every flushed entry."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="log-model-"))
        self.log = SegmentedLog.open(self.directory, segment_bytes_max=SMALL_SEGMENT_BYTES)
        self.entries: list[LogEntry] = []
        self.next_index = 1
        self.next_position = 1
        self.durable = 0  # entries[:durable] are known to be on disk

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory)

    def reopen(self) -> None:
        self.log = SegmentedLog.open(self.directory, segment_bytes_max=SMALL_SEGMENT_BYTES)

    @rule(records=st.integers(1, 3), size=st.integers(0, 70))
    def append(self, records: int, size: int) -> None:
        entry = self.log.append(self.next_position, records, payload_of(self.next_index, size))
        assert entry.index == self.next_index
        self.entries.append(entry)
        self.next_index += 1
        self.next_position += records

    @rule(sizes=st.lists(st.integers(0, 40), min_size=2, max_size=8))
    def append_several(self, sizes: list[int]) -> None:
        for size in sizes:
            self.append(1, size)

    @rule()
    def flush(self) -> None:
        self.log.flush()
        self.durable = len(self.entries)

    @rule()
    def close_and_reopen(self) -> None:
        self.log.close()
        self.reopen()
        assert self.log.recovery.clean
        self.durable = len(self.entries)  # open syncs what it found

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        durable_sizes = {info.path: info.size_bytes for info in self.log.segments()}
        self.log.close()
        for path in segment_files(self.directory):
            size = path.stat().st_size
            keep = data.draw(st.integers(durable_sizes.get(path, 0), size), label=path.name)
            os.truncate(path, keep)
        self.reopen()
        found = read_all(self.log)
        assert len(found) >= self.durable
        assert found == self.entries[: len(found)]
        if len(found) < len(self.entries):
            self.next_index = self.entries[len(found)].index
            self.next_position = self.entries[len(found)].first_position
        self.entries = found
        self.durable = len(found)

    @rule(data=st.data())
    def truncate_after(self, data: st.DataObject) -> None:
        position = data.draw(st.integers(0, self.next_position + 1), label="position")
        self.log.truncate_after(position)
        kept = [e for e in self.entries if e.first_position <= position]
        if len(kept) < len(self.entries):
            self.next_index = self.entries[len(kept)].index
            self.next_position = self.entries[len(kept)].first_position
        self.entries = kept
        self.durable = len(kept)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        position = data.draw(st.integers(0, self.next_position + 1), label="position")
        files_before = len(segment_files(self.directory))
        deleted = self.log.compact(position)
        assert len(segment_files(self.directory)) == files_before - deleted
        first_index = self.log.first_index or self.next_index
        removed = [e for e in self.entries if e.index < first_index]
        assert all(e.last_position < position for e in removed)
        self.entries = self.entries[len(removed) :]
        self.durable = len(self.entries)

    @invariant()
    def matches_the_model(self) -> None:
        log = self.log
        assert log.last_index == self.next_index - 1
        assert log.last_position == self.next_position - 1
        if self.entries:
            assert log.first_index == self.entries[0].index
            assert log.first_position == self.entries[0].first_position
        else:
            assert log.is_empty and log.first_position == 0
        assert read_all(log) == self.entries
        if self.entries:
            middle = self.entries[len(self.entries) // 2]
            assert log.entry_at_position(middle.last_position) == middle
            assert (
                list(log.entries_from(middle.first_position))
                == self.entries[len(self.entries) // 2 :]
            )

    @invariant()
    def durable_segments_hold_the_flushed_entries(self) -> None:
        infos = self.log.segments()
        if self.durable and self.entries:
            last_durable = self.entries[self.durable - 1].last_position
            assert infos and infos[-1].last_position >= last_durable
        for before, after in itertools.pairwise(infos):
            assert after.first_position == before.last_position + 1


LogAgainstModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestLogAgainstModel = LogAgainstModel.TestCase
