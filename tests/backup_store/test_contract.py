"""The backup-store contract: every store (memory, filesystem, S3 on a real moto server) must
pass every test here. These are Zeebe's backup-store testkit rules plus zeebe-sim's own
(REFERENCE §4, §8)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from pathlib import Path

import pytest

from storage.backup.api import (
    Backup,
    BackupIdentifier,
    BackupIdentifierWildcard,
    FileRef,
    RuntimeMetadata,
)
from zeebe_sim.ground.backups import BackupState, CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import AlreadyExists, BackupStoreError, InvalidState, StorageCorruption
from zeebe_sim.ground.ids import BackupId, NodeId, PartitionId

from .kits import (
    FakeClock,
    HeldSave,
    StoreKit,
    bid,
    descriptor,
    make_backup,
    payload,
    small_backup,
)

# -- save and status ------------------------------------------------------------------------------


async def test_save_then_status_is_completed_with_descriptor(kit: StoreKit, tmp_path: Path) -> None:
    """A saved backup is COMPLETED, carries its descriptor and UTC timestamps."""
    clock = FakeClock()
    store = kit.open(now=clock)
    id = bid(node=1, partition=2, checkpoint=17)
    await store.save(small_backup(tmp_path, id))

    status = await store.get_status(id)
    assert status.status_code == BackupState.COMPLETED
    assert status.id == id
    assert status.descriptor == descriptor()
    assert status.failure_reason is None
    assert status.created_at is not None and status.last_modified is not None
    assert status.created_at.tzinfo == UTC
    assert status.created_at < status.last_modified <= clock.now


async def test_status_of_absent_backup_is_does_not_exist(kit: StoreKit) -> None:
    """Asking for a backup that was never taken is an answer, not an error."""
    store = kit.open()
    status = await store.get_status(bid())
    assert status.status_code == BackupState.DOES_NOT_EXIST
    assert status.descriptor is None and status.created_at is None


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED", "IN_PROGRESS"])
async def test_saving_an_existing_backup_fails(kit: StoreKit, tmp_path: Path, state: str) -> None:
    """A second save of the same id fails with AlreadyExists whatever state the first is in, and
    leaves the first untouched."""
    store = kit.open()
    id = bid()
    async with HeldSave(store, tmp_path, id) as held:
        if state == "FAILED":
            await store.mark_failed(id, "first attempt failed")
        before = await store.get_status(id)
        if state == "COMPLETED":
            await held.outcome()
            before = await store.get_status(id)
        assert before.status_code.name == state

        with pytest.raises(AlreadyExists):
            await store.save(small_backup(tmp_path, id, seed=5))
        assert await store.get_status(id) == before


async def test_completed_backup_is_never_overwritten(kit: StoreKit, tmp_path: Path) -> None:
    """After a COMPLETED save, saving other content under the same id fails and the restored
    bytes are still the first ones."""
    store = kit.open()
    id = bid()
    first = make_backup(tmp_path, id, segments={"1.log": payload(2000, seed=1)})
    await store.save(first)
    status = await store.get_status(id)

    second = make_backup(tmp_path, id, segments={"1.log": payload(2000, seed=2)})
    with pytest.raises(AlreadyExists):
        await store.save(second)

    assert await store.get_status(id) == status
    restored = await store.restore(id, tmp_path / "restore")
    assert restored.segment_files[0].read_bytes() == payload(2000, seed=1)


async def test_concurrent_saves_of_one_id_let_exactly_one_win(
    kit: StoreKit, tmp_path: Path
) -> None:
    """Two saves racing for one id: one completes, the other gets AlreadyExists."""
    store_a, store_b = kit.open(), kit.open()
    id = bid()
    results = await asyncio.gather(
        store_a.save(small_backup(tmp_path, id, seed=1)),
        store_b.save(small_backup(tmp_path, id, seed=2)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "NoneType"]
    assert (await store_a.get_status(id)).status_code == BackupState.COMPLETED


async def test_missing_source_file_fails_the_save(kit: StoreKit, tmp_path: Path) -> None:
    """A file that does not exist fails the save: it raises, and the backup is FAILED with a
    reason naming the file."""
    store = kit.open()
    id = bid()
    backup = small_backup(tmp_path, id)
    missing = tmp_path / "gone.log"
    backup.segment_files["3.log"] = FileRef(missing, 10)

    with pytest.raises(BackupStoreError) as raised:
        await store.save(backup)

    status = await store.get_status(id)
    assert status.status_code == BackupState.FAILED
    assert status.failure_reason is not None and str(missing) in status.failure_reason
    assert str(missing) in str(raised.value)
    assert "\n" not in status.failure_reason


async def test_source_file_shorter_than_its_size_fails_the_save(
    kit: StoreKit, tmp_path: Path
) -> None:
    """A file with fewer bytes than the backup must hold (truncated under us) fails the save."""
    store = kit.open()
    id = bid()
    path = tmp_path / "short.log"
    path.write_bytes(b"x" * 100)
    backup = Backup(id, descriptor(None), {}, {"1.log": FileRef(path, 101)})

    with pytest.raises(BackupStoreError, match="fewer than the 101"):
        await store.save(backup)
    assert (await store.get_status(id)).status_code == BackupState.FAILED


async def test_invalid_file_name_fails_the_save(kit: StoreKit, tmp_path: Path) -> None:
    """A file name that is not a single path component cannot escape the backup's folder: the
    save fails and nothing is written outside the backup."""
    store = kit.open()
    id = bid()
    backup = small_backup(tmp_path, id)
    backup.segment_files["../../escape"] = backup.segment_files["1.log"]
    with pytest.raises(BackupStoreError, match="invalid backup file name"):
        await store.save(backup)
    assert (await store.get_status(id)).status_code == BackupState.FAILED
    assert not any("escape" in p for p in await kit.stored_paths())


async def test_size_bytes_truncation_is_honoured(kit: StoreKit, tmp_path: Path) -> None:
    """Only the first ``size_bytes`` of a file are stored, even if it has grown since."""
    store = kit.open()
    id = bid()
    path = tmp_path / "active.log"
    path.write_bytes(payload(10_000, seed=3))
    backup = Backup(id, descriptor(None), {}, {"9.log": FileRef(path, 6_000)})
    await store.save(backup)

    restored = await store.restore(id, tmp_path / "restore")
    assert restored.segment_files == [tmp_path / "restore" / "segments" / "9.log"]
    assert restored.segment_files[0].read_bytes() == payload(10_000, seed=3)[:6_000]


# -- list ------------------------------------------------------------------------------------------


async def test_list_by_wildcard(kit: StoreKit, tmp_path: Path) -> None:
    """list() filters by node, partition and checkpoint-id prefix (decimal), in any
    combination, and returns the statuses sorted by checkpoint, partition, node."""
    store = kit.open()
    ids = [
        bid(node=n, partition=p, checkpoint=c)
        for n in (0, 1)
        for p in (1, 2)
        for c in (1, 17, 170, 1712, 18, 2)
    ]
    await asyncio.gather(*(store.mark_failed(id, "made for listing") for id in ids[1:]))
    await store.save(small_backup(tmp_path, ids[0]))

    def expect(
        node: int | None, partition: int | None, prefix: str | None
    ) -> list[tuple[int, ...]]:
        chosen = [
            id
            for id in ids
            if (node is None or id.node_id == node)
            and (partition is None or id.partition_id == partition)
            and (prefix is None or str(id.checkpoint_id).startswith(prefix))
        ]
        return sorted((id.checkpoint_id, id.partition_id, id.node_id) for id in chosen)

    cases = [
        (None, None, None),
        (1, None, None),
        (None, 2, None),
        (None, None, "17"),
        (None, None, "1"),
        (0, 1, "17"),
        (None, 2, "2"),
        (1, 1, "999"),
    ]
    for node, partition, prefix in cases:
        wildcard = BackupIdentifierWildcard(
            node_id=None if node is None else NodeId(node),
            partition_id=None if partition is None else PartitionId(partition),
            checkpoint_prefix=prefix,
        )
        statuses = await store.list(wildcard)
        got = [(s.id.checkpoint_id, s.id.partition_id, s.id.node_id) for s in statuses]
        assert got == expect(node, partition, prefix), wildcard

    everything = {s.id: s.status_code for s in await store.list(BackupIdentifierWildcard())}
    assert everything[ids[0]] == BackupState.COMPLETED
    assert everything[ids[1]] == BackupState.FAILED


async def test_list_many_backups(kit: StoreKit) -> None:
    """Hundreds of backups list correctly, and a narrow prefix returns only its own."""
    store = kit.open()
    ids = [bid(node=0, partition=p, checkpoint=c) for p in (1, 2, 3) for c in range(1, 121)]
    limit = asyncio.Semaphore(32)

    async def create(id: BackupIdentifier) -> None:
        async with limit:
            await store.mark_failed(id, "bulk")

    await asyncio.gather(*(create(id) for id in ids))

    statuses = await store.list(BackupIdentifierWildcard())
    assert [s.id for s in statuses] == sorted(
        ids, key=lambda i: (i.checkpoint_id, i.partition_id, i.node_id)
    )
    narrow = await store.list(
        BackupIdentifierWildcard(partition_id=PartitionId(2), checkpoint_prefix="11")
    )
    assert [s.id.checkpoint_id for s in narrow] == [
        11,
        110,
        111,
        112,
        113,
        114,
        115,
        116,
        117,
        118,
        119,
    ]


# -- delete ---------------------------------------------------------------------------------------


async def test_delete_removes_everything(kit: StoreKit, tmp_path: Path) -> None:
    """Delete removes the manifest and every content file from the underlying medium."""
    store = kit.open()
    id = bid(node=1, partition=3, checkpoint=5)
    other = bid(node=1, partition=3, checkpoint=50)
    await store.save(small_backup(tmp_path, id))
    await store.save(small_backup(tmp_path, other))
    only_other = {p for p in await kit.stored_paths() if "/50/" in p}
    assert len(only_other) == 5  # manifest + 2 snapshot files + 2 segments

    await store.delete(id)

    assert (await store.get_status(id)).status_code == BackupState.DOES_NOT_EXIST
    assert await kit.stored_paths() == only_other
    assert (await store.get_status(other)).status_code == BackupState.COMPLETED


async def test_delete_of_absent_backup_is_a_no_op(kit: StoreKit) -> None:
    """Deleting what does not exist succeeds and leaves nothing behind."""
    store = kit.open()
    await store.delete(bid())
    await store.delete(bid())
    assert await kit.stored_paths() == set()


async def test_delete_of_in_progress_backup_is_refused(kit: StoreKit, tmp_path: Path) -> None:
    """An IN_PROGRESS backup cannot be deleted (InvalidState); it stays IN_PROGRESS."""
    store = kit.open()
    id = bid()
    async with HeldSave(store, tmp_path, id):
        with pytest.raises(InvalidState):
            await store.delete(id)
        assert (await store.get_status(id)).status_code == BackupState.IN_PROGRESS


async def test_delete_of_failed_backup_removes_it(kit: StoreKit, tmp_path: Path) -> None:
    """A FAILED backup (with files from the failed attempt) is deleted completely."""
    store = kit.open()
    id = bid()
    backup = small_backup(tmp_path, id)
    backup.segment_files["3.log"] = FileRef(tmp_path / "gone.log", 10)
    with pytest.raises(BackupStoreError):
        await store.save(backup)
    assert (await store.get_status(id)).status_code == BackupState.FAILED

    await store.delete(id)
    assert await kit.stored_paths() == set()


# -- mark_failed ----------------------------------------------------------------------------------


async def test_mark_failed_of_absent_backup_creates_a_failed_one(kit: StoreKit) -> None:
    """mark_failed on nothing records a FAILED backup with the reason (and no descriptor)."""
    store = kit.open()
    id = bid()
    assert await store.mark_failed(id, "Backup is cancelled due to leader change.") == (
        BackupState.FAILED
    )
    status = await store.get_status(id)
    assert status.status_code == BackupState.FAILED
    assert status.failure_reason == "Backup is cancelled due to leader change."
    assert status.descriptor is None


async def test_mark_failed_of_in_progress_backup_fails_it(kit: StoreKit, tmp_path: Path) -> None:
    """mark_failed turns an IN_PROGRESS backup FAILED, keeping its descriptor."""
    store = kit.open()
    id = bid()
    async with HeldSave(store, tmp_path, id):
        assert await store.mark_failed(id, "restart") == BackupState.FAILED
        status = await store.get_status(id)
        assert status.status_code == BackupState.FAILED
        assert status.failure_reason == "restart"
        assert status.descriptor == descriptor(None)


async def test_mark_failed_leaves_completed_and_failed_backups_alone(
    kit: StoreKit, tmp_path: Path
) -> None:
    """A COMPLETED backup stays COMPLETED; a FAILED one keeps its first reason."""
    store = kit.open()
    done, failed = bid(checkpoint=1), bid(checkpoint=2)
    await store.save(small_backup(tmp_path, done))
    await store.mark_failed(failed, "first")
    before = await store.get_status(done)

    assert await store.mark_failed(done, "too late") == BackupState.COMPLETED
    assert await store.mark_failed(failed, "second") == BackupState.FAILED

    assert await store.get_status(done) == before
    assert (await store.get_status(failed)).failure_reason == "first"


# -- races with a running save ---------------------------------------------------------------------


async def test_mark_failed_during_save_wins(kit: StoreKit, tmp_path: Path) -> None:
    """A backup marked FAILED while its files upload never becomes COMPLETED: the save raises
    and the FAILED state and reason stay."""
    store = kit.open()
    id = bid()
    async with HeldSave(store, tmp_path, id) as held:
        await store.mark_failed(id, "Backup is cancelled due to leader change.")
        error = await held.outcome()

    assert isinstance(error, BackupStoreError)
    status = await store.get_status(id)
    assert status.status_code == BackupState.FAILED
    assert status.failure_reason == "Backup is cancelled due to leader change."


async def test_delete_during_save_wins_and_leaves_nothing(kit: StoreKit, tmp_path: Path) -> None:
    """The documented delete of a running backup (mark FAILED, then delete) wins over the
    upload: the save raises, the backup does not come back, and the files the upload wrote after
    the delete are removed too."""
    store = kit.open()
    id = bid()
    async with HeldSave(store, tmp_path, id) as held:
        await store.mark_failed(id, "The backup is going to be deleted.")
        await store.delete(id)
        error = await held.outcome()

    assert isinstance(error, BackupStoreError)
    assert "deleted" in str(error)
    assert (await store.get_status(id)).status_code == BackupState.DOES_NOT_EXIST
    assert await kit.stored_paths() == set()


# -- restore --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "zstd"])
async def test_restore_round_trip_is_byte_identical(
    kit: StoreKit, tmp_path: Path, compression: bool
) -> None:
    """Restore gives back exactly the saved bytes (empty, tiny, compressible, random and
    multi-chunk files), in snapshot/ and segments/, segments in the backup's order."""
    store = kit.open(compression=compression)
    id = bid()
    snapshot = {
        "CURRENT": b"MANIFEST-000004\n",
        "empty": b"",
        "000003.sst": payload(300_000, seed=4, compressible=True),
    }
    segments = {
        "2.log": payload(2_500_000, seed=5, compressible=True),
        "10.log": payload(1_200_000, seed=6),
        "3.log": payload(10, seed=7),
    }
    await store.save(make_backup(tmp_path, id, snapshot=snapshot, segments=segments))

    target = tmp_path / "restore"
    restored = await store.restore(id, target)

    assert restored.id == id
    assert restored.descriptor == descriptor()
    assert restored.snapshot_dir == target / "snapshot"
    assert {p.name: p.read_bytes() for p in (target / "snapshot").iterdir()} == snapshot
    assert restored.segment_files == [target / "segments" / n for n in segments]
    assert {p.name: p.read_bytes() for p in restored.segment_files} == segments

    stored = await kit.read_raw(kit.content_path(id, "segments", "2.log"))
    if compression:
        assert len(stored) < len(segments["2.log"]) // 2
    else:
        assert stored == segments["2.log"]


