"""Configuration: every setting once, with its flag, its Zeebe environment names and a parser.

Precedence: command-line flags > environment (``ZEEBE_*`` names users know from Zeebe) > TOML
file (``--config``, keys are the flag names without dashes' leading ``--``) > defaults. A bad
value is a :class:`ConfigError` naming the setting; the CLI prints it on one line and exits 2.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from broker.disk import (
    FREE_SPACE_PROCESSING_BYTES_DEFAULT,
    FREE_SPACE_REPLICATION_BYTES_DEFAULT,
    MONITORING_INTERVAL_S_DEFAULT,
    DiskConfig,
)
from broker.schedule import Schedule, parse_schedule
from broker.scheduler import SchedulerConfig
from zeebe_sim.ground.errors import ConfigError

_ISO_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
_SIMPLE_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_SIZE = re.compile(r"(?P<n>\d+)\s*(?P<unit>b|kb|mb|gb|tb)?", re.IGNORECASE)
# Zeebe's sizes are Spring DataSizes: binary multiples (1KB = 1024 bytes), no unit = bytes.
_UNIT_BYTES = {"": 1, "b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


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


def parse_size_bytes(text: str) -> int:
    """Bytes in ``text``: a whole number with an optional unit, Zeebe's way (``2GB``, ``512MB``,
    ``64KB``, ``1024``; binary multiples). Raises ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 2GB, 512MB or a number of bytes)")
    return int(match["n"]) * _UNIT_BYTES[(match["unit"] or "").lower()]


def _size(low: int, high: int = 1 << 50) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a size")
        number = parse_size_bytes(str(value))
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high} bytes")
        return number

    return parse


