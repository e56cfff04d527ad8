"""The snapshot store: completion by checksum file, retention, reservations, crash leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.snapshots import (
    CHECKSUM_SUFFIX,
    FileChecksum,
    Snapshot,
    SnapshotId,
    SnapshotStore,
    checksum_of,
    load_snapshot_dir,
)
from zeebe_sim.ground.errors import InvalidState, NotFound, StorageCorruption

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = [b"state-", b"of-the-", b"partition" * 100]


def sid(index: int, processed: int | None = None) -> SnapshotId:
    processed = index * 10 if processed is None else processed
    return SnapshotId(index=index, term=1, processed_position=processed, exported_position=0)


def take(
    store: SnapshotStore,
    snapshot_id: SnapshotId,
    files: dict[str, list[bytes]] | None = None,
    *,
    last_followup: int | None = None,
) -> Snapshot:
    followup = snapshot_id.processed_position + 2 if last_followup is None else last_followup
    pending = store.begin(snapshot_id, followup, extra={"partition": 1})
    for name, chunks in (files or {"state.msgpack": STATE, "meta": [b"m"]}).items():
        pending.write_file(name, chunks)
    return store.persist(pending)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def snapshots_dir(tmp_path: Path) -> Path:
    return tmp_path / "partition-1" / "snapshots"


@pytest.fixture
def store(snapshots_dir: Path) -> SnapshotStore:
    return SnapshotStore.open(snapshots_dir)


# -- ids --------------------------------------------------------------------------------------


@given(st.tuples(*[st.integers(0, 2**63 - 1)] * 4))
def test_snapshot_ids_round_trip_through_their_string(parts: tuple[int, int, int, int]) -> None:
    """str(id) is index-term-processed-exported, and parse() gives the same id back."""
    snapshot_id = SnapshotId(*parts)
    assert str(snapshot_id) == "-".join(map(str, parts))
    assert SnapshotId.parse(str(snapshot_id)) == snapshot_id


@pytest.mark.parametrize(
    "text",
    ["", "1-2-3", "1-2-3-4-5", "01-2-3-4", "-1-2-3-4", "a-b-c-d", " 1-2-3-4", "1-2-3-4\n",
     "1-2-3-" + "9" * 20, "1.0-2-3-4", "\uff11-2-3-4"],
)  # fmt: skip
def test_snapshot_id_parse_rejects_anything_else(text: str) -> None:
    """Only the one canonical spelling parses, so an id names exactly one directory."""
    with pytest.raises(ValueError):
        SnapshotId.parse(text)


def test_snapshot_ids_order_like_zeebe() -> None:
    """Ids compare by index, then term, then processed position, then exported position."""
    ids = [SnapshotId(2, 1, 1, 1), SnapshotId(1, 2, 0, 0), SnapshotId(1, 1, 5, 0),
           SnapshotId(1, 1, 4, 9), SnapshotId(1, 1, 4, 8)]  # fmt: skip
    assert sorted(ids) == ids[::-1]
    with pytest.raises(ValueError):
        SnapshotId(-1, 0, 0, 0)


# -- taking snapshots -------------------------------------------------------------------------


def test_persist_makes_a_complete_durable_snapshot(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """A persisted snapshot has its directory and, beside it, the checksum file describing
    each file's size and crc32c and the metadata; the pending directory is gone, and a
    reopened store finds the same snapshot."""
    assert store.latest() is None and store.all() == []
    snapshot = take(store, sid(3), last_followup=34)
    assert store.latest() == snapshot and store.all() == [snapshot]
    assert snapshot.directory == snapshots_dir / "3-1-30-0"
    assert snapshot.checksum_file == snapshots_dir / f"3-1-30-0{CHECKSUM_SUFFIX}"
    assert names(snapshots_dir) == ["3-1-30-0", "3-1-30-0.checksum"]
    assert names(snapshot.directory) == ["meta", "state.msgpack"]
    assert (snapshot.directory / "state.msgpack").read_bytes() == b"".join(STATE)
    assert snapshot.files["state.msgpack"] == checksum_of(snapshot.directory / "state.msgpack")
    assert snapshot.files["meta"] == FileChecksum(
        1, checksum_of(snapshot.directory / "meta").crc32c
    )
    assert (snapshot.processed_position, snapshot.last_followup_event_position) == (30, 34)
    assert snapshot.exported_position == 0 and snapshot.extra == {"partition": 1}
    snapshot.verify()
    reopened = SnapshotStore.open(snapshots_dir)
    assert reopened.latest() == snapshot


def test_only_the_newest_snapshot_is_kept(store: SnapshotStore, snapshots_dir: Path) -> None:
    """Persisting a snapshot deletes every older one (directory and checksum file)."""
    take(store, sid(1))
    take(store, sid(2))
    newest = take(store, sid(3))
    assert store.all() == [newest]
    assert names(snapshots_dir) == ["3-1-30-0", "3-1-30-0.checksum"]


def test_persisting_an_existing_id_returns_the_existing_snapshot(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """Persisting the same id twice is idempotent: the first snapshot is returned unchanged
    and the second attempt's files are dropped."""
    first = take(store, sid(1))
    again = take(store, sid(1), {"other": [b"different"]})
    assert again == first
    assert names(first.directory) == ["meta", "state.msgpack"]
    assert names(snapshots_dir) == ["1-1-10-0", "1-1-10-0.checksum"]
    first.verify()


