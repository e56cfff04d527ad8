"""S3-specific behaviour of the S3 backup store, against a real moto server: key layout, large
deletes and listings (pagination), multipart uploads, and failing fast (never hanging) when the
endpoint is unreachable, hangs, lacks the bucket, rejects the credentials or dies mid-save."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import obstore
import pytest

from storage.backup.api import BackupIdentifierWildcard, FileRef
from storage.backup.manifest import Manifest, encode_manifest
from storage.backup.s3 import S3BackupStore
from zeebe_sim.ground.backups import BackupState
from zeebe_sim.ground.errors import BackupStoreError
from zeebe_sim.ground.ids import PartitionId

from .kits import (
    S3_ACCESS_KEY,
    S3_BASE_PATH,
    S3_SECRET_KEY,
    FakeClock,
    HeldSave,
    S3Kit,
    TcpProxy,
    bid,
    blackhole,
    closed_port_endpoint,
    make_backup,
    payload,
    small_backup,
)

# Short deadlines for the failure tests, and the slack allowed on top for scheduling.
SHORT_TIMEOUT_S = 1.0
SLACK_S = 1.5


def boto_client(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )


async def test_keys_follow_zeebes_layout_under_the_base_path(s3_kit: S3Kit, tmp_path: Path) -> None:
    """Objects are ``<basePath>/<p>/<c>/<n>/manifest.json``, ``.../snapshot/<file>`` and
    ``.../segments/<file>``, as in Zeebe."""
    store = s3_kit.open()
    await store.save(small_backup(tmp_path, bid(node=1, partition=2, checkpoint=17)))

    listing = boto_client(s3_kit.endpoint).list_objects_v2(Bucket=s3_kit.bucket)  # type: ignore[attr-defined]
    assert {o["Key"] for o in listing["Contents"]} == {
        f"{S3_BASE_PATH}/2/17/1/manifest.json",
        f"{S3_BASE_PATH}/2/17/1/snapshot/CURRENT",
        f"{S3_BASE_PATH}/2/17/1/snapshot/000003.sst",
        f"{S3_BASE_PATH}/2/17/1/segments/1.log",
        f"{S3_BASE_PATH}/2/17/1/segments/2.log",
    }


async def test_store_without_base_path_uses_the_bucket_root(s3_kit: S3Kit, tmp_path: Path) -> None:
    """With no base path the layout starts at the bucket root."""
    store = S3BackupStore(s3_kit.config(base_path=None))
    try:
        await store.save(small_backup(tmp_path, bid(node=0, partition=1, checkpoint=3)))
        assert (await store.get_status(bid(node=0, partition=1, checkpoint=3))).status_code == (
            BackupState.COMPLETED
        )
    finally:
        await store.close()
    listing = boto_client(s3_kit.endpoint).list_objects_v2(Bucket=s3_kit.bucket)  # type: ignore[attr-defined]
    assert "1/3/0/manifest.json" in {o["Key"] for o in listing["Contents"]}


async def test_delete_removes_more_than_a_thousand_objects(s3_kit: S3Kit, tmp_path: Path) -> None:
    """A backup with more objects than one listing page / one DeleteObjects call (1,000) is
    deleted completely."""
    store = s3_kit.open(transfer_concurrency_max=32)
    id = bid()
    segments = {f"{i}.log": i.to_bytes(4, "big") for i in range(1, 1_101)}
    await store.save(make_backup(tmp_path, id, segments=segments))
    assert len(await s3_kit.stored_paths()) == 1_101

    await store.delete(id)

    assert await s3_kit.stored_paths() == set()
    assert (await store.get_status(id)).status_code == BackupState.DOES_NOT_EXIST


async def test_large_file_goes_up_as_a_multipart_upload(s3_kit: S3Kit, tmp_path: Path) -> None:
    """A file larger than the part size is uploaded in parts (12 MiB / 5 MiB parts = 3 parts,
    visible in the S3 ETag) and restores byte-identical."""
    part_bytes = 5 * 1024 * 1024
    store = s3_kit.open(multipart_part_bytes=part_bytes)
    id = bid()
    big = payload(12 * 1024 * 1024, seed=12)
    await store.save(make_backup(tmp_path, id, segments={"1.log": big, "2.log": b"small"}))

    big_meta = await obstore.head_async(s3_kit.raw, s3_kit.content_path(id, "segments", "1.log"))
    small_meta = await obstore.head_async(s3_kit.raw, s3_kit.content_path(id, "segments", "2.log"))
    assert big_meta["e_tag"] is not None and big_meta["e_tag"].strip('"').endswith("-3")
    assert small_meta["e_tag"] is not None and "-" not in small_meta["e_tag"]

    restored = await store.restore(id, tmp_path / "restore")
    assert restored.segment_files[0].read_bytes() == big


async def test_listing_thousands_of_backups_pages_through_them(s3_kit: S3Kit) -> None:
    """With more manifests than one listing page, list() finds all of them (and skips content
    objects); a partition + prefix wildcard returns exactly its own."""
    store = s3_kit.open()
    clock = FakeClock()
    ids = [
        bid(node=n, partition=p, checkpoint=c)
        for n in (0, 1)
        for p in (1, 2)
        for c in range(1, 301)
    ]
    limit = asyncio.Semaphore(32)

    async def put(path: str, data: bytes) -> None:
        async with limit:
            await s3_kit.write_raw(path, data)

    await asyncio.gather(
        *(
            put(s3_kit.manifest_path(id), encode_manifest(Manifest.failed_new(id, "x", clock())))
            for id in ids
        ),
        *(put(s3_kit.content_path(id, "segments", "1.log"), b"z") for id in ids[:50]),
    )
    assert len(await s3_kit.stored_paths()) == 1_250

    everything = await store.list(BackupIdentifierWildcard())
    assert len(everything) == 1_200
    assert {s.id for s in everything} == set(ids)

    narrow = await store.list(
        BackupIdentifierWildcard(partition_id=PartitionId(2), checkpoint_prefix="29")
    )
    assert sorted({s.id.checkpoint_id for s in narrow}) == [29, *range(290, 300)]
    assert {s.id.node_id for s in narrow} == {0, 1}

    across_partitions = await store.list(BackupIdentifierWildcard(checkpoint_prefix="300"))
    assert len(across_partitions) == 4


async def test_unreachable_endpoint_fails_within_the_timeout(s3_kit: S3Kit, tmp_path: Path) -> None:
    """Nothing listening at the endpoint: check() and every operation raise BackupStoreError
    with a one-line reason within the API call timeout, instead of retrying for minutes."""
    store = S3BackupStore(
        s3_kit.config(endpoint=closed_port_endpoint(), api_call_timeout_s=SHORT_TIMEOUT_S)
    )
    try:
        backup = small_backup(tmp_path, bid())
        for operation in (
            store.check,
            lambda: store.get_status(bid()),
            lambda: store.save(backup),
        ):
            started = time.monotonic()
            with pytest.raises(BackupStoreError) as raised:
                await operation()
            assert time.monotonic() - started < SHORT_TIMEOUT_S + SLACK_S
            assert "\n" not in str(raised.value)
            assert "cannot connect to the endpoint" in str(raised.value)
    finally:
        await store.close()


async def test_endpoint_that_never_answers_fails_within_the_timeout(
    s3_kit: S3Kit, tmp_path: Path
) -> None:
    """An endpoint that accepts connections but never answers (a hung server) fails check() and
    a save within the API call timeout."""
    async with blackhole() as endpoint:
        store = S3BackupStore(s3_kit.config(endpoint=endpoint, api_call_timeout_s=SHORT_TIMEOUT_S))
        try:
            started = time.monotonic()
            with pytest.raises(BackupStoreError, match="no answer within 1s"):
                await store.check()
            assert time.monotonic() - started < SHORT_TIMEOUT_S + SLACK_S

            started = time.monotonic()
            with pytest.raises(BackupStoreError):
                await store.save(small_backup(tmp_path, bid()))
            assert time.monotonic() - started < SHORT_TIMEOUT_S + SLACK_S
        finally:
            await store.close()


async def test_missing_bucket_is_reported_clearly(s3_kit: S3Kit) -> None:
    """check() on a bucket that does not exist names the problem in one line; a status read
    raises too, rather than claiming the backup does not exist."""
    store = S3BackupStore(s3_kit.config(bucket_name="no-such-bucket-here"))
    try:
        with pytest.raises(BackupStoreError, match="bucket 'no-such-bucket-here' does not exist"):
            await store.check()
        with pytest.raises(BackupStoreError, match="does not exist"):
            await store.get_status(bid())
    finally:
        await store.close()


async def test_rejected_credentials_are_reported_clearly(s3_kit: S3Kit) -> None:
    """When S3 rejects the credentials, check() says so in one line."""
    reset_auth = f"{s3_kit.endpoint}/moto-api/reset-auth"

    def set_auth(actions_without_auth: str) -> None:
        request = urllib.request.Request(
            reset_auth,
            data=actions_without_auth.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form type would hide the body from moto
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    store = S3BackupStore(s3_kit.config(access_key="AKIAWRONG", secret_key="wrong"))
    await asyncio.to_thread(set_auth, "0")  # from now on moto checks credentials
    try:
        with pytest.raises(BackupStoreError, match="access denied") as raised:
            await store.check()
        assert "\n" not in str(raised.value)
    finally:
        await asyncio.to_thread(set_auth, "inf")
        await store.close()


async def test_server_stopping_mid_save_fails_it_in_time_and_never_completes(
    s3_kit: S3Kit, tmp_path: Path
) -> None:
    """The S3 server dies while a save uploads: the save raises within the timeouts (one for the
    upload, one for the attempt to record FAILED) and, once the server is back on the same
    port, the backup is not COMPLETED; it can then be failed and deleted cleanly."""
    host, port = s3_kit.endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    store = S3BackupStore(
        s3_kit.config(endpoint=proxy.endpoint, api_call_timeout_s=SHORT_TIMEOUT_S)
    )
    id = bid()
    try:
        async with HeldSave(store, tmp_path, id) as held:
            await proxy.stop()
            started = time.monotonic()
            error = await held.outcome()
            elapsed = time.monotonic() - started
        assert isinstance(error, BackupStoreError)
        assert elapsed < 2 * SHORT_TIMEOUT_S + SLACK_S

        await proxy.start()  # same port: the server is back, with its data
        status = await store.get_status(id)
        assert status.status_code == BackupState.IN_PROGRESS  # stuck, never COMPLETED

        assert await store.mark_failed(id, "Backup is cancelled due to restart.") == (
            BackupState.FAILED
        )
        await store.delete(id)
        assert await s3_kit.stored_paths() == set()
    finally:
        await store.close()
        await proxy.stop()


async def test_large_file_that_is_shorter_than_claimed_fails_with_our_reason(
    s3_kit: S3Kit, tmp_path: Path
) -> None:
    """A source error in the middle of a multipart upload fails the save with the source's own
    reason (not obstore's), the backup is FAILED, and no incomplete multipart upload is left."""
    store = s3_kit.open(multipart_part_bytes=5 * 1024 * 1024)
    id = bid()
    path = tmp_path / "1.log"
    path.write_bytes(payload(7 * 1024 * 1024, seed=3))
    backup = make_backup(tmp_path, id, segments={"2.log": b"x"})
    backup.segment_files["1.log"] = FileRef(path, 9 * 1024 * 1024)

    with pytest.raises(BackupStoreError, match="fewer than the 9437184 to back up"):
        await store.save(backup)
    status = await store.get_status(id)
    assert status.status_code == BackupState.FAILED
    assert status.failure_reason is not None and "fewer than" in status.failure_reason
    uploads = boto_client(s3_kit.endpoint).list_multipart_uploads(Bucket=s3_kit.bucket)  # type: ignore[attr-defined]
    assert not uploads.get("Uploads"), "the failed multipart upload was not aborted"
