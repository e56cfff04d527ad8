"""The user-facing tool commands ``zeebe-sim load`` and ``zeebe-sim backup ...``.

Thin on purpose: parse flags, call :mod:`zeebe_sim.workload` or :mod:`zeebe_sim.backup_client`,
print, choose the exit code. Exit codes: 0 success; 1 the operation failed (API error,
unreachable gateway, a backup that FAILED or did not finish in time, a load run with errors or
unfinished instances); 2 bad arguments (click's usage errors).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from zeebe_sim import backup_client as bc
from zeebe_sim import workload
from zeebe_sim.config import parse_duration_s
from zeebe_sim.ground.backups import parse_backup_id
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.ids import BackupId

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    """A positive duration: ``30s``, ``5m``, ``500ms``, ``PT5M`` or plain seconds."""
    if value is None:
        return None
    try:
        seconds = parse_duration_s(str(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration", ctx, param)
    return seconds


def _id_prefix(ctx: click.Context, param: click.Parameter, value: Any) -> str:
    """The digits a backup id starts with; a trailing ``*`` (as in the API path) is allowed."""
    text = str(value or "").strip().removesuffix("*")
    if text and not text.isdigit():
        raise click.BadParameter(
            f"{value!r} is not a backup id prefix (digits, e.g. 17)", ctx, param
        )
    return text


def _backup_id(ctx: click.Context, param: click.Parameter, value: Any) -> BackupId | None:
    """A backup id by the one rule of :func:`~zeebe_sim.ground.backups.parse_backup_id`; None
    for an optional id left out."""
    if value is None and not param.required:
        return None
    try:
        return parse_backup_id(value)
    except InvalidArgument as exc:
        raise click.BadParameter(exc.message, ctx, param) from exc


def _fail(message: str) -> NoReturn:
    click.echo(f"zeebe-sim: {message}", err=True)
    sys.exit(1)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _stdout() -> Console:
    # Created per command, so that it writes to whatever sys.stdout is now (CliRunner swaps it).
    return Console(soft_wrap=False)


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


@click.command("load")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=workload.DEFAULT_RATE_PER_S,
    show_default=True,
    help="target process instance starts per second",
)
@click.option(
    "--duration",
    callback=_duration,
    metavar="DURATION",
    default=None,
    help="stop starting after this long, e.g. 30s or 5m [default: 30s unless --instances is given]",
)
@click.option(
    "--instances", type=click.IntRange(min=1), default=None, help="stop after this many starts"
)
@click.option(
    "--rest-url", default=workload.DEFAULT_REST_URL, show_default=True, help="the REST API"
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=workload.DEFAULT_CONCURRENCY,
    show_default=True,
    help="most instances in flight (started, not yet seen completed)",
)
@click.option(
    "--completion-timeout",
    callback=_duration,
    metavar="DURATION",
    default=f"{workload.DEFAULT_COMPLETION_TIMEOUT_S:g}s",
    show_default=True,
    help="an instance not completed this long after its start counts as not completed",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def load(
    rate: float,
    duration: float | None,
    instances: int | None,
    rest_url: str,
    concurrency: int,
    completion_timeout: float,
    as_json: bool,
) -> None:
    """Drive the demo workload through the REST API with live throughput.

    Deploys demo-process, starts instances at --rate until --duration or --instances (whichever
    comes first), completes their jobs, publishes their messages and waits for every instance to
    complete. Exit code 0 only if there were no errors and every started instance completed.
    """
    if duration is None and instances is None:
        duration = workload.DEFAULT_DURATION_S
    settings = workload.LoadSettings(
        rate_per_s=rate,
        duration_s=duration,
        instances_max=instances,
        rest_url=rest_url,
        concurrency=concurrency,
        completion_timeout_s=completion_timeout,
    )
    try:
        summary = asyncio.run(
            workload.run_load(settings, workload.default_reporter(), handle_sigint=True)
        )
    except workload.LoadError as exc:
        _fail(exc.message)
    if as_json:
        _print_json(summary.to_json())
    else:
        _stdout().print(workload.render_summary(summary))
    sys.exit(0 if summary.ok else 1)


# --------------------------------------------------------------------------------------------
# backup
# --------------------------------------------------------------------------------------------


def _backup_options(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="print the API's raw JSON")(fn)
    return click.option(
        "--management-url",
        default=bc.DEFAULT_MANAGEMENT_URL,
        show_default=True,
        help="the gateway's management (actuator) endpoint",
    )(fn)


def _wait_options(fn: F) -> F:
    fn = click.option(
        "--poll-interval",
        callback=_duration,
        metavar="DURATION",
        default=f"{bc.DEFAULT_POLL_INTERVAL_S:g}s",
        show_default=True,
        help="time between status polls while waiting",
    )(fn)
    return click.option(
        "--timeout",
        callback=_duration,
        metavar="DURATION",
        default=f"{bc.DEFAULT_WAIT_TIMEOUT_S:g}s",
        show_default=True,
        help="give up waiting after this long (exit 1)",
    )(fn)


def _call(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one client conversation; client errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(work())
    except bc.BackupApiError as exc:
        _fail(f"{exc.message} (HTTP {exc.status})")
    except bc.BackupClientError as exc:
        _fail(exc.message)


class _Progress:
    """Spinner on a terminal; otherwise a plain line on stderr whenever the text changes."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self._status = self.console.status("") if self.console.is_terminal else None
        self._last = ""

    def __enter__(self) -> _Progress:
        if self._status is not None:
            self._status.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._status is not None:
            self._status.stop()

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)
        elif text != self._last:
            self.console.print(text, highlight=False, soft_wrap=True)
        self._last = text


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _clock() -> float:
    return asyncio.get_running_loop().time()


