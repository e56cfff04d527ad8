"""Limits on what a peer can make a broker hold (issue 8 item 6), over the in-process cluster's
memory network: an unfinished frame has a deadline, and the bytes unfinished frames hold are
capped per connection and per broker (the biggest holders are closed first)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeebe_sim.ground import protocol
from zeebe_sim.ground.errors import BrokerUnavailable
from zeebe_sim.ground.protocol import QueryRequest, TopologyRequest, TopologyResponse
from zeebe_sim.ground.transport import (
    Connection,
    FrameLimits,
    MemoryNetwork,
    UnfinishedFrames,
    parse_address,
)
from zeebe_sim.harness import eventually
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess


def large_frame(body_bytes: int) -> bytes:
    """A valid request frame of about ``body_bytes``."""
    return protocol.encode(QueryRequest(1, "partitions", {"padding": "x" * body_bytes}), 7)


async def raw_connection(
    cluster: InProcessCluster, node: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await cluster.network.connect(*parse_address(cluster.broker_address(node)))


async def closed_by_peer(reader: asyncio.StreamReader, timeout_s: float = 10.0) -> bool:
    """True once the other end has closed (EOF or reset), within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return True


async def still_served(cluster: InProcessCluster) -> None:
    fresh = await Connection.open(cluster.broker_address(0), network=cluster.network)
    try:
        assert isinstance(await fresh.request(TopologyRequest(), 5), TopologyResponse)
    finally:
        await fresh.close()


# -- the accounting, as plain bookkeeping ---------------------------------------------------------


def test_the_biggest_holders_are_closed_first_until_under_the_cap() -> None:
    """hold() answers whom to close: the largest holders, the caller included, and forgets
    them at once, so the total never stays above the cap."""
    frames = UnfinishedFrames(bytes_max=250)
    assert frames.hold("a", 100) == []
    assert frames.hold("b", 90) == []
    assert frames.hold("c", 80) == ["a"]  # 270 > 250: a (100) goes
    assert frames.held_bytes == 170
    assert frames.hold("b", 200) == ["b"]  # b grows past everyone: b itself goes
    assert frames.held_bytes == 80
    frames.release("c")
    assert (frames.held_bytes, frames.evicted) == (0, 2)


@given(
    st.integers(1, 1000),
    st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 600)), max_size=40),
)
def test_any_sequence_of_holdings_stays_under_the_cap(
    bytes_max: int, steps: list[tuple[str, int]]
) -> None:
    """Whatever connections report, the total is at most the cap and equals what the
    connections still accounted hold; an evicted connection is one of the largest."""
    frames = UnfinishedFrames(bytes_max)
    held: dict[str, int] = {}
    for owner, size in steps:
        held[owner] = size
        before = dict(held)
        victims = frames.hold(owner, size)
        for victim in victims:
            assert isinstance(victim, str)
            assert before[victim] == max(before.values())
            del before[victim]
            del held[victim]
        assert frames.held_bytes <= bytes_max
        assert frames.held_bytes == sum(held.values())


# -- a broker under slow and greedy peers ---------------------------------------------------------


