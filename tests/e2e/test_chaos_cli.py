"""`zeebe-sim chaos` against a running cluster of real processes: it finds the brokers from the
launcher's notes in the data directory and the leaders from the gateway, pauses, resumes and
kills them, cuts and heals the network and slows a broker; bad arguments exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST_BROKER_ARGS, FAST_GATEWAY_ARGS
from zeebe_sim.chaos import set_faults
from zeebe_sim.ground import layout
from zeebe_sim.harness import run_cli, running_cluster

pytestmark = pytest.mark.slow


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (T: stopped, R/S: running or sleeping)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


async def test_chaos_commands_on_a_running_cluster(tmp_path: Path) -> None:
    """The launcher notes every process; `chaos leaders` prints the gateway's leaders;
    `pause --partition 2` stops partition 2's leader (SIGSTOP) and `resume --broker` continues
    it; `cut` and `slow` set the brokers' faults, `heal` clears them; `kill --partition 3`
    kills partition 3's leader with SIGKILL."""
    async with running_cluster(
        tmp_path, broker_args=FAST_BROKER_ARGS, gateway_args=FAST_GATEWAY_ARGS
    ) as cluster:
        note = json.loads(layout.process_file(tmp_path, "broker-1").read_text())
        assert note == {"pid": cluster.brokers[1].pid, "address": cluster.broker_address(1)}
        gateway = json.loads(layout.process_file(tmp_path, "gateway").read_text())
        assert gateway["managementUrl"] == cluster.management_url
        where = ["--data-dir", str(tmp_path)]
        leaders = await cluster.leaders()

        code, output = await run_cli("chaos", "leaders", *where)
        assert code == 0, output
        assert output.splitlines() == [f"partition {p}: broker {leaders[p]}" for p in (1, 2, 3)]

        code, output = await run_cli("chaos", "pause", "--partition", "2", *where)
        assert code == 0, output
        paused = leaders[2]
        assert f"Paused broker {paused} (leader of partition 2)" in output
        assert process_state(cluster.brokers[paused].pid) == "T"
        code, output = await run_cli("chaos", "resume", "--broker", str(paused), *where)
        assert code == 0, output
        assert process_state(cluster.brokers[paused].pid) != "T"

        code, output = await run_cli("chaos", "cut", "0", "1,2", *where)
        assert code == 0, output
        code, output = await run_cli("chaos", "slow", "1", "--delay", "150", *where)
        assert code == 0, output
        faults = {n: await set_faults(cluster.broker_address(n)) for n in range(3)}
        assert {n: (f.cut, f.delay_ms) for n, f in faults.items()} == {
            0: ([1, 2], 0),
            1: ([0], 150),
            2: ([0], 0),
        }
        code, output = await run_cli("chaos", "heal", *where)
        assert code == 0 and "Healed brokers [0, 1, 2]" in output, output
        for node in range(3):
            faults_after = await set_faults(cluster.broker_address(node))
            assert (faults_after.cut, faults_after.delay_ms) == ([], 0)

        victim = (await cluster.leaders())[3]
        code, output = await run_cli("chaos", "kill", "--partition", "3", *where)
        assert code == 0, output
        assert await cluster.brokers[victim].process.wait() == -9


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["cut", "0", "x"], 2, "is not a list of broker ids"),
        (["kill"], 2, "exactly one of --partition and --broker"),
        (["kill", "--partition", "1", "--broker", "0"], 2, "exactly one"),
        (["slow", "1"], 2, "Missing option '--delay'"),
        (["kill", "--broker", "0"], 1, "No running cluster noted in"),
        (["heal"], 1, "No running cluster noted in"),
    ],
)
async def test_chaos_without_a_cluster_or_with_bad_arguments(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    """Bad arguments exit 2 with click's usage line; a data directory where no cluster runs
    exits 1 with one line saying so, and nothing is signalled."""
    exit_code, output = await run_cli("chaos", *args, "--data-dir", str(tmp_path))
    assert exit_code == code, output
    assert message in output
