"""The S3 backup store, on obstore (Rust ``object_store`` under an asyncio API).

Layout (REFERENCE §4): ``[basePath/]<p>/<c>/<n>/manifest.json``, ``.../snapshot/<file>``,
``.../segments/<file>``. obstore's store ``prefix`` carries the base path, so every key below is
relative to it.

- **Manifest compare-and-swap.** Creation is a conditional put (``If-None-Match: *``, obstore
  ``mode="create"``), so two savers cannot both create and a COMPLETED manifest is never
  overwritten. Updates (IN_PROGRESS -> COMPLETED/FAILED, COMPLETED -> FAILED on delete) are
  conditional on the ETag read (``If-Match``); S3 (since 2024) and moto support both, and a
  deleted manifest fails ``If-Match`` with 404, which is a conflict too.
- **Uploads.** A file up to ``multipart_part_bytes`` (after compression) is one PUT; a bigger one
  streams as a multipart upload with ``multipart_part_bytes`` parts, at most
  ``PART_CONCURRENCY_MAX`` parts in flight per file and ``transfer_concurrency_max`` files at a
  time, so memory stays below about files x (parts + 1) x part size.
- **Deadlines.** ``api_call_timeout_s`` (Zeebe's ``apiCallTimeout``: one API call, retries
  included) is enforced by ``asyncio.timeout`` around each awaited call, so an unreachable or
  hanging endpoint fails an operation within it instead of hanging the broker; streams are
  bounded per page/chunk. Inside, obstore's per-request ``timeout`` is the same, and it stops
  retrying after ``RETRY_SHARE`` of it, so that a refused connection surfaces as "cannot
  connect" rather than as a bare timeout.
- **Listing** pages through ``ListObjectsV2`` (1,000 keys per page) under the narrowest prefix
  the wildcard allows; a checkpoint-id prefix starts the listing right at it (``start-after``)
  and stops at the first key past it (S3 lists keys in UTF-8 binary order). Only manifests are
  downloaded.
- **Delete** lists the backup's prefix page by page and bulk-deletes each page (DeleteObjects,
  1,000 keys per request), then lists again to catch objects a racing upload added.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import timedelta
from typing import TYPE_CHECKING, Final, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from storage.backup.api import BackupIdentifier, BackupIdentifierWildcard
from storage.backup.base import (
    COMPRESSION_MIN_BYTES,
    COPY_CHUNK_BYTES,
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
    gather_bounded,
    manifest_key,
    metadata_key,
    parse_manifest_key,
    utc_now,
)
from storage.backup.config import S3StoreConfig
from zeebe_sim.ground.errors import BackupStoreError, ConfigError
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.tasks import in_thread

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ClientConfig, RetryConfig, S3Config

# S3 returns at most 1,000 keys per ListObjectsV2 page.
LIST_PAGE_KEYS: Final = 1000
# Manifests downloaded at once by list(): enough to hide latency, few enough to be polite.
MANIFEST_READ_CONCURRENCY_MAX: Final = 32
# Parts of one multipart upload in flight at once.
PART_CONCURRENCY_MAX: Final = 2
# Connecting never needs long; a dead endpoint should fail fast and be retried.
CONNECT_TIMEOUT_MAX_S: Final = 10.0
RETRIES_MAX: Final = 10
# obstore stops retrying after this share of the API call timeout (see "Deadlines").
RETRY_SHARE: Final = 0.75
# Rounds of list-and-delete before giving up on a prefix that keeps getting new objects.
DELETE_ROUNDS_MAX: Final = 3
DEFAULT_REGION: Final = "us-east-1"
# Cut obstore's multi-line error texts to this many characters in messages.
_REASON_CHARS_MAX: Final = 300

_XML_CODE: Final = re.compile(r"<Code>([^<]+)</Code>")
_AUTH_CODES: Final = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthorizationHeaderMalformed",
    }
)

T = TypeVar("T")


class _S3Backend:
    def __init__(self, config: S3StoreConfig) -> None:
        self._config = config
        self._timeout_s = config.api_call_timeout_s
        where = f"s3://{config.bucket_name}/{config.base_path or ''}"
        self.description = f"S3 backup store {where}" + (
            f" at {config.endpoint}" if config.endpoint else ""
        )
        timeout_s = config.api_call_timeout_s
        client_options: ClientConfig = {
            "timeout": timedelta(seconds=timeout_s),
            "connect_timeout": timedelta(seconds=min(timeout_s / 2, CONNECT_TIMEOUT_MAX_S)),
        }
        if config.endpoint is not None and config.endpoint.startswith("http://"):
            client_options["allow_http"] = True
        retry_config: RetryConfig = {
            "max_retries": RETRIES_MAX,
            # The last retry starts before RETRY_SHARE + 1/8 of the deadline has passed.
            "retry_timeout": timedelta(seconds=timeout_s * RETRY_SHARE),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=min(15.0, timeout_s / 8)),
                "base": 2,
            },
        }
        s3_config: S3Config = {
            "region": config.region or DEFAULT_REGION,
            "virtual_hosted_style_request": not config.force_path_style_access,
        }
        if config.endpoint is not None:
            s3_config["endpoint"] = config.endpoint
        if config.access_key is not None and config.secret_key is not None:
            s3_config["access_key_id"] = config.access_key
            s3_config["secret_access_key"] = config.secret_key
        try:
            self.store = S3Store(
                config.bucket_name,
                prefix=config.base_path,
                config=s3_config,
                client_options=client_options,
                retry_config=retry_config,
            )
        except (BaseError, ValueError) as exc:
            raise ConfigError(
                f"Invalid S3 backup store configuration: {_first_line(exc)}"
            ) from None

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(
        self, what: str, op: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """Run one S3 operation under its deadline; map every failure to BackupStoreError."""
        timeout_s = timeout_s if timeout_s is not None else self._timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await op()
        except TimeoutError:
            raise BackupStoreError(
                f"{what} failed in the {self.description}: no answer within {timeout_s:g}s"
            ) from None
        except (BaseError, OSError) as exc:
            raise BackupStoreError(
                f"{what} failed in the {self.description}: {self._explain(exc)}"
            ) from exc

    def _explain(self, exc: BaseException) -> str:
        """One line saying what went wrong, from obstore's multi-line error text."""
        text = str(exc)
        code_match = _XML_CODE.search(text)
        code = code_match.group(1) if code_match else None
        if code == "NoSuchBucket":
            return f"the bucket {self._config.bucket_name!r} does not exist"
        if code in _AUTH_CODES or isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            return (
                f"access denied ({code or type(exc).__name__}): check the access key,"
                " secret key and the bucket's permissions"
            )
        if "error sending request" in text or "Connect" in text or "dns error" in text:
            return "cannot connect to the endpoint"
        if code is not None:
            return f"S3 error {code}: {_first_line(exc)}"
        return _first_line(exc)

    def _not_a_missing_bucket(self, exc: FileNotFoundError) -> None:
        # A GET on a missing bucket is a 404 too, which obstore reports as FileNotFoundError:
        # that must not read as "no such backup".
        if "NoSuchBucket" in str(exc):
            raise exc

    # -- manifests -------------------------------------------------------------------------------

    async def read_manifest(self, id: BackupIdentifier) -> tuple[bytes, Version] | None:
        key = manifest_key(id)

        async def op() -> tuple[bytes, Version] | None:
            try:
                result = await obstore.get_async(self.store, key)
            except FileNotFoundError as exc:
                self._not_a_missing_bucket(exc)
                return None
            data = bytes(await result.bytes_async())
            return data, Version(result.meta["e_tag"] or "")

        return await self._call(f"Reading the manifest of {id}", op)

    async def create_manifest(self, id: BackupIdentifier, data: bytes) -> Version:
        key = manifest_key(id)

        async def op() -> Version:
            try:
                result = await obstore.put_async(
                    self.store, key, data, mode="create", use_multipart=False
                )
            except (AlreadyExistsError, PreconditionError):
                raise ManifestConflict(key) from None
            return Version(result["e_tag"] or "")

        return await self._call(f"Creating the manifest of {id}", op)

    async def replace_manifest(
        self, id: BackupIdentifier, data: bytes, expected: Version
    ) -> Version:
        key = manifest_key(id)

        async def op() -> Version:
            try:
                result = await obstore.put_async(
                    self.store, key, data, mode={"e_tag": expected}, use_multipart=False
                )
            except (PreconditionError, AlreadyExistsError) as exc:
                raise ManifestConflict(key) from exc
            except FileNotFoundError as exc:
                self._not_a_missing_bucket(exc)
                raise ManifestConflict(key) from exc
            return Version(result["e_tag"] or "")

        return await self._call(f"Updating the manifest of {id}", op)

    async def delete_manifest(self, id: BackupIdentifier) -> None:
        key = manifest_key(id)
        await self._call(
            f"Deleting the manifest of {id}", lambda: obstore.delete_async(self.store, key)
        )

    async def list_manifests(
        self, wildcard: BackupIdentifierWildcard
    ) -> list[tuple[BackupIdentifier, bytes]]:
        what = "Listing backups"
        prefix = wildcard.checkpoint_prefix or None
        if wildcard.checkpoint_id is not None:
            prefix = f"{wildcard.checkpoint_id}/"  # one backup's keys only
        if wildcard.partition_id is not None:
            partitions: list[str | None] = [str(wildcard.partition_id)]
        elif prefix is not None:
            # A checkpoint prefix only narrows a listing inside one partition: find them first
            # (one delimiter listing, a handful of common prefixes).
            listing = await self._call(
                what, lambda: obstore.list_with_delimiter_async(self.store, None)
            )
            partitions = [p.rstrip("/") for p in listing["common_prefixes"]]
            partitions = [p for p in partitions if p is not None and p.isdigit()]
        else:
            partitions = [None]  # everything under the base path

        ids: list[BackupIdentifier] = []
        for partition in partitions:
            start = f"{partition}/{prefix}" if partition is not None and prefix else None
            async with aclosing(self._pages(what, partition, offset=start)) as pages:
                async for page in pages:
                    keys = [meta["path"] for meta in page]
                    if start is not None and keys and not keys[-1].startswith(start):
                        # Keys come sorted: past the first key outside the prefix nothing
                        # can match any more.
                        keys = [k for k in keys if k.startswith(start)]
                        ids += _matching(keys, wildcard)
                        break
                    ids += _matching(keys, wildcard)

        async def read(id: BackupIdentifier) -> tuple[BackupIdentifier, bytes] | None:
            found = await self.read_manifest(id)
            return None if found is None else (id, found[0])  # None: deleted since listed

        results = await gather_bounded([read(id) for id in ids], MANIFEST_READ_CONCURRENCY_MAX)
        return [r for r in results if r is not None]

    async def list_partition(
        self, partition_id: PartitionId, known_version: str | None
    ) -> tuple[str | None, list[tuple[BackupIdentifier, bytes]] | None]:
        # No cheap version of a bucket's listing: every call lists.
        return None, await self.list_manifests(BackupIdentifierWildcard(partition_id=partition_id))

    async def _pages(
        self, what: str, prefix: str | None, offset: str | None = None
    ) -> AsyncGenerator[Sequence[ObjectMeta], None]:
        """The pages of a listing, each page fetched under the deadline."""
        stream = obstore.list(self.store, prefix, offset=offset, chunk_size=LIST_PAGE_KEYS)

        async def next_page() -> Sequence[ObjectMeta] | None:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return None

        while (page := await self._call(what, next_page)) is not None:
            yield page

    # -- contents --------------------------------------------------------------------------------

    async def write_content(self, id: BackupIdentifier, source: ContentSource) -> None:
        key = content_key(id, source.kind, source.name)
        what = f"Uploading {source.kind} file {source.name} of {id}"
        chunks = source.achunks()
        try:
            await self._upload(key, what, source, chunks)
        finally:
            try:
                await chunks.aclose()
            except RuntimeError:
                pass  # still being iterated by an upload that was abandoned on timeout

    async def _upload(
        self, key: str, what: str, source: ContentSource, chunks: AsyncIterator[bytes]
    ) -> None:
        part_bytes = self._config.multipart_part_bytes
        # Read up to one part first: a file that fits is one plain PUT (multipart would cost
        # three requests), and we only know after compressing.
        head: list[bytes] = []
        head_bytes = 0
        exhausted = False
        while head_bytes <= part_bytes:
            chunk = await anext(chunks, None)
            if chunk is None:
                exhausted = True
                break
            head.append(chunk)
            head_bytes += len(chunk)
        if exhausted:
            data = b"".join(head)
            await self._call(
                what,
                lambda: obstore.put_async(self.store, key, data, use_multipart=False),
            )
            return

        source_error: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            try:
                for chunk in head:
                    yield chunk
                async for chunk in chunks:
                    yield chunk
            except BaseException as exc:
                source_error.append(exc)  # obstore would hide it behind its own error
                raise

        # Each part is one API call: the deadline scales with the number of parts.
        parts = math.ceil(source.ref.size_bytes / part_bytes) + 1
        try:
            await self._call(
                what,
                lambda: obstore.put_async(
                    self.store,
                    key,
                    body(),
                    use_multipart=True,
                    chunk_size=part_bytes,
                    max_concurrency=PART_CONCURRENCY_MAX,
                ),
                timeout_s=self._timeout_s * parts,
            )
        except BackupStoreError:
            if source_error:
                raise source_error[0] from None
            raise

    async def read_content(
        self, id: BackupIdentifier, kind: Kind, name: str, sink: ContentSink
    ) -> None:
        key = content_key(id, kind, name)
        what = f"Downloading {kind} file {name} of {id}"
        try:

            async def get() -> obstore.GetResult | None:
                try:
                    return await obstore.get_async(self.store, key)
                except FileNotFoundError as exc:
                    self._not_a_missing_bucket(exc)
                    return None

            result = await self._call(what, get)
            if result is None:
                raise sink.missing()
            stream = result.stream(min_chunk_size=COPY_CHUNK_BYTES)

            async def next_chunk() -> bytes | None:
                try:
                    return await stream.__anext__()
                except StopAsyncIteration:
                    return None

            while (chunk := await self._call(what, next_chunk)) is not None:
                await in_thread(sink.write, chunk)
            await in_thread(sink.finish)
        except BaseException:
            sink.abort()
            raise

    async def delete_contents(self, id: BackupIdentifier) -> None:
        what = f"Deleting the files of {id}"
        manifest = manifest_key(id)
        for _ in range(DELETE_ROUNDS_MAX):
            deleted = 0
            async with aclosing(self._pages(what, backup_prefix(id))) as pages:
                async for page in pages:
                    keys = [m["path"] for m in page if m["path"] != manifest]
                    if keys:
                        await self._call(what, _deleter(self.store, keys))
                        deleted += len(keys)
            if deleted == 0:
                return  # a listing found nothing left
        raise BackupStoreError(f"{what} failed in the {self.description}: objects keep appearing")

    # -- lifecycle -------------------------------------------------------------------------------

    # -- runtime metadata ------------------------------------------------------------------------

    async def read_metadata_slot(self, partition_id: PartitionId, slot: Slot) -> bytes | None:
        key = metadata_key(partition_id, slot)

        async def op() -> bytes | None:
            try:
                result = await obstore.get_async(self.store, key)
            except FileNotFoundError as exc:
                self._not_a_missing_bucket(exc)
                return None
            return bytes(await result.bytes_async())

        return await self._call(f"Reading the backup metadata of partition {partition_id}", op)

    async def write_metadata_slot(self, partition_id: PartitionId, slot: Slot, data: bytes) -> None:
        key = metadata_key(partition_id, slot)

        async def op() -> None:
            await obstore.put_async(self.store, key, data, use_multipart=False)

        await self._call(f"Writing the backup metadata of partition {partition_id}", op)

    async def check(self) -> None:
        async with aclosing(self._pages("Listing the bucket", None)) as pages:
            async for _ in pages:
                break

    async def close(self) -> None:
        pass  # obstore's connection pool goes with the store object


