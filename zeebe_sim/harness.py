"""A test harness: start a real cluster from pytest and drive it over HTTP.

    async with running_cluster(tmp_path) as cluster:
        api = cluster.api
        await api.deploy(Path("examples/demo-process.bpmn"))
        key = await api.create_instance("demo-process", {"correlationKey": "k"})
        cluster.kill_broker(1)                    # SIGKILL, mid-whatever
        await cluster.start_broker(1)             # same data, same port

Every port is chosen by the OS, so tests can run side by side. Nothing here sleeps to wait for
a condition: :func:`eventually` polls one with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from zeebe_sim import chaos
from zeebe_sim.cluster import ClusterSpec, LocalCluster
from zeebe_sim.ground.ids import NodeId, PartitionId

T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class ClusterApi:
    """Thin client of the gateway's REST API (port 8080) and actuator (port 9600)."""

    def __init__(self, session: aiohttp.ClientSession, rest_url: str, management_url: str):
        self.session = session
        self.rest_url = rest_url
        self.management_url = management_url

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Any = None,
        ok: tuple[int, ...] = (200, 202, 204),
    ) -> Any:
        async with self.session.request(method, url, json=json, data=data) as response:
            body = await response.json(content_type=None) if response.status != 204 else None
            if response.status not in ok:
                raise ApiError(response.status, body)
            return body

    async def deploy(self, bpmn: Path | bytes, name: str = "process.bpmn") -> dict[str, Any]:
        content = await asyncio.to_thread(bpmn.read_bytes) if isinstance(bpmn, Path) else bpmn
        form = aiohttp.FormData()
        form.add_field("resources", content, filename=bpmn.name if isinstance(bpmn, Path) else name)
        result: dict[str, Any] = await self.call(
            "POST", f"{self.rest_url}/v2/deployments", data=form
        )
        return result

    async def create_instance(
        self, process_id: str, variables: dict[str, Any] | None = None
    ) -> int:
        body = await self.call(
            "POST",
            f"{self.rest_url}/v2/process-instances",
            json={"processDefinitionId": process_id, "variables": variables or {}},
        )
        return int(body["processInstanceKey"])

    async def get_instance(self, key: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "GET", f"{self.rest_url}/v2/process-instances/{key}"
        )
        return result

    async def activate_jobs(
        self,
        job_type: str,
        max_jobs: int = 100,
        timeout_ms: int = 60_000,
        request_timeout_ms: int = -1,
    ) -> list[dict[str, Any]]:
        """Activate jobs; by default answered at once (no long polling), as tests poll."""
        body = await self.call(
            "POST",
            f"{self.rest_url}/v2/jobs/activation",
            json={
                "type": job_type,
                "maxJobsToActivate": max_jobs,
                "timeout": timeout_ms,
                "worker": "harness",
                "requestTimeout": request_timeout_ms,
            },
        )
        jobs: list[dict[str, Any]] = body["jobs"]
        return jobs

    async def complete_job(
        self, job_key: int | str, variables: dict[str, Any] | None = None
    ) -> None:
        await self.call(
            "POST",
            f"{self.rest_url}/v2/jobs/{job_key}/completion",
            json={"variables": variables or {}},
        )

    async def publish(
        self,
        name: str,
        correlation_key: str,
        ttl_ms: int = 60_000,
        variables: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> int:
        body: dict[str, Any] = {
            "name": name,
            "correlationKey": correlation_key,
            "timeToLive": ttl_ms,
            "variables": variables or {},
        }
        if message_id is not None:
            body["messageId"] = message_id
        result = await self.call("POST", f"{self.rest_url}/v2/messages/publication", json=body)
        return int(result["messageKey"])

    async def take_backup(self, backup_id: int | str) -> Any:
        return await self.call(
            "POST", f"{self.management_url}/actuator/backups", json={"backupId": backup_id}
        )

    async def backup(self, backup_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "GET", f"{self.management_url}/actuator/backups/{backup_id}"
        )
        return result

    async def wait_for_backup(self, backup_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Poll until the backup is COMPLETED or FAILED; returns its BackupInfo. (Right after
        the POST a partition may not have written its manifest yet: INCOMPLETE for a moment.)"""

        async def settled() -> dict[str, Any] | None:
            info = await self.backup(backup_id)
            return info if info["state"] in ("COMPLETED", "FAILED") else None

        return await eventually(settled, timeout_s=timeout_s)

    async def cluster_change_done(self, change_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until ``GET /actuator/cluster`` shows ``change_id`` as the last change and no
        pending change (how the in-process restore docs say to wait); that last change."""

        async def done() -> dict[str, Any] | None:
            body = await self.call("GET", f"{self.management_url}/actuator/cluster")
            last = body.get("lastChange")
            if "pendingChange" in body or last is None or str(last["id"]) != change_id:
                return None
            return dict(last)

        return await eventually(done, timeout_s=timeout_s, interval_s=0.05)

    async def change_mode(self, mode: str) -> dict[str, Any]:
        """``PATCH /v2/mode`` and wait until the change is done; the 200 body."""
        body: dict[str, Any] = await self.call("PATCH", f"{self.rest_url}/v2/mode?mode={mode}")
        last = await self.cluster_change_done(body["changeId"])
        assert last["status"] == "COMPLETED", last
        return body

    async def restore_in_process(
        self, request: dict[str, Any], timeout_s: float = 300.0
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``POST /v2/restore`` and wait until the change is done; the 202 body and every
        distinct ``GET /v2/restore`` answer seen meanwhile."""
        body: dict[str, Any] = await self.call("POST", f"{self.rest_url}/v2/restore", json=request)
        seen: list[dict[str, Any]] = []

        async def done() -> dict[str, Any] | None:
            status = await self.call("GET", f"{self.rest_url}/v2/restore", ok=(200, 404))
            if "brokers" in status and (not seen or seen[-1] != status):
                seen.append(status)
            if status.get("status") == "FAILED":
                return {"status": "FAILED", "restore": status}
            if "brokers" in status:
                return None
            return await self.cluster_change_done(body["changeId"], timeout_s=1)

        last = await eventually(done, timeout_s=timeout_s, interval_s=0.02)
        assert last["status"] == "COMPLETED", (last, seen)
        return body, seen


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float = 30.0, interval_s: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something other than None (or False), with a deadline.

    Exceptions from the probe count as "not yet" until the deadline, then the last one is
    raised.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            result = await probe()
            if result is not None and result is not False:
                return result
        except Exception as exc:
            last_error = exc
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s:g}s") from last_error
        await asyncio.sleep(interval_s)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``zeebe-sim ARGS`` as a process (``env`` added to this one's environment); its
    exit code and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zeebe_sim",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


class RunningCluster(LocalCluster):
    """A cluster of real processes, with the chaos API (``zeebe_sim/chaos.py``): faults by
    broker id or on the current leader of a partition."""

    api: ClusterApi

    async def leaders(self) -> dict[PartitionId, NodeId]:
        """Each partition's leader, as the gateway sees it (leaderless ones left out)."""
        return await chaos.leaders(self.api.session, self.management_url)

    async def leader_of(self, partition_id: int, timeout_s: float = 30.0) -> NodeId:
        """The leader of ``partition_id``, waiting up to ``timeout_s`` for there to be one."""

        async def found() -> NodeId | None:
            return (await self.leaders()).get(PartitionId(partition_id))

        return await eventually(found, timeout_s=timeout_s, interval_s=0.01)

    async def kill_leader(self, partition_id: int, sig: int = signal.SIGKILL) -> NodeId:
        """kill -9 (or ``sig``) the leader of ``partition_id``; its node id."""
        node = await self.leader_of(partition_id)
        self.kill_broker(node, sig)
        return node

    async def pause_leader(self, partition_id: int) -> NodeId:
        """SIGSTOP the leader of ``partition_id`` (:meth:`resume_broker` continues it)."""
        node = await self.leader_of(partition_id)
        self.pause_broker(node)
        return node

    def pause_broker(self, node: int) -> None:
        self.brokers[node].process.send_signal(signal.SIGSTOP)

    def resume_broker(self, node: int) -> None:
        self.brokers[node].process.send_signal(signal.SIGCONT)

    @property
    def broker_addresses(self) -> dict[int, str]:
        return {n: self.broker_address(n) for n in self.brokers}

    async def cut(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        """Cut brokers ``side_a`` from brokers ``side_b``, both ways."""
        await chaos.cut(self.broker_addresses, side_a, side_b)

    async def isolate(self, node: int) -> None:
        """Cut broker ``node`` from every other broker."""
        await self.cut([node], [n for n in self.brokers if n != node])

    async def slow(self, node: int, delay_ms: int) -> None:
        """Delay everything broker ``node`` sends to other brokers by ``delay_ms``."""
        await chaos.slow(self.broker_addresses, node, delay_ms)

    async def heal(self) -> list[int]:
        """Clear every cut and delay; the brokers reached."""
        return await chaos.heal(self.broker_addresses)


@contextlib.asynccontextmanager
async def running_cluster(
    data_dir: Path,
    *,
    brokers: int = 3,
    partitions: int = 3,
    replication_factor: int = 1,
    election_timeout_ms: int | None = None,
    heartbeat_interval_ms: int | None = None,
    broker_args: list[str] | None = None,
    gateway_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[RunningCluster]:
    """Start brokers and a gateway as real processes on OS-chosen ports; stop them after.

    Replication factor 1 unless asked (the CLI's default is 3); Raft timings as configured
    (Zeebe's defaults unless given; tests pass short ones)."""
    raft_args = ["--replication-factor", str(replication_factor)]
    if election_timeout_ms is not None:
        raft_args += ["--election-timeout", f"{election_timeout_ms}ms"]
    if heartbeat_interval_ms is not None:
        raft_args += ["--heartbeat-interval", f"{heartbeat_interval_ms}ms"]
    spec = ClusterSpec(
        brokers=brokers,
        partitions=partitions,
        data_dir=data_dir,
        broker_port=0,
        management_port=0,
        rest_port=0,
        grpc_port=0,
        broker_args=[*raft_args, *(broker_args or [])],
        gateway_args=gateway_args or [],
        env=env or {},
    )
    cluster = RunningCluster(spec)
    async with cluster, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        cluster.api = ClusterApi(session, cluster.rest_url, cluster.management_url)
        yield cluster
