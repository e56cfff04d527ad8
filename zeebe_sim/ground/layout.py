"""The data-directory layout, spelled once (DESIGN.md "On disk").

::

    <data-dir>/broker-<n>/partitions/<p>/log/                     log segments
    <data-dir>/broker-<n>/partitions/<p>/snapshots/<snapshotId>/   snapshot files (state.msgpack)
    <data-dir>/broker-<n>/partitions/<p>/snapshots/<snapshotId>.checksum
    <data-dir>/broker-<n>/partitions/<p>/backup-recorded           the newest checkpoint whose
                                                                   backup the store has a record of
    <data-dir>/.restore/broker-<n>/...                             restore staging, moved into
                                                                   place once the journal commits
    <data-dir>/.restore/broker-<n>/partitions/<p>/download/        a backup's files, downloaded
                                                                   before they are laid out
    <data-dir>/.restore-journal.json                               the committed restore's journal
    <data-dir>/.processes/broker-<n>.json, gateway.json            the running processes (pid,
                                                                   addresses), written by their
                                                                   launcher for `zeebe-sim chaos`

The broker writes it, ``zeebe-sim restore`` lays it out, ``zeebe-sim verify`` reads it.
"""

from __future__ import annotations

from pathlib import Path

from zeebe_sim.ground.ids import NodeId, PartitionId

BROKER_PREFIX = "broker-"
PARTITIONS_DIR = "partitions"
LOG_DIR = "log"
SNAPSHOTS_DIR = "snapshots"
# The partition state inside a snapshot directory.
STATE_FILE = "state.msgpack"
# The broker's note of the newest backup the store has a record of (broker/backup.py).
BACKUP_RECORDED_FILE = "backup-recorded"
# Restore stages every broker's directory here, then commits with the journal (restore.py).
RESTORE_STAGING_DIR = ".restore"
RESTORE_JOURNAL_FILE = ".restore-journal.json"
RESTORE_DOWNLOAD_DIR = "download"
# The launcher (`up`, the test harness) notes each process it runs here.
PROCESSES_DIR = ".processes"


def broker_dir(data_dir: Path, node_id: NodeId) -> Path:
    return data_dir / f"{BROKER_PREFIX}{node_id}"


def partition_dir(broker: Path, partition_id: PartitionId) -> Path:
    """A partition's directory under a broker's directory (or a restore staging directory)."""
    return broker / PARTITIONS_DIR / str(partition_id)


def partition_dirs(data_dir: Path) -> list[Path]:
    """Every partition directory of every broker under ``data_dir``, sorted."""
    return sorted(data_dir.glob(f"{BROKER_PREFIX}*/{PARTITIONS_DIR}/*"))


def process_file(data_dir: Path, name: str) -> Path:
    """The launcher's note of a running process: ``broker-<n>`` or ``gateway``."""
    return data_dir / PROCESSES_DIR / f"{name}.json"
