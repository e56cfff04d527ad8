"""Filesystem-store specifics: Zeebe's exact on-disk layout, atomic manifests (no temp files
left, create-if-absent across processes), tidy deletes and a clear start-up check."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storage.backup import filesystem
from storage.backup.api import BackupIdentifierWildcard, FileRef, PartitionListing
from storage.backup.filesystem import FilesystemBackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import BackupStoreError
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.harness import eventually

from .kits import FilesystemKit, HeldSave, bid, make_backup, payload, small_backup


@pytest.fixture
def fs_kit(tmp_path_factory: pytest.TempPathFactory) -> FilesystemKit:
    return FilesystemKit(tmp_path_factory.mktemp("store"))


async def test_exact_on_disk_layout(fs_kit: FilesystemKit, tmp_path: Path) -> None:
    """Files land exactly where Zeebe puts them: manifests/<p>/<c>/<n>/manifest.json and
    contents/<p>/<c>/<n>/{snapshot,segments}/<file>, and nothing else."""
    store = fs_kit.open()
    await store.save(small_backup(tmp_path, bid(node=1, partition=2, checkpoint=17)))

    assert await fs_kit.stored_paths() == {
        "manifests/2/17/1/manifest.json",
        "contents/2/17/1/snapshot/CURRENT",
        "contents/2/17/1/snapshot/000003.sst",
        "contents/2/17/1/segments/1.log",
        "contents/2/17/1/segments/2.log",
    }
    assert (fs_kit.base / "contents/2/17/1/segments/1.log").read_bytes() == payload(5000, 1)


async def test_no_temp_files_are_left_behind(fs_kit: FilesystemKit, tmp_path: Path) -> None:
    """Manifests are written via temp files; after saves, failures, races, mark_failed and
    deletes no temp file remains anywhere."""
    store = fs_kit.open()
    await store.save(small_backup(tmp_path, bid(checkpoint=1)))
    await store.mark_failed(bid(checkpoint=2), "failed")
    failing = small_backup(tmp_path, bid(checkpoint=3))
    failing.segment_files["x.log"] = FileRef(tmp_path / "missing", 1)
    with pytest.raises(BackupStoreError):
        await store.save(failing)
    async with HeldSave(store, tmp_path, bid(checkpoint=4)):
        await store.mark_failed(bid(checkpoint=4), "raced")
    await asyncio.gather(
        *(store.save(small_backup(tmp_path, bid(checkpoint=5))) for _ in range(4)),
        return_exceptions=True,
    )
    await store.delete(bid(checkpoint=1))

    names = [p.name for p in fs_kit.base.rglob("*") if p.name != ".listing"]
    assert [n for n in names if n.startswith(".") or n.endswith(".tmp")] == []


async def test_delete_prunes_empty_directories(fs_kit: FilesystemKit, tmp_path: Path) -> None:
    """Deleting every backup leaves only the two roots and each partition's directory with its
    listing version (one per partition), so list() stays cheap after thousands of deletes."""
    store = fs_kit.open()
    ids = [bid(node=n, partition=p, checkpoint=c) for n in (0, 1) for p in (1, 2) for c in (7, 8)]
    for id in ids:
        await store.save(small_backup(tmp_path, id))
    for id in ids:
        await store.delete(id)
    assert fs_kit.directories() == {"manifests", "contents", "manifests/1", "manifests/2"}
    assert {p.name for p in (fs_kit.base / "manifests").rglob("*") if p.is_file()} == {".listing"}


async def test_stale_temp_file_from_a_killed_writer_is_harmless(
    fs_kit: FilesystemKit, tmp_path: Path
) -> None:
    """A temp manifest left by a process killed mid-write is ignored by status and list, and
    delete removes it with the backup."""
    store = fs_kit.open()
    id = bid()
    await store.save(small_backup(tmp_path, id))
    stale = fs_kit.base / "manifests/1/10/0/.manifest.json.0123abcd.tmp"
    stale.write_bytes(b'{"half": ')

    assert (await store.get_status(id)).status_code == BackupState.COMPLETED
    assert len(await store.list(BackupIdentifierWildcard())) == 1
    await store.delete(id)
    assert await fs_kit.stored_paths() == set()


async def test_list_ignores_foreign_entries(fs_kit: FilesystemKit, tmp_path: Path) -> None:
    """Stray files and non-numeric or non-canonical directory names under manifests/ are not
    backups and do not break listing."""
    store = fs_kit.open()
    await store.save(small_backup(tmp_path, bid()))
    for junk in ("manifests/notes", "manifests/1/abc", "manifests/01/10/0", "manifests/1/10/x"):
        (fs_kit.base / junk).mkdir(parents=True, exist_ok=True)
    (fs_kit.base / "manifests/README").write_text("hello")

    assert [s.id for s in await store.list(BackupIdentifierWildcard())] == [bid()]


def test_create_if_absent_holds_across_processes(fs_kit: FilesystemKit, tmp_path: Path) -> None:
    """Several broker processes saving the same backup id at once: exactly one wins, the others
    get AlreadyExists (the manifest is created with link(), which cannot overwrite)."""
    backup = make_backup(tmp_path, bid(), segments={"1.log": payload(100_000, seed=1)})
    source = backup.segment_files["1.log"].path
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from storage.backup.api import Backup, FileRef
        from storage.backup.filesystem import FilesystemBackupStore
        from tests.backup_store.kits import bid, descriptor
        from zeebe_sim.ground.errors import AlreadyExists

        async def main():
            store = FilesystemBackupStore(Path({str(fs_kit.base)!r}))
            backup = Backup(bid(), descriptor(None), {{}},
                            {{"1.log": FileRef(Path({str(source)!r}), 100_000)}})
            print("ready", flush=True)
            sys.stdin.readline()  # start together
            try:
                await store.save(backup)
                print("won")
            except AlreadyExists:
                print("lost")

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for p in processes:  # a barrier: everyone imported and waiting, then go
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in processes:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60)[0].strip() for p in processes]
    finally:
        for p in processes:  # never leave a child behind, even when an assertion failed
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(outputs) == ["lost", "lost", "lost", "won"]
    assert all(p.returncode == 0 for p in processes)


async def test_check_reports_an_unusable_base_path(tmp_path: Path) -> None:
    """A base path that cannot hold directories fails check() with one line naming it."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    store = FilesystemBackupStore(blocker / "backups")
    with pytest.raises(BackupStoreError) as raised:
        await store.check()
    assert str(blocker) in str(raised.value) and "\n" not in str(raised.value)

    await FilesystemBackupStore(tmp_path / "fresh").check()
    assert (tmp_path / "fresh" / "manifests").is_dir()