def _deleter(store: S3Store, keys: list[str]) -> Callable[[], Awaitable[None]]:
    return lambda: obstore.delete_async(store, keys)


def _matching(keys: list[str], wildcard: BackupIdentifierWildcard) -> list[BackupIdentifier]:
    ids = (parse_manifest_key(k) for k in keys)
    return [id for id in ids if id is not None and wildcard.matches(id)]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    if len(line) > _REASON_CHARS_MAX:
        line = line[: _REASON_CHARS_MAX - 3] + "..."
    return line


class S3BackupStore(ManifestBackupStore):
    """A :class:`~storage.backup.api.BackupStore` in an S3 (or S3-compatible) bucket."""

    def __init__(
        self,
        config: S3StoreConfig,
        *,
        compression_min_bytes: int = COMPRESSION_MIN_BYTES,
        now: Clock = utc_now,
    ) -> None:
        self.config = config
        super().__init__(
            _S3Backend(config),
            compression=config.compression,
            compression_min_bytes=compression_min_bytes,
            transfer_concurrency_max=config.transfer_concurrency_max,
            now=now,
            upload_delay_s=config.upload_delay_s,
        )

    async def check(self) -> None:
        """List the bucket once. Raises BackupStoreError with a one-line reason if the bucket
        is missing, the credentials are rejected or the endpoint cannot be reached within
        ``api_call_timeout_s``."""
        await super().check()
