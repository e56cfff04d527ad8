"""`zeebe-sim backup` against a cluster of real processes that generates backup ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.harness import run_cli, running_cluster

pytestmark = pytest.mark.slow

# A checkpoint interval puts the cluster in generated-id mode; an hour keeps the scheduler's
# own markers out of the way of the test.
GENERATING_BROKER_ARGS = [*FAST_BROKER_ARGS, "--backup-checkpoint-interval", "1h"]


async def test_take_without_an_id_waits_for_the_generated_one(tmp_path: Path) -> None:
    """`backup take --wait` without an id: the gateway generates it (epoch milliseconds), the
    CLI follows that id until COMPLETED and exits 0; an explicit id is refused with the
    gateway's message and exit 1."""
    async with running_cluster(
        tmp_path, broker_args=GENERATING_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        where = ["--management-url", cluster.management_url]
        code, output = await run_cli("backup", "take", "--wait", "--json", *where)
        assert code == 0, output
        info = json.loads(output[output.index("{") :])  # after any progress lines
        assert info["state"] == "COMPLETED"
        assert info["backupId"] > 1_700_000_000_000  # epoch milliseconds, as Zeebe makes them
        assert {d["partitionId"] for d in info["details"]} == {1, 2, 3}

        code, output = await run_cli("backup", "take", "5", *where)
        assert code == 1
        assert "predetermined backupId" in output
