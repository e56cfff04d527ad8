"""Why checkpoint ids travel on inter-partition messages: a demonstration on real processes.

Runs a 3-broker cluster under a workload whose messages correlate across partitions, takes a
series of backups while it runs, restores every backup into a fresh directory and runs
`zeebe-sim verify` on it. Once with checkpoint propagation (Zeebe's behaviour: every backup is a
consistent cut) and once with --unsafe-no-checkpoint-propagation (some backups hold a
correlation whose cause is not in the sender's backup: an "orphan receive").

    python examples/consistency_demo.py [--backups 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path

from zeebe_sim.harness import ClusterApi, run_cli, running_cluster

DEMO = Path(__file__).resolve().parent / "demo-process.bpmn"


async def workload(api: ClusterApi, stop: asyncio.Event) -> None:
    """Instances wait for messages whose keys hash to other partitions; messages are published
    in large concurrent bursts, so correlations cross partitions all the time."""
    n = 0
    while not stop.is_set():
        keys = [f"demo-{n + i}" for i in range(100)]
        n += len(keys)
        await asyncio.gather(
            *(api.create_instance("demo-process", {"correlationKey": key}) for key in keys)
        )
        jobs = await api.activate_jobs("demo-task", 1000)
        await asyncio.gather(*(api.complete_job(job["jobKey"]) for job in jobs))
        await asyncio.gather(*(api.publish("demo-message", key) for key in keys))


async def run(propagation: bool, backups: int, root: Path) -> tuple[int, list[str]]:
    data, store = root / "data", root / "backups"
    flags = ["--backup-dir", str(store)]
    if not propagation:
        flags.append("--unsafe-no-checkpoint-propagation")
    # Requests reach partitions at different times in a real cluster (network, Raft); the
    # jitter makes that visible on one machine.
    jitter = ["--backup-fanout-jitter", "30ms"]
    async with running_cluster(data, broker_args=flags, gateway_args=jitter) as cluster:
        await cluster.api.deploy(DEMO)
        stop = asyncio.Event()
        load = asyncio.create_task(workload(cluster.api, stop))
        for backup_id in range(1, backups + 1):
            await asyncio.sleep(0.05)  # let the workload run between backups
            await cluster.api.take_backup(backup_id)
            await cluster.api.wait_for_backup(backup_id)
        stop.set()
        with contextlib.suppress(Exception):
            await load
    failures = []
    for backup_id in range(1, backups + 1):
        target = root / f"restored-{backup_id}"
        code, output = await run_cli(
            "restore", "--backup-id", str(backup_id), "--data-dir", str(target), *flags
        )
        if code != 0:
            raise SystemExit(output)
        code, report = await run_cli("verify", "--data-dir", str(target))
        if code != 0:
            failures.append(report)
    return backups - len(failures), failures


async def main(backups: int) -> None:
    for propagation in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            consistent, failures = await run(propagation, backups, Path(tmp))
        mode = "with propagation" if propagation else "WITHOUT propagation (unsafe)"
        print(f"{mode}: {consistent} of {backups} backups restore to a consistent cut")
        for report in failures[:2]:
            lines = report.splitlines()
            print("\n".join("  " + line for line in lines[:5]))
            if len(lines) > 5:
                print(f"  ... {len(lines) - 5} more lines")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=15)
    asyncio.run(main(parser.parse_args().backups))
