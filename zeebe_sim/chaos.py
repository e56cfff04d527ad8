"""Breaking a running cluster on purpose: ``zeebe-sim chaos ...`` and the harness's chaos API.

Theory of operation
-------------------
Two kinds of faults, each applied where it is real:

- **Processes**: kill -9, pause (SIGSTOP) and resume (SIGCONT) a broker, typically the leader
  of partition P as the gateway sees it (``/actuator/health``: the leader in the highest
  term). The CLI finds pids in the notes the launcher writes to the data directory
  (``<data-dir>/.processes/broker-<n>.json``, :func:`zeebe_sim.ground.layout.process_file`)
  and checks that the pid still runs a zeebe-sim broker before it signals (a stale note must
  not kill an unrelated process).
- **Network**: cut brokers from each other, slow one down. These are set inside the brokers
  (``SetFaultsRequest``; the broker applies them at its one send and one receive point between
  brokers, ``broker/faults.py``), so they are deterministic, need no root, and apply to Raft
  and inter-partition traffic alike. ``heal`` clears them on every broker.

Everything here is a thin client: the decisions are the broker's (which messages to drop) and
the gateway's (who leads).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import click

from zeebe_sim.ground import layout
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.protocol import FaultsResponse, SetFaultsRequest
from zeebe_sim.ground.transport import TCP, Connection, NetworkBackend

REQUEST_TIMEOUT_S = 5.0
DEFAULT_DATA_DIR = Path("./zeebe-data")


class ChaosError(ZeebeSimError):
    """The fault could not be applied (no leader, no such broker, a broker unreachable)."""

    code = "UNAVAILABLE"


# -- network faults, set inside the brokers -------------------------------------------------------


async def set_faults(
    address: str,
    *,
    cut: Iterable[int] | None = None,
    delay_ms: int | None = None,
    network: NetworkBackend = TCP,
) -> FaultsResponse:
    """Set a broker's faults (None keeps that part); the faults in force after.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
        InvalidArgument: the broker refused the faults (a node outside the cluster, ...).
    """
    connection = await Connection.open(address, REQUEST_TIMEOUT_S, network)
    try:
        answer = await connection.request(
            SetFaultsRequest(sorted(NodeId(n) for n in cut) if cut is not None else None, delay_ms),
            REQUEST_TIMEOUT_S,
        )
    finally:
        await connection.close()
    assert isinstance(answer, FaultsResponse), answer
    return answer


async def cut(
    addresses: Mapping[int, str],
    side_a: Iterable[int],
    side_b: Iterable[int],
    network: NetworkBackend = TCP,
) -> None:
    """Cut every broker of ``side_a`` from every broker of ``side_b`` (both ways), keeping the
    cuts already in force. Each side's brokers are told, so that a cut holds even if one of
    them cannot be reached (a broker drops what comes from a peer it is cut from)."""
    a, b = set(side_a), set(side_b)
    _known(addresses, a | b)
    if a & b:
        raise ChaosError(f"Brokers {sorted(a & b)} cannot be on both sides of a cut")
    told = 0
    for nodes, others in ((a, b), (b, a)):
        for node in sorted(nodes):
            try:
                current = await set_faults(addresses[node], network=network)
                await set_faults(addresses[node], cut={*current.cut, *others}, network=network)
                told += 1
            except ZeebeSimError:
                continue  # killed or paused: the other side's cut holds
    if not told:
        raise ChaosError(f"No broker of {sorted(a | b)} could be reached")


async def slow(
    addresses: Mapping[int, str], node: int, delay_ms: int, network: NetworkBackend = TCP
) -> None:
    """Delay everything broker ``node`` sends to other brokers by ``delay_ms`` (0: no more)."""
    _known(addresses, {node})
    await set_faults(addresses[node], delay_ms=delay_ms, network=network)


async def heal(addresses: Mapping[int, str], network: NetworkBackend = TCP) -> list[int]:
    """Clear cuts and delays on every broker that can be reached; the brokers healed."""
    healed = []
    for node, address in sorted(addresses.items()):
        try:
            await set_faults(address, cut=[], delay_ms=0, network=network)
            healed.append(node)
        except ZeebeSimError:
            continue
    return healed


def _known(addresses: Mapping[int, str], nodes: set[int]) -> None:
    unknown = sorted(nodes - set(addresses))
    if unknown:
        raise ChaosError(f"No broker {unknown} in this cluster (brokers: {sorted(addresses)})")


# -- who leads ------------------------------------------------------------------------------------


async def leaders(session: aiohttp.ClientSession, management_url: str) -> dict[PartitionId, NodeId]:
    """Every partition's leader as the gateway sees it (partitions without one are left out).

    Raises:
        ChaosError: the gateway cannot be reached.
    """
    url = f"{management_url.rstrip('/')}/actuator/health"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as r:
            health = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ChaosError(f"Cannot read the topology from {url}: {exc}") from exc
    details = health.get("components", {}).get("partitions", {}).get("details", {})
    return {
        PartitionId(int(p)): NodeId(d["leader"])
        for p, d in details.items()
        if d.get("leader") is not None
    }


async def leader_of(
    session: aiohttp.ClientSession, management_url: str, partition_id: int
) -> NodeId:
    """Raises ChaosError when the gateway knows no leader of ``partition_id``."""
    node = (await leaders(session, management_url)).get(PartitionId(partition_id))
    if node is None:
        raise ChaosError(f"Partition {partition_id} has no leader right now")
    return node


# -- processes, from the launcher's notes ---------------------------------------------------------


@attrs.frozen
class Processes:
    """A running cluster as its launcher noted it."""

    broker_pids: dict[int, int]
    broker_addresses: dict[int, str]
    management_url: str | None


def read_processes(data_dir: Path) -> Processes:
    """Raises ChaosError when no launcher noted a cluster in ``data_dir``."""
    directory = data_dir / layout.PROCESSES_DIR
    pids: dict[int, int] = {}
    addresses: dict[int, str] = {}
    management_url = None
    for path in sorted(directory.glob("*.json")):
        try:
            note: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced, or damaged: that process cannot be found
        name = path.stem
        if name == "gateway":
            management_url = note.get("managementUrl")
        elif name.startswith(layout.BROKER_PREFIX) and name[len(layout.BROKER_PREFIX) :].isdigit():
            node = int(name[len(layout.BROKER_PREFIX) :])
            pids[node], addresses[node] = int(note["pid"]), str(note["address"])
    if not pids:
        raise ChaosError(
            f"No running cluster noted in {directory} (start one with `zeebe-sim up "
            f"--data-dir {data_dir}`)"
        )
    return Processes(pids, addresses, management_url)


def is_broker_process(pid: int) -> bool:
    """Whether ``pid`` runs a zeebe-sim broker (Linux: its command line; elsewhere: alive)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if sys.platform == "linux":
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"zeebe_sim" in words and b"broker" in words
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def signal_broker(processes: Processes, node: int, sig: signal.Signals) -> int:
    """Send ``sig`` to broker ``node``; its pid.

    Raises:
        ChaosError: no such broker, or its noted pid no longer runs a zeebe-sim broker.
    """
    pid = processes.broker_pids.get(node)
    if pid is None:
        raise ChaosError(f"No broker {node} noted (brokers: {sorted(processes.broker_pids)})")
    if not is_broker_process(pid):
        raise ChaosError(f"Broker {node} (pid {pid}) is not running")
    os.kill(pid, sig)
    return pid


