"""Latency of one job round trip over the gRPC gateway, as a pyzeebe user sees it: create an
instance with result, a pyzeebe worker (long polling) activates and completes its job, the
instance completes and the answer comes back. A real cluster of processes on this machine.

A script, not a test: it prints what it measured.

    python benchmarks/grpc_job_round_trip.py [--round-trips 200] [--brokers 3] [--partitions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pyzeebe import ZeebeClient, ZeebeWorker, create_insecure_channel

from zeebe_sim.harness import running_cluster

BPMN = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    b'xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="defs" '
    b'targetNamespace="http://bpmn.io/schema/bpmn">'
    b'<bpmn:process id="round-trip" isExecutable="true">'
    b'<bpmn:startEvent id="start" />'
    b'<bpmn:serviceTask id="task"><bpmn:extensionElements>'
    b'<zeebe:taskDefinition type="echo" /></bpmn:extensionElements></bpmn:serviceTask>'
    b'<bpmn:endEvent id="end" />'
    b'<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task" />'
    b'<bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="end" />'
    b"</bpmn:process></bpmn:definitions>"
)


async def measure(round_trips: int, brokers: int, partitions: int) -> list[float]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        async with running_cluster(path / "data", brokers=brokers, partitions=partitions) as c:
            channel = create_insecure_channel(grpc_address=c.grpc_address)
            client = ZeebeClient(channel)
            worker = ZeebeWorker(channel, name="bench")

            @worker.task(task_type="echo")
            async def echo(n: int) -> dict[str, Any]:
                return {"echoed": n}

            (path / "round-trip.bpmn").write_bytes(BPMN)
            await client.deploy_resource(path / "round-trip.bpmn")
            working = asyncio.get_running_loop().create_task(worker.work())
            latencies_ms: list[float] = []
            try:
                for n in range(round_trips + 10):
                    started = time.perf_counter()
                    result = await client.run_process_with_result(
                        "round-trip", {"n": n}, timeout=30_000
                    )
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    assert result.variables["echoed"] == n
                    if n >= 10:  # the first ones warm up connections and caches
                        latencies_ms.append(elapsed_ms)
            finally:
                await worker.stop()
                working.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await working
                await channel.close()
            return latencies_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args()
    latencies = sorted(asyncio.run(measure(args.round_trips, args.brokers, args.partitions)))
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    print(
        f"job round trip over gRPC ({args.brokers} brokers, {args.partitions} partitions, "
        f"{len(latencies)} sequential round trips): median {statistics.median(latencies):.1f} ms, "
        f"p95 {p95:.1f} ms, max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
