"""Failover on real processes with replication factor 3, broken through the chaos API: kill -9
each partition's leader in turn under `zeebe-sim load`; cut a leader off (minority) and heal;
restore an RF3 cluster from a backup, verify its replicas, let it elect and back up again."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.ground.ids import PartitionId, partition_of_key
from zeebe_sim.harness import ApiError, RunningCluster, eventually, run_cli, running_cluster

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo-process.bpmn"
ELECTION_TIMEOUT_MS = 1000
HEARTBEAT_INTERVAL_MS = 100
# What the gateway adds to a failover as clients see it: it asks the brokers every 20 ms at
# most while a partition has no leader, and a loaded 2-core machine delays each step.
OBSERVATION_SLACK_S = 0.5


def replicated(data_dir: Path, *broker_args: str) -> AbstractAsyncContextManager[RunningCluster]:
    """3 brokers, 3 partitions, replication factor 3, short Raft timers."""
    return running_cluster(
        data_dir,
        broker_args=[*FAST_BROKER_ARGS, *broker_args],
        gateway_args=FAST_GATEWAY_ARGS,
        replication_factor=3,
        election_timeout_ms=ELECTION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )


class Writer:
    """Creates demo instances one after another, noting each acknowledged key and every
    failure's HTTP status (a status of 0: the request did not get an HTTP answer)."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.acknowledged: list[int] = []
        self.statuses: list[int] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.acknowledged.append(await self.cluster.api.create_instance("demo-process"))
            except ApiError as exc:
                self.statuses.append(exc.status)
            except (aiohttp.ClientError, TimeoutError):
                self.statuses.append(0)


async def new_leader_after(cluster: RunningCluster, partition: int, old: int) -> float:
    """Seconds until the gateway sees another broker than ``old`` lead ``partition``."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def moved() -> bool:
        leaders = await cluster.leaders()
        return leaders.get(PartitionId(partition), old) != old

    await eventually(moved, timeout_s=60, interval_s=0.01)
    return loop.time() - started


async def rejoined(cluster: RunningCluster, node: int) -> None:
    """Wait until broker ``node`` is back as a replica of every partition it hosts and every
    partition has a leader."""

    async def back() -> bool:
        topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
        roles = {b["nodeId"]: {p["role"] for p in b["partitions"]} for b in topology["brokers"]}
        leaders = await cluster.leaders()
        return (
            len(leaders) == 3
            and roles.get(node, set()) <= {"leader", "follower"}
            and bool(roles.get(node))
        )

    await eventually(back, timeout_s=60, interval_s=0.05)


async def kill_leader_and_restart(cluster: RunningCluster, writer: Writer, partition: int) -> None:
    """kill -9 the leader of ``partition`` once writes flow: another broker leads within two
    election timeouts and writes flow again; then the victim is restarted and rejoins."""

    async def acknowledged_beyond(count: int) -> bool:
        return len(writer.acknowledged) > count

    await eventually(lambda: acknowledged_beyond(5), timeout_s=30)
    victim = await cluster.kill_leader(partition)
    elapsed_s = await new_leader_after(cluster, partition, victim)
    assert elapsed_s <= 2 * ELECTION_TIMEOUT_MS / 1000 + OBSERVATION_SLACK_S, (partition, elapsed_s)
    before = len(writer.acknowledged)
    await eventually(lambda: acknowledged_beyond(before + 5), timeout_s=30)
    await cluster.start_broker(victim)
    await rejoined(cluster, victim)


@pytest.mark.timeout(400)
async def test_killing_each_leader_in_turn_under_load(tmp_path: Path) -> None:
    """Under `zeebe-sim load`, kill -9 the leader of partition 1, 2 and 3 in turn (each
    restarted before the next kill): each time another broker leads within two election
    timeouts, the gateway answers 503 or 504 during the gap (never 500), every acknowledged
    instance is there afterwards, writes are acknowledged again after each kill and the load
    completes every instance it started."""
    async with replicated(tmp_path) as cluster:
        await cluster.api.deploy(DEMO)
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zeebe_sim",
            "load",
            "--rest-url",
            cluster.rest_url,
            "--rate",
            "20",
            "--duration",
            "25s",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        writer = Writer(cluster)
        writing = asyncio.create_task(writer.run())
        try:
            for partition in (1, 2, 3):
                await kill_leader_and_restart(cluster, writer, partition)
        finally:
            writer.stop.set()
            await writing
        output, _ = await asyncio.wait_for(load.communicate(), timeout=120)
        summary: dict[str, Any] = json.loads(output)

        assert set(writer.statuses) <= {503, 504}, writer.statuses
        assert not [kind for kind in summary["errors"] if " 5" in kind and not _gap(kind)], summary[
            "errors"
        ]
        # The load retries a publication or job completion that a gap refused: every instance
        # it started completes.
        assert summary["completed"] > 100 and summary["notCompleted"] == 0, summary
        for key in writer.acknowledged:
            assert (await cluster.api.get_instance(key))["processInstanceKey"] == str(key)
        assert {partition_of_key(k) for k in writer.acknowledged} == {1, 2, 3}


def _gap(kind: str) -> bool:
    """An error kind of the load's summary that a failover gap may cause (503 or 504)."""
    return ": 503" in kind or ": 504" in kind


