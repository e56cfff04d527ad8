"""A real cluster with continuous backups under load, for the tests of issue 12's must-show
scenario (continuous backups every 2 s, markers every 0.5 s, retention window 10 s).

:func:`continuous_cluster` starts it (brokers and gateway as processes, the filesystem store
under ``<data_dir>/backups``) with the workload running in the background; restore tests reuse
it: stop the load, then restore ``--to`` a time read from :func:`read_metadata`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import attrs

from storage.backup.api import RuntimeMetadata
from storage.backup.filesystem import FilesystemBackupStore
from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.ground.backups import CheckpointType
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.harness import RunningCluster, running_cluster
from zeebe_sim.workload import LoadSettings, LoadSummary, run_load

BACKUP_INTERVAL = "PT2S"
MARKER_INTERVAL = "500ms"
RETENTION_WINDOW_S = 10.0
CLEANUP_SCHEDULE = "PT2S"
CONTINUOUS_BROKER_ARGS = [
    *FAST_BROKER_ARGS,
    # Small segments, so that compaction has something to delete (and must not).
    "--segment-size",
    "64KB",
    "--backup-continuous",
    "--backup-schedule",
    BACKUP_INTERVAL,
    "--backup-checkpoint-interval",
    MARKER_INTERVAL,
    "--backup-retention-window",
    f"{RETENTION_WINDOW_S:g}s",
    "--backup-retention-cleanup-schedule",
    CLEANUP_SCHEDULE,
]


@attrs.define
class ContinuousCluster:
    cluster: RunningCluster
    data_dir: Path
    load: asyncio.Task[LoadSummary]

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "backups"

    async def read_metadata(self) -> dict[PartitionId, RuntimeMetadata | None]:
        """Every partition's runtime metadata as the store holds it now."""
        store = FilesystemBackupStore(self.store_dir)
        try:
            partitions = range(1, self.cluster.spec.partitions + 1)
            return {PartitionId(p): await store.read_metadata(PartitionId(p)) for p in partitions}
        finally:
            await store.close()


def chain_gaps(metadata: RuntimeMetadata) -> list[str]:
    """Where the backups of a range do not join: a backup whose log starts after the position
    right after the previous backup's checkpoint (empty: every range is contiguous)."""
    by_id = {c.checkpoint_id: c for c in metadata.checkpoints}
    gaps = []
    for start, end in metadata.ranges:
        chain = sorted(
            c
            for c, info in by_id.items()
            if start <= c <= end and info.checkpoint_type is not CheckpointType.MARKER
        )
        for previous, following in itertools.pairwise(chain):
            first = by_id[following].first_log_position
            if first is None or first > by_id[previous].checkpoint_position + 1:
                gaps.append(f"{previous} -> {following} (first log position {first})")
    return gaps


@contextlib.asynccontextmanager
async def continuous_cluster(
    data_dir: Path, *, rate_per_s: float = 20.0, load_s: float = 40.0
) -> AsyncIterator[ContinuousCluster]:
    """The must-show cluster with the demo workload running for ``load_s`` seconds."""
    async with running_cluster(
        data_dir, broker_args=CONTINUOUS_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        settings = LoadSettings(rate_per_s=rate_per_s, duration_s=load_s, rest_url=cluster.rest_url)
        load = asyncio.create_task(run_load(settings))
        try:
            yield ContinuousCluster(cluster, data_dir, load)
        finally:
            if not load.done():
                load.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load
