"""Hypothesis over a broker's TCP port: frames built from the protocol's own message classes with
fields of any type, missing or extra, and raw bytes. A broker answers or closes that connection;
it never stops a partition, and the cluster stays whole."""

from __future__ import annotations

import asyncio
import contextlib
import types
import typing
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.engine.processor import Engine
from broker.engine.state import State
from tests.fuzz.conftest import FUZZ, PARTITIONS, assert_whole
from zeebe_sim.ground import protocol
from zeebe_sim.ground.records import ValueType
from zeebe_sim.harness import RunningCluster

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MESSAGE_CLASSES = sorted(
    (cls for cls in protocol.Message.__subclasses__() if attrs.has(cls)), key=lambda c: c.__name__
)
VALUE_TYPES = [v for k, v in vars(ValueType).items() if k.isupper()]
# Every (value type, intent) the engine has a processor for: the commands that reach it.
COMMANDS = sorted(Engine(State(1), PARTITIONS)._handlers)
INTENTS = [
    "CREATE", "ACTIVATE", "COMPLETE", "PUBLISH", "CORRELATE", "OPEN", "CLOSE", "ACKNOWLEDGE",
    "DISTRIBUTE", "FAIL", "TIME_OUT", "EXPIRE", "REJECT", "CONFIRM", "DELETE", "CANCEL",
]  # fmt: skip

EDGE_INTS = st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 3, PARTITIONS])
INTS = st.one_of(EDGE_INTS, st.integers(min_value=-(2**63), max_value=2**64 - 1))
TEXT = st.text(max_size=20)
MSGPACK = st.recursive(
    st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT, st.binary(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=10,
)
# A command value: names the engine reads, with plausible or arbitrary values.
VALUE_FIELDS = [
    "bpmnProcessId", "processDefinitionId", "variables", "type", "maxJobsToActivate", "timeout",
    "worker", "name", "correlationKey", "timeToLive", "messageId", "checkpointId",
    "processInstanceKey", "elementInstanceKey", "messageKey", "subscriptionPartitionId",
    "resources", "deploymentKey", "distributionPartitionId", "jobs", "retries", "key",
    "elementId", "messageName", "partitionId", "commandValueType", "commandIntent",
]  # fmt: skip
VALUES = st.dictionaries(st.sampled_from(VALUE_FIELDS), MSGPACK, max_size=6)


def well_typed(cls: type[protocol.Message], name: str) -> st.SearchStrategy[Any]:
    """A value of the field's declared type (and plausible kind) that the codec accepts."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "value_type": st.sampled_from(VALUE_TYPES),
        "intent": st.sampled_from(INTENTS),
        "value": VALUES,
        "arguments": VALUES,
    }
    if name in plausible:
        return plausible[name]
    if name.endswith("partition_id"):
        return st.integers(1, PARTITIONS)
    hint = typing.get_type_hints(cls)[name]
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    strategies = []
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None):
            strategies.append(st.none())
        elif base is bool:
            strategies.append(st.booleans())
        elif base is int:
            strategies.append(INTS)
        elif base is str:
            strategies.append(TEXT)
        elif base is dict:
            strategies.append(st.dictionaries(st.one_of(INTS, TEXT), MSGPACK, max_size=3))
        elif base is list:
            strategies.append(st.lists(MSGPACK, max_size=3))
        else:
            strategies.append(MSGPACK)
    return st.one_of(*strategies)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame: a message class's envelope with its fields generated, some dropped, some
    added; occasionally a broken envelope."""
    cls = draw(st.sampled_from(MESSAGE_CLASSES))
    fields: dict[Any, Any] = {}
    mutate = draw(st.integers(0, 3)) == 0  # a quarter of the frames: anything goes
    for field in attrs.fields(cls):
        if not mutate:
            fields[field.name] = draw(well_typed(cls, field.name))
        elif draw(st.integers(0, 3)) > 0:
            fields[field.name] = draw(st.one_of(well_typed(cls, field.name), MSGPACK))
    if mutate and draw(st.booleans()):
        fields[draw(TEXT)] = draw(MSGPACK)
    envelope: Any = [protocol.PROTOCOL_VERSION, cls.__name__, draw(st.integers(0, 2**32)), fields]
    if mutate and draw(st.integers(0, 4)) == 0:
        envelope = draw(st.one_of(MSGPACK, st.lists(MSGPACK, min_size=4, max_size=4)))
    body: bytes = msgpack.packb(envelope, use_bin_type=True)
    return protocol.FRAME_HEADER.pack(len(body)) + body


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    """A well-formed command for a processor of the engine, from a client or from another
    partition, with a generated value (fields missing, of any type, out of range)."""
    value_type, intent = draw(st.sampled_from(COMMANDS))
    partition = draw(st.integers(1, PARTITIONS))
    value = draw(VALUES)
    if draw(st.booleans()):
        message: protocol.Message = protocol.ExecuteCommandRequest(
            partition_id=partition, value_type=value_type, intent=intent, key=draw(INTS),
            value=value,
        )  # fmt: skip
    else:
        message = protocol.InterPartitionCommandSent(
            receiver_partition_id=partition, checkpoint_id=draw(st.sampled_from([-1, 0, 1])),
            value_type=value_type, intent=intent, key=draw(INTS), value=value,
        )  # fmt: skip
    return protocol.encode(message, request_id=draw(st.integers(1, 2**31)))


async def exchange(address: str, payload: bytes) -> None:
    """Send ``payload`` to a broker and read until it answers something or closes."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(payload)
        await writer.drain()
        # Notifications get no answer, and a partial frame waits for more: give it a moment
        # to answer or close, then hang up ourselves. Either is fine; what is checked is
        # that the cluster stays whole.
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.2):
                await reader.read(65536)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@FUZZ
@given(batch=st.lists(frames(), min_size=1, max_size=5))
async def test_generated_wire_messages_never_stop_a_partition(
    cluster: RunningCluster, batch: list[bytes]
) -> None:
    """Frames of every message type, fields of any type, missing or extra, sent to every
    broker: each answers (an error or a result) or closes the connection; every partition
    processes on."""
    for node in sorted(cluster.brokers):
        await exchange(cluster.broker_address(node), b"".join(batch))
    await assert_whole(cluster)


@FUZZ
@given(batch=st.lists(commands(), min_size=1, max_size=5))
async def test_generated_command_values_never_stop_a_partition(
    cluster: RunningCluster, batch: list[bytes]
) -> None:
    """Well-formed commands for every processor with generated values (fields missing, of any
    type, beyond int64), from clients and from other partitions, sent to every broker: each is
    rejected or processed, and every partition processes on."""
    for node in sorted(cluster.brokers):
        await exchange(cluster.broker_address(node), b"".join(batch))
    await assert_whole(cluster)


@FUZZ
@given(node=st.integers(0, 2), payload=st.binary(min_size=1, max_size=200))
async def test_raw_bytes_never_stop_a_partition(
    cluster: RunningCluster, node: int, payload: bytes
) -> None:
    """Arbitrary bytes on a broker's port close that connection at most."""
    await exchange(cluster.broker_address(node), payload)
    await assert_whole(cluster)