async def test_restore_of_log_only_backup_has_no_snapshot_dir(
    kit: StoreKit, tmp_path: Path
) -> None:
    """A backup without a snapshot restores only segments; snapshot_dir is None."""
    store = kit.open()
    id = bid()
    await store.save(make_backup(tmp_path, id, segments={"1.log": b"entries"}))
    restored = await store.restore(id, tmp_path / "restore")
    assert restored.snapshot_dir is None
    assert [p.read_bytes() for p in restored.segment_files] == [b"entries"]


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "zstd"])
async def test_restore_detects_a_corrupted_file(
    kit: StoreKit, tmp_path: Path, compression: bool
) -> None:
    """A flipped byte in a stored file fails the restore with StorageCorruption naming the
    file, and leaves no restored files behind."""
    store = kit.open(compression=compression)
    id = bid()
    await store.save(
        make_backup(
            tmp_path,
            id,
            snapshot={"000003.sst": payload(50_000, seed=8, compressible=True)},
            segments={"1.log": payload(80_000, seed=9, compressible=True)},
        )
    )
    await kit.corrupt(id, "segments", "1.log")

    target = tmp_path / "restore"
    with pytest.raises(StorageCorruption, match=r"1\.log"):
        await store.restore(id, target)
    assert [p for p in target.rglob("*") if p.is_file()] == []