def _int(low: int, high: int = 1 << 31) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        number = int(str(value).strip())
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _port(value: Any) -> int:
    return _int(0, 65535)(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _duration(value: Any) -> float:
    return parse_duration_s(str(value))


def _delay(value: Any) -> float:
    """A duration that may be zero (off)."""
    text = str(value).strip().lower()
    if text.rstrip("s").rstrip("m") in ("0", "0.0") or text in ("pt0s", ""):
        return 0.0
    return parse_duration_s(text)


def _schedule(value: Any) -> Schedule | None:
    return parse_schedule(str(value))


def _backup_env(*keys: str) -> tuple[str, ...]:
    """The environment names of a backup setting: the unified 8.9 form first, then Zeebe's
    broker form (reference backups-8.9-8.10.md A.2)."""
    suffix = "_".join(keys)
    return (f"CAMUNDA_DATA_PRIMARYSTORAGE_BACKUP_{suffix}", f"ZEEBE_BROKER_DATA_BACKUP_{suffix}")


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser()


def _addresses(value: Any) -> tuple[str, ...]:
    """host:port addresses: a repeated flag (a tuple) or a comma-separated string."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(item.strip() for item in items if item.strip())


def _text(value: Any) -> str:
    return str(value)


@attrs.frozen
class Setting:
    name: str  # the flag without its dashes, also the TOML key
    parse: Callable[[Any], Any]
    default: Any
    env: tuple[str, ...] = ()
    help: str = ""


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "brokers",
            _int(1, 64),
            3,
            ("ZEEBE_BROKER_CLUSTER_CLUSTERSIZE",),
            "number of broker processes",
        ),
        Setting(
            "partitions",
            _int(1, 128),
            3,
            ("ZEEBE_BROKER_CLUSTER_PARTITIONSCOUNT",),
            "number of partitions",
        ),
        Setting(
            "replication-factor",
            _int(1, 64),
            3,
            ("ZEEBE_BROKER_CLUSTER_REPLICATIONFACTOR",),
            "replicas of each partition (Raft; at most the number of brokers)",
        ),
        Setting(
            "election-timeout",
            _duration,
            2.5,
            ("ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT",),
            "Raft election timeout: a follower that hears no leader this long elects a new one",
        ),
        Setting(
            "heartbeat-interval",
            _duration,
            0.25,
            ("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL",),
            "Raft heartbeat interval of a leader (below half the election timeout)",
        ),
        Setting("node-id", _int(0, 63), 0, ("ZEEBE_BROKER_CLUSTER_NODEID",), "this broker's id"),
        Setting(
            "data-dir",
            _path,
            Path("./zeebe-data"),
            ("ZEEBE_BROKER_DATA_DIRECTORY",),
            "where brokers keep their partitions",
        ),
        Setting("host", _text, "127.0.0.1", ("ZEEBE_BROKER_NETWORK_HOST",), "address to listen on"),
        Setting(
            "broker-port",
            _port,
            26501,
            ("ZEEBE_BROKER_NETWORK_COMMANDAPI_PORT",),
            "broker n listens on this + 10*n (0: any free port)",
        ),
        Setting(
            "management-port",
            _port,
            9600,
            ("ZEEBE_GATEWAY_MONITORING_PORT",),
            "gateway management/actuator port (0: any free port)",
        ),
        Setting(
            "rest-port",
            _port,
            8080,
            ("ZEEBE_GATEWAY_REST_PORT",),
            "gateway REST API port (0: any free port)",
        ),
        Setting(
            "grpc-port",
            _port,
            26500,
            ("ZEEBE_GATEWAY_NETWORK_PORT",),
            "gateway gRPC API port, Zeebe's gateway protocol (0: any free port)",
        ),
        Setting(
            "contact-point",
            _addresses,
            (),
            ("ZEEBE_GATEWAY_CLUSTER_INITIALCONTACTPOINTS",),
            "host:port of a broker to learn the cluster from",
        ),
        Setting(
            "request-timeout",
            _duration,
            15.0,
            ("ZEEBE_GATEWAY_CLUSTER_REQUESTTIMEOUT",),
            "gateway request timeout",
        ),
        Setting(
            "snapshot-period",
            _duration,
            300.0,
            ("ZEEBE_BROKER_DATA_SNAPSHOTPERIOD",),
            "how often partitions take a snapshot",
        ),
        Setting(
            "segment-size",
            _size(4096, 1 << 30),
            64 * 1024 * 1024,
            ("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE",),
            "log segment size (bytes, or e.g. 64MB)",
        ),
        Setting(
            "disk-free-space-processing",
            _size(0),
            FREE_SPACE_PROCESSING_BYTES_DEFAULT,
            ("ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING",),
            "below this much free space on the data directory a broker refuses new commands and "
            "pauses processing (e.g. 2GB, Zeebe's default; zeebe-sim's is smaller, see README)",
        ),
        Setting(
            "disk-free-space-replication",
            _size(0),
            FREE_SPACE_REPLICATION_BYTES_DEFAULT,
            ("ZEEBE_BROKER_DATA_DISK_FREESPACE_REPLICATION",),
            "below this much free space a broker also refuses what other partitions send it "
            "(must be below disk-free-space-processing)",
        ),
        Setting(
            "disk-monitoring-interval",
            _duration,
            MONITORING_INTERVAL_S_DEFAULT,
            ("ZEEBE_BROKER_DATA_DISK_MONITORINGINTERVAL",),
            "how often the free disk space is checked",
        ),
        Setting(
            "disk-enable-monitoring",
            _bool,
            True,
            ("ZEEBE_BROKER_DATA_DISK_ENABLEMONITORING",),
            "check the free disk space (off: only a failed write pauses processing)",
        ),
        Setting(
            "retry-initial",
            _duration,
            10.0,
            (),
            "first retry delay of inter-partition commands (doubles up to retry-max)",
        ),
        Setting("retry-max", _duration, 300.0, (), "longest retry delay"),
        Setting(
            "backup-store",
            _choice("filesystem", "s3", "none"),
            "filesystem",
            ("ZEEBE_BROKER_DATA_BACKUP_STORE",),
            "where backups go",
        ),
        Setting(
            "backup-dir",
            _path,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_FILESYSTEM_BASEPATH",),
            "filesystem backup store base path (default <data-dir>/backups)",
        ),
        Setting(
            "backup-compression",
            _bool,
            False,
            (),
            "zstd-compress large backup files (filesystem store)",
        ),
        Setting(
            "backup-fanout-jitter",
            _delay,
            0.0,
            (),
            "TEACHING: the gateway sends each partition its part of a new backup after a random "
            "delay up to this long (requests reach partitions at different times in a real "
            "cluster)",
        ),
        Setting(
            "backup-upload-delay",
            _delay,
            0.0,
            (),
            "FAULT INJECTION: wait this long before uploading a backup's files, so that "
            "IN_PROGRESS backups can be observed, killed and deleted",
        ),
        Setting(
            "s3-bucket-name",
            _text,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_BUCKETNAME",),
            "S3 store: bucket",
        ),
        Setting(
            "s3-endpoint",
            _text,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_ENDPOINT",),
            "S3 store: endpoint URL (unset: AWS)",
        ),
        Setting(
            "s3-region", _text, None, ("ZEEBE_BROKER_DATA_BACKUP_S3_REGION",), "S3 store: region"
        ),
        Setting(
            "s3-access-key",
            _text,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_ACCESSKEY",),
            "S3 store: access key (unset: AWS default credentials)",
        ),
        Setting(
            "s3-secret-key",
            _text,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_SECRETKEY",),
            "S3 store: secret key",
        ),
        Setting(
            "s3-base-path",
            _text,
            None,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_BASEPATH",),
            "S3 store: key prefix",
        ),
        Setting(
            "s3-compression",
            _choice("zstd", "none"),
            "none",
            ("ZEEBE_BROKER_DATA_BACKUP_S3_COMPRESSION",),
            "S3 store: zstd or none",
        ),
        Setting(
            "s3-force-path-style-access",
            _bool,
            False,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS",),
            "S3 store: path-style URLs (needed by most S3-compatible servers)",
        ),
        Setting(
            "s3-api-call-timeout",
            _duration,
            180.0,
            ("ZEEBE_BROKER_DATA_BACKUP_S3_APICALLTIMEOUT",),
            "S3 store: bound on every S3 call",
        ),
        Setting(
            "backup-continuous",
            _bool,
            False,
            _backup_env("CONTINUOUS"),
            "continuous backups: keep every log segment not yet backed up and track backup ranges",
        ),
        Setting(
            "backup-schedule",
            _schedule,
            None,
            _backup_env("SCHEDULE"),
            "when to take backups: a Spring cron expression (6 fields), an ISO-8601 duration "
            "(PT1H), none or auto",
        ),
        Setting(
            "backup-checkpoint-interval",
            _delay,
            0.0,
            _backup_env("CHECKPOINTINTERVAL"),
            "interval of MARKER checkpoints (finer restore points, no backup; 0: none)",
        ),
        Setting(
            "backup-offset",
            _int(0, 1 << 62),
            0,
            _backup_env("OFFSET"),
            "added to generated backup ids (epoch milliseconds)",
        ),
        Setting(
            "backup-retention-window",
            _delay,
            0.0,
            _backup_env("RETENTION", "WINDOW"),
            "how far back (before the newest completed backup) backups are kept (0: forever)",
        ),
        Setting(
            "backup-retention-cleanup-schedule",
            _schedule,
            None,
            _backup_env("RETENTION", "CLEANUPSCHEDULE"),
            "how often retention runs: a cron expression, an ISO-8601 duration or none",
        ),
        Setting(
            "unsafe-no-checkpoint-propagation",
            _bool,
            False,
            (),
            "UNSAFE, for teaching: do not carry checkpoint ids on inter-partition commands",
        ),
        Setting(
            "log-level",
            _choice("debug", "info", "warning", "error"),
            "warning",
            ("ZEEBE_LOG_LEVEL",),
            "log level",
        ),
    )
}


def load_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc


def resolve(
    names: list[str],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    toml: Mapping[str, Any],
) -> dict[str, Any]:
    """The value of each named setting, by precedence flags > env > TOML > default.

    Raises:
        ConfigError: a value does not parse; the message names the setting and its source.
    """
    unknown = set(toml) - set(SETTINGS)
    if unknown:
        raise ConfigError(f"config: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in names:
        setting = SETTINGS[name]
        source, raw = "default", setting.default
        if flags.get(name) is not None:
            source, raw = f"--{name}", flags[name]
        elif any(e in env for e in setting.env):
            var = next(e for e in setting.env if e in env)
            source, raw = var, env[var]
        elif name in toml:
            source, raw = f"{name} (config file)", toml[name]
        if raw is None:
            values[name] = None
            continue
        try:
            values[name] = setting.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: invalid value {raw!r}: {exc}") from exc
    if all(name in values for name in DISK_SETTINGS):
        try:
            disk_config(values)
        except ValueError as exc:
            raise ConfigError(f"disk-free-space-processing: {exc}") from exc
    if "election-timeout" in values and "heartbeat-interval" in values:
        if not values["election-timeout"] > 2 * values["heartbeat-interval"]:
            raise ConfigError(
                "election-timeout: must be more than twice the heartbeat-interval "
                f"({values['heartbeat-interval']:g}s)"
            )
    if values.get("replication-factor", 1) > values.get("brokers", 64):
        raise ConfigError(
            f"replication-factor: {values['replication-factor']} is more than the "
            f"{values['brokers']} brokers"
        )
    return values


S3_SETTINGS = [name for name in SETTINGS if name.startswith("s3-")]
BACKUP_SETTINGS = [
    "backup-store",
    "backup-dir",
    "backup-compression",
    "backup-upload-delay",
    *S3_SETTINGS,
]
# The continuous and scheduled backup settings (reference backups-8.9-8.10.md A.2, A.5).
SCHEDULER_SETTINGS = [
    "backup-continuous",
    "backup-schedule",
    "backup-checkpoint-interval",
    "backup-offset",
    "backup-retention-window",
    "backup-retention-cleanup-schedule",
]
# Settings given in seconds (as floats) that a launcher passes on as "<n>s".
SECONDS_SETTINGS = {
    "s3-api-call-timeout",
    "backup-upload-delay",
    "backup-checkpoint-interval",
    "backup-retention-window",
}

DISK_SETTINGS = [name for name in SETTINGS if name.startswith("disk-")]


def scheduler_config(values: Mapping[str, Any]) -> SchedulerConfig:
    """The continuous and scheduled backup settings from resolved settings."""
    return SchedulerConfig(
        continuous=values["backup-continuous"],
        schedule=values["backup-schedule"],
        checkpoint_interval_ms=round(values["backup-checkpoint-interval"] * 1000),
        offset=values["backup-offset"],
        retention_window_ms=round(values["backup-retention-window"] * 1000),
        cleanup_schedule=values["backup-retention-cleanup-schedule"],
    )


def disk_config(values: Mapping[str, Any]) -> DiskConfig:
    """The broker's disk watermarks from resolved settings (checked by :func:`resolve`).

    Raises:
        ValueError: the processing threshold is not above the replication threshold.
    """
    return DiskConfig(
        free_space_processing_bytes=values["disk-free-space-processing"],
        free_space_replication_bytes=values["disk-free-space-replication"],
        monitoring_interval_s=values["disk-monitoring-interval"],
        enable_monitoring=values["disk-enable-monitoring"],
    )


def backup_store_config(values: Mapping[str, Any]) -> Any:
    """The broker's backup store configuration from resolved settings (None: no store).

    Raises:
        ConfigError: the S3 store is chosen without a bucket.
    """
    from storage.backup.config import FilesystemStoreConfig, S3StoreConfig

    store = values["backup-store"]
    if store == "none":
        return None
    if store == "filesystem":
        base = values["backup-dir"] or Path(values["data-dir"]) / "backups"
        return FilesystemStoreConfig(
            base_path=base,
            compression=values["backup-compression"],
            upload_delay_s=values["backup-upload-delay"],
        )
    if not values["s3-bucket-name"]:
        raise ConfigError(
            "s3-bucket-name: the S3 backup store needs a bucket "
            "(--s3-bucket-name or ZEEBE_BROKER_DATA_BACKUP_S3_BUCKETNAME)"
        )
    return S3StoreConfig(
        bucket_name=values["s3-bucket-name"],
        endpoint=values["s3-endpoint"],
        region=values["s3-region"],
        access_key=values["s3-access-key"],
        secret_key=values["s3-secret-key"],
        base_path=(values["s3-base-path"] or "").strip("/") or None,
        compression=None if values["s3-compression"] == "none" else "zstd",
        force_path_style_access=values["s3-force-path-style-access"],
        api_call_timeout_s=values["s3-api-call-timeout"],
        upload_delay_s=values["backup-upload-delay"],
    )
