"""Restore to a point in time and in-process restore on real processes (issue 12 item 5).

With continuous backups every 2 s and markers every 0.5 s under load, a restore `--to` a time
inside the window gives the state of the nearest checkpoint common to all partitions at or
before it (markers included), offline with `zeebe-sim restore` and in process with
`POST /v2/restore`, and passes `zeebe-sim verify`. An in-process restore through Camunda's own
SDK (`camunda-orchestration-sdk`'s recovery calls) brings a running cluster back to a chain of
backups without restarting a process."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from camunda_orchestration_sdk import CamundaAsyncClient
from camunda_orchestration_sdk.errors import NotFoundError
from camunda_orchestration_sdk.models import Mode, RestoreRequest

from storage.backup.api import RuntimeMetadata
from storage.backup.filesystem import FilesystemBackupStore
from tests.conftest import DEMO_BPMN, FAST_BROKER_ARGS
from zeebe_sim.ground.backups import CheckpointType
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.harness import ApiError, ClusterApi, eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow


CONTINUOUS = [
    "--backup-continuous",
    "--backup-schedule", "PT2S",
    "--backup-checkpoint-interval", "500ms",
    "--backup-retention-window", "10s",
    "--backup-retention-cleanup-schedule", "PT1S",
]  # fmt: skip


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@attrs.frozen
class Created:
    key: int
    sent_ms: int
    acknowledged_ms: int


async def load(api: ClusterApi, stop: asyncio.Event, created: list[Created]) -> None:
    """Create instances one after the other until ``stop``, noting when each was sent and
    acknowledged (wall clock, as checkpoint timestamps are)."""
    i = 0
    while not stop.is_set():
        sent = int(time.time() * 1000)
        key = await api.create_instance("demo-process", {"correlationKey": f"load-{i}"})
        created.append(Created(key, sent, int(time.time() * 1000)))
        i += 1


async def run_window(
    api: ClusterApi, backups: Path
) -> tuple[int, int, list[Created], dict[PartitionId, RuntimeMetadata]]:
    """Load for ~6 s with continuous backups; then a `to` 1 ms after a MARKER common to all
    partitions that a later backup covers, taken while instances were still being created (so
    that the nearest checkpoint at or before `to` is a marker: markers count). Returns `to`,
    the marker, the instances created and each partition's store metadata."""
    await api.deploy(DEMO_BPMN)
    stop = asyncio.Event()
    created: list[Created] = []
    loading = asyncio.create_task(load(api, stop, created))
    try:
        await asyncio.sleep(6)  # the window: what the test is about, not a wait for a condition
    finally:
        stop.set()
        await loading
    store = FilesystemBackupStore(backups)

    async def covered_marker() -> tuple[int, dict[PartitionId, RuntimeMetadata]] | None:
        read = {PartitionId(p): await store.read_metadata(PartitionId(p)) for p in (1, 2, 3)}
        metadata = {p: m for p, m in read.items() if m is not None}
        if len(metadata) < 3:
            return None
        common = set.intersection(*(_covered_markers(m) for m in metadata.values()))
        # one with instances created well after it, so that "gone" is checked too
        during = [m for m in common if max(timestamps(metadata, m)) < created[-1].sent_ms - 500]
        return (max(during), metadata) if during else None

    try:
        marker, metadata = await eventually(covered_marker, timeout_s=60)
    finally:
        await store.close()
    return max(timestamps(metadata, marker)) + 1, marker, created, metadata


def _covered_markers(meta: RuntimeMetadata) -> set[int]:
    """The partition's MARKER checkpoints with a backup after them in the same range."""
    backups = [c.checkpoint_id for c in meta.checkpoints if c.checkpoint_type.takes_backup]
    return {
        c.checkpoint_id
        for c in meta.checkpoints
        if c.checkpoint_type == CheckpointType.MARKER
        and any(s <= c.checkpoint_id < b <= e for s, e in meta.ranges for b in backups)
    }


def expected_point(metadata: dict[PartitionId, RuntimeMetadata], to_ms: int) -> int:
    """The latest checkpoint id every partition holds in a backup range at or before `to`:
    computed here straight from the metadata, independently of the resolver."""

    def restorable(meta: RuntimeMetadata) -> set[int]:
        return {
            c.checkpoint_id
            for c in meta.checkpoints
            if c.checkpoint_timestamp_ms <= to_ms
            and any(s <= c.checkpoint_id <= e for s, e in meta.ranges)
        }

    common = set.intersection(*(restorable(m) for m in metadata.values()))
    assert common, metadata
    return max(common)


def timestamps(metadata: dict[PartitionId, RuntimeMetadata], checkpoint: int) -> list[int]:
    return [
        c.checkpoint_timestamp_ms
        for m in metadata.values()
        for c in m.checkpoints
        if c.checkpoint_id == checkpoint
    ]


