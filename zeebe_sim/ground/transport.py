"""Thin asyncio shells around the wire protocol: a client connection and a server loop.

Theory of operation
-------------------
The client multiplexes requests over one connection by request id. The server reads frames,
hands each request to a handler task and writes the answer; garbage, truncated or oversized
input closes that connection only.

Both stand on asyncio's ``StreamReader``/``StreamWriter`` pair, which they get from a *network
backend* (httpcore's seam): :data:`TCP` opens real sockets; :class:`MemoryNetwork` joins two
in-memory transports, so that brokers and a gateway can run in one event loop with the real
framing and server loop and no socket at all (the in-process cluster of the tests).

Limits on what a peer can make us hold (TigerBeetle: name every limit): an unfinished frame
must be finished within :data:`UNFINISHED_FRAME_TIMEOUT_S` (a slow-loris peer holding half a
large frame is disconnected), it may hold at most :data:`CONNECTION_UNFINISHED_BYTES_MAX`, and
all connections of one server together at most :data:`SERVER_UNFINISHED_BYTES_MAX`; past that
cap the connections holding the most are closed first (:class:`UnfinishedFrames`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

import attrs

from zeebe_sim.ground import protocol
from zeebe_sim.ground.errors import (
    BrokerUnavailable,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    ResourceExhausted,
    ZeebeSimError,
    from_code,
)
from zeebe_sim.ground.protocol import FRAME_HEADER, ErrorResponse, FrameDecoder, Message

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 2.0
# asyncio's stream buffer limit: a StreamReader stops reading from its transport past twice this.
STREAM_LIMIT_BYTES = 1 << 20
# A peer that stops reading must not make us buffer without bound: past this, notifications to
# it are dropped (inter-partition sends are retried anyway) and requests fail.
WRITE_BUFFER_BYTES_MAX = 16 * 1024 * 1024
# A frame begun must be finished within this: a peer that sends half a large frame and stalls
# (slow loris) would otherwise pin that memory for as long as it keeps the socket open. Frames
# are written in one piece, so on loopback or a LAN a legitimate one completes in milliseconds;
# the margin is for a loaded machine, not for slow links.
UNFINISHED_FRAME_TIMEOUT_S = 10.0
# The largest unfinished frame one connection may hold: one frame of the largest size (the
# decoder refuses a larger length prefix outright).
CONNECTION_UNFINISHED_BYTES_MAX = FRAME_HEADER.size + protocol.FRAME_BYTES_MAX
# All unfinished frames of one server together: eight largest frames at once. Many connections
# each holding part of a large frame close, biggest first, instead of adding up to gigabytes.
SERVER_UNFINISHED_BYTES_MAX = 8 * CONNECTION_UNFINISHED_BYTES_MAX


@attrs.frozen
class FrameLimits:
    """The limits above, as one value a server or connection is given (tests use short ones)."""

    unfinished_frame_timeout_s: float = UNFINISHED_FRAME_TIMEOUT_S
    connection_unfinished_bytes_max: int = CONNECTION_UNFINISHED_BYTES_MAX
    server_unfinished_bytes_max: int = SERVER_UNFINISHED_BYTES_MAX


DEFAULT_FRAME_LIMITS = FrameLimits()


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


# -- network backends -----------------------------------------------------------------------------

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener(Protocol):
    """A listening server: the port it got (0 asks for any) and a way to stop it."""

    @property
    def port(self) -> int: ...

    def close(self) -> None: ...


class NetworkBackend(Protocol):
    """Where connections come from: real sockets (:data:`TCP`) or :class:`MemoryNetwork`."""

    async def connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection; OSError when nobody listens there."""
        ...

    async def listen(self, host: str, port: int, on_connection: ConnectionHandler) -> Listener:
        """Serve every new connection with ``on_connection`` (its own task)."""
        ...


class _TcpListener:
    def __init__(self, server: asyncio.Server) -> None:
        self._server = server

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()


class TcpNetwork:
    """Real TCP sockets (asyncio's streams)."""

    async def connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, limit=STREAM_LIMIT_BYTES)

    async def listen(self, host: str, port: int, on_connection: ConnectionHandler) -> Listener:
        server = await asyncio.start_server(on_connection, host, port, limit=STREAM_LIMIT_BYTES)
        return _TcpListener(server)


TCP: NetworkBackend = TcpNetwork()


_MEMORY_CHUNK_BYTES = 64 * 1024