# -- the command line -----------------------------------------------------------------------------

SIGNALS = {"kill": signal.SIGKILL, "pause": signal.SIGSTOP, "resume": signal.SIGCONT}


def _nodes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        nodes = [int(n) for n in value.split(",") if n.strip()]
    except ValueError:
        nodes = []
    if not nodes or any(n < 0 for n in nodes):
        raise click.BadParameter(f"{value!r} is not a list of broker ids such as 0 or 1,2")
    return nodes


def _fail(message: str) -> None:
    click.echo(f"zeebe-sim: {message}", err=True)
    sys.exit(1)


def _data_dir_option(fn: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=DEFAULT_DATA_DIR,
        show_default=True,
        envvar="ZEEBE_BROKER_DATA_DIRECTORY",
        help="the running cluster's data directory (where `up` notes its processes)",
    )(fn)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except ZeebeSimError as exc:
        _fail(exc.message)


@click.group("chaos")
def chaos() -> None:
    """Break a running cluster on purpose (started with `zeebe-sim up`): kill, pause or
    resume a partition's leader or any broker, cut the network between brokers, slow one."""


def _signal_command(name: str, verb: str, done: str) -> click.Command:
    @click.option("--partition", type=click.IntRange(min=1), help="the leader of this partition")
    @click.option("--broker", type=click.IntRange(min=0), help="this broker")
    @_data_dir_option
    def command(partition: int | None, broker: int | None, data_dir: Path) -> None:
        if (partition is None) == (broker is None):
            raise click.UsageError("give exactly one of --partition and --broker")

        async def work() -> None:
            processes = read_processes(data_dir)
            node = broker
            if node is None:
                assert partition is not None
                if processes.management_url is None:
                    raise ChaosError(f"No gateway noted in {data_dir}: cannot find leaders")
                async with aiohttp.ClientSession() as session:
                    node = await leader_of(session, processes.management_url, partition)
            pid = signal_broker(processes, node, SIGNALS[name])
            leads = f" (leader of partition {partition})" if partition is not None else ""
            click.echo(f"{done} broker {node}{leads}, pid {pid}")

        _run(work())

    command.__doc__ = f"{verb} a broker ({SIGNALS[name].name}), by id or as a partition's leader."
    return chaos.command(name)(command)


