"""The broker server (broker/server.py) and the transport's server loop over the in-process
cluster's memory network: malformed input closes only its connection, the in-flight limit,
errors for what a broker does not handle or lead, and the memory network itself behaving as a
socket would (ordering, flow control, close and reset). The same input over real TCP is
tests/e2e/test_cluster.py's."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from zeebe_sim.ground import protocol
from zeebe_sim.ground.errors import (
    BackupNotConfigured,
    InvalidArgument,
    PartitionLeaderMismatch,
    UnsupportedMessage,
)
from zeebe_sim.ground.protocol import (
    BackupStatusRequest,
    ErrorResponse,
    ExecuteCommandResponse,
    FrameDecoder,
    Message,
    QueryRequest,
    QueryResponse,
    TakeBackupRequest,
    TopologyRequest,
    TopologyResponse,
)
from zeebe_sim.ground.transport import Connection, MemoryNetwork, parse_address, serve_connection
from zeebe_sim.inprocess import InProcessCluster

pytestmark = pytest.mark.inprocess


async def exchange(network: MemoryNetwork, address: str, payload: bytes) -> bytes:
    """Send raw bytes; return everything answered until the broker closes (b"": closed)."""
    reader, writer = await network.connect(*parse_address(address))
    writer.write(payload)
    chunks = []
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    writer.close()
    return b"".join(chunks)


async def test_garbage_and_oversized_frames_close_only_that_connection(tmp_path: Path) -> None:
    """Bad msgpack, a length over the frame limit, a frame cut by EOF, a bad byte at the end:
    that connection is closed without an answer; one opened before and one after are served."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1) as cluster:
        address = cluster.broker_address(0)
        bystander = await Connection.open(address, network=cluster.network)
        bad_inputs = [
            b"\x00\x00\x00\x05garbage-not-msgpack",
            struct.pack(">I", protocol.FRAME_BYTES_MAX + 1) + b"x" * 100,
            struct.pack(">I", 4) + b"\x94\x01\xa3Bad",
            protocol.encode(TopologyRequest())[:-1] + b"\xc1",
        ]
        for payload in bad_inputs:
            assert await exchange(cluster.network, address, payload) == b"", payload
        assert isinstance(await bystander.request(TopologyRequest(), 5), TopologyResponse)
        fresh = await Connection.open(address, network=cluster.network)
        assert isinstance(await fresh.request(TopologyRequest(), 5), TopologyResponse)
        await bystander.close()
        await fresh.close()


async def test_what_a_broker_does_not_lead_or_handle_is_an_error_answer(tmp_path: Path) -> None:
    """A request for a partition the broker does not lead is PARTITION_LEADER_MISMATCH (so the
    gateway looks for the leader); a message brokers do not handle is UNSUPPORTED_MESSAGE; an
    unknown query is INVALID_ARGUMENT; the connection stays usable after each."""
    async with InProcessCluster(tmp_path, brokers=2, partitions=2) as cluster:
        connection = await Connection.open(cluster.broker_address(0), network=cluster.network)
        with pytest.raises(PartitionLeaderMismatch):
            await connection.request(BackupStatusRequest(2, 1), 5)
        with pytest.raises(UnsupportedMessage):
            await connection.request(ExecuteCommandResponse(1, 1, "X", "Y", {}), 5)
        with pytest.raises(InvalidArgument, match="unknown query"):
            await connection.request(QueryRequest(1, "everything", {}), 5)
        answer = await connection.request(TopologyRequest(), 5)
        assert isinstance(answer, TopologyResponse) and answer.partitions == {1: "LEADER"}
        await connection.close()


async def test_a_checkpoint_request_without_a_store_takes_no_checkpoint(tmp_path: Path) -> None:
    """TAKE_BACKUP on a broker without a store answers BACKUP_NOT_CONFIGURED before writing
    anything: the partition's checkpoint does not move (REFERENCE §1, corrected)."""
    async with InProcessCluster(tmp_path, brokers=1, partitions=1, backups=False) as cluster:
        connection = await Connection.open(cluster.broker_address(0), network=cluster.network)
        with pytest.raises(BackupNotConfigured):
            await connection.request(TakeBackupRequest(1, 5), 5)
        status = await connection.request(QueryRequest(1, "partitions", {}), 5)
        assert isinstance(status, QueryResponse) and status.result["1"]["checkpointId"] == -1
        await connection.close()


