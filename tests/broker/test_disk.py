"""The disk watermarks: the decision, its shell with a fake clock and reader, and the settings
with Zeebe's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.disk import MIB, DiskConfig, DiskMonitor, DiskVerdict, WriteFailure, decide
from zeebe_sim.config import DISK_SETTINGS, disk_config, parse_size_bytes, resolve
from zeebe_sim.ground.errors import ConfigError

CONFIG = DiskConfig(
    free_space_processing_bytes=200 * MIB,
    free_space_replication_bytes=100 * MIB,
    monitoring_interval_s=1.0,
)


@pytest.mark.parametrize(
    ("free_mib", "processing", "receiving"),
    [
        (1000, True, True),
        (200, True, True),  # exactly the threshold is enough
        (199, False, True),
        (100, False, True),
        (99, False, False),
        (0, False, False),
    ],
)
def test_thresholds_decide_processing_and_receiving(
    free_mib: int, processing: bool, receiving: bool
) -> None:
    """Below the processing threshold commands are refused; below the (lower) replication
    threshold what other partitions send is refused too."""
    verdict = decide(CONFIG, free_mib * MIB, None, now_ms=0)
    assert (verdict.processing_refusal is None) is processing
    assert (verdict.receive_refusal is None) is receiving
    assert verdict.ok is (processing and receiving)


def test_refusal_names_free_space_threshold_and_setting() -> None:
    """The reason says how much is free, what is needed and which setting asks for it."""
    verdict = decide(CONFIG, 50 * MIB, None, now_ms=0, directory="/data")
    assert verdict.processing_refusal is not None and verdict.receive_refusal is not None
    assert "50.0MB free on /data" in verdict.processing_refusal
    assert "200.0MB" in verdict.processing_refusal
    assert "ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING" in verdict.processing_refusal
    assert "ZEEBE_BROKER_DATA_DISK_FREESPACE_REPLICATION" in verdict.receive_refusal


def test_a_failed_write_pauses_processing_for_one_interval() -> None:
    """A write that failed refuses processing even when the reading looks fine (or there is
    none: monitoring off), for one monitoring interval; then it is tried again."""
    failure = WriteFailure("the disk is full", at_ms=10_000)
    for reading in (1000 * MIB, None):
        assert decide(CONFIG, reading, failure, now_ms=10_000).processing_refusal == (
            "the disk is full"
        )
        assert decide(CONFIG, reading, failure, now_ms=10_999).processing_refusal is not None
        assert decide(CONFIG, reading, failure, now_ms=11_000) == DiskVerdict()
    # a low reading keeps refusing after the interval, with its own reason
    late = decide(CONFIG, 10 * MIB, failure, now_ms=20_000)
    assert late.processing_refusal is not None and "10.0MB free" in late.processing_refusal


def test_without_a_reading_nothing_is_refused() -> None:
    """Monitoring off (no reading) and no failed write: everything is allowed."""
    assert decide(CONFIG, None, None, now_ms=0) == DiskVerdict()


def test_processing_threshold_must_be_above_replication_threshold() -> None:
    """As in Zeebe: processing stops before receiving does."""
    with pytest.raises(ValueError, match="must be greater"):
        DiskConfig(free_space_processing_bytes=MIB, free_space_replication_bytes=MIB)


class FakeDisk:
    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes
        self.now_ms = 0
        self.reads = 0

    def read(self, directory: Path) -> int:
        self.reads += 1
        return self.free_bytes


def test_monitor_tells_listeners_of_changes_only(tmp_path: Path) -> None:
    """The shell reads the free space on each check and calls listeners when the verdict
    changes: once when space runs low, once when it is back, never in between."""
    disk = FakeDisk(1000 * MIB)
    monitor = DiskMonitor(CONFIG, tmp_path, free_bytes=disk.read, clock_ms=lambda: disk.now_ms)
    seen: list[DiskVerdict] = []
    monitor.listen(seen.append)
    monitor.check()
    assert seen == [] and monitor.verdict.ok
    disk.free_bytes = 150 * MIB
    monitor.check()
    disk.free_bytes = 140 * MIB  # a new reading, the same decision
    monitor.check()
    assert monitor.verdict.processing_refusal is not None
    assert "140.0MB free" in monitor.verdict.processing_refusal
    assert len(seen) == 1 and seen[0].processing_refusal is not None
    assert seen[0].receive_refusal is None
    disk.free_bytes = 500 * MIB
    monitor.check()
    assert len(seen) == 2 and seen[1].ok
    assert disk.reads == 4


def test_monitor_pauses_after_a_failed_write_also_without_monitoring(tmp_path: Path) -> None:
    """Monitoring off: the free space is never read, but a failed write still pauses
    processing until a check one interval later."""
    disk = FakeDisk(0)
    config = DiskConfig(
        free_space_processing_bytes=200 * MIB,
        free_space_replication_bytes=100 * MIB,
        monitoring_interval_s=1.0,
        enable_monitoring=False,
    )
    monitor = DiskMonitor(config, tmp_path, free_bytes=disk.read, clock_ms=lambda: disk.now_ms)
    assert monitor.check().ok
    disk.now_ms = 5_000
    monitor.write_failed("the disk is full")
    assert monitor.verdict.processing_refusal == "the disk is full"
    disk.now_ms = 5_500
    assert monitor.check().processing_refusal == "the disk is full"
    disk.now_ms = 6_000
    assert monitor.check().ok
    assert disk.reads == 0


def test_free_space_of_a_real_directory_is_read(tmp_path: Path) -> None:
    """The default reader asks the file system (statvfs): no disk has a petabyte free, every
    disk this runs on has a byte free."""
    huge = DiskConfig(free_space_processing_bytes=1 << 50, free_space_replication_bytes=1 << 49)
    refusal = DiskMonitor(huge, tmp_path).check().processing_refusal
    assert refusal is not None and f"free on {tmp_path}" in refusal
    tiny = DiskConfig(free_space_processing_bytes=1, free_space_replication_bytes=0)
    assert DiskMonitor(tiny, tmp_path).check().ok


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("2GB", 2 << 30),
        ("512MB", 512 << 20),
        ("64kb", 64 << 10),
        ("1024", 1024),
        ("1 GB", 1 << 30),
        ("0", 0),
        ("7B", 7),
    ],
)
def test_sizes_parse_as_zeebe_data_sizes(text: str, count: int) -> None:
    """Zeebe's data sizes: binary multiples, no unit means bytes."""
    assert parse_size_bytes(text) == count


