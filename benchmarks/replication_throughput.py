"""Records per second on one partition at replication factor 1 and 3 (real broker processes,
every answer after its group is durable on a quorum), the failover time of leader kills, and
the start time of a cluster at factor 3.

A script, not a test: it prints what it measured.

    python benchmarks/replication_throughput.py [--instances 20000] [--concurrency 1000]
        [--kills 20]

The client talks the broker protocol straight to the partition's leader (no gateway), so the
figure is the partition's, not the gateway's. Records are counted by the partition's processed
position (positions number records).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from zeebe_sim.ground.protocol import (
    ExecuteCommandRequest,
    ExecuteCommandResponse,
    QueryRequest,
    QueryResponse,
    TopologyRequest,
    TopologyResponse,
)
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.transport import Connection
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

BPMN = (Path(__file__).resolve().parent.parent / "examples" / "order-process.bpmn").read_bytes()
ELECTION_TIMEOUT_MS = 500
HEARTBEAT_MS = 100


async def leader(cluster: RunningCluster, partition_id: int = 1) -> int | None:
    """The node whose replica leads the partition in the highest term."""
    best: tuple[int, int] | None = None
    for node in cluster.brokers:
        try:
            connection = await Connection.open(cluster.broker_address(node), 1.0)
        except Exception:
            continue
        try:
            answer = await connection.request(TopologyRequest(), 1.0)
        except Exception:
            continue
        finally:
            await connection.close()
        assert isinstance(answer, TopologyResponse)
        if answer.partitions.get(partition_id) == "LEADER":
            term = answer.terms.get(partition_id, 0)
            if best is None or term > best[0]:
                best = (term, node)
    return None if best is None else best[1]


async def submit(connection: Connection, value_type: str, intent: str, value: Any) -> Any:
    response = await connection.request(
        ExecuteCommandRequest(1, value_type, intent, -1, value), 60.0
    )
    assert isinstance(response, ExecuteCommandResponse) and response.rejection_type is None
    return response


async def processed_position(connection: Connection) -> int:
    answer = await connection.request(QueryRequest(1, "partitions", {}), 10.0)
    assert isinstance(answer, QueryResponse)
    return int(answer.result["1"]["processedPosition"])


async def throughput(tmp: Path, brokers: int, rf: int, instances: int, concurrency: int) -> float:
    async with running_cluster(
        tmp,
        brokers=brokers,
        partitions=1,
        replication_factor=rf,
        # Zeebe's default timings: a saturated machine must not look like a dead leader
        broker_args=["--snapshot-period", "1h"],
    ) as cluster:
        node = await eventually(lambda: leader(cluster), timeout_s=60)
        connection = await Connection.open(cluster.broker_address(node), 5.0)
        await submit(
            connection,
            ValueType.DEPLOYMENT,
            "CREATE",
            {"resources": [{"resourceName": "order.bpmn", "resource": BPMN}]},
        )
        semaphore = asyncio.Semaphore(concurrency)
        value = {"bpmnProcessId": "order-process", "version": -1, "variables": {"n": 1}}

        async def one() -> None:
            async with semaphore:
                await submit(connection, ValueType.PROCESS_INSTANCE_CREATION, "CREATE", value)

        await asyncio.gather(*(one() for _ in range(2000)))  # warm-up
        before = await processed_position(connection)
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(instances)))
        seconds = time.perf_counter() - started
        records = await processed_position(connection) - before
        await connection.close()
        return records / seconds


async def failovers(tmp: Path, kills: int) -> tuple[list[float], float]:
    """Kill -9 the leader of partition 1 ``kills`` times (restarting it each time); the time
    from each kill until another replica leads, and how long the cluster took to start."""
    started = time.perf_counter()
    async with running_cluster(
        tmp,
        brokers=3,
        partitions=3,
        replication_factor=3,
        election_timeout_ms=ELECTION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
    ) as cluster:
        await eventually(lambda: leader(cluster), timeout_s=60)
        start_s = time.perf_counter() - started
        times_ms = []
        for _ in range(kills):
            old = await eventually(lambda: leader(cluster), timeout_s=60)
            cluster.kill_broker(old)
            killed = time.perf_counter()

            async def other(old: int = old) -> int | None:
                node = await leader(cluster)
                return node if node is not None and node != old else None

            await eventually(other, timeout_s=60, interval_s=0.01)
            times_ms.append((time.perf_counter() - killed) * 1000)
            await cluster.start_broker(old)
        return times_ms, start_s


async def main(instances: int, concurrency: int, kills: int) -> None:
    results = {}
    for brokers, rf in ((1, 1), (3, 3)):
        with tempfile.TemporaryDirectory() as tmp:
            results[rf] = await throughput(Path(tmp), brokers, rf, instances, concurrency)
        print(
            f"replication factor {rf} ({brokers} broker process(es)): "
            f"{results[rf]:,.0f} records/s on one partition "
            f"({instances} instance creations, {concurrency} in flight)"
        )
    print(f"  factor 3 / factor 1: {results[3] / results[1]:.2f}")
    if kills:
        with tempfile.TemporaryDirectory() as tmp:
            times, start_s = await failovers(Path(tmp), kills)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(
            f"failover (kill -9 of partition 1's leader until another replica leads, election "
            f"timeout {ELECTION_TIMEOUT_MS} ms, {len(times)} kills): "
            f"p50 {statistics.median(times):.0f} ms, p99 {p99:.0f} ms, max {max(times):.0f} ms"
        )
        print(f"cluster start at factor 3 (3 brokers, 3 partitions, gateway): {start_s:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.instances, args.concurrency, args.kills))