async def test_restore_detects_a_missing_file(kit: StoreKit, tmp_path: Path) -> None:
    """A content file that vanished from the store fails the restore with StorageCorruption."""
    store = kit.open()
    id = bid()
    await store.save(small_backup(tmp_path, id))
    await kit.delete_raw(kit.content_path(id, "snapshot", "000003.sst"))

    with pytest.raises(StorageCorruption, match="missing"):
        await store.restore(id, tmp_path / "restore")


async def test_restore_of_a_backup_that_is_not_completed_fails(
    kit: StoreKit, tmp_path: Path
) -> None:
    """Only COMPLETED backups restore: absent, FAILED and IN_PROGRESS raise BackupStoreError."""
    store = kit.open()
    with pytest.raises(BackupStoreError, match="does not exist"):
        await store.restore(bid(checkpoint=1), tmp_path / "r1")
    await store.mark_failed(bid(checkpoint=2), "broken")
    with pytest.raises(BackupStoreError, match="FAILED"):
        await store.restore(bid(checkpoint=2), tmp_path / "r2")
    async with HeldSave(store, tmp_path, bid(checkpoint=3)):
        with pytest.raises(BackupStoreError, match="IN_PROGRESS"):
            await store.restore(bid(checkpoint=3), tmp_path / "r3")