async def test_a_half_sent_frame_is_cut_off_at_the_deadline_and_others_are_served(
    tmp_path: Path,
) -> None:
    """A peer that sends half of a large frame and stalls is disconnected once the deadline
    has passed (not before); a connection opened before and one opened after are served, and
    the broker holds nothing for it any more."""
    deadline_s = 0.3
    async with InProcessCluster(
        tmp_path,
        brokers=1,
        partitions=1,
        frame_limits=FrameLimits(unfinished_frame_timeout_s=deadline_s),
    ) as cluster:
        bystander = await Connection.open(cluster.broker_address(0), network=cluster.network)
        reader, writer = await raw_connection(cluster)
        frame = large_frame(2 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(frame[: len(frame) // 2])
        assert await closed_by_peer(reader)
        assert loop.time() - started >= deadline_s
        assert cluster.brokers[0].limits.unfinished.held_bytes == 0
        assert isinstance(await bystander.request(TopologyRequest(), 5), TopologyResponse)
        await still_served(cluster)
        writer.close()
        await bystander.close()


async def test_a_frame_finished_in_time_is_served_and_idle_connections_have_no_deadline(
    tmp_path: Path,
) -> None:
    """The deadline is for an unfinished frame only: a frame sent in two halves within it is
    answered, and a connection idle for longer than the deadline between frames stays open."""
    deadline_s = 0.5
    async with InProcessCluster(
        tmp_path,
        brokers=1,
        partitions=1,
        frame_limits=FrameLimits(unfinished_frame_timeout_s=deadline_s),
    ) as cluster:
        reader, writer = await raw_connection(cluster)
        frame = protocol.encode(TopologyRequest(), 1)
        writer.write(frame[:3])
        await asyncio.sleep(deadline_s / 10)  # the slow sender, well inside the deadline
        writer.write(frame[3:])
        decoder = protocol.FrameDecoder()
        async with asyncio.timeout(10):
            while not (answers := decoder.feed(await reader.read(65536))):
                pass
        assert isinstance(answers[0][1], TopologyResponse)

        idle = Connection(*await raw_connection(cluster), FrameLimits(deadline_s))
        await asyncio.sleep(deadline_s * 1.5)  # idle past the deadline: nothing may happen
        assert isinstance(await idle.request(TopologyRequest(), 5), TopologyResponse)
        await idle.close()
        writer.close()


async def test_an_unfinished_frame_over_the_connection_cap_closes_at_once(tmp_path: Path) -> None:
    """A connection whose unfinished frame grows past its cap is closed without waiting for
    the deadline."""
    async with InProcessCluster(
        tmp_path,
        brokers=1,
        partitions=1,
        frame_limits=FrameLimits(
            unfinished_frame_timeout_s=120.0, connection_unfinished_bytes_max=64 * 1024
        ),
    ) as cluster:
        reader, writer = await raw_connection(cluster)
        writer.write(large_frame(1024 * 1024)[: 100 * 1024])
        assert await closed_by_peer(reader, timeout_s=10.0)
        assert cluster.brokers[0].limits.unfinished.held_bytes == 0
        await still_served(cluster)
        writer.close()


async def test_many_half_frames_stay_under_the_broker_cap_biggest_closed_first(
    tmp_path: Path,
) -> None:
    """Six connections each hold part of a large frame (100, 90, ..., 50 KiB) against a broker
    cap of 256 KiB: the broker never holds more than the cap, it closes the biggest holders
    (100, 90, 80 KiB), keeps the others, and goes on serving."""
    cap = 256 * 1024
    async with InProcessCluster(
        tmp_path,
        brokers=1,
        partitions=1,
        frame_limits=FrameLimits(unfinished_frame_timeout_s=120.0, server_unfinished_bytes_max=cap),
    ) as cluster:
        accounting = cluster.brokers[0].limits.unfinished
        frame = large_frame(1024 * 1024)
        # (KiB sent by the new connection, KiB the broker then holds, connections closed)
        steps = [(100, 100, 0), (90, 190, 0), (80, 170, 1), (70, 240, 1), (60, 210, 2)]
        steps.append((50, 180, 3))
        connections = []
        for kib, held_kib, evicted in steps:
            reader, writer = await raw_connection(cluster)
            connections.append((reader, writer))
            writer.write(frame[: kib * 1024])

            async def accounted(held_kib: int = held_kib, evicted: int = evicted) -> bool:
                return (accounting.held_bytes, accounting.evicted) == (held_kib * 1024, evicted)

            await eventually(accounted, timeout_s=10, interval_s=0.005)
            assert accounting.held_bytes <= cap
        for reader, _ in connections[:3]:
            assert await closed_by_peer(reader)
        for reader, _ in connections[3:]:
            assert not reader.at_eof()
        await still_served(cluster)
        for _, writer in connections:
            writer.close()


async def test_a_client_connection_is_cut_off_when_a_peer_stalls_mid_frame() -> None:
    """The client side keeps the same deadline: a broker that answers half a frame and stalls
    fails the request with BrokerUnavailable after the deadline, not the request timeout."""
    network = MemoryNetwork()

    async def stalling_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        answer = protocol.encode(TopologyResponse(0, 1, 1, 1, {0: "x" * 4096}, {1: "LEADER"}, "v"))
        writer.write(answer[: len(answer) // 2])
        await reader.read(65536)  # until the client goes away
        writer.close()

    listener = await network.listen("127.0.0.1", 0, stalling_broker)
    reader, writer = await network.connect("127.0.0.1", listener.port)
    connection = Connection(reader, writer, FrameLimits(unfinished_frame_timeout_s=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerUnavailable):
        await connection.request(TopologyRequest(), timeout_s=30)
    assert 0.2 <= loop.time() - started < 20
    await connection.close()
    listener.close()
