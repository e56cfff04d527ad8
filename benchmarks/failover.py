"""Failover time on real processes: kill -9 a partition's leader, again and again.

Three brokers, three partitions, replication factor 3 (as `zeebe-sim up` and Camunda's Helm
chart). Each round kills the current leader of the next partition (1, 2, 3, 1, ...) with
SIGKILL, measures how long until the gateway sees another broker lead it (the *failover time*)
and how long a client writing to that partition gets no answer (the *client-visible gap*:
from the last write acknowledged before the kill to the first acknowledged write sent after
it), then restarts the killed broker and waits until it is a follower again, so that every
kill finds three replicas.

The client writes to one partition by publishing messages whose correlation key maps to it
(a publication is a command on the partition that owns the key), one after another.

A script, not a test: it prints what it measured.

    python benchmarks/failover.py [--kills 20] [--election-timeout-ms 2500]
        [--heartbeat-interval-ms 250]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.routing import subscription_partition_id
from zeebe_sim.harness import ApiError, RunningCluster, eventually, running_cluster
from zeebe_sim.workload import percentile

PARTITIONS = 3


def key_on(partition: int) -> str:
    """A correlation key whose messages live on ``partition``."""
    for i in itertools.count():
        key = f"failover-{i}"
        if subscription_partition_id(key, PARTITIONS) == partition:
            return key
    raise AssertionError("unreachable")


class Writer:
    """Publishes to one partition without pause; remembers when each write was acknowledged."""

    def __init__(self, cluster: RunningCluster, partition: int) -> None:
        self.cluster = cluster
        self.partition = partition
        self.key = key_on(partition)
        # (sent, acknowledged) times of each acknowledged write
        self.writes: list[tuple[float, float]] = []
        # (answered, HTTP status; 0 for no HTTP answer) of each refused write
        self.refusals: list[tuple[float, int]] = []
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            sent_at = time.monotonic()
            try:
                await self.cluster.api.publish("failover", self.key, ttl_ms=0)
                self.writes.append((sent_at, time.monotonic()))
            except ApiError as exc:
                self.refusals.append((time.monotonic(), exc.status))
                await asyncio.sleep(0.001)
            except (aiohttp.ClientError, TimeoutError):
                self.refusals.append((time.monotonic(), 0))
                await asyncio.sleep(0.001)


async def leaders_complete(cluster: RunningCluster, rejoining: int) -> bool:
    """Every partition has a leader and broker ``rejoining`` holds an active replica of each."""
    topology = await cluster.api.call("GET", f"{cluster.rest_url}/v2/topology")
    roles = [
        p["role"] for b in topology["brokers"] if b["nodeId"] == rejoining for p in b["partitions"]
    ]
    leaders = await cluster.leaders()
    return len(leaders) == PARTITIONS and len(roles) == PARTITIONS and "inactive" not in roles


async def kill_leader(
    cluster: RunningCluster, writer: Writer
) -> tuple[int, float, float, collections.Counter[int]]:
    """Kill the leader of the writer's partition, restart it once another leads and wait
    until it is back; the victim, the failover time, the client-visible gap and the HTTP
    statuses of the writes refused in the gap."""
    partition = writer.partition

    async def acknowledged_since(count: int) -> bool:
        return len(writer.writes) > count

    async def acknowledged_after_kill() -> bool:
        return any(sent_at > killed_at for sent_at, _ in writer.writes[before:])

    async def moved() -> bool:
        return (await cluster.leaders()).get(PartitionId(partition), victim) != victim

    async def rejoined() -> bool:
        return await leaders_complete(cluster, victim)

    await eventually(lambda: acknowledged_since(0), timeout_s=60)
    victim = await cluster.leader_of(partition)
    before = len(writer.writes)
    killed_at = time.monotonic()
    cluster.kill_broker(victim)
    await eventually(moved, timeout_s=120, interval_s=0.005)
    failover_s = time.monotonic() - killed_at
    await eventually(acknowledged_after_kill, timeout_s=120, interval_s=0.005)
    # From the last write acknowledged before the kill to the first one of a write sent after
    # it (a write in flight at the kill may still have been answered by the dying leader).
    last_before = max(acked for _, acked in writer.writes if acked <= killed_at)
    first_after = min(acked for sent, acked in writer.writes[before:] if sent > killed_at)
    gap_s = first_after - last_before
    refused = collections.Counter(
        status for at, status in writer.refusals if last_before < at <= first_after
    )
    await cluster.start_broker(victim)
    await eventually(rejoined, timeout_s=120)
    return victim, failover_s, gap_s, refused


async def main(kills: int, election_timeout_ms: int, heartbeat_interval_ms: int) -> None:
    failovers_s: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    gaps_s: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        async with running_cluster(
            Path(directory),
            brokers=3,
            partitions=PARTITIONS,
            replication_factor=3,
            election_timeout_ms=election_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            gateway_args=["--request-timeout", "5s"],
        ) as cluster:
            writers = {p: Writer(cluster, p) for p in range(1, PARTITIONS + 1)}
            tasks = [asyncio.create_task(w.run()) for w in writers.values()]
            try:
                for round_ in range(kills):
                    partition = round_ % PARTITIONS + 1
                    victim, failover_s, gap_s, refused = await kill_leader(
                        cluster, writers[partition]
                    )
                    statuses.update(refused)
                    failovers_s.append(failover_s)
                    gaps_s.append(gap_s)
                    print(
                        f"kill {round_ + 1:2}: partition {partition} leader broker {victim}: "
                        f"new leader after {failover_s * 1000:6.0f} ms, "
                        f"client gap {gap_s * 1000:6.0f} ms "
                        f"(refused: {dict(sorted(refused.items()))})",
                        flush=True,
                    )
            finally:
                for w in writers.values():
                    w.stopped = True
                await asyncio.gather(*tasks)
    print(
        f"\n{kills} leader kills (election timeout {election_timeout_ms} ms, heartbeat "
        f"{heartbeat_interval_ms} ms, 3 brokers, 3 partitions, replication factor 3):"
    )
    print(f"  writes refused during the gaps, by HTTP status: {dict(sorted(statuses.items()))}")
    for name, values in (("failover (new leader)", failovers_s), ("client-visible gap", gaps_s)):
        ordered = sorted(values)
        print(
            f"  {name:22} p50 {percentile(ordered, 0.5) * 1000:6.0f} ms   "
            f"p99 {percentile(ordered, 0.99) * 1000:6.0f} ms   max {ordered[-1] * 1000:6.0f} ms"
            f"   mean {statistics.mean(ordered) * 1000:6.0f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--election-timeout-ms", type=int, default=2500)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=250)
    arguments = parser.parse_args()
    asyncio.run(
        main(arguments.kills, arguments.election_timeout_ms, arguments.heartbeat_interval_ms)
    )