# -- manifests ------------------------------------------------------------------------------------


async def test_manifest_records_checksums_sizes_and_compression(
    kit: StoreKit, tmp_path: Path
) -> None:
    """The stored manifest is Zeebe-shaped JSON with per-file size, crc32c of the original bytes
    and the compression used (small files stay uncompressed)."""
    import google_crc32c

    store = kit.open(compression=True)
    id = bid(node=2, partition=3, checkpoint=4)
    big = payload(100_000, seed=1, compressible=True)
    await store.save(make_backup(tmp_path, id, snapshot={"tiny": b"abc"}, segments={"1.log": big}))

    doc = json.loads(await kit.read_raw(kit.manifest_path(id)))
    assert doc["id"] == {"nodeId": 2, "partitionId": 3, "checkpointId": 4}
    assert doc["statusCode"] == "COMPLETED"
    assert doc["descriptor"] == {
        "snapshotId": "1-1-5-4",
        "checkpointPosition": 42,
        "numberOfPartitions": 3,
        "brokerVersion": "8.6.0-sim",
        "checkpointType": "MANUAL_BACKUP",
    }
    assert doc["snapshot"]["files"] == [
        {"name": "tiny", "size": 3, "crc32c": google_crc32c.value(b"abc")}
    ]
    assert doc["segments"]["files"] == [
        {
            "name": "1.log",
            "size": len(big),
            "crc32c": google_crc32c.value(big),
            "compression": "zstd",
        }
    ]
    assert doc["createdAt"].endswith("Z") and doc["modifiedAt"].endswith("Z")
    assert "failureReason" not in doc


