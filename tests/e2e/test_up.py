"""`zeebe-sim up` as a user runs it: ready with its URLs, loud when a broker dies, and every
process gone after SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


async def test_up_reports_a_dead_broker_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """`up` prints its URLs and broker pids, says loudly when a broker is killed, and on
    SIGTERM exits 0 with no process of the cluster left."""
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zeebe_sim", "up", "--data-dir", str(tmp_path),
        "--broker-port", "0", "--management-port", "0", "--rest-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert up.stdout is not None and up.stderr is not None
    banner = ""
    async with asyncio.timeout(60):
        while "Press Ctrl-C to stop." not in banner:
            line = await up.stdout.readline()
            assert line, "up exited before it was ready"
            banner += line.decode()
    management = re.search(r"management \(actuator\): (\S+)", banner)
    rest = re.search(r"REST API:\s+(\S+)", banner)
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", banner)]
    assert management and rest and len(pids) == 3, banner
    async with aiohttp.ClientSession() as session:
        async with session.get(management.group(1)) as health:
            assert (await health.json())["status"] == "UP"
        async with session.get(rest.group(1)) as topology:
            assert (await topology.json())["clusterSize"] == 3

    os.kill(pids[1], signal.SIGKILL)
    async with asyncio.timeout(30):
        complaint = (await up.stderr.readline()).decode()
        while "exited unexpectedly" not in complaint:
            complaint = (await up.stderr.readline()).decode()
    assert f"broker 1 (pid {pids[1]}) exited unexpectedly" in complaint

    up.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await up.wait() == 0
    assert not [pid for pid in pids if alive(pid)]
