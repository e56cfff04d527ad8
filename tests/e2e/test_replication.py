"""Replicated partitions as real processes: 3 brokers, 3 partitions, replication factor 3,
short Raft timers (500 ms election timeout, 100 ms heartbeat), kill -9 of leaders under load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.ground.protocol import TopologyRequest, TopologyResponse
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import ApiError, RunningCluster, eventually, running_cluster
from zeebe_sim.workload import LoadSettings, demo_bpmn, run_load

pytestmark = pytest.mark.slow

ELECTION_TIMEOUT_MS = 500
RAFT = {
    "replication_factor": 3,
    "election_timeout_ms": ELECTION_TIMEOUT_MS,
    "heartbeat_interval_ms": 100,
}


async def broker_topology(cluster: RunningCluster, node: int) -> TopologyResponse | None:
    """What broker ``node`` says about its replicas (None: not reachable)."""
    try:
        connection = await Connection.open(cluster.broker_address(node), 2.0)
    except Exception:
        return None
    try:
        answer = await connection.request(TopologyRequest(), 2.0)
        return answer if isinstance(answer, TopologyResponse) else None
    except Exception:
        return None
    finally:
        await connection.close()


async def leader_of(cluster: RunningCluster, partition_id: int) -> int | None:
    """The broker whose replica of the partition leads in the highest term, if any."""
    best: tuple[int, int] | None = None
    for node in list(cluster.brokers):
        topology = await broker_topology(cluster, node)
        if topology is not None and topology.partitions.get(partition_id) == "LEADER":
            term = topology.terms.get(partition_id, 0)
            if best is None or term > best[0]:
                best = (term, node)
    return None if best is None else best[1]


async def all_leaders(cluster: RunningCluster) -> dict[int, int] | None:
    found = {p: await leader_of(cluster, p) for p in (1, 2, 3)}
    return {p: n for p, n in found.items() if n is not None} if None not in found.values() else None


@pytest.mark.timeout(400)
async def test_leader_kills_under_load_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """kill -9 the leader of each partition in turn while instances are created: a new leader
    is elected within two election timeouts (plus slack for a loaded machine), every instance
    whose creation was acknowledged is there afterwards, and the load goes on."""
    async with running_cluster(
        tmp_path, broker_args=FAST_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS, **RAFT
    ) as cluster:
        await eventually(lambda: all_leaders(cluster), timeout_s=60)
        await cluster.api.deploy(demo_bpmn(), "demo.bpmn")
        acknowledged: list[int] = []
        stop = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                with contextlib.suppress(ApiError, OSError, asyncio.TimeoutError):
                    key = await cluster.api.create_instance(
                        "demo-process", {"correlationKey": f"w{n}"}
                    )
                    acknowledged.append(key)
                await asyncio.sleep(0.02)  # pacing: a few hundred writes to check afterwards

        writers = [asyncio.create_task(write()) for _ in range(2)]
        load = asyncio.create_task(
            run_load(
                LoadSettings(rate_per_s=20, duration_s=20, rest_url=cluster.rest_url),
            )
        )
        failovers_ms = []
        try:
            for partition_id in (1, 2, 3):
                before = len(acknowledged)

                async def grown(b: int = before) -> bool:
                    return len(acknowledged) > b + 5

                await eventually(grown, timeout_s=60)
                old = await eventually(lambda p=partition_id: leader_of(cluster, p), timeout_s=30)
                cluster.kill_broker(old)
                killed = time.monotonic()

                async def new_leader(p: int = partition_id, o: int = old) -> int | None:
                    node = await leader_of(cluster, p)
                    return node if node is not None and node != o else None

                await eventually(new_leader, timeout_s=30, interval_s=0.02)
                failovers_ms.append((time.monotonic() - killed) * 1000)
                await cluster.start_broker(old)
            summary = await load
        finally:
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        assert summary.completed > 0, summary.to_json()
        # two election timeouts, plus a second of slack for polling and a loaded machine
        assert max(failovers_ms) < 2 * ELECTION_TIMEOUT_MS + 1000, failovers_ms
        assert len(acknowledged) > 20

        async def check(key: int) -> None:
            instance = await eventually(lambda: cluster.api.get_instance(key), timeout_s=30)
            assert int(instance["processInstanceKey"]) == key

        for at in range(0, len(acknowledged), 20):
            await asyncio.gather(*(check(key) for key in acknowledged[at : at + 20]))


async def test_a_leader_killed_while_its_backup_uploads(tmp_path: Path) -> None:
    """kill -9 the leader of partition 1 while its part of backup 1 uploads (upload delay):
    the new leader records that part FAILED with the leader-change reason, so backup 1 ends
    FAILED; backup 2, taken after, COMPLETES, each part taken by the partition's leader."""
    async with running_cluster(
        tmp_path,
        broker_args=[*FAST_BROKER_ARGS, "--backup-upload-delay", "4s"],
        gateway_args=FAST_GATEWAY_ARGS,
        **RAFT,
    ) as cluster:
        await eventually(lambda: all_leaders(cluster), timeout_s=60)
        await cluster.api.deploy(demo_bpmn(), "demo.bpmn")
        await cluster.api.create_instance("demo-process", {"correlationKey": "before"})
        await eventually(lambda: cluster.api.take_backup(1), timeout_s=30)

        async def uploading() -> bool:
            info = await cluster.api.backup(1)
            parts = {d["partitionId"]: d["state"] for d in info.get("details", [])}
            return parts.get(1) == "IN_PROGRESS"

        await eventually(uploading, timeout_s=30, interval_s=0.02)
        old = await eventually(lambda: leader_of(cluster, 1), timeout_s=30)
        cluster.kill_broker(old)

        async def part_one_settled() -> dict[str, Any] | None:
            info = await cluster.api.backup(1)
            part = next(d for d in info["details"] if d["partitionId"] == 1)
            return part if part["state"] in ("FAILED", "COMPLETED") else None

        # (the killed broker may have led other partitions too: their parts settle on their own)
        part = await eventually(part_one_settled, timeout_s=60)
        assert part["state"] == "FAILED", part
        assert part["failureReason"] == "Backup is cancelled due to leader change."
        assert (await cluster.api.backup(1))["state"] == "FAILED"
        await cluster.start_broker(old)
        leaders = await eventually(lambda: all_leaders(cluster), timeout_s=60)
        await eventually(lambda: cluster.api.take_backup(2), timeout_s=30)
        info = await cluster.api.wait_for_backup(2, timeout_s=60)
        assert info["state"] == "COMPLETED", info
        takers = {d["partitionId"]: d["brokerId"] for d in info["details"]}
        current = await eventually(lambda: all_leaders(cluster), timeout_s=30)
        assert takers == current or takers == leaders, (takers, current, leaders)
