"""Configuration precedence and validation (flags > environment > TOML > defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeebe_sim.config import (
    BACKUP_SETTINGS,
    backup_store_config,
    load_toml,
    parse_duration_s,
    resolve,
)
from zeebe_sim.ground.errors import ConfigError

NAMES = ["brokers", "partitions", "snapshot-period", "data-dir", *BACKUP_SETTINGS]


def test_precedence_flags_over_env_over_toml_over_defaults() -> None:
    """Each setting comes from the first source that has it."""
    env = {"ZEEBE_BROKER_CLUSTER_CLUSTERSIZE": "5", "ZEEBE_BROKER_CLUSTER_PARTITIONSCOUNT": "7"}
    toml = {"brokers": 9, "partitions": 9, "snapshot-period": "10s"}
    values = resolve(NAMES, {"brokers": "2"}, env, toml)
    assert values["brokers"] == 2  # flag
    assert values["partitions"] == 7  # environment
    assert values["snapshot-period"] == 10.0  # TOML
    assert values["backup-store"] == "filesystem"  # default


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT5M", 300), ("30s", 30), ("500ms", 0.5), ("2", 2), ("1h", 3600), ("PT1M30S", 90)],
)
def test_durations(text: str, seconds: float) -> None:
    """Zeebe's ISO-8601 durations and short forms."""
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        ({"brokers": "zero"}, {}, "--brokers"),
        (
            {},
            {"ZEEBE_BROKER_CLUSTER_PARTITIONSCOUNT": "-1"},
            "ZEEBE_BROKER_CLUSTER_PARTITIONSCOUNT",
        ),
        ({"backup-store": "tape"}, {}, "--backup-store"),
        ({}, {"ZEEBE_BROKER_DATA_SNAPSHOTPERIOD": "soon"}, "ZEEBE_BROKER_DATA_SNAPSHOTPERIOD"),
    ],
)
def test_bad_values_name_their_setting(
    flags: dict[str, str], env: dict[str, str], named: str
) -> None:
    """The error names the flag or environment variable the bad value came from."""
    with pytest.raises(ConfigError, match=named):
        resolve(NAMES, flags, env, {})


def test_replication_is_refused_clearly() -> None:
    """Replication is not built: any factor but 1 is a clear configuration error."""
    with pytest.raises(ConfigError, match="replication-factor: only 1 is supported"):
        resolve(["replication-factor"], {}, {"ZEEBE_BROKER_CLUSTER_REPLICATIONFACTOR": "3"}, {})


def test_unknown_toml_keys_and_bad_toml_are_errors(tmp_path: Path) -> None:
    """A typo in the config file is an error, not silently ignored."""
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve(NAMES, {}, {}, {"brokerz": 3})
    bad = tmp_path / "bad.toml"
    bad.write_text("brokers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


def test_backup_store_from_zeebe_environment_names(tmp_path: Path) -> None:
    """ZEEBE_BROKER_DATA_BACKUP_* build the store; filesystem defaults under the data dir."""
    env = {
        "ZEEBE_BROKER_DATA_BACKUP_STORE": "S3",
        "ZEEBE_BROKER_DATA_BACKUP_S3_BUCKETNAME": "zeebe-backups",
        "ZEEBE_BROKER_DATA_BACKUP_S3_ENDPOINT": "http://127.0.0.1:9",
        "ZEEBE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS": "true",
        "ZEEBE_BROKER_DATA_BACKUP_S3_APICALLTIMEOUT": "PT3S",
        "ZEEBE_BROKER_DATA_BACKUP_S3_COMPRESSION": "zstd",
    }
    store = backup_store_config(resolve(NAMES, {}, env, {}))
    assert (store.bucket_name, store.endpoint, store.force_path_style_access) == (
        "zeebe-backups",
        "http://127.0.0.1:9",
        True,
    )
    assert (store.api_call_timeout_s, store.compression) == (3.0, "zstd")
    fs = backup_store_config(resolve(NAMES, {"data-dir": str(tmp_path)}, {}, {}))
    assert fs.base_path == tmp_path / "backups"
    assert backup_store_config(resolve(NAMES, {"backup-store": "none"}, {}, {})) is None
    with pytest.raises(ConfigError, match="needs a bucket"):
        backup_store_config(resolve(NAMES, {"backup-store": "s3"}, {}, {}))
