"""Backup store configuration: Zeebe's environment names, duration formats, validation with
one-line errors naming the setting, and opening the configured store."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.backup.config import FilesystemStoreConfig, S3StoreConfig
from storage.backup.filesystem import FilesystemBackupStore
from storage.backup.open import open_store
from storage.backup.s3 import S3BackupStore
from zeebe_sim.config import BACKUP_SETTINGS, backup_store_config, parse_duration_s, resolve
from zeebe_sim.ground.errors import ConfigError

P = "ZEEBE_BROKER_DATA_BACKUP_S3_"


def s3_from_env(env: dict[str, str]) -> S3StoreConfig:
    """The S3 store configuration the CLI builds from Zeebe's environment names."""
    values = resolve(
        [*BACKUP_SETTINGS, "data-dir"], {}, {"ZEEBE_BROKER_DATA_BACKUP_STORE": "S3", **env}, {}
    )
    config = backup_store_config(values)
    assert isinstance(config, S3StoreConfig)
    return config


def test_env_names_map_to_config_fields() -> None:
    """Every Zeebe S3 variable is read into the S3StoreConfig."""
    env = {
        P + "BUCKETNAME": "zeebe-backups",
        P + "ENDPOINT": "http://localhost:9000",
        P + "REGION": "eu-west-1",
        P + "ACCESSKEY": "key",
        P + "SECRETKEY": "secret",
        P + "BASEPATH": "/cluster-a/",
        P + "COMPRESSION": "zstd",
        P + "FORCEPATHSTYLEACCESS": "TRUE",
        P + "APICALLTIMEOUT": "PT3M",
        "UNRELATED": "x",
    }
    assert s3_from_env(env) == S3StoreConfig(
        bucket_name="zeebe-backups",
        endpoint="http://localhost:9000",
        region="eu-west-1",
        access_key="key",
        secret_key="secret",
        base_path="cluster-a",
        compression="zstd",
        force_path_style_access=True,
        api_call_timeout_s=180.0,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT180S", 180.0),
        ("PT3M", 180.0),
        ("PT1M30.5S", 90.5),
        ("pt2h", 7200.0),
        ("P1D", 86400.0),
        ("P1DT1S", 86401.0),
        ("180", 180.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("3m", 180.0),
    ],
)
def test_api_call_timeout_formats(text: str, seconds: float) -> None:
    """ISO-8601 durations (Zeebe's apiCallTimeout), plain seconds and short units are read."""
    assert parse_duration_s(text) == seconds
    assert (
        s3_from_env({P + "BUCKETNAME": "zeebe", P + "APICALLTIMEOUT": text}).api_call_timeout_s
        == seconds
    )


@pytest.mark.parametrize("text", ["PT", "P", "P1DT", "abc", "-5", "0", "PT0S", "5 parsecs"])
def test_bad_api_call_timeout_names_the_variable(text: str) -> None:
    """A bad duration is a one-line ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=P + "APICALLTIMEOUT") as raised:
        s3_from_env({P + "BUCKETNAME": "zeebe", P + "APICALLTIMEOUT": text})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("COMPRESSION", "gzip"), ("FORCEPATHSTYLEACCESS", "yes please")],
)
def test_bad_choices_name_the_variable(name: str, value: str) -> None:
    """Values outside the allowed choices are a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=P + name):
        s3_from_env({P + "BUCKETNAME": "zeebe", P + name: value})


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"bucket_name": "Bad_Bucket"}, "BUCKETNAME"),
        ({"bucket_name": "ab"}, "BUCKETNAME"),
        ({"endpoint": "localhost:9000"}, "ENDPOINT"),
        ({"access_key": "only-the-key"}, "ACCESSKEY"),
        ({"base_path": "/abs"}, "BASEPATH"),
        ({"compression": "lz4"}, "COMPRESSION"),
        ({"api_call_timeout_s": 0.0}, "APICALLTIMEOUT"),
        ({"multipart_part_bytes": 1024}, "part size"),
    ],
)
def test_invalid_s3_config_is_refused(overrides: dict[str, object], setting: str) -> None:
    """Invalid settings are refused at construction with a message naming the setting."""
    values: dict[str, object] = {"bucket_name": "zeebe-backups", **overrides}
    with pytest.raises(ConfigError, match=setting):
        S3StoreConfig(**values)  # type: ignore[arg-type]


def test_secret_key_is_not_in_the_repr() -> None:
    """Logging a config does not leak the secret."""
    config = S3StoreConfig(bucket_name="zeebe-backups", access_key="k", secret_key="hunter2")
    assert "hunter2" not in repr(config)


async def test_open_store_builds_the_configured_store(tmp_path: Path) -> None:
    """open_store gives a filesystem or S3 store as configured, without contacting anything."""
    fs = open_store(FilesystemStoreConfig(tmp_path, compression=True))
    s3 = open_store(
        S3StoreConfig(bucket_name="zeebe-backups", endpoint="http://127.0.0.1:1", region="x")
    )
    assert isinstance(fs, FilesystemBackupStore)
    assert isinstance(s3, S3BackupStore)
    await fs.close()
    await s3.close()
