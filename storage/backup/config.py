"""Backup store configuration, Zeebe's environment names for it, and opening a store.

Bad values raise :class:`~zeebe_sim.errors.ConfigError` with one line naming the setting (the
Zeebe environment variable, which is the name users know), so the CLI can print it and exit 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from zeebe_sim.errors import ConfigError

if TYPE_CHECKING:
    from storage.backup.api import BackupStore

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


def s3_config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``S3StoreConfig`` keyword arguments set in ``env`` (Zeebe's variable names).

    Unset or empty variables are left out, so the result can be layered over other sources.
    ``..._COMPRESSION`` is ``zstd`` or ``none``; ``..._FORCEPATHSTYLEACCESS`` true/false;
    ``..._APICALLTIMEOUT`` an ISO-8601 duration (``PT180S``, ``PT3M``), a number of seconds, or
    ``500ms``/``30s``/``3m``/``1h``. Raises ConfigError naming the variable.
    """
    out: dict[str, Any] = {}
    for field, suffix in _FIELD_TO_ENV_SUFFIX.items():
        name = S3_ENV_PREFIX + suffix
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        if field == "compression":
            if value.lower() == "none":
                out[field] = None
            elif value.lower() == "zstd":
                out[field] = "zstd"
            else:
                raise ConfigError(f"{name} must be zstd or none, got {raw!r}")
        elif field == "force_path_style_access":
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{name} must be true or false, got {raw!r}")
            out[field] = value.lower() == "true"
        elif field == "api_call_timeout_s":
            try:
                out[field] = parse_duration_s(value)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        elif field == "base_path":
            out[field] = value.strip("/") or None
        else:
            out[field] = value
    return out


_ISO_DURATION: Final = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
_SIMPLE_DURATION: Final = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?", re.IGNORECASE)
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration_s(text: str) -> float:
    """Seconds in ``text``: ISO-8601 (``PT180S``, ``PT1M30S``, ``P1D``), plain seconds
    (``180``, ``2.5``) or ``500ms``/``30s``/``3m``/``1h``. Raises ValueError if not positive."""
    text = text.strip()
    iso = _ISO_DURATION.fullmatch(text)
    if iso and any(iso.groupdict().values()) and not text.upper().endswith("T"):
        parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
        seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    else:
        simple = _SIMPLE_DURATION.fullmatch(text)
        if simple is None:
            raise ValueError(f"not a duration: {text!r} (use e.g. PT180S, 180 or 3m)")
        seconds = float(simple["n"]) * _UNIT_S[(simple["unit"] or "").lower()]
    if not seconds > 0:
        raise ValueError(f"must be positive, got {text!r}")
    return seconds


def open_store(config: FilesystemStoreConfig | S3StoreConfig) -> BackupStore:
    """The store ``config`` describes. Nothing is contacted yet: call ``check()`` for that.

    Raises ConfigError if the store cannot be built from the configuration.
    """
    if isinstance(config, FilesystemStoreConfig):
        from storage.backup.filesystem import FilesystemBackupStore

        return FilesystemBackupStore(config.base_path, compression=config.compression)
    # Imported here so that obstore (the optional "s3" extra) is only needed for S3.
    from storage.backup.s3 import S3BackupStore

    return S3BackupStore(config)
