"""Backup store configuration, Zeebe's environment names for it, and opening a store.

Bad values raise :class:`~zeebe_sim.ground.errors.ConfigError` with one line naming the setting (the
Zeebe environment variable, which is the name users know), so the CLI can print it and exit 2.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Final

import attrs

from zeebe_sim.ground.errors import ConfigError

S3_ENV_PREFIX: Final = "ZEEBE_BROKER_DATA_BACKUP_S3_"
# S3's smallest allowed multipart part (all but the last part).
S3_PART_BYTES_MIN: Final = 5 * 1024 * 1024
S3_PART_BYTES_DEFAULT: Final = 8 * 1024 * 1024
S3_TRANSFER_CONCURRENCY_DEFAULT: Final = 8


def _env(field: str) -> str:
    """The Zeebe environment variable for an S3StoreConfig field (used in error messages)."""
    return S3_ENV_PREFIX + _FIELD_TO_ENV_SUFFIX.get(field, field.upper())


@attrs.frozen
class FilesystemStoreConfig:
    """Zeebe's ``ZEEBE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH`` store, plus zstd compression."""

    base_path: Path
    compression: bool = False
    upload_delay_s: float = 0.0  # fault injection: see ManifestBackupStore

    def __attrs_post_init__(self) -> None:
        if not str(self.base_path).strip():
            raise ConfigError("ZEEBE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH must name a directory")


@attrs.frozen
class S3StoreConfig:
    """Zeebe's S3 backup store settings (``ZEEBE_BROKER_DATA_BACKUP_S3_*``).

    ``access_key``/``secret_key`` unset: the AWS default credential sources (environment,
    instance metadata). ``compression``: ``"zstd"`` or ``None``. ``api_call_timeout_s`` bounds
    every S3 request including its retries (Zeebe's ``apiCallTimeout``, default 180 s). The last
    two fields are zeebe-sim tuning knobs, not Zeebe settings.
    """

    bucket_name: str
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = attrs.field(default=None, repr=False)
    base_path: str | None = None
    compression: str | None = None
    force_path_style_access: bool = False
    api_call_timeout_s: float = 180.0
    multipart_part_bytes: int = S3_PART_BYTES_DEFAULT
    transfer_concurrency_max: int = S3_TRANSFER_CONCURRENCY_DEFAULT
    upload_delay_s: float = 0.0  # fault injection: see ManifestBackupStore

    def __attrs_post_init__(self) -> None:
        if not _BUCKET.fullmatch(self.bucket_name):
            raise ConfigError(
                f"{_env('bucket_name')} must be a valid S3 bucket name (3-63 characters:"
                f" lowercase letters, digits, dots and dashes), got {self.bucket_name!r}"
            )
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise ConfigError(
                f"{_env('endpoint')} must be an http:// or https:// URL, got {self.endpoint!r}"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise ConfigError(f"{_env('access_key')} and {_env('secret_key')} must be set together")
        if self.base_path is not None and (
            not self.base_path or self.base_path != self.base_path.strip("/")
        ):
            raise ConfigError(
                f"{_env('base_path')} must not be empty or start or end with '/',"
                f" got {self.base_path!r}"
            )
        if self.compression is not None and self.compression != "zstd":
            raise ConfigError(
                f"{_env('compression')} must be zstd or none, got {self.compression!r}"
            )
        if not (math.isfinite(self.api_call_timeout_s) and self.api_call_timeout_s > 0):
            raise ConfigError(f"{_env('api_call_timeout_s')} must be a positive duration")
        if self.multipart_part_bytes < S3_PART_BYTES_MIN:
            raise ConfigError(
                f"the S3 multipart part size must be at least {S3_PART_BYTES_MIN} bytes"
            )
        if self.transfer_concurrency_max < 1:
            raise ConfigError("the S3 transfer concurrency must be at least 1")


_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

_FIELD_TO_ENV_SUFFIX: Final = {
    "bucket_name": "BUCKETNAME",
    "endpoint": "ENDPOINT",
    "region": "REGION",
    "access_key": "ACCESSKEY",
    "secret_key": "SECRETKEY",
    "base_path": "BASEPATH",
    "compression": "COMPRESSION",
    "force_path_style_access": "FORCEPATHSTYLEACCESS",
    "api_call_timeout_s": "APICALLTIMEOUT",
}
