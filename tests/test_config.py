"""Configuration precedence and validation (flags > environment > TOML > defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from broker.schedule import IntervalSchedule
from broker.scheduler import SchedulerConfig
from zeebe_sim.cli import main as cli_main
from zeebe_sim.config import (
    BACKUP_SETTINGS,
    SCHEDULER_SETTINGS,
    backup_store_config,
    load_toml,
    parse_duration_s,
    resolve,
    scheduler_config,
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


def test_replication_settings_by_flag_env_and_toml() -> None:
    """Replication factor (default 3, as Helm), election timeout and heartbeat come from Zeebe's
    environment names or the TOML file; a factor above the cluster size and a heartbeat not
    below half the election timeout are clear errors."""
    names = ["brokers", "replication-factor", "election-timeout", "heartbeat-interval"]
    assert resolve(names, {}, {}, {}) == {
        "brokers": 3,
        "replication-factor": 3,
        "election-timeout": 2.5,
        "heartbeat-interval": 0.25,
    }
    env = {
        "ZEEBE_BROKER_CLUSTER_REPLICATIONFACTOR": "1",
        "ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT": "500ms",
    }
    values = resolve(names, {}, env, {"heartbeat-interval": "100ms"})
    assert (values["replication-factor"], values["election-timeout"]) == (1, 0.5)
    assert values["heartbeat-interval"] == 0.1
    with pytest.raises(ConfigError, match="replication-factor: 3 is more than the 2 brokers"):
        resolve(names, {"brokers": "2"}, {}, {})
    with pytest.raises(ConfigError, match="election-timeout: must be more than twice"):
        resolve(names, {"election-timeout": "400ms", "heartbeat-interval": "200ms"}, {}, {})


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


def test_continuous_and_scheduled_backup_settings_from_both_environment_forms() -> None:
    """The 8.9 CAMUNDA_DATA_PRIMARYSTORAGE_BACKUP_* and the ZEEBE_BROKER_DATA_BACKUP_* names
    set the scheduler (the CAMUNDA form wins when both are set); TOML keys are the flag names."""
    env = {
        "ZEEBE_BROKER_DATA_BACKUP_CONTINUOUS": "true",
        "ZEEBE_BROKER_DATA_BACKUP_SCHEDULE": "0 0 * * * *",
        "CAMUNDA_DATA_PRIMARYSTORAGE_BACKUP_SCHEDULE": "PT2S",
        "CAMUNDA_DATA_PRIMARYSTORAGE_BACKUP_CHECKPOINTINTERVAL": "PT0.5S",
        "ZEEBE_BROKER_DATA_BACKUP_OFFSET": "1000",
        "CAMUNDA_DATA_PRIMARYSTORAGE_BACKUP_RETENTION_WINDOW": "PT10S",
        "ZEEBE_BROKER_DATA_BACKUP_RETENTION_CLEANUPSCHEDULE": "PT1S",
    }
    scheduler = scheduler_config(resolve(SCHEDULER_SETTINGS, {}, env, {}))
    assert scheduler == SchedulerConfig(
        continuous=True,
        schedule=IntervalSchedule(2000, "PT2S"),
        checkpoint_interval_ms=500,
        offset=1000,
        retention_window_ms=10_000,
        cleanup_schedule=IntervalSchedule(1000, "PT1S"),
    )
    assert scheduler.generates_ids and scheduler.retains
    toml = {"backup-schedule": "none", "backup-checkpoint-interval": "0"}
    quiet = scheduler_config(resolve(SCHEDULER_SETTINGS, {}, {}, toml))
    assert quiet == SchedulerConfig() and not quiet.generates_ids


def test_a_bad_schedule_is_one_line_and_exit_2() -> None:
    """An invalid schedule stops the broker before it starts, with Zeebe's message naming what
    was given, on one line, exit code 2."""
    result = CliRunner().invoke(
        cli_main,
        ["broker"],
        env={"ZEEBE_BROKER_DATA_BACKUP_SCHEDULE": "every hour"},
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert (
        "Invalid expression for schedule: must be one of CRON, ISO8601, NONE or AUTO. "
        "Given: every hour"
    ) in lines[0]