async def test_restore_to_a_time_in_the_window_gives_the_nearest_common_checkpoint(
    tmp_path: Path,
) -> None:
    """`zeebe-sim restore --to T`, T just after a marker, into empty directories: every log is
    cut at that marker (the latest checkpoint common to all partitions at or before T), verify
    passes, and the restored cluster has the instances acknowledged before the marker and none
    sent after it."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    args = [*FAST_BROKER_ARGS, "--backup-dir", str(backups), *CONTINUOUS]
    async with running_cluster(data, broker_args=args) as cluster:
        to_ms, point, created, metadata = await run_window(cluster.api, backups)
    assert expected_point(metadata, to_ms) == point  # a marker
    stamps = timestamps(metadata, point)

    restored = tmp_path / "restored"
    code, output = await run_cli(
        "restore", "--to", iso(to_ms), "--data-dir", str(restored), "--backup-dir", str(backups)
    )
    assert code == 0, output
    assert f"Restore point: checkpoint {point} " in output, output
    code, report = await run_cli("verify", "--data-dir", str(restored))
    assert code == 0 and f"cut at checkpoint {point}" in report, report

    async with running_cluster(
        restored, broker_args=[*FAST_BROKER_ARGS, "--backup-dir", str(backups)]
    ) as cluster:
        await check_instances(cluster.api, created, stamps)


async def test_an_in_process_restore_to_a_time_needs_no_restart(tmp_path: Path) -> None:
    """The same restored in process with `POST /v2/restore {"to": T}`: the instances are those
    of the marker, no process restarted, and verify passes once the cluster is stopped."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    args = [*FAST_BROKER_ARGS, "--backup-dir", str(backups), *CONTINUOUS]
    async with running_cluster(data, broker_args=args) as cluster:
        api = cluster.api
        to_ms, point, created, metadata = await run_window(api, backups)
        assert expected_point(metadata, to_ms) == point  # a marker
        stamps = timestamps(metadata, point)
        pids = {n: p.pid for n, p in cluster.brokers.items()}
        await api.change_mode("RECOVERING")
        planned, _ = await api.restore_in_process({"to": iso(to_ms)})
        assert planned["plannedChanges"][0]["operations"][0]["operation"] == (
            "PartitionPreRestoreOperation"
        )
        # (The partitions' checkpoint ids move on at once: markers resume with PROCESSING.)
        assert {n: p.pid for n, p in cluster.brokers.items()} == pids
        await check_instances(api, created, stamps)
    code, report = await run_cli("verify", "--data-dir", str(data))
    assert code == 0, report


async def check_instances(api: ClusterApi, created: list[Created], stamps: list[int]) -> None:
    """Instances acknowledged before the restore point's checkpoint (on every partition) are
    there; those sent after it are gone; both kinds exist, so neither check is vacuous."""
    before = [c for c in created if c.acknowledged_ms < min(stamps)]
    after = [c for c in created if c.sent_ms > max(stamps)]
    assert before and after, (len(before), len(after), len(created))
    for instance in before:
        assert await exists(api, instance.key), instance
    for instance in after:
        assert not await exists(api, instance.key), instance


async def exists(api: ClusterApi, key: int) -> bool:
    """Whether the gateway finds the instance (404 is "no")."""
    try:
        await api.get_instance(key)
    except ApiError as exc:
        assert exc.status == 404, exc.body
        return False
    return True


async def test_the_sdk_restores_a_running_cluster_in_place(tmp_path: Path) -> None:
    """RECOVERING through the SDK, a restore of backups 20 and 21, its progress through the
    SDK until 404; every process keeps its pid; instances up to backup 21 are there, later
    ones are gone, new ones can be created; the stopped cluster passes verify."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    args = [*FAST_BROKER_ARGS, "--backup-dir", str(backups)]
    async with running_cluster(data, broker_args=args) as cluster:
        api = cluster.api
        await api.deploy(DEMO_BPMN)
        kept = [
            await api.create_instance("demo-process", {"correlationKey": f"a{i}"}) for i in range(3)
        ]
        await api.take_backup(20)
        assert (await api.wait_for_backup(20))["state"] == "COMPLETED"
        kept += [
            await api.create_instance("demo-process", {"correlationKey": f"b{i}"}) for i in range(3)
        ]
        await api.take_backup(21)
        assert (await api.wait_for_backup(21))["state"] == "COMPLETED"
        lost = [
            await api.create_instance("demo-process", {"correlationKey": f"c{i}"}) for i in range(3)
        ]
        pids = {n: p.pid for n, p in cluster.brokers.items()}
        assert cluster.gateway is not None
        gateway_pid = cluster.gateway.pid

        sdk = CamundaAsyncClient(
            configuration={
                "CAMUNDA_REST_ADDRESS": cluster.rest_url,
                "CAMUNDA_AUTH_STRATEGY": "NONE",
            }
        )
        try:
            change = await sdk.change_cluster_mode(mode=Mode.RECOVERING)
            await api.cluster_change_done(change.change_id)
            planned = await sdk.restore(data=RestoreRequest(backup_ids=[20, 21]))
            # The SDK reads every operation as its first matching model (a broker operation);
            # the other fields are kept as additional properties.
            restores = [
                op.to_dict()
                for op in planned.planned_changes[0].operations
                if op.operation == "PartitionRestoreOperation"
            ]
            assert len(restores) == 3 and all(op["backupIds"] == [20, 21] for op in restores)
            seen: list[str] = []

            async def finished() -> bool:
                try:
                    status = await sdk.get_restore_status()
                except NotFoundError:
                    return True
                seen.append(status.status.value)
                return False

            await eventually(finished, timeout_s=120, interval_s=0.05)
            assert set(seen) <= {"IN_PROGRESS"}, seen  # never FAILED on the way
            last = await api.cluster_change_done(planned.change_id)
            assert last["status"] == "COMPLETED", last
        finally:
            await sdk.aclose()

        assert {n: p.pid for n, p in cluster.brokers.items()} == pids
        assert cluster.gateway.pid == gateway_pid
        assert all(p.process.returncode is None for p in cluster.brokers.values())
        for key in kept:
            assert await exists(api, key), key
        for key in lost:
            assert not await exists(api, key), key
        await api.create_instance("demo-process", {"correlationKey": "after"})
    code, report = await run_cli("verify", "--data-dir", str(data))
    assert code == 0, report