async def test_requests_beyond_the_in_flight_limit_are_resource_exhausted() -> None:
    """With two requests in flight on a connection, a third is answered RESOURCE_EXHAUSTED at
    once; the first two are answered when their handler finishes."""
    network = MemoryNetwork()
    release = asyncio.Event()

    async def handle(message: Message) -> Message | None:
        await release.wait()
        return TopologyResponse(0, 1, 1, 1, {}, {}, "v")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, handle, in_flight_max=2)

    listener = await network.listen("127.0.0.1", 0, serve)
    reader, writer = await network.connect("127.0.0.1", listener.port)
    for request_id in (1, 2, 3):
        writer.write(protocol.encode(TopologyRequest(), request_id))
    decoder = FrameDecoder()
    answers: list[tuple[int, Message]] = []
    async with asyncio.timeout(10):
        while not answers:
            answers += decoder.feed(await reader.read(65536))
        assert [(i, type(m)) for i, m in answers] == [(3, ErrorResponse)]
        assert isinstance(answers[0][1], ErrorResponse)
        assert answers[0][1].code == "RESOURCE_EXHAUSTED"
        release.set()
        while len(answers) < 3:
            answers += decoder.feed(await reader.read(65536))
    assert sorted(i for i, _ in answers[1:]) == [1, 2]
    writer.close()
    listener.close()


# -- the memory network behaves as a socket ----------------------------------------------------


async def echo_pair() -> tuple[MemoryNetwork, asyncio.StreamReader, asyncio.StreamWriter]:
    network = MemoryNetwork()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    listener = await network.listen("127.0.0.1", 0, echo)
    reader, writer = await network.connect("127.0.0.1", listener.port)
    return network, reader, writer


async def test_the_memory_network_delivers_in_order_and_closes_with_an_eof() -> None:
    """Bytes arrive in order and whole (echoed back); close() right after a large write still
    delivers all of it before the peer sees the end of the stream; connecting where nobody
    listens is refused with an OSError, as over TCP."""
    network, reader, writer = await echo_pair()
    payload = bytes(range(256)) * 4096  # 1 MiB, past every buffer's high-water mark
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 10)

    received: list[bytes] = []
    ended = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())  # everything until the end of the stream
        ended.set()
        writer.close()

    listener = await network.listen("127.0.0.1", 0, sink)
    _, writer = await network.connect("127.0.0.1", listener.port)
    writer.write(payload)
    writer.close()
    await asyncio.wait_for(ended.wait(), 10)
    assert received == [payload]
    with pytest.raises(OSError):
        await network.connect("127.0.0.1", 1)
    listener.close()


async def test_a_reader_that_stops_reading_pauses_the_writer() -> None:
    """The peer does not read: what is written stays in our write buffer (visible to the
    transport's back-pressure checks) and drain() waits; once the peer reads, it flows."""
    network = MemoryNetwork()
    peer: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    connected = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.append((reader, writer))
        connected.set()
        await asyncio.Event().wait()

    listener = await network.listen("127.0.0.1", 0, hold)
    _, writer = await network.connect("127.0.0.1", listener.port)
    await asyncio.wait_for(connected.wait(), 10)
    chunk = b"x" * (1 << 20)
    for _ in range(4):  # 4 MiB: past the peer's stream limit (2 x 1 MiB), reading pauses
        writer.write(chunk)
    drained = asyncio.create_task(writer.drain())
    await asyncio.sleep(0.05)  # give the flow every chance to (wrongly) complete
    assert writer.transport.get_write_buffer_size() > 0 and not drained.done()
    peer_reader, peer_writer = peer[0]
    assert len(await peer_reader.readexactly(4 << 20)) == 4 << 20
    await asyncio.wait_for(drained, 10)
    assert writer.transport.get_write_buffer_size() == 0
    writer.close()
    peer_writer.close()
    listener.close()


async def test_closing_a_listener_resets_its_connections_as_a_dying_process_would() -> None:
    """Closing the listener (an in-process "kill") ends every connection it accepted at once,
    and the address is free to listen on again."""
    network, reader, writer = await echo_pair()
    (address,) = network.listeners
    network.listeners[address].close()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    host, port = parse_address(address)
    with pytest.raises(OSError):
        await network.connect(host, port)
    again = await network.listen(host, port, lambda r, w: asyncio.sleep(0))
    assert again.port == port
    writer.close()
    again.close()