async def test_unreadable_manifest_shows_as_failed_and_can_be_deleted(kit: StoreKit) -> None:
    """A corrupt manifest does not break status or list: it shows as FAILED with a reason, and
    delete removes it."""
    store = kit.open()
    id = bid()
    await kit.write_raw(kit.manifest_path(id), b"{not json")

    status = await store.get_status(id)
    assert status.status_code == BackupState.FAILED
    assert status.failure_reason is not None and "malformed" in status.failure_reason
    assert [s.id for s in await store.list(BackupIdentifierWildcard())] == [id]
    with pytest.raises(AlreadyExists):
        await store.save(Backup(id, descriptor(None), {}, {}))

    await store.delete(id)
    assert await kit.stored_paths() == set()


async def test_closed_store_refuses_calls(kit: StoreKit) -> None:
    """After close(), calls raise BackupStoreError instead of touching the medium."""
    store = kit.open()
    await store.close()
    with pytest.raises(BackupStoreError, match="closed"):
        await store.get_status(bid())


# -- runtime metadata (two alternating slots) -----------------------------------------------------


def _metadata(
    partition: int = 1, sequence: int = 0, ids: tuple[int, ...] = (5,)
) -> RuntimeMetadata:
    checkpoints = [
        CheckpointInfo(i, CheckpointType.SCHEDULED_BACKUP, 10 * i, 1000 + i, 10 * i - 5)
        for i in ids
    ]
    ranges = [(ids[0], ids[-1])] if ids else []
    return RuntimeMetadata(PartitionId(partition), sequence, 1234, checkpoints, ranges)