def test_a_snapshot_older_than_the_latest_is_not_committed(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """As in Zeebe, persisting a snapshot older than the latest drops it and returns the
    latest."""
    newest = take(store, sid(5))
    assert take(store, sid(4)) == newest
    assert store.all() == [newest]
    assert names(snapshots_dir) == ["5-1-50-0", "5-1-50-0.checksum"]


def test_abort_drops_a_pending_snapshot(store: SnapshotStore, snapshots_dir: Path) -> None:
    """An aborted pending snapshot leaves nothing behind and refuses further files."""
    pending = store.begin(sid(1), 12)
    pending.write_file("state", [b"x"])
    assert pending.directory.parent == snapshots_dir
    pending.abort()
    pending.abort()
    assert names(snapshots_dir) == []
    with pytest.raises(InvalidState):
        pending.write_file("more", [b"y"])
    assert store.latest() is None


def test_pending_files_need_plain_unique_names(store: SnapshotStore) -> None:
    """A snapshot file name is one path component, written once; extra must be JSON."""
    pending = store.begin(sid(1), 12)
    for bad in ["", ".", "..", "a/b", "../escape", "nul\0"]:
        with pytest.raises(ValueError):
            pending.write_file(bad, [b"x"])
    pending.write_file("state", [b"x"])
    with pytest.raises(ValueError):
        pending.write_file("state", [b"y"])
    pending.abort()
    with pytest.raises(TypeError):
        store.begin(sid(2), 22, extra={"not json": object()})


# -- reservations -----------------------------------------------------------------------------


def test_a_reservation_keeps_an_old_snapshot_until_released(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """A reserved snapshot survives newer snapshots; releasing the reservation deletes it
    once it is no longer the newest."""
    old = take(store, sid(1))
    reservation = store.reserve(old.id)
    assert reservation.snapshot == old
    newer = take(store, sid(2))
    newest = take(store, sid(3))
    assert store.all() == [old, newest]
    assert not newer.directory.exists()
    old.verify()
    reservation.release()
    assert store.all() == [newest]
    assert names(snapshots_dir) == ["3-1-30-0", "3-1-30-0.checksum"]
    reservation.release()  # a second release of the same reservation changes nothing
    assert store.all() == [newest]


def test_reservations_are_counted(store: SnapshotStore) -> None:
    """Two reservations of one snapshot need two releases before it can be deleted."""
    old = take(store, sid(1))
    first = store.reserve(old.id)
    with store.reserve(old.id):
        take(store, sid(2))
        first.release()
        assert old in store.all()
    assert old not in store.all()
    assert not old.directory.exists() and not old.checksum_file.exists()


def test_releasing_the_newest_snapshot_keeps_it(store: SnapshotStore) -> None:
    """Retention keeps the newest snapshot whether or not it was reserved."""
    newest = take(store, sid(1))
    store.reserve(newest.id).release()
    assert store.all() == [newest]
    newest.verify()


def test_only_existing_snapshots_can_be_reserved(store: SnapshotStore) -> None:
    """Reserving an id that is not (or no longer) in the store raises NotFound."""
    take(store, sid(1))
    take(store, sid(2))
    with pytest.raises(NotFound):
        store.reserve(sid(1))


# -- crashes and corruption -------------------------------------------------------------------


def test_open_removes_what_an_interrupted_persist_left(snapshots_dir: Path) -> None:
    """At open, pending directories, snapshot directories without a checksum file, checksum
    files without a directory and temp checksum files are removed; complete snapshots and
    files the store does not own stay."""
    store = SnapshotStore.open(snapshots_dir)
    complete = take(store, sid(1))
    (snapshots_dir / "pending-2-1-20-0-abc").mkdir()
    (snapshots_dir / "pending-2-1-20-0-abc" / "state").write_bytes(b"half")
    (snapshots_dir / "3-1-30-0").mkdir()
    (snapshots_dir / "3-1-30-0" / "state").write_bytes(b"complete but unmarked")
    (snapshots_dir / f"4-1-40-0{CHECKSUM_SUFFIX}").write_bytes(b"orphan")
    (snapshots_dir / f"5-1-50-0{CHECKSUM_SUFFIX}.tmp").write_bytes(b"torn")
    (snapshots_dir / "README").write_text("not ours")
    reopened = SnapshotStore.open(snapshots_dir)
    assert reopened.all() == [complete]
    assert names(snapshots_dir) == ["1-1-10-0", "1-1-10-0.checksum", "README"]


def test_a_crash_between_rename_and_checksum_write_discards_the_snapshot(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """A crash after the snapshot directory got its final name but before the checksum file
    was written (or while it was still a temp file) leaves an incomplete snapshot: the next
    open discards it and the previous snapshot is still the latest."""
    previous = take(store, sid(1))
    pending = store.begin(sid(2), 22)
    pending.write_file("state", STATE)
    # the state persist reaches just before writing the checksum file
    os.rename(pending.directory, snapshots_dir / "2-1-20-0")
    (snapshots_dir / f"2-1-20-0{CHECKSUM_SUFFIX}.tmp").write_bytes(b'{"version": 1, "sn')
    reopened = SnapshotStore.open(snapshots_dir)
    assert reopened.latest() == previous
    previous.verify()
    assert names(snapshots_dir) == ["1-1-10-0", "1-1-10-0.checksum"]
    # and the same id can be taken again afterwards
    assert take(reopened, sid(2)).id == sid(2)


def test_a_crash_while_deleting_an_old_snapshot_leaves_it_incomplete(
    store: SnapshotStore, snapshots_dir: Path
) -> None:
    """Deletion removes the checksum file first, so a crash in the middle leaves a directory
    without checksum file, which the next open removes."""
    old = take(store, sid(1))
    newest = take(store, sid(2))
    shutil.copytree(newest.directory, old.directory)  # as if rmtree had not happened yet
    assert SnapshotStore.open(snapshots_dir).all() == [newest]
    assert not old.directory.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "no directory"])
def test_verify_detects_damaged_files(store: SnapshotStore, damage: str) -> None:
    """verify() raises StorageCorruption for a flipped byte, a short or missing file, a file
    the checksum file does not list, or a missing directory."""
    snapshot = take(store, sid(1))
    state = snapshot.directory / "state.msgpack"
    if damage == "flip":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x01
        state.write_bytes(bytes(data))
    elif damage == "truncate":
        os.truncate(state, 5)
    elif damage == "delete":
        state.unlink()
    elif damage == "extra":
        (snapshot.directory / "stray").write_bytes(b"")
    else:
        shutil.rmtree(snapshot.directory)
    with pytest.raises(StorageCorruption):
        snapshot.verify()
    with pytest.raises(StorageCorruption):
        load_snapshot_dir(snapshot.directory).verify()


def test_a_damaged_checksum_file_is_corruption(store: SnapshotStore, snapshots_dir: Path) -> None:
    """A checksum file that fails its own crc32c stops open() loudly instead of silently
    dropping a complete snapshot."""
    snapshot = take(store, sid(1))
    data = snapshot.checksum_file.read_bytes()
    # still valid, consistent JSON: only the crc32c trailer can tell
    damaged = data.replace(b'"lastFollowupEventPosition":12', b'"lastFollowupEventPosition":13')
    assert damaged != data
    snapshot.checksum_file.write_bytes(damaged)
    with pytest.raises(StorageCorruption):
        SnapshotStore.open(snapshots_dir)
    with pytest.raises(StorageCorruption):
        load_snapshot_dir(snapshot.directory)
    assert snapshot.directory.exists()


def test_kill_9_during_persists_leaves_a_verifiable_latest_snapshot(tmp_path: Path) -> None:
    """A process persisting snapshots in a loop and killed with SIGKILL at an arbitrary
    moment leaves a store whose latest snapshot is at least the last one it reported and
    verifies; all leftovers are removed at open."""
    script = """
import sys
from pathlib import Path
from storage.snapshots import SnapshotId, SnapshotStore
store = SnapshotStore.open(Path(sys.argv[1]))
index = 0
while True:
    index += 1
    pending = store.begin(SnapshotId(index, 1, index, 0), index)
    for name in ("a", "b", "c"):
        pending.write_file(name, [bytes([index % 256]) * 3000] * 5)
    store.persist(pending)
    print(index, flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "snapshots")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert writer.stdout is not None
    persisted = 0
    for _ in range(40):
        line = writer.stdout.readline()
        assert line, "the writer died"
        persisted = int(line)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    store = SnapshotStore.open(tmp_path / "snapshots")
    latest = store.latest()
    assert latest is not None and latest.id.index >= persisted
    latest.verify()
    assert all(not name.startswith("pending-") for name in names(tmp_path / "snapshots"))


# -- restore and read-only use ----------------------------------------------------------------


def backup_copy(snapshot: Snapshot, target: Path) -> tuple[Path, Path]:
    """Lay out a snapshot as a backup does: its files and its checksum file in one folder."""
    shutil.copytree(snapshot.directory, target)
    shutil.copy(snapshot.checksum_file, target / snapshot.checksum_file.name)
    return target, target / snapshot.checksum_file.name


def test_install_puts_a_copied_snapshot_in_place(store: SnapshotStore, tmp_path: Path) -> None:
    """install() checks a snapshot laid out elsewhere against its checksum file and makes it
    a complete snapshot of the store, with the same id, files and metadata."""
    original = take(store, sid(7), last_followup=75)
    source, checksum_file = backup_copy(original, tmp_path / "download" / "snapshot")
    target = SnapshotStore.open(tmp_path / "restored" / "snapshots")
    installed = target.install(source, checksum_file)
    assert installed.id == original.id
    assert installed.files == original.files
    assert installed.last_followup_event_position == 75 and installed.extra == original.extra
    assert installed.directory == target.directory / "7-1-70-0"
    assert installed.checksum_file.read_bytes() == original.checksum_file.read_bytes()
    installed.verify()
    assert SnapshotStore.open(target.directory).latest() == installed
    assert target.install(source, checksum_file) == installed  # already there


@pytest.mark.parametrize("damage", ["flip", "missing", "checksum"])
def test_install_refuses_a_damaged_copy(store: SnapshotStore, tmp_path: Path, damage: str) -> None:
    """A copy whose files do not match the checksum file (or whose checksum file is
    damaged) is refused with StorageCorruption, and nothing is left in the store."""
    original = take(store, sid(7))
    source, checksum_file = backup_copy(original, tmp_path / "download")
    if damage == "flip":
        data = bytearray((source / "state.msgpack").read_bytes())
        data[0] ^= 0xFF
        (source / "state.msgpack").write_bytes(bytes(data))
    elif damage == "missing":
        (source / "meta").unlink()
    else:
        content = checksum_file.read_bytes().replace(b'"term":1', b'"term":2')
        checksum_file.write_bytes(content)
    target = SnapshotStore.open(tmp_path / "restored")
    with pytest.raises(StorageCorruption):
        target.install(source, checksum_file)
    assert target.latest() is None
    assert names(target.directory) == []


def test_install_below_a_newer_snapshot_is_refused(store: SnapshotStore, tmp_path: Path) -> None:
    """install() into a store that already holds a newer snapshot raises InvalidState."""
    old = take(store, sid(1))
    source, checksum_file = backup_copy(old, tmp_path / "download")
    newer = take(store, sid(2))
    with pytest.raises(InvalidState):
        store.install(source, checksum_file)
    assert store.all() == [newer]


def test_read_only_use_changes_nothing(snapshots_dir: Path) -> None:
    """A read-only store and load_snapshot_dir() list and describe complete snapshots while
    leaving every file, including incomplete leftovers, exactly as it was."""
    store = SnapshotStore.open(snapshots_dir)
    snapshot = take(store, sid(1))
    (snapshots_dir / "2-1-20-0").mkdir()
    (snapshots_dir / "pending-3-1-30-0-x").mkdir()
    before = names(snapshots_dir)
    reader = SnapshotStore.open(snapshots_dir, read_only=True)
    assert reader.all() == [snapshot]
    with pytest.raises(InvalidState):
        reader.begin(sid(4), 42)
    assert load_snapshot_dir(snapshot.directory) == snapshot
    assert names(snapshots_dir) == before
    with pytest.raises(FileNotFoundError):
        SnapshotStore.open(snapshots_dir.parent / "missing", read_only=True)
    assert not (snapshots_dir.parent / "missing").exists()


def test_the_checksum_file_is_readable_json_with_a_crc_trailer(store: SnapshotStore) -> None:
    """The checksum file is one JSON line with the metadata and per-file checksums, then a
    crc32c line, so an operator (or a verifier in another language) can read it."""
    snapshot = take(store, sid(2), last_followup=25)
    body, trailer, end = snapshot.checksum_file.read_bytes().split(b"\n")
    assert trailer.startswith(b"crc32c ") and end == b""
    content = json.loads(body)
    assert content["snapshotId"] == "2-1-20-0"
    assert content["processedPosition"] == 20 and content["lastFollowupEventPosition"] == 25
    assert content["files"]["meta"] == {"size": 1, "crc32c": snapshot.files["meta"].crc32c}