_signal_command("kill", "Kill", "Killed")
_signal_command("pause", "Pause", "Paused")
_signal_command("resume", "Resume", "Resumed")


@chaos.command("leaders")
@_data_dir_option
def leaders_command(data_dir: Path) -> None:
    """Print each partition's leader, as the gateway sees it."""

    async def work() -> None:
        processes = read_processes(data_dir)
        if processes.management_url is None:
            raise ChaosError(f"No gateway noted in {data_dir}")
        async with aiohttp.ClientSession() as session:
            found = await leaders(session, processes.management_url)
        for partition in sorted(found):
            click.echo(f"partition {partition}: broker {found[partition]}")

    _run(work())


@chaos.command("cut")
@click.argument("side_a", metavar="A", callback=_nodes)
@click.argument("side_b", metavar="B", callback=_nodes)
@_data_dir_option
def cut_command(side_a: list[int], side_b: list[int], data_dir: Path) -> None:
    """Cut brokers A from brokers B both ways; `cut 0 1,2` isolates broker 0."""
    _run(cut(read_processes(data_dir).broker_addresses, side_a, side_b))
    click.echo(f"Cut brokers {side_a} from brokers {side_b}")


@chaos.command("slow")
@click.argument("node", metavar="BROKER", type=click.IntRange(min=0))
@click.option(
    "--delay",
    "delay_ms",
    type=click.IntRange(min=0),
    required=True,
    help="milliseconds added to every message the broker sends to another (0: none)",
)
@_data_dir_option
def slow_command(node: int, delay_ms: int, data_dir: Path) -> None:
    """Slow a replica: delay everything it sends to other brokers."""
    _run(slow(read_processes(data_dir).broker_addresses, node, delay_ms))
    click.echo(f"Broker {node} sends {delay_ms} ms late")


@chaos.command("heal")
@_data_dir_option
def heal_command(data_dir: Path) -> None:
    """Remove every cut and delay; paused brokers stay paused (`resume` them)."""
    healed = _run(heal(read_processes(data_dir).broker_addresses))
    click.echo(f"Healed brokers {healed}")