async def test_metadata_of_a_partition_never_written_is_none(kit: StoreKit) -> None:
    """Reading metadata nobody wrote is an answer (None), not an error."""
    store = kit.open()
    assert await store.read_metadata(PartitionId(1)) is None


async def test_metadata_round_trips_and_the_newest_write_wins(kit: StoreKit) -> None:
    """What was written last is read back whole; the sequence number grows with every write
    even when the writer passes a stale one; partitions are kept apart."""
    store = kit.open()
    await store.write_metadata(_metadata(ids=(5,)))
    await store.write_metadata(_metadata(ids=(5, 7)))
    await store.write_metadata(_metadata(ids=(5, 7, 9)))
    await store.write_metadata(_metadata(partition=2, ids=()))

    newest = await store.read_metadata(PartitionId(1))
    assert newest is not None
    assert [c.checkpoint_id for c in newest.checkpoints] == [5, 7, 9]
    assert newest.checkpoints[0] == _metadata(ids=(5,)).checkpoints[0]
    assert newest.ranges == [(5, 9)]
    assert newest.sequence_number == 2
    other = await store.read_metadata(PartitionId(2))
    assert other is not None and other.checkpoints == [] and other.ranges == []


async def test_metadata_alternates_slots_so_a_torn_write_keeps_the_previous(
    kit: StoreKit,
) -> None:
    """Consecutive writes go to slots a and b in turn; if the newest slot is torn (a crash
    mid-write), the reader falls back to the other, valid one."""
    store = kit.open()
    await store.write_metadata(_metadata(ids=(5,)))
    await store.write_metadata(_metadata(ids=(5, 7)))
    paths = {p for p in await kit.stored_paths() if p.startswith("metadata/")}
    assert paths == {"metadata/1/a.json", "metadata/1/b.json"}

    await kit.write_raw("metadata/1/b.json", b'{"partitionId": 1, "sequ')
    survivor = await store.read_metadata(PartitionId(1))
    assert survivor is not None and [c.checkpoint_id for c in survivor.checkpoints] == [5]

    # The next write replaces the torn slot, not the survivor.
    await store.write_metadata(_metadata(ids=(5, 7, 9)))
    newest = await store.read_metadata(PartitionId(1))
    assert newest is not None and newest.sequence_number == 1
    assert [c.checkpoint_id for c in newest.checkpoints] == [5, 7, 9]


