"""The unfinished-frame limits of a real broker process over real TCP (issue 8 item 6): a
slow-loris client is cut off at the deadline while others are served, and many clients each
holding most of a large frame cannot grow the broker's memory past its cap. The logic (which
connection goes, when, the accounting) is tested in process: tests/inprocess/test_frame_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import pytest

from zeebe_sim.ground import protocol
from zeebe_sim.ground.protocol import QueryRequest, TopologyRequest, TopologyResponse
from zeebe_sim.ground.transport import SERVER_UNFINISHED_BYTES_MAX, Connection, parse_address
from zeebe_sim.harness import running_cluster

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
FRAME_TIMEOUT_S = 3.0


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def hold_half_a_frame(address: str, frame: bytes) -> float:
    """Send half of ``frame`` and stall; seconds until the broker closes the connection."""
    with socket.create_connection(parse_address(address), timeout=30) as sock:
        sock.sendall(frame[: len(frame) // 2])
        started = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return time.monotonic() - started


def flood(address: str, frame: bytes, connections: int, bytes_each: int) -> None:
    """Open ``connections`` sockets, each sending ``bytes_each`` of ``frame`` and stalling,
    until the broker has closed every one of them (for the cap, or at the deadline)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(parse_address(address), timeout=30)
            sockets.append(sock)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(frame[:bytes_each])  # closed midway: the broker's cap at work
        for sock in sockets:
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):
                    pass
    finally:
        for sock in sockets:
            sock.close()


async def test_slow_loris_clients_are_cut_off_and_cannot_grow_the_broker_past_its_cap(
    tmp_path: Path,
) -> None:
    """A client holding half of an 8 MiB frame is disconnected once --frame-timeout has passed
    and a bystander is served meanwhile; then 40 clients each send 6 MiB of such a frame (240
    MiB in all): the broker closes the biggest holders as they pass its cap, its peak memory
    grows by less than the cap plus a margin, and it goes on serving."""
    frame = protocol.encode(QueryRequest(1, "partitions", {"pad": "x" * (8 * MIB - 100)}), 1)
    assert len(frame) <= protocol.FRAME_BYTES_MAX + 4
    async with running_cluster(
        tmp_path,
        brokers=1,
        partitions=1,
        broker_args=["--frame-timeout", f"{FRAME_TIMEOUT_S:g}s"],
        # glibc raises its mmap threshold after the first large free and then keeps freed
        # buffers in its heap, so RSS would count memory the broker no longer holds. A fixed
        # threshold maps every large buffer on its own and unmaps it when freed: RSS is then
        # what the broker really holds.
        env={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
    ) as cluster:
        address = cluster.broker_address(0)
        pid = cluster.brokers[0].pid
        bystander = await Connection.open(address)
        loris = asyncio.create_task(asyncio.to_thread(hold_half_a_frame, address, frame))
        while not loris.done():
            assert isinstance(await bystander.request(TopologyRequest(), 10), TopologyResponse)
            await asyncio.wait([loris], timeout=0.2)
        assert FRAME_TIMEOUT_S * 0.9 <= await loris < FRAME_TIMEOUT_S + 30

        baseline_kib = memory_kib(pid, "VmRSS")
        await asyncio.to_thread(flood, address, frame, 40, 6 * MIB)
        # Every byte has been read (each connection was closed after its data): 240 MiB were
        # sent, at most the cap may have been held at once, plus reading buffers and the
        # allocator's slack.
        growth_bytes = (memory_kib(pid, "VmHWM") - baseline_kib) * 1024
        assert growth_bytes < SERVER_UNFINISHED_BYTES_MAX + 48 * MIB, growth_bytes / MIB
        assert isinstance(await bystander.request(TopologyRequest(), 10), TopologyResponse)
        await bystander.close()
