"""zbctl, Zeebe's command-line client (the Go binary the npm package ``zbctl`` ships), against a
real zeebe-sim cluster: topology, deploy, create (with and without result) and publish."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.harness import RunningCluster, eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ZBCTL_VERSION = "8.4.1"
# Where the test installs zbctl with npm when CI (.ci/run) has not.
ZBCTL_CACHE = Path.home() / ".cache" / "zeebe-sim" / f"zbctl-{ZBCTL_VERSION}"


async def _zbctl_binary() -> str:
    for candidate in (
        os.environ.get("ZBCTL"),
        str(REPO / "node_modules" / ".bin" / "zbctl"),
        str(ZBCTL_CACHE / "node_modules" / ".bin" / "zbctl"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("zbctl is needed: install Node.js/npm, or set ZBCTL to a zbctl binary")
    process = await asyncio.create_subprocess_exec(
        npm,
        "install",
        "--prefix",
        str(ZBCTL_CACHE),
        "--no-audit",
        "--no-fund",
        f"zbctl@{ZBCTL_VERSION}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, output.decode()
    return str(ZBCTL_CACHE / "node_modules" / ".bin" / "zbctl")


async def zbctl(cluster: RunningCluster, *args: str) -> str:
    """Run zbctl against the cluster's gRPC port; its output (exit code 0 asserted)."""
    process = await asyncio.create_subprocess_exec(
        await _zbctl_binary(),
        "--insecure",
        "--address",
        cluster.grpc_address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ZEEBE_ADDRESS": cluster.grpc_address},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, f"zbctl {' '.join(args)} failed:\n{text}"
    return text


def _json(text: str) -> Any:
    return json.loads(text[text.index("{") :])


async def test_zbctl_topology_deploy_create_and_publish(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """zbctl status shows the cluster; deploy resource, create instance (also --withResult)
    and publish message work, and the published message completes the waiting instance."""
    status = await zbctl(cluster, "status")
    assert "Cluster size: 3" in status and "Partitions count: 3" in status
    assert status.count("Partition 1 : Leader, Healthy") == 1

    waiting = tmp_path / "waiting.bpmn"
    waiting.write_bytes(process_xml("waiting", job_type=None))
    straight = tmp_path / "straight.bpmn"
    straight.write_bytes(process_xml("straight", job_type=None, message=None))
    deployed = _json(await zbctl(cluster, "deploy", "resource", str(waiting), str(straight)))
    assert sorted(d["process"]["bpmnProcessId"] for d in deployed["deployments"]) == [
        "straight",
        "waiting",
    ]

    result = _json(
        await zbctl(
            cluster, "create", "instance", "straight", "--variables", '{"x": 1}', "--withResult"
        )
    )
    assert json.loads(result["variables"]) == {"x": 1}

    created = _json(
        await zbctl(cluster, "create", "instance", "waiting", "--variables", '{"key": "k-1"}')
    )
    instance_key = int(created["processInstanceKey"])
    await zbctl(
        cluster,
        "publish",
        "message",
        "ping",
        "--correlationKey",
        "k-1",
        "--ttl",
        "60s",
        "--variables",
        '{"paid": true}',
    )

    async def completed() -> bool:
        return (await cluster.api.get_instance(instance_key))["state"] == "COMPLETED"

    await eventually(completed)
