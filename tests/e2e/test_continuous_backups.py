"""Issue 12's must-show scenario on real processes: continuous backups every 2 s, markers every
0.5 s, retention window 10 s, under load. Backup ranges stay contiguous; retention deletes old
backups and never the newest complete one."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.continuous import RETENTION_WINDOW_S, chain_gaps, continuous_cluster
from zeebe_sim.ground.backups import CheckpointType

pytestmark = pytest.mark.slow

OBSERVE_S = 30.0


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


async def test_continuous_backups_under_load_stay_contiguous_and_retention_keeps_the_newest(
    tmp_path: Path,
) -> None:
    """For 30 s of load, every half second: each partition's store metadata has one range
    whose backups join (each one's log reaches back to the previous checkpoint), markers
    among its checkpoints; from the first completed backup on, some backup is COMPLETED on every
    partition at every look. By the end retention has deleted the first backups, and what is
    left is no older than the window (plus the cleanup period and slack) before the newest."""
    async with continuous_cluster(tmp_path, load_s=OBSERVE_S + 10) as running:
        api = running.cluster.api
        url = f"{running.cluster.management_url}/actuator/backups"
        first_ids: set[int] = set()
        complete_seen = False
        markers_seen = False
        looks = 0
        deadline = time.monotonic() + OBSERVE_S
        while time.monotonic() < deadline:
            listed: list[dict[str, Any]] = await api.call("GET", url)
            complete = [b["backupId"] for b in listed if b["state"] == "COMPLETED"]
            if not first_ids:
                first_ids = set(complete)
            complete_seen = complete_seen or bool(complete)
            if complete_seen:
                assert complete, f"no backup COMPLETED on every partition: {listed}"
            for partition, metadata in (await running.read_metadata()).items():
                if metadata is None or not metadata.ranges:
                    continue
                assert len(metadata.ranges) == 1, (partition, metadata.ranges)
                assert chain_gaps(metadata) == [], partition
                markers_seen = markers_seen or any(
                    c.checkpoint_type is CheckpointType.MARKER for c in metadata.checkpoints
                )
            looks += 1
            await asyncio.sleep(0.5)

        assert complete_seen and markers_seen and first_ids
        listed = await api.call("GET", url)
        remaining = {b["backupId"] for b in listed}
        assert not first_ids & remaining, "retention deleted none of the first backups"
        created = [
            _ms(d["createdAt"]) for b in listed if b["state"] == "COMPLETED" for d in b["details"]
        ]
        slack_ms = (RETENTION_WINDOW_S + 2 * 2 + 6) * 1000
        assert max(created) - min(created) <= slack_ms, listed
        summary = await running.load
        assert summary.completed > 0 and looks > 20