async def _true(value: bool) -> bool | None:
    return value or None


@pytest.mark.timeout(400)
async def test_a_leader_cut_off_loses_its_partition_and_rejoins_after_heal(
    tmp_path: Path,
) -> None:
    """Partition 1's leader is cut from both other brokers (a minority of one): the majority
    elects another leader, writes go on through the gateway, the old leader stops leading;
    after heal it rejoins as a follower and, once the cluster is stopped, `verify` finds all
    three replicas of every partition in agreement."""
    async with replicated(tmp_path) as cluster:
        await cluster.api.deploy(DEMO)
        keys = [await cluster.api.create_instance("demo-process") for _ in range(6)]
        old = await cluster.leader_of(1)
        await cluster.isolate(old)
        await new_leader_after(cluster, 1, old)
        keys += [await cluster.api.create_instance("demo-process") for _ in range(6)]

        async def old_leader_stepped_down() -> bool:
            topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
            roles = {
                p["partitionId"]: p["role"]
                for b in topology["brokers"]
                if b["nodeId"] == old
                for p in b["partitions"]
            }
            return roles.get(1) != "leader"

        await eventually(old_leader_stepped_down, timeout_s=30)
        assert await cluster.heal() == [0, 1, 2]
        await rejoined(cluster, old)
        keys += [await cluster.api.create_instance("demo-process") for _ in range(6)]
        for key in keys:
            assert (await cluster.api.get_instance(key))["state"] == "ACTIVE"

        async def followers_caught_up() -> bool:
            statuses = await cluster.api.call(
                "GET", f"{cluster.management_url}/actuator/partitions"
            )
            return all(s.get("health", "HEALTHY") == "HEALTHY" for s in statuses.values())

        await eventually(followers_caught_up, timeout_s=30)
    code, output = await run_cli("verify", "--data-dir", str(tmp_path))
    assert code == 0, output
    assert "3 partitions (9 replicas)" in output


@pytest.mark.timeout(400)
async def test_a_restored_rf3_cluster_verifies_elects_and_backs_up(tmp_path: Path) -> None:
    """Backup 10 of an RF3 cluster, restored with `zeebe-sim restore --replication-factor 3`:
    every broker holds all three partitions, `verify` passes with 9 replicas at checkpoint 10,
    and the restored cluster elects leaders, keeps the instances and completes backup 11."""
    backups = tmp_path / "backups"
    store = ["--backup-dir", str(backups)]
    data = tmp_path / "data"
    async with replicated(data, *store) as cluster:
        await cluster.api.deploy(DEMO)
        keys = [await cluster.api.create_instance("demo-process") for _ in range(9)]
        await cluster.api.take_backup(10)
        assert (await cluster.api.wait_for_backup(10))["state"] == "COMPLETED"

    restored = tmp_path / "restored"
    code, output = await run_cli(
        "restore",
        "--backup-id",
        "10",
        "--data-dir",
        str(restored),
        "--brokers",
        "3",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
        *store,
    )
    assert code == 0, output
    for node in range(3):
        hosted = sorted(p.name for p in (restored / f"broker-{node}" / "partitions").iterdir())
        assert hosted == ["1", "2", "3"]
    code, output = await run_cli("verify", "--data-dir", str(restored))
    assert code == 0 and "3 partitions (9 replicas)" in output, output
    assert "cut at checkpoint 10" in output

    async with replicated(restored, *store) as cluster:
        assert len(await cluster.leaders()) == 3
        for key in keys:
            assert (await cluster.api.get_instance(key))["state"] == "ACTIVE"
        await cluster.api.take_backup(11)
        assert (await cluster.api.wait_for_backup(11))["state"] == "COMPLETED"