class _MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection: what is written here is delivered to the peer's
    protocol on a later loop iteration, in order; the peer pausing its reading holds it here (and
    shows as this end's write buffer, pausing the writer past the high-water mark), as a socket
    would. ``close`` delivers what is buffered, then an EOF; ``abort`` drops what is buffered
    on both ends and ends both at once (a reset, as a process's end resets its sockets)."""

    _HIGH_WATER_BYTES = 64 * 1024

    def __init__(self, protocol: asyncio.Protocol, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self.peer: _MemoryTransport | None = None
        self._outbox = bytearray()
        self._flush_scheduled = False
        self._closing = False
        self._lost = False
        self._reading_paused = False
        self._writing_paused = False
        self._high_bytes = self._HIGH_WATER_BYTES
        self._low_bytes = self._HIGH_WATER_BYTES // 4

    # writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._outbox += data
        self._schedule_flush()
        if not self._writing_paused and len(self._outbox) > self._high_bytes:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        peer = self.peer
        if peer is None or peer._lost:
            self._outbox.clear()  # the other end is gone: what was in flight is lost
        else:
            # In socket-sized pieces, so that a peer that pauses its reading midway leaves the
            # rest here, in our write buffer, as a full socket buffer would.
            while self._outbox and not peer._reading_paused and not peer._lost:
                data = bytes(self._outbox[:_MEMORY_CHUNK_BYTES])
                del self._outbox[:_MEMORY_CHUNK_BYTES]
                peer._protocol.data_received(data)
        if self._writing_paused and len(self._outbox) <= self._low_bytes:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._closing and not self._outbox and not self._lost:
            self._finish_close()

    def get_write_buffer_size(self) -> int:
        return len(self._outbox)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_bytes, self._high_bytes

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_bytes = self._HIGH_WATER_BYTES if high is None else high
        self._low_bytes = self._high_bytes // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False

    # reading

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        if self.peer is not None and self.peer._outbox:
            self.peer._schedule_flush()

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    # closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Deliver what is buffered, then an EOF to the peer."""
        if self._closing:
            return
        self._closing = True
        self._schedule_flush()

    def abort(self) -> None:
        """Drop what is buffered on both ends and end both streams now (a reset)."""
        if self._lost:
            return
        self._closing = True
        self._outbox.clear()
        peer = self.peer
        self._finish_close()
        if peer is not None and not peer._lost:
            # The peer's stream ends at once (an EOF rather than ECONNRESET: every reader of
            # ours treats both alike, and an exception would sit unretrieved in asyncio's
            # close waiter of a writer nobody awaits).
            peer._closing = True
            peer._outbox.clear()
            peer._finish_close()

    def _finish_close(self) -> None:
        self._lost = True
        peer = self.peer
        if peer is not None and not peer._lost:
            self._loop.call_soon(peer._eof_received)
        self._loop.call_soon(self._protocol.connection_lost, None)

    def _eof_received(self) -> None:
        if self._lost:
            return
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol


class _MemoryListener:
    def __init__(
        self, network: MemoryNetwork, address: str, on_connection: ConnectionHandler
    ) -> None:
        self._network = network
        self.address = address
        self.on_connection = on_connection
        self.accepted: set[_MemoryTransport] = set()

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    def close(self) -> None:
        """Stop listening and reset every connection accepted, as the end of the process that
        held them would: an in-process "kill" of a server."""
        self._network.listeners.pop(self.address, None)
        for transport in list(self.accepted):
            transport.abort()
        self.accepted.clear()


class MemoryNetwork:
    """A network in memory: :meth:`listen` registers ``host:port`` (port 0: the next free
    number), :meth:`connect` joins two :class:`_MemoryTransport` ends under asyncio's own stream
    classes, so the code above them runs as it does over TCP."""

    def __init__(self) -> None:
        self.listeners: dict[str, _MemoryListener] = {}
        self._ports = itertools.count(40_000)
        self._client_ports = itertools.count(1)

    async def connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        listener = self.listeners.get(f"{host}:{port}")
        if listener is None:
            raise ConnectionRefusedError(f"nothing listens on {host}:{port} (memory network)")
        loop = asyncio.get_running_loop()
        client_address = ("memory-client", next(self._client_ports))
        reader = asyncio.StreamReader(limit=STREAM_LIMIT_BYTES, loop=loop)
        client_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        server_protocol = asyncio.StreamReaderProtocol(
            asyncio.StreamReader(limit=STREAM_LIMIT_BYTES, loop=loop),
            listener.on_connection,
            loop=loop,
        )
        client = _MemoryTransport(
            client_protocol, {"peername": (host, port), "sockname": client_address}
        )
        server = _MemoryTransport(
            server_protocol, {"peername": client_address, "sockname": (host, port)}
        )
        client.peer, server.peer = server, client
        listener.accepted.add(server)
        server_protocol.connection_made(server)  # starts on_connection as a task, as asyncio does
        client_protocol.connection_made(client)
        return reader, asyncio.StreamWriter(client, client_protocol, reader, loop)

    async def listen(self, host: str, port: int, on_connection: ConnectionHandler) -> Listener:
        if port == 0:
            port = next(self._ports)
            while f"{host}:{port}" in self.listeners:
                port = next(self._ports)
        address = f"{host}:{port}"
        if address in self.listeners:
            raise OSError(f"address already in use: {address} (memory network)")
        listener = _MemoryListener(self, address, on_connection)
        self.listeners[address] = listener
        return listener


# -- reading frames under the limits ---------------------------------------------------------------


class UnfinishedFrames:
    """The bytes held by unfinished frames over the connections of one server, under a cap.

    Plain bookkeeping: :meth:`hold` records what a connection holds now and returns the
    connections to close (the largest holders first, possibly the caller) to get back under
    the cap; they are forgotten at once, so the cap holds the moment ``hold`` returns.
    """

    def __init__(self, bytes_max: int = SERVER_UNFINISHED_BYTES_MAX) -> None:
        self.bytes_max = bytes_max
        self._held: dict[Hashable, int] = {}
        self.held_bytes = 0
        self.evicted = 0  # connections closed for the cap, for tests and logs

    def hold(self, owner: Hashable, held_bytes: int) -> list[Hashable]:
        self.held_bytes += held_bytes - self._held.pop(owner, 0)
        if held_bytes:
            self._held[owner] = held_bytes
        victims: list[Hashable] = []
        while self.held_bytes > self.bytes_max:
            victim = max(self._held, key=self._held.__getitem__)
            self.held_bytes -= self._held.pop(victim)
            victims.append(victim)
        self.evicted += len(victims)
        return victims

    def release(self, owner: Hashable) -> None:
        self.held_bytes -= self._held.pop(owner, 0)


class _FrameReader:
    """Reads frames from one connection under :class:`FrameLimits` (the deadline and the
    per-connection cap) and its server's :class:`UnfinishedFrames` (the shared cap)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: FrameLimits,
        unfinished: UnfinishedFrames | None,
        readers: dict[Hashable, _FrameReader] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._unfinished = unfinished
        self._readers = readers
        self._decoder = FrameDecoder()
        self._frame_started: float | None = None
        self._evicted = False
        if readers is not None:
            readers[self] = self

    async def read(self) -> list[tuple[int, Message]] | None:
        """The next messages completed; None at the end of the connection, or when it was
        closed for a limit (logged).

        Raises:
            ProtocolError: malformed input.
            OSError: the connection failed.
        """
        loop = asyncio.get_running_loop()
        while not self._evicted:
            if self._frame_started is None:
                data = await self._reader.read(READ_CHUNK_BYTES)
            else:
                remaining_s = self._frame_started + self._limits.unfinished_frame_timeout_s
                try:
                    async with asyncio.timeout(remaining_s - loop.time()):
                        data = await self._reader.read(READ_CHUNK_BYTES)
                except TimeoutError:
                    log.warning(
                        "closing a connection whose frame stayed unfinished for %gs (%d bytes)",
                        self._limits.unfinished_frame_timeout_s,
                        self._decoder.buffered_bytes,
                    )
                    return None
            if not data or self._evicted:
                return None
            messages = self._decoder.feed(data)
            held = self._decoder.buffered_bytes
            if not held:
                self._frame_started = None
            elif messages or self._frame_started is None:
                self._frame_started = loop.time()  # a new frame began in this chunk
            if held > self._limits.connection_unfinished_bytes_max:
                log.warning("closing a connection holding an unfinished frame of %d bytes", held)
                return None
            if self._unfinished is not None and self._account(held):
                log.warning("closing a connection: unfinished frames over the server's cap")
                return None
            if messages:
                return messages
        return None

    def _account(self, held_bytes: int) -> bool:
        """Report what this connection holds; close the others the cap says to close. True
        if this one must close too. (A method of its own, so that no victim stays referenced
        from a suspended frame: a victim's buffer must be freed as soon as it is closed.)"""
        assert self._unfinished is not None
        closing_self = False
        for victim in self._unfinished.hold(self, held_bytes):
            if victim is self:
                closing_self = True
            elif self._readers is not None and victim in self._readers:
                self._readers[victim].evict()
        return closing_self

    def evict(self) -> None:
        """Close this connection for the server's cap, dropping what it holds now (its loop
        ends when it next wakes)."""
        log.warning("closing a connection: unfinished frames over the server's cap")
        self._evicted = True
        self._decoder = FrameDecoder()
        self._writer.transport.abort()

    def done(self) -> None:
        if self._unfinished is not None:
            self._unfinished.release(self)
        if self._readers is not None:
            self._readers.pop(self, None)


# -- client and server --------------------------------------------------------------------------


class Connection:
    """A client connection to one broker."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: FrameLimits = DEFAULT_FRAME_LIMITS,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._reading = asyncio.get_running_loop().create_task(self._read())
        self.closed = False

    @classmethod
    async def open(
        cls,
        address: str,
        timeout_s: float = CONNECT_TIMEOUT_S,
        network: NetworkBackend = TCP,
    ) -> Connection:
        """Connect to ``host:port`` over ``network``.

        Raises:
            BrokerUnavailable: refused, unreachable or not answering within the timeout.
        """
        host, port = parse_address(address)
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await network.connect(host, port)
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"Cannot connect to {address}: {exc}") from exc
        return cls(reader, writer)

    async def request(self, message: Message, timeout_s: float) -> Message:
        """Send a request and wait for its answer; an ErrorResponse is raised as its error.

        Raises:
            BrokerUnavailable: the connection is (or gets) closed before the answer.
            RequestTimeout: no answer within ``timeout_s``.
            ZeebeSimError: the broker answered with an error.
        """
        if self.closed:
            raise BrokerUnavailable("connection closed")
        request_id = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            self._write(protocol.encode(message, request_id))
            async with asyncio.timeout(timeout_s):
                response = await answer
        except TimeoutError as exc:
            raise RequestTimeout(
                f"Expected a response to {type(message).__name__} within {timeout_s:g}s"
            ) from exc
        finally:
            self._pending.pop(request_id, None)
        if isinstance(response, ErrorResponse):
            raise from_code(response.code, response.message, response.leader)
        return response

    def notify(self, message: Message) -> bool:
        """Send a message that expects no answer; False if it could not be queued."""
        if self.closed or self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            return False
        self._writer.write(protocol.encode(message))
        return True

    def _write(self, frame: bytes) -> None:
        if self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            raise ResourceExhausted("the connection's write buffer is full")
        self._writer.write(frame)

    async def _read(self) -> None:
        frames = _FrameReader(self._reader, self._writer, self._limits, None)
        try:
            while (messages := await frames.read()) is not None:
                for request_id, message in messages:
                    answer = self._pending.get(request_id)
                    if answer is not None and not answer.done():
                        answer.set_result(message)
        except (OSError, ProtocolError) as exc:
            log.debug("connection lost: %s", exc)
        finally:
            frames.done()
            self._fail_pending()

    def _fail_pending(self) -> None:
        self.closed = True
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(ConnectionLost("the connection to the broker was lost"))
        self._pending.clear()
        self._writer.close()

    async def close(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        self._fail_pending()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


Handler = Callable[[Message], Awaitable[Message | None]]


class ServerLimits:
    """What the connections of one server share: their :class:`FrameLimits` and the
    accounting of their unfinished frames (one per broker)."""

    def __init__(self, limits: FrameLimits = DEFAULT_FRAME_LIMITS) -> None:
        self.limits = limits
        self.unfinished = UnfinishedFrames(limits.server_unfinished_bytes_max)
        self.readers: dict[Hashable, _FrameReader] = {}


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    in_flight_max: int = protocol.IN_FLIGHT_REQUESTS_MAX,
    server: ServerLimits | None = None,
) -> None:
    """Serve one client connection until it closes, sends something malformed or breaks a
    limit (``server``: the limits and the accounting it shares with the server's other
    connections; None: default limits, accounted alone)."""
    server = server if server is not None else ServerLimits()
    frames = _FrameReader(reader, writer, server.limits, server.unfinished, server.readers)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, message: Message) -> None:
        try:
            response = await handle(message)
        except ZeebeSimError as exc:
            response = ErrorResponse(exc.code, exc.message, getattr(exc, "leader", None))
        except Exception as exc:  # a bug in a handler must not take the connection down
            log.exception("request failed")
            response = ErrorResponse("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
        if response is not None and not writer.is_closing():
            writer.write(protocol.encode(response, request_id))

    try:
        while (messages := await frames.read()) is not None:
            for request_id, message in messages:
                if not message.expects_response:
                    await handle(message)
                    continue
                if len(tasks) >= in_flight_max:
                    writer.write(
                        protocol.encode(
                            ErrorResponse(
                                "RESOURCE_EXHAUSTED",
                                f"more than {in_flight_max} requests in flight on one connection",
                            ),
                            request_id,
                        )
                    )
                    continue
                task = asyncio.get_running_loop().create_task(answer(request_id, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
                await writer.drain()
    except ProtocolError as exc:
        log.warning("closing connection after malformed input: %s", exc)
    except OSError as exc:
        log.debug("connection error: %s", exc)
    finally:
        frames.done()
        for task in tasks:
            task.cancel()
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()