async def test_metadata_does_not_show_up_as_a_backup(kit: StoreKit, tmp_path: Path) -> None:
    """The metadata objects are not manifests: listing backups does not see them."""
    store = kit.open()
    await store.save(small_backup(tmp_path, bid(partition=1, checkpoint=5)))
    await store.write_metadata(_metadata(ids=(5,)))
    listed = await store.list(BackupIdentifierWildcard())
    assert [s.id.checkpoint_id for s in listed] == [5]


async def test_a_backup_being_deleted_shows_deleted_and_a_repeated_delete_finishes_it(
    kit: StoreKit, tmp_path: Path
) -> None:
    """Delete demotes the manifest to DELETED before the files go (Zeebe 8.9's markDeleted):
    a delete interrupted there leaves a DELETED backup, which status and list show, which no
    save can overwrite, and which a repeated delete removes."""
    store = kit.open()
    id = bid()
    await store.save(small_backup(tmp_path, id))
    doc = json.loads(await kit.read_raw(kit.manifest_path(id)))
    doc["statusCode"] = "DELETED"  # what delete writes first
    await kit.write_raw(kit.manifest_path(id), json.dumps(doc).encode())

    assert (await store.get_status(id)).status_code == BackupState.DELETED
    listed = await store.list(BackupIdentifierWildcard())
    assert [s.status_code for s in listed] == [BackupState.DELETED]
    with pytest.raises(AlreadyExists):
        await store.save(small_backup(tmp_path, id, seed=3))
    assert await store.mark_failed(id, "too late") == BackupState.DELETED
    await store.delete(id)
    assert (await store.get_status(id)).status_code == BackupState.DOES_NOT_EXIST
    assert not {p for p in await kit.stored_paths() if not p.startswith("metadata/")}


async def test_a_listing_reflects_every_change_made_through_another_store(
    kit: StoreKit, tmp_path: Path
) -> None:
    """Two stores on one medium (two brokers): whatever one saves, fails or deletes, the other's
    next listing of the partition shows it, although listings are cached; while nothing
    changes the same listing (same version) is answered again."""
    reader, writer = kit.open(), kit.open()
    partition = PartitionId(1)
    assert (await reader.partition_listing(partition)).statuses == []
    for checkpoint in range(1, 6):
        await writer.save(small_backup(tmp_path, bid(checkpoint=checkpoint)))
        listed = await reader.list(BackupIdentifierWildcard(partition_id=partition))
        assert [s.id.checkpoint_id for s in listed] == list(range(1, checkpoint + 1))
    await writer.mark_failed(bid(checkpoint=6), "nobody took it")
    await writer.delete(bid(checkpoint=2))
    listing = await reader.partition_listing(partition)
    assert [(s.id.checkpoint_id, s.status_code.name) for s in listing.statuses] == [
        (1, "COMPLETED"),
        (3, "COMPLETED"),
        (4, "COMPLETED"),
        (5, "COMPLETED"),
        (6, "FAILED"),
    ]
    again = await reader.partition_listing(partition)
    assert again.statuses == listing.statuses
    if listing.version is not None:  # a store that can tell cheaply reuses its listing
        assert again is listing
    # A prefix and one exact id are answered from the same listing.
    prefixed = await reader.list(
        BackupIdentifierWildcard(partition_id=partition, checkpoint_prefix="4")
    )
    assert [s.id.checkpoint_id for s in prefixed] == [4]
    exact = await reader.list(
        BackupIdentifierWildcard(partition_id=partition, checkpoint_id=BackupId(5))
    )
    assert [s.id.checkpoint_id for s in exact] == [5]
