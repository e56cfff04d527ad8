"""Thin asyncio shells around the wire protocol: a client connection and a server loop.

The client multiplexes requests over one TCP connection by request id. The server reads frames,
hands each request to a handler task and writes the answer; garbage, truncated or oversized
input closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

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
from zeebe_sim.ground.protocol import ErrorResponse, FrameDecoder, Message

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 2.0
# A peer that stops reading must not make us buffer without bound: past this, notifications to
# it are dropped (inter-partition sends are retried anyway) and requests fail.
WRITE_BUFFER_BYTES_MAX = 16 * 1024 * 1024


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


class Connection:
    """A client connection to one broker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._reading = asyncio.get_running_loop().create_task(self._read())
        self.closed = False

    @classmethod
    async def open(cls, address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
        """Connect to ``host:port``.

        Raises:
            BrokerUnavailable: refused, unreachable or not answering within the timeout.
        """
        host, port = parse_address(address)
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
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
            raise from_code(response.code, response.message)
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
        decoder = FrameDecoder()
        try:
            while True:
                data = await self._reader.read(READ_CHUNK_BYTES)
                if not data:
                    break
                for request_id, message in decoder.feed(data):
                    answer = self._pending.get(request_id)
                    if answer is not None and not answer.done():
                        answer.set_result(message)
        except (OSError, ProtocolError) as exc:
            log.debug("connection lost: %s", exc)
        finally:
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


async def serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    in_flight_max: int = protocol.IN_FLIGHT_REQUESTS_MAX,
) -> None:
    """Serve one client connection until it closes or sends something malformed."""
    decoder = FrameDecoder()
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request_id: int, message: Message) -> None:
        try:
            response = await handle(message)
        except ZeebeSimError as exc:
            response = ErrorResponse(exc.code, exc.message)
        except Exception as exc:  # a bug in a handler must not take the connection down
            log.exception("request failed")
            response = ErrorResponse("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
        if response is not None and not writer.is_closing():
            writer.write(protocol.encode(response, request_id))

    try:
        while True:
            data = await reader.read(READ_CHUNK_BYTES)
            if not data:
                break
            for request_id, message in decoder.feed(data):
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
        for task in tasks:
            task.cancel()
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()