@click.group("backup")
def backup() -> None:
    """Take, inspect, list and delete backups through the gateway's actuator Backup API."""


@backup.command("take")
@click.argument("backup_id", metavar="[ID]", required=False, callback=_backup_id)
@click.option("--wait", is_flag=True, help="wait until the backup is COMPLETED (exit 0) or not")
@_wait_options
@click.option(
    "--incomplete-grace",
    callback=_duration,
    metavar="DURATION",
    default=f"{bc.DEFAULT_INCOMPLETE_GRACE_S:g}s",
    show_default=True,
    help="with --wait: how long INCOMPLETE may last before it counts as failed",
)
@_backup_options
def take(
    backup_id: BackupId | None,
    wait: bool,
    timeout: float,
    poll_interval: float,
    incomplete_grace: float,
    management_url: str,
    as_json: bool,
) -> None:
    """Schedule backup ID (it must be higher than every earlier backup id).

    Without ID the cluster generates the id (continuous backups, a schedule or a checkpoint
    interval configured); the answer names it."""

    async def work() -> tuple[Any, BackupId, bc.WaitResult | None]:
        async with bc.BackupClient(management_url) as client:
            answer = await client.take(backup_id)
            taken = backup_id if backup_id is not None else bc.generated_id(answer)
            if not wait:
                return answer, taken, None
            with _Progress() as progress:
                progress.update(f"Backup {taken}: scheduled")
                result = await bc.wait_for_backup(
                    client,
                    taken,
                    timeout_s=timeout,
                    poll_interval_s=poll_interval,
                    incomplete_grace_s=incomplete_grace,
                    clock=_clock,
                    sleep=_sleep,
                    on_update=progress.update,
                )
            return answer, taken, result

    answer, taken, result = _call(work)
    if result is None:
        if as_json:
            _print_json(answer)
        else:
            click.echo(f"Backup {taken} scheduled. Follow it with: zeebe-sim backup status {taken}")
        return
    _finish_wait(taken, result, timeout, as_json)


def _finish_wait(
    backup_id: BackupId, result: bc.WaitResult, timeout_s: float, as_json: bool
) -> None:
    if as_json:
        _print_json(result.raw)
    elif result.info is not None:
        _stdout().print(bc.status_table(result.info))
    if result.verdict is bc.Verdict.SUCCEEDED:
        sys.exit(0)
    if result.verdict is bc.Verdict.FAILED:
        state = result.info.state if result.info else "FAILED"
        reason = (
            f": {result.info.failure_reason}" if result.info and result.info.failure_reason else ""
        )
        _fail(f"backup {backup_id} is {state}{reason}")
    last = result.info.state if result.info else "not visible"
    retrying = f"; last error: {result.last_error}" if result.last_error else ""
    _fail(
        f"backup {backup_id} did not complete within {timeout_s:g}s (last state: {last}{retrying})"
    )


@backup.command("status")
@click.argument("backup_id", metavar="ID", callback=_backup_id)
@_backup_options
def status(backup_id: BackupId, management_url: str, as_json: bool) -> None:
    """Show backup ID: its state and every partition's."""

    async def work() -> Any:
        async with bc.BackupClient(management_url) as client:
            return await client.status(backup_id)

    raw = _call(work)
    if as_json:
        _print_json(raw)
        return
    try:
        info = bc.parse_backup_info(raw)
    except bc.BackupClientError as exc:
        _fail(exc.message)
    _stdout().print(bc.status_table(info))


@backup.command("list")
@click.argument("prefix", required=False, default="", callback=_id_prefix)
@_backup_options
def list_(prefix: str, management_url: str, as_json: bool) -> None:
    """List backups, newest first; with PREFIX only ids starting with those digits."""

    async def work() -> Any:
        async with bc.BackupClient(management_url) as client:
            return await client.list_backups(prefix)

    raw = _call(work)
    if as_json:
        _print_json(raw)
        return
    if not isinstance(raw, list):
        _fail("unexpected answer from the gateway: the backup list is not a list")
    try:
        infos = [bc.parse_backup_info(entry) for entry in raw]
    except bc.BackupClientError as exc:
        _fail(exc.message)
    if not infos:
        click.echo(f"No backups with ids starting with {prefix}." if prefix else "No backups.")
        return
    _stdout().print(bc.list_table(infos))


@backup.command("delete")
@click.argument("backup_id", metavar="ID", callback=_backup_id)
@click.option("--wait", is_flag=True, help="wait until the backup is gone (status 404)")
@_wait_options
@_backup_options
def delete(
    backup_id: BackupId,
    wait: bool,
    timeout: float,
    poll_interval: float,
    management_url: str,
    as_json: bool,
) -> None:
    """Delete backup ID (succeeds also when it does not exist)."""

    async def work() -> bc.WaitResult | None:
        async with bc.BackupClient(management_url) as client:
            await client.delete(backup_id)
            if not wait:
                return None
            with _Progress() as progress:
                return await bc.wait_for_deletion(
                    client,
                    backup_id,
                    timeout_s=timeout,
                    poll_interval_s=poll_interval,
                    clock=_clock,
                    sleep=_sleep,
                    on_update=progress.update,
                )

    result = _call(work)
    if result is not None and result.verdict is not bc.Verdict.SUCCEEDED:
        last = result.info.state if result.info else "unknown"
        retrying = f"; last error: {result.last_error}" if result.last_error else ""
        _fail(f"backup {backup_id} still exists after {timeout:g}s (state: {last}{retrying})")
    if as_json:
        # DELETE answers 204 without a body; print something a script can parse anyway.
        _print_json({"backupId": backup_id, "status": 204})
    elif result is not None:
        click.echo(f"Backup {backup_id} deleted; its status is now 404.")
    else:
        click.echo(f"Backup {backup_id} deleted (the API answers the same if it never existed).")
