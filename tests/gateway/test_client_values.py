"""The gateway checks a command's value before it is sent: a client's mistake is a 400, not a
frame the broker refuses by closing a connection other requests share."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.client import BrokerClient
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.records import ValueType


@pytest.mark.parametrize(
    ("value_type", "intent", "value"),
    [
        (
            ValueType.JOB_BATCH,
            "ACTIVATE",
            {"type": "t", "timeout": 2**63 - 1, "maxJobsToActivate": 1},
        ),
        (
            ValueType.MESSAGE,
            "PUBLISH",
            {"name": "m", "correlationKey": "k", "timeToLive": 2**62 + 1},
        ),
        (ValueType.JOB, "COMPLETE", {"variables": {"big": 2**63}}),
        (ValueType.PROCESS_INSTANCE_CREATION, "CREATE", {"variables": {"x": {1: "int key"}}}),
    ],
)
async def test_a_value_out_of_shape_is_invalid_argument_before_any_connection(
    value_type: str, intent: str, value: dict[str, Any]
) -> None:
    """No broker listens at the contact point: the error comes before any attempt to send."""
    client = BrokerClient(["127.0.0.1:1"], request_timeout_s=0.1)
    with pytest.raises(InvalidArgument, match=f"Invalid {value_type} {intent} command: value"):
        await client.execute(PartitionId(1), value_type, intent, -1, value)
