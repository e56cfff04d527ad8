"""The ``zeebe-sim`` command line.

Every flag maps to a setting in ``zeebe_sim/config.py`` (which also knows its ``ZEEBE_*``
environment names and TOML key). Bad configuration prints one line and exits with code 2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from zeebe_sim import VERSION, config
from zeebe_sim.ground import collector, logs
from zeebe_sim.ground.backups import parse_backup_id
from zeebe_sim.ground.errors import ConfigError, InvalidArgument, ZeebeSimError
from zeebe_sim.ground.ids import NodeId
from zeebe_sim.ground.transport import UNFINISHED_FRAME_TIMEOUT_S, FrameLimits

F = TypeVar("F", bound=Callable[..., Any])

CLUSTER_SETTINGS = [
    "brokers",
    "partitions",
    "replication-factor",
    "election-timeout",
    "heartbeat-interval",
    "data-dir",
    "host",
    "broker-port",
    "snapshot-period",
    "segment-size",
    *config.DISK_SETTINGS,
    "retry-initial",
    "retry-max",
    *config.BACKUP_SETTINGS,
    *config.SCHEDULER_SETTINGS,
    "unsafe-no-checkpoint-propagation",
    "log-level",
]
GATEWAY_SETTINGS = [
    "host",
    "management-port",
    "rest-port",
    "grpc-port",
    "request-timeout",
    "backup-fanout-jitter",
    "log-level",
]


def options(*names: str) -> Callable[[F], F]:
    """Click options for settings; defaults stay None so that precedence can be applied."""

    def decorate(fn: F) -> F:
        for name in reversed(names):
            setting = config.SETTINGS[name]
            default = setting.default
            shown = f" [default: {default}]" if default not in (None, False, ()) else ""
            env = f" [env: {', '.join(setting.env)}]" if setting.env else ""
            if setting.parse is config._bool and setting.default is True:
                fn = click.option(
                    f"--{name}/--no-{name}", default=None, help=setting.help + shown + env
                )(fn)
            elif setting.parse is config._bool:
                fn = click.option(f"--{name}", is_flag=True, default=None, help=setting.help + env)(
                    fn
                )
            elif name == "contact-point":
                fn = click.option(f"--{name}", multiple=True, help=setting.help + env)(fn)
            else:
                fn = click.option(f"--{name}", default=None, help=setting.help + shown + env)(fn)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="TOML file with settings (keys are the flag names)",
        )(fn)

    return decorate


def resolve(names: list[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    flags = {k.replace("_", "-"): v for k, v in kwargs.items() if k != "config_file"}
    flags = {k: v for k, v in flags.items() if v not in (None, ())}
    toml = config.load_toml(kwargs.get("config_file"))
    return config.resolve(names, flags, os.environ, toml)


def fail(message: str) -> None:
    click.echo(f"zeebe-sim: {message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(VERSION, prog_name="zeebe-sim")
def main() -> None:
    """A simulated multi-broker Zeebe cluster whose backups behave like the real thing."""


def _run(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except ConfigError as exc:
        fail(exc.message)
    except ZeebeSimError as exc:
        click.echo(f"zeebe-sim: {exc.message}", err=True)
        sys.exit(1)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(node: Any, parent_pid: int | None, ready: Callable[[], None]) -> None:
    """Start a broker or gateway, announce it, and keep it running until SIGINT/SIGTERM or,
    when a launcher started it (``--parent-pid``), until that launcher is gone; then stop it."""
    collector.tune()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if parent_pid is not None:
        from zeebe_sim.cluster import watch_parent

        # Before the start: a launcher killed while this process starts must not leave it on.
        watch_parent(parent_pid, stop.set)
    await node.start()
    try:
        ready()
        await stop.wait()
    finally:
        await node.stop()


PARENT_PID_OPTION = click.option(
    "--parent-pid",
    type=int,
    default=None,
    hidden=True,
    help="the launcher's pid: stop when it dies (set by `up` and the test harness)",
)


def broker_flags(values: dict[str, Any]) -> list[str]:
    """The flags that carry cluster settings from ``up`` to each broker process."""
    flags = [
        "--replication-factor",
        str(values["replication-factor"]),
        "--election-timeout",
        f"{values['election-timeout']}s",
        "--heartbeat-interval",
        f"{values['heartbeat-interval']}s",
        "--snapshot-period",
        f"{values['snapshot-period']}s",
        "--segment-size",
        str(values["segment-size"]),
        "--retry-initial",
        f"{values['retry-initial']}s",
        "--retry-max",
        f"{values['retry-max']}s",
        "--log-level",
        values["log-level"],
    ]
    for name in [*config.BACKUP_SETTINGS, *config.SCHEDULER_SETTINGS]:
        value = values[name]
        if value is True:
            flags.append(f"--{name}")
        elif value not in (None, False):
            seconds = name in config.SECONDS_SETTINGS
            flags += [f"--{name}", f"{value}s" if seconds else str(value)]
    for name in config.DISK_SETTINGS:
        value = values[name]
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        else:
            flags += [
                f"--{name}",
                f"{value}s" if name == "disk-monitoring-interval" else str(value),
            ]
    if values["unsafe-no-checkpoint-propagation"]:
        flags.append("--unsafe-no-checkpoint-propagation")
    return flags


UP_SETTINGS = [*CLUSTER_SETTINGS, *(s for s in GATEWAY_SETTINGS if s not in CLUSTER_SETTINGS)]


@main.command()
@options(*UP_SETTINGS)
def up(**kwargs: Any) -> None:
    """Run a whole local cluster (brokers + gateway) in the foreground until Ctrl-C."""
    try:
        values = resolve(UP_SETTINGS, kwargs)
    except ConfigError as exc:
        fail(exc.message)
    from zeebe_sim.cluster import ClusterError, ClusterSpec, LocalCluster, ManagedProcess

    logs.setup("up", values["log-level"])
    if values["unsafe-no-checkpoint-propagation"]:
        click.secho(
            "WARNING: --unsafe-no-checkpoint-propagation is set: backups may not be consistent",
            fg="red",
            err=True,
        )
    spec = ClusterSpec(
        brokers=values["brokers"],
        partitions=values["partitions"],
        data_dir=values["data-dir"],
        host=values["host"],
        broker_port=values["broker-port"],
        management_port=values["management-port"],
        rest_port=values["rest-port"],
        grpc_port=values["grpc-port"],
        broker_args=broker_flags(values),
        gateway_args=[
            "--request-timeout",
            f"{values['request-timeout']}s",
            "--backup-fanout-jitter",
            f"{values['backup-fanout-jitter']}s",
            "--log-level",
            values["log-level"],
        ],
    )

    def died(process: ManagedProcess, code: int) -> None:
        click.secho(
            f"\n!!! {process.name} (pid {process.pid}) exited unexpectedly with code {code}. "
            "Its replicas stay down until the cluster is restarted (a partition with other "
            "replicas elects another leader). !!!\n",
            fg="red",
            bold=True,
            err=True,
        )

    async def run() -> None:
        click.echo(f"Starting {spec.brokers} brokers and a gateway, data in {spec.data_dir} ...")
        cluster = LocalCluster(spec, on_exit=died)
        try:
            async with cluster:
                click.echo(
                    f"zeebe-sim is up: {spec.brokers} brokers, {spec.partitions} partitions\n"
                    f"  management (actuator): {cluster.management_url}/actuator/health\n"
                    f"  REST API:              {cluster.rest_url}/v2/topology\n"
                    f"  gRPC API:              {cluster.grpc_address}\n"
                    + "".join(
                        f"  broker {n}:              {cluster.broker_address(n)}"
                        f" (pid {cluster.brokers[n].pid})\n"
                        for n in sorted(cluster.brokers)
                    )
                    + f"  backups:               {values['backup-store']}\n"
                    "Press Ctrl-C to stop."
                )
                await _until_signal()
                click.echo("Stopping ...")
        except ClusterError as exc:
            click.secho(f"zeebe-sim: {exc}", fg="red", err=True)
            sys.exit(1)

    _run(run())


@main.command()
@options("node-id", *CLUSTER_SETTINGS, "contact-point")
@click.option("--exact-port", type=int, default=None, hidden=True)
@PARENT_PID_OPTION
@click.option(
    "--frame-timeout",
    default=None,
    help="close a connection whose frame stays unfinished this long (slow-loris guard) "
    f"[default: {UNFINISHED_FRAME_TIMEOUT_S:g}s]",
)
def broker(
    exact_port: int | None, parent_pid: int | None, frame_timeout: str | None, **kwargs: Any
) -> None:
    """Run one broker process (for clusters spread over hosts)."""
    try:
        values = resolve(["node-id", *CLUSTER_SETTINGS, "contact-point"], kwargs)
    except ConfigError as exc:
        fail(exc.message)
    frame_limits = FrameLimits()
    if frame_timeout is not None:
        try:
            frame_limits = FrameLimits(config.parse_duration_s(frame_timeout))
        except ValueError as exc:
            fail(f"--frame-timeout: {exc}")
    contact = values["contact-point"]
    if values["node-id"] >= values["brokers"]:
        fail(f"--node-id: {values['node-id']} is not below the cluster size {values['brokers']}")
    from broker.partition import PartitionConfig
    from broker.raft.core import RaftConfig
    from broker.server import Broker, BrokerConfig
    from zeebe_sim.cluster import announce_ready
    from zeebe_sim.restore import unfinished_restore

    # Starting on a half-placed restore would run a cluster with some brokers' data missing.
    try:
        unfinished = unfinished_restore(values["data-dir"])
    except ZeebeSimError as exc:
        unfinished = exc.message
    if unfinished is not None:
        click.echo(f"zeebe-sim: broker {values['node-id']}: {unfinished}", err=True)
        sys.exit(1)

    logs.setup(f"broker-{values['node-id']}", values["log-level"])
    if values["unsafe-no-checkpoint-propagation"]:
        click.secho(
            f"WARNING: broker {values['node-id']}: checkpoint propagation is OFF "
            "(--unsafe-no-checkpoint-propagation): backups may not be a consistent cut",
            fg="red",
            err=True,
        )
    # Broker n listens on --broker-port + 10*n (0: any free port). The launcher restarts a
    # broker that had an OS-chosen port on exactly that port, so its peers find it again.
    try:
        store_config = config.backup_store_config(values)
    except ConfigError as exc:
        fail(exc.message)
    port = values["broker-port"] and values["broker-port"] + 10 * values["node-id"]
    if exact_port is not None:
        port = exact_port
    broker_config = BrokerConfig(
        node_id=values["node-id"],
        cluster_size=values["brokers"],
        partition_count=values["partitions"],
        replication_factor=values["replication-factor"],
        raft=RaftConfig(
            election_timeout_ms=round(values["election-timeout"] * 1000),
            heartbeat_interval_ms=round(values["heartbeat-interval"] * 1000),
        ),
        data_dir=values["data-dir"],
        host=values["host"],
        port=port,
        contact_points=contact,
        backup_store=store_config,
        backup_schedule=config.scheduler_config(values),
        disk=config.disk_config(values),
        partition=PartitionConfig(
            snapshot_period_s=values["snapshot-period"],
            segment_bytes_max=values["segment-size"],
            retry_initial_s=values["retry-initial"],
            retry_max_s=values["retry-max"],
            checkpoint_propagation=not values["unsafe-no-checkpoint-propagation"],
            continuous_backups=values["backup-continuous"],
        ),
        frame_limits=frame_limits,
    )

    async def run() -> None:
        node = Broker(broker_config)
        await _serve(
            node, parent_pid, lambda: announce_ready(node_id=node.node_id, address=node.address)
        )

    _run(run())


@main.command()
@options(*GATEWAY_SETTINGS, "contact-point")
@PARENT_PID_OPTION
def gateway(parent_pid: int | None, **kwargs: Any) -> None:
    """Run the gateway process (actuator on the management port, REST API, gRPC API)."""
    try:
        values = resolve([*GATEWAY_SETTINGS, "contact-point"], kwargs)
    except ConfigError as exc:
        fail(exc.message)
    contact = values["contact-point"]
    if not contact:
        fail("--contact-point: at least one broker address (host:port) is needed")
    from gateway.server import Gateway, GatewayConfig
    from zeebe_sim.cluster import announce_ready

    logs.setup("gateway", values["log-level"])
    gateway_config = GatewayConfig(
        contact_points=contact,
        host=values["host"],
        management_port=values["management-port"],
        rest_port=values["rest-port"],
        grpc_port=values["grpc-port"],
        request_timeout_s=values["request-timeout"],
        backup_fanout_jitter_s=values["backup-fanout-jitter"],
    )

    async def run() -> None:
        node = Gateway(gateway_config)
        await _serve(
            node,
            parent_pid,
            lambda: announce_ready(
                management_port=node.management_port,
                rest_port=node.rest_port,
                grpc_port=node.grpc_port,
            ),
        )

    _run(run())


CRASH_RESTORE_AT_STEP = "ZEEBE_SIM_TEST_CRASH_RESTORE_AT_STEP"


def _epoch_ms(flag: str, text: str) -> int:
    """An ISO-8601 time as epoch milliseconds (UTC when it names no zone); exit 2 if not."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{flag}: expected an ISO-8601 time such as 2026-11-29T20:15:00Z, got {text!r}")
        raise
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@main.command()
@click.option(
    "--backup-id",
    "backup_ids",
    help="the backup to restore, or a chain of backups: ID[,ID...] (each partition is laid "
    "out from the first one's snapshot and every backup's log in id order)",
)
@click.option(
    "--from",
    "from_",
    envvar="ZEEBE_RESTORE_FROM_TIMESTAMP",
    help="point in time: the earliest backup range start (ISO-8601)",
)
@click.option(
    "--to",
    envvar="ZEEBE_RESTORE_TO_TIMESTAMP",
    help="point in time: restore the latest checkpoint common to all partitions at or "
    "before this time (ISO-8601; markers count)",
)
@options("node-id", *CLUSTER_SETTINGS, "management-port", "rest-port")
def restore(backup_ids: str | None, from_: str | None, to: str | None, **kwargs: Any) -> None:
    """Restore every broker's data directory (or one, with --node-id) from backups.

    Run it with the cluster stopped and the same cluster flags as `up`. Give either
    --backup-id ID[,ID...] or a point in time (--to, with --from bounding where the backup
    chain may start). It refuses a non-empty data directory, a backup that is not COMPLETED on
    every partition, a different partition count or a gap in a chain, and leaves nothing
    half-restored: killed at any instant, it leaves either nothing or a journal from which the
    next run with the same flags finishes the restore.
    """
    from zeebe_sim.restore import RestoreRequest

    if backup_ids is not None and (from_ is not None or to is not None):
        fail("--backup-id cannot be combined with --from/--to: give backup ids or a time window")
    if backup_ids is not None:
        try:
            ids = tuple(sorted({parse_backup_id(part) for part in backup_ids.split(",")}))
        except InvalidArgument as exc:
            fail(f"--backup-id: {exc.message}")
            raise
        request = RestoreRequest(backup_ids=ids)
    elif to is None:
        fail("restore needs --backup-id ID[,ID...] or --to TIME (with --from TIME)")
        raise AssertionError
    else:
        request = RestoreRequest(
            from_ms=None if from_ is None else _epoch_ms("--from", from_),
            to_ms=_epoch_ms("--to", to),
        )
    try:
        values = resolve(["node-id", *CLUSTER_SETTINGS, "management-port", "rest-port"], kwargs)
        store_config = config.backup_store_config(values)
    except ConfigError as exc:
        fail(exc.message)
    if store_config is None:
        fail("backup-store: restore needs a backup store (it is 'none')")
    from storage.backup.open import open_store
    from zeebe_sim.restore import crash_at
    from zeebe_sim.restore import restore as run_restore

    logs.setup("restore", values["log-level"])
    explicit_node = kwargs.get("node_id") is not None or "ZEEBE_BROKER_CLUSTER_NODEID" in os.environ
    nodes = (
        [NodeId(values["node-id"])]
        if explicit_node
        else list(map(NodeId, range(values["brokers"])))
    )

    async def run() -> None:
        store = open_store(store_config)
        try:
            await run_restore(
                store,
                data_dir=values["data-dir"],
                request=request,
                cluster_size=values["brokers"],
                partition_count=values["partitions"],
                node_ids=nodes,
                replication_factor=values["replication-factor"],
                progress=lambda line: click.echo(line, err=True),
                # Fault injection for the tests: end the process at the k-th durable step.
                crash_point=crash_at(int(os.environ.get(CRASH_RESTORE_AT_STEP, "0"))),
            )
        finally:
            await store.close()
        click.echo(f"Restored {request.describe()} into {values['data-dir']} (brokers {nodes}).")

    _run(run())


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("./zeebe-data"),
    show_default=True,
    help="a stopped (or freshly restored) cluster's data directory",
)
@options("partitions")
def verify(data_dir: Path, **kwargs: Any) -> None:
    """Check the cross-partition consistency invariants on a stopped cluster's data.

    Exit code 0 when they hold, 1 with a report of every violation otherwise. A data directory
    that misses one of the --partitions partitions, or holds an unfinished restore, is refused
    (exit 1) before any check.
    """
    from zeebe_sim.verify import check, layout_problems, load_data_dir

    try:
        values = resolve(["partitions"], kwargs)
    except ConfigError as exc:
        fail(exc.message)
    try:
        problems = layout_problems(data_dir, values["partitions"])
    except ZeebeSimError as exc:
        problems = [exc.message]
    if problems:
        click.echo(f"Cannot verify {data_dir}:\n" + "\n".join(f"  {p}" for p in problems))
        sys.exit(1)
    try:
        partitions = load_data_dir(data_dir)
    except FileNotFoundError as exc:
        fail(f"--data-dir: {exc}")
    except ZeebeSimError as exc:
        fail(f"--data-dir: cannot read {data_dir}: {exc.message}")
    report = check(partitions)
    click.echo(report.render())
    sys.exit(0 if report.ok else 1)


def _register_tools() -> None:
    from zeebe_sim.chaos import chaos
    from zeebe_sim.tools_cli import backup, load

    main.add_command(load)
    main.add_command(backup)
    main.add_command(chaos)


_register_tools()