@pytest.mark.parametrize("text", ["2 GiB", "-1MB", "1.5GB", "lots", ""])
def test_bad_sizes_are_refused(text: str) -> None:
    """Anything else is a ValueError (a one-line config error naming the setting)."""
    with pytest.raises(ValueError, match="not a size"):
        parse_size_bytes(text)


def test_disk_settings_come_from_zeebe_environment_names() -> None:
    """ZEEBE_BROKER_DATA_DISK_* set every disk setting; sizes and durations parse once."""
    env = {
        "ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING": "2GB",
        "ZEEBE_BROKER_DATA_DISK_FREESPACE_REPLICATION": "1GB",
        "ZEEBE_BROKER_DATA_DISK_MONITORINGINTERVAL": "PT5S",
        "ZEEBE_BROKER_DATA_DISK_ENABLEMONITORING": "false",
    }
    config = disk_config(resolve(DISK_SETTINGS, {}, env, {}))
    assert config == DiskConfig(2 << 30, 1 << 30, 5.0, False)


def test_disk_settings_from_flags_and_toml_and_defaults() -> None:
    """Flags beat TOML; the defaults are zeebe-sim's (smaller than Zeebe's, see README)."""
    values = resolve(
        DISK_SETTINGS,
        {"disk-free-space-processing": "300MB"},
        {},
        {"disk-free-space-processing": "9GB", "disk-free-space-replication": "100MB"},
    )
    assert disk_config(values) == DiskConfig(300 << 20, 100 << 20, 1.0, True)
    assert disk_config(resolve(DISK_SETTINGS, {}, {}, {})) == DiskConfig()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING": "much"},
            "ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING",
        ),
        (
            {
                "ZEEBE_BROKER_DATA_DISK_FREESPACE_PROCESSING": "1GB",
                "ZEEBE_BROKER_DATA_DISK_FREESPACE_REPLICATION": "2GB",
            },
            "must be greater",
        ),
        (
            {"ZEEBE_BROKER_DATA_DISK_ENABLEMONITORING": "maybe"},
            "ZEEBE_BROKER_DATA_DISK_ENABLEMONITORING",
        ),
    ],
)
def test_bad_disk_settings_are_config_errors(env: dict[str, str], named: str) -> None:
    """A bad size, processing not above replication, a bad boolean: one ConfigError saying
    which."""
    with pytest.raises(ConfigError, match=named):
        resolve(DISK_SETTINGS, {}, env, {})