async def test_a_manifest_changed_by_hand_is_found_by_a_walk_off_the_request_path(
    fs_kit: FilesystemKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest overwritten by hand changes neither the listing's token nor its partition
    directory: a listing due to be walked again is answered at once as it was, the walk runs
    in the background, and the listings after it show the change (here: unreadable, FAILED)."""
    monkeypatch.setattr(filesystem, "LISTING_REUSE_MAX_S", 0.0)
    store = fs_kit.open()
    await store.save(small_backup(tmp_path, bid()))
    listing = await store.partition_listing(PartitionId(1))
    assert [s.status_code for s in listing.statuses] == [BackupState.COMPLETED]
    (fs_kit.base / fs_kit.manifest_path(bid())).write_bytes(b"overwritten by hand")

    assert await store.partition_listing(PartitionId(1)) is listing

    async def changed() -> PartitionListing | None:
        again = await store.partition_listing(PartitionId(1))
        return again if again.version != listing.version else None

    walked = await eventually(changed, timeout_s=30)
    assert [s.status_code for s in walked.statuses] == [BackupState.FAILED]


async def test_a_listing_after_a_change_reads_what_the_journal_names(
    fs_kit: FilesystemKit, tmp_path: Path
) -> None:
    """A change through another store (another broker) is in the partition's journal: the
    next listing reads just the manifests it names and shows the change; a manifest
    overwritten by hand meanwhile, which only a walk finds, is not read yet. A backup's
    directory removed by hand between two changes breaks the journal's chain of directory
    mtimes: the whole partition is walked, and the removal and the overwrite are seen."""
    reader, writer = fs_kit.open(), fs_kit.open()
    for c in (10, 11, 12):
        await writer.save(small_backup(tmp_path / str(c), bid(checkpoint=c), seed=c))
    await reader.partition_listing(PartitionId(1))
    (fs_kit.base / fs_kit.manifest_path(bid(checkpoint=10))).write_bytes(b"overwritten by hand")
    await writer.save(small_backup(tmp_path / "13", bid(checkpoint=13), seed=13))

    listing = await reader.partition_listing(PartitionId(1))
    assert [(s.id.checkpoint_id, s.status_code) for s in listing.statuses] == [
        (c, BackupState.COMPLETED) for c in (10, 11, 12, 13)
    ]

    shutil.rmtree(fs_kit.base / "manifests/1/11")
    await writer.delete(bid(checkpoint=12))
    listing = await reader.partition_listing(PartitionId(1))
    assert [(s.id.checkpoint_id, s.status_code) for s in listing.statuses] == [
        (10, BackupState.FAILED),
        (13, BackupState.COMPLETED),
    ]


async def test_the_journal_keeps_its_newest_lines(
    fs_kit: FilesystemKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing journal is cut to its newer half when full: it stays well-formed, a
    listing that follows every change reads only what it names, and a listing further
    behind than the journal reaches walks the partition and is right as well."""
    monkeypatch.setattr(filesystem, "_JOURNAL_LINES_MAX", 4)
    near, far, writer = fs_kit.open(), fs_kit.open(), fs_kit.open()
    await far.partition_listing(PartitionId(1))
    for c in range(1, 8):
        await writer.save(small_backup(tmp_path / str(c), bid(checkpoint=c), seed=c))
        listing = await near.partition_listing(PartitionId(1))
        assert [s.id.checkpoint_id for s in listing.statuses] == list(range(1, c + 1))
    journal = (fs_kit.base / "manifests/1/.listing").read_text("ascii")
    assert "\0" not in journal and len(journal.split()) <= 5 * 4
    listing = await far.partition_listing(PartitionId(1))
    assert [s.id.checkpoint_id for s in listing.statuses] == list(range(1, 8))
