"""The demo workload behind ``zeebe-sim load``: drive the demo process through the REST API.

Theory of operation
-------------------
One run deploys ``demo-process`` (start -> service task ``demo-task`` -> message catch
``demo-message`` correlated on ``correlationKey`` -> end) and then does three things at once:

* **Starting.** Instance ``i`` is due at ``t0 + i / rate`` on the event loop clock. Due times are
  computed from the index, never by adding up sleeps, so the schedule does not drift; when the
  run falls behind (the in-flight bound is full) it catches up as soon as it can. Starting stops
  at ``--duration`` or after ``--instances`` starts, whichever comes first.
* **Per instance** (one task each, at most ``--concurrency`` at a time): create the instance with
  a unique ``correlationKey``, publish its message, then poll ``GET /v2/process-instances/{key}``
  with backoff until it is COMPLETED or its deadline passes. Even-numbered instances publish the
  message right after creation, while the instance still waits at the service task, so the
  message is *buffered* on its partition before the subscription opens. Odd-numbered instances
  have their message published by the job worker right after their job is completed, so it
  meets a subscription that is opening or open. Both correlation paths (REFERENCE.md §3) are
  exercised about half the time each.
* **One shared job worker** activates ``demo-task`` jobs in batches and completes them.

Every HTTP call has a timeout; every failure is counted under a kind (operation + HTTP status +
Problem Details title, or the transport error) and never ends the run. An instance that is not
COMPLETED within ``completion_timeout_s`` of its creation counts as not completed; so a run ends
at most that long after its last start.

The pure parts (:class:`Schedule`, :func:`percentile`, :func:`summarize`, :func:`progress_line`,
:func:`render_summary`) do no I/O and are tested without a network. :func:`run_load` is the
asyncio shell.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.resources
import json
import math
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import attrs
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from zeebe_sim.ground.errors import ZeebeSimError

PROCESS_ID = "demo-process"
JOB_TYPE = "demo-task"
MESSAGE_NAME = "demo-message"
BPMN_RESOURCE = "demo-process.bpmn"
WORKER_NAME = "zeebe-sim-load"

DEFAULT_RATE_PER_S = 50.0
DEFAULT_DURATION_S = 30.0
DEFAULT_CONCURRENCY = 500
DEFAULT_COMPLETION_TIMEOUT_S = 60.0
DEFAULT_REST_URL = "http://localhost:8080"

REQUEST_TIMEOUT_S = 10.0
MESSAGE_TTL_MS = 60_000
JOBS_PER_ACTIVATION_MAX = 50
JOB_TIMEOUT_MS = 30_000
# Completions run concurrently with the next activation; this bounds how many are outstanding.
JOB_COMPLETIONS_IN_FLIGHT_MAX = 100
# Status polls are cheap but many: bound them separately from the in-flight instances, so that
# 500 waiting instances do not become 500 concurrent GETs.
POLLS_IN_FLIGHT_MAX = 64
# A publication or job completion refused during a failover gap is retried (see until_taken).
GAP_RETRY_INITIAL_S = 0.1
GAP_RETRY_MAX_S = 2.0
GAP_RETRY_FOR_S = 30.0
# Poll backoff: the first poll soon (latency is measured at the poll that sees COMPLETED, so it
# overstates the true latency by up to one interval), then slower for instances that take long.
POLL_INITIAL_S = 0.025
POLL_MAX_S = 1.0
POLL_FACTOR = 1.5
# Activation is asked to answer at once (no long polling), so an empty answer means "wait".
ACTIVATION_IDLE_INITIAL_S = 0.01
ACTIVATION_IDLE_MAX_S = 0.25
REPORT_INTERVAL_S = 0.25
PLAIN_REPORT_INTERVAL_S = 5.0


class LoadError(ZeebeSimError):
    """The run could not begin: the gateway is unreachable or refused the deployment."""


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


@attrs.frozen
class LoadSettings:
    """What ``zeebe-sim load`` was asked to do (already validated by the CLI)."""

    rate_per_s: float = DEFAULT_RATE_PER_S
    duration_s: float | None = DEFAULT_DURATION_S
    instances_max: int | None = None
    rest_url: str = DEFAULT_REST_URL
    concurrency: int = DEFAULT_CONCURRENCY
    completion_timeout_s: float = DEFAULT_COMPLETION_TIMEOUT_S

    def __attrs_post_init__(self) -> None:
        assert self.rate_per_s > 0, self.rate_per_s
        assert self.duration_s is not None or self.instances_max is not None
        assert self.duration_s is None or self.duration_s > 0, self.duration_s
        assert self.instances_max is None or self.instances_max >= 1, self.instances_max
        assert self.concurrency >= 1, self.concurrency

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.rate_per_s, self.duration_s, self.instances_max)


@attrs.frozen
class Schedule:
    """When each start is due, as an offset in seconds from the start of the run."""

    rate_per_s: float
    duration_s: float | None
    instances_max: int | None

    def due_s(self, index: int) -> float | None:
        """The offset at which start number ``index`` (0-based) is due, or None if the schedule
        has no such start (past ``duration_s`` or beyond ``instances_max``)."""
        # Computed from the index, not accumulated: no floating-point or sleep drift.
        offset = index / self.rate_per_s
        if self.instances_max is not None and index >= self.instances_max:
            return None
        if self.duration_s is not None and offset >= self.duration_s:
            return None
        return offset

    def end_s(self, started: int) -> float:
        """When the starting phase ends once ``started`` starts were made: when the next start
        would have been due, but never after ``duration_s``. (So 20 starts at 100/s take 0.2 s
        and the achieved rate is 100/s, not 20 / 0.19.)"""
        offset = started / self.rate_per_s
        return offset if self.duration_s is None else min(offset, self.duration_s)

    def planned(self) -> int:
        """How many starts the schedule holds."""
        by_time = (
            math.inf if self.duration_s is None else math.ceil(self.duration_s * self.rate_per_s)
        )
        by_count = math.inf if self.instances_max is None else self.instances_max
        planned = min(by_time, by_count)
        assert planned != math.inf
        return int(planned)

    def is_over(self, index: int, elapsed_s: float) -> bool:
        """True once no more starts may be made: the schedule is exhausted, or the duration has
        passed (even if the run is behind schedule)."""
        if self.due_s(index) is None:
            return True
        return self.duration_s is not None and elapsed_s >= self.duration_s


def poll_delays_s(
    initial_s: float = POLL_INITIAL_S, factor: float = POLL_FACTOR, maximum_s: float = POLL_MAX_S
) -> Iterator[float]:
    """The waits between status polls of one instance: exponential, capped."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * factor, maximum_s)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in (0, 1]) of an ascending, non-empty sequence:
    the smallest value with at least ``fraction`` of all values at or below it."""
    assert sorted_values, "percentile of nothing"
    assert 0 < fraction <= 1, fraction
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[rank - 1]


def error_kind(operation: str, status: int, body: bytes) -> str:
    """The bucket an HTTP error is counted in: the operation, the status and the Problem Details
    title if the body has one (``"create instance: 503 RESOURCE_EXHAUSTED"``)."""
    title = ""
    with contextlib.suppress(ValueError):
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("title"), str):
            title = parsed["title"]
    return f"{operation}: {status} {title}".rstrip()


@attrs.define
class LoadStats:
    """The running counts of one run. Times are offsets in seconds from the run's start."""

    started: int = 0
    completed: int = 0
    in_flight: int = 0
    errors: collections.Counter[str] = attrs.field(factory=collections.Counter)
    latencies_s: list[float] = attrs.field(factory=list)
    start_phase_s: float | None = None
    last_completed_s: float | None = None

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())


@attrs.frozen
class LoadSummary:
    """The end-of-run report; ``ok`` decides the exit code."""

    target_rate_per_s: float
    elapsed_s: float
    started: int
    completed: int
    not_completed: int
    errors: Mapping[str, int]
    start_rate_per_s: float
    completion_rate_per_s: float
    latency_ms: Mapping[str, float] | None
    interrupted: bool

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    @property
    def ok(self) -> bool:
        """No errors, and every started instance completed."""
        return (
            self.errors_total == 0
            and self.started > 0
            and self.completed == self.started
            and not self.interrupted
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "interrupted": self.interrupted,
            "targetRatePerS": self.target_rate_per_s,
            "elapsedS": round(self.elapsed_s, 3),
            "started": self.started,
            "completed": self.completed,
            "notCompleted": self.not_completed,
            "errorsTotal": self.errors_total,
            "errors": dict(self.errors),
            "startRatePerS": round(self.start_rate_per_s, 3),
            "completionRatePerS": round(self.completion_rate_per_s, 3),
            "latencyMs": None if self.latency_ms is None else dict(self.latency_ms),
        }


def summarize(
    stats: LoadStats, target_rate_per_s: float, elapsed_s: float, interrupted: bool = False
) -> LoadSummary:
    """The summary of a finished run.

    The start rate is the starts over the starting phase; the completion rate is completions
    over the time from the run's start to the last completion; latencies (creation request sent
    to COMPLETED seen) are nearest-rank percentiles in milliseconds.
    """
    start_phase_s = stats.start_phase_s if stats.start_phase_s is not None else elapsed_s
    start_rate = stats.started / start_phase_s if start_phase_s > 0 else 0.0
    last = stats.last_completed_s
    completion_rate = stats.completed / last if last else 0.0
    latency_ms: dict[str, float] | None = None
    if stats.latencies_s:
        ordered = sorted(stats.latencies_s)
        latency_ms = {
            name: round(percentile(ordered, fraction) * 1000, 1)
            for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
        }
    return LoadSummary(
        target_rate_per_s=target_rate_per_s,
        elapsed_s=elapsed_s,
        started=stats.started,
        completed=stats.completed,
        not_completed=stats.started - stats.completed,
        errors=dict(sorted(stats.errors.items())),
        start_rate_per_s=start_rate,
        completion_rate_per_s=completion_rate,
        latency_ms=latency_ms,
        interrupted=interrupted,
    )


@attrs.frozen
class ProgressView:
    """One frame of the live display."""

    elapsed_s: float
    target_rate_per_s: float
    planned: int
    started: int
    in_flight: int
    completed: int
    errors: int

    @property
    def achieved_rate_per_s(self) -> float:
        return self.started / self.elapsed_s if self.elapsed_s > 0 else 0.0


def progress_view(stats: LoadStats, schedule: Schedule, elapsed_s: float) -> ProgressView:
    # While starting, the achieved rate is over the time so far; afterwards over the phase.
    window_s = elapsed_s if stats.start_phase_s is None else stats.start_phase_s
    return ProgressView(
        elapsed_s=window_s,
        target_rate_per_s=schedule.rate_per_s,
        planned=schedule.planned(),
        started=stats.started,
        in_flight=stats.in_flight,
        completed=stats.completed,
        errors=stats.errors_total,
    )


def progress_line(view: ProgressView) -> str:
    """The one-line progress report (the plain output, and the text beside the bar)."""
    return (
        f"rate {view.achieved_rate_per_s:.1f}/{view.target_rate_per_s:g} per s  "
        f"started {view.started}/{view.planned}  in flight {view.in_flight}  "
        f"completed {view.completed}  errors {view.errors}"
    )


def render_summary(summary: LoadSummary) -> Group:
    """The human summary: a table of numbers, then errors by kind if there were any."""
    table = Table(title="zeebe-sim load", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("started", str(summary.started))
    table.add_row("completed", str(summary.completed))
    table.add_row("not completed", str(summary.not_completed))
    table.add_row("errors", str(summary.errors_total))
    table.add_row(
        "start rate",
        f"{summary.start_rate_per_s:.1f}/s (target {summary.target_rate_per_s:g}/s)",
    )
    table.add_row("completion throughput", f"{summary.completion_rate_per_s:.1f}/s")
    if summary.latency_ms is not None:
        for name, value in summary.latency_ms.items():
            table.add_row(f"latency {name}", f"{value:.1f} ms")
    table.add_row("elapsed", f"{summary.elapsed_s:.1f} s")
    parts: list[Table | Text] = [table]
    if summary.errors:
        errors = Table(title="errors by kind", title_justify="left")
        errors.add_column("kind")
        errors.add_column("count", justify="right")
        for kind, count in summary.errors.items():
            errors.add_row(kind, str(count))
        parts.append(errors)
    if summary.interrupted:
        parts.append(Text("interrupted", style="yellow"))
    parts.append(
        Text("OK", style="bold green")
        if summary.ok
        else Text("FAILED: errors, or instances not completed", style="bold red")
    )
    return Group(*parts)


def demo_bpmn() -> bytes:
    """The demo process model shipped inside the package."""
    return importlib.resources.files("zeebe_sim").joinpath(BPMN_RESOURCE).read_bytes()


# --------------------------------------------------------------------------------------------
# Progress reporting
# --------------------------------------------------------------------------------------------


class Reporter(Protocol):
    def update(self, view: ProgressView) -> None: ...

    def close(self, view: ProgressView | None) -> None: ...


class PlainReporter:
    """Periodic plain lines, for logs and CI where a live display would be noise."""

    def __init__(
        self, emit: Callable[[str], None], interval_s: float = PLAIN_REPORT_INTERVAL_S
    ) -> None:
        self._emit = emit
        self._interval_s = interval_s
        self._last_s: float | None = None

    def update(self, view: ProgressView) -> None:
        if self._last_s is None or view.elapsed_s - self._last_s >= self._interval_s:
            self._last_s = view.elapsed_s
            self._emit(f"[{view.elapsed_s:6.1f}s] {progress_line(view)}")

    def close(self, view: ProgressView | None) -> None:
        if view is not None:
            self._emit(f"[{view.elapsed_s:6.1f}s] {progress_line(view)}")


class _TwoLineProgress(Progress):
    """The bar on one line and the counters on the next, so both fit an 80-column terminal
    (Rich's documented way to customize: override ``get_renderables``)."""

    line = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield Text(self.line)


class RichReporter:
    """A live progress bar (completed of planned), with the counters below it."""

    def __init__(self, console: Console) -> None:
        self._progress = _TwoLineProgress(
            SpinnerColumn(),
            TextColumn("[bold]load"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("completed"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._progress.add_task("load", total=None)
        self._started = False

    def update(self, view: ProgressView) -> None:
        # Started on the first update, so that a run that never begins leaves no refresh thread.
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.line = progress_line(view)
        self._progress.update(self._task, total=view.planned, completed=view.completed)

    def close(self, view: ProgressView | None) -> None:
        if view is not None:
            self.update(view)
        if self._started:
            self._progress.stop()
            self._started = False


def default_reporter() -> Reporter:
    """Rich on a terminal, plain lines otherwise; both on stderr so stdout stays the summary."""
    console = Console(stderr=True)
    if console.is_terminal:
        return RichReporter(console)
    return PlainReporter(lambda line: console.print(line, highlight=False, soft_wrap=True))


# --------------------------------------------------------------------------------------------
# The asyncio shell
# --------------------------------------------------------------------------------------------


class RestCallError(Exception):
    """One failed REST call; ``kind`` is the bucket it is counted in, ``status`` the HTTP
    status if there was an answer."""

    def __init__(self, kind: str, status: int | None = None, *, answered: bool = True) -> None:
        super().__init__(kind)
        self.kind = kind
        self.status = status
        # A failover gap: no leader (503), a silent one (504) or no answer at all.
        self.gap = status in (503, 504) or not answered


class RestApi:
    """The few ``/v2`` calls the workload makes. Every failure becomes :class:`RestCallError`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")

    async def _call(
        self, operation: str, method: str, path: str, body: Any = None, data: Any = None
    ) -> Any:
        try:
            async with self._session.request(
                method, self._base_url + path, json=body, data=data
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    kind = error_kind(operation, response.status, payload)
                    raise RestCallError(kind, response.status)
                if response.status == 204 or not payload:
                    return None
                return json.loads(payload)
        except TimeoutError as exc:
            raise RestCallError(f"{operation}: timeout", answered=False) from exc
        except aiohttp.ClientConnectionError as exc:
            raise RestCallError(f"{operation}: connection error", answered=False) from exc
        except aiohttp.ClientError as exc:
            raise RestCallError(f"{operation}: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise RestCallError(f"{operation}: malformed response") from exc

    async def deploy(self, name: str, resource: bytes) -> Any:
        form = aiohttp.FormData()
        form.add_field("resources", resource, filename=name, content_type="application/xml")
        return await self._call("deploy", "POST", "/v2/deployments", data=form)

    async def create_instance(self, variables: dict[str, Any]) -> str:
        answer = await self._call(
            "create instance",
            "POST",
            "/v2/process-instances",
            {"processDefinitionId": PROCESS_ID, "variables": variables},
        )
        key = answer.get("processInstanceKey") if isinstance(answer, dict) else None
        if key is None:
            raise RestCallError("create instance: malformed response")
        return str(key)

    async def instance_state(self, key: str) -> str | None:
        answer = await self._call("get instance", "GET", f"/v2/process-instances/{key}")
        return answer.get("state") if isinstance(answer, dict) else None

    async def activate_jobs(self, job_type: str, max_jobs: int, timeout_ms: int) -> list[Any]:
        answer = await self._call(
            "activate jobs",
            "POST",
            "/v2/jobs/activation",
            {
                "type": job_type,
                "maxJobsToActivate": max_jobs,
                "timeout": timeout_ms,
                "worker": WORKER_NAME,
                "requestTimeout": -1,
            },
        )
        jobs = answer.get("jobs") if isinstance(answer, dict) else None
        if not isinstance(jobs, list):
            raise RestCallError("activate jobs: malformed response")
        return jobs

    async def complete_job(self, job_key: str, variables: dict[str, Any]) -> None:
        await self._call(
            "complete job", "POST", f"/v2/jobs/{job_key}/completion", {"variables": variables}
        )

    async def publish_message(self, name: str, correlation_key: str, ttl_ms: int) -> None:
        await self._call(
            "publish message",
            "POST",
            "/v2/messages/publication",
            {
                "name": name,
                "correlationKey": correlation_key,
                "timeToLive": ttl_ms,
                # Unique per instance: a retried publish would be rejected, not correlated twice.
                "messageId": correlation_key,
                "variables": {"messagePublished": True},
            },
        )


class _Run:
    """One run's tasks and counters. Owned by :func:`run_load`."""

    def __init__(self, settings: LoadSettings, api: RestApi, stop: asyncio.Event) -> None:
        self.settings = settings
        self.schedule = settings.schedule
        self.api = api
        self.stop = stop
        self.stats = LoadStats()
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        # Unique per run, so messages buffered by an earlier run (TTL 60 s) never correlate here.
        self.run_id = uuid.uuid4().hex[:12]
        self.in_flight = asyncio.Semaphore(settings.concurrency)
        self.polls = asyncio.Semaphore(POLLS_IN_FLIGHT_MAX)
        self.completions = asyncio.Semaphore(JOB_COMPLETIONS_IN_FLIGHT_MAX)
        # Correlation keys whose message the worker publishes after completing their job.
        self.publish_after_job: set[str] = set()

    def elapsed_s(self) -> float:
        return self.loop.time() - self.t0

    def count_error(self, error: RestCallError) -> None:
        self.stats.errors[error.kind] += 1

    async def wait_or_stop(self, delay_s: float) -> bool:
        """Wait ``delay_s``; True if the run was asked to stop meanwhile."""
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay_s)
        return self.stop.is_set()

    async def until_taken(self, call: Callable[[], Awaitable[None]], taken_status: int) -> bool:
        """Make ``call``; while a failover gap refuses it, count the error and try again with
        backoff, for up to :data:`GAP_RETRY_FOR_S` (or until the run stops). A publication or
        a job completion given up leaves its instance waiting for ever. A retry answered
        ``taken_status`` means an earlier try was taken after all, its answer lost. True if
        the call was taken."""
        give_up_s = self.elapsed_s() + GAP_RETRY_FOR_S
        delay_s = GAP_RETRY_INITIAL_S
        retry = False
        while True:
            try:
                await call()
                return True
            except RestCallError as exc:
                if retry and exc.status == taken_status:
                    return True
                self.count_error(exc)
                if not exc.gap or self.elapsed_s() + delay_s > give_up_s:
                    return False
            if await self.wait_or_stop(delay_s):
                return False
            retry = True
            delay_s = min(delay_s * 2, GAP_RETRY_MAX_S)

    async def publish(self, correlation_key: str) -> None:
        # The message id is the correlation key: a publication taken twice is refused as 409.
        await self.until_taken(
            lambda: self.api.publish_message(MESSAGE_NAME, correlation_key, MESSAGE_TTL_MS), 409
        )

    async def start_all(self, instances: asyncio.TaskGroup) -> None:
        index = 0
        while not self.schedule.is_over(index, self.elapsed_s()):
            due_s = self.schedule.due_s(index)
            assert due_s is not None
            if await self.wait_or_stop(due_s - self.elapsed_s()):
                break
            if not await self.acquire_slot():
                break
            if self.schedule.is_over(index, self.elapsed_s()):
                self.in_flight.release()
                break
            instances.create_task(self.instance(index))
            index += 1
        if not self.stop.is_set():
            # Wait out the last slot (never past the duration), so that the start rate is
            # measured per slot: 20 starts at 100/s make a 0.2 s phase.
            await self.wait_or_stop(self.schedule.end_s(index) - self.elapsed_s())
        self.stats.start_phase_s = self.elapsed_s()

    async def acquire_slot(self) -> bool:
        """Take an in-flight slot; False if the duration ran out or the run stopped first."""
        if not self.in_flight.locked():
            await self.in_flight.acquire()
            return True
        duration_s = self.schedule.duration_s
        stopped = asyncio.ensure_future(self.stop.wait())
        acquire = asyncio.ensure_future(self.in_flight.acquire())
        timeout = None if duration_s is None else max(duration_s - self.elapsed_s(), 0.0)
        try:
            await asyncio.wait({stopped, acquire}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            stopped.cancel()
            if not acquire.done():
                acquire.cancel()
        if acquire.done() and not acquire.cancelled():
            if self.stop.is_set():
                self.in_flight.release()
                return False
            return True
        return False

    async def instance(self, index: int) -> None:
        """Create, publish, wait for COMPLETED; holds one in-flight slot throughout."""
        correlation_key = f"load-{self.run_id}-{index}"
        self.stats.in_flight += 1
        try:
            created_s = self.elapsed_s()
            late = index % 2 == 1
            if late:
                self.publish_after_job.add(correlation_key)
            try:
                key = await self.api.create_instance({"correlationKey": correlation_key})
            except RestCallError as exc:
                self.publish_after_job.discard(correlation_key)
                self.count_error(exc)
                return
            self.stats.started += 1
            if not late:
                await self.publish(correlation_key)
            if await self.await_completion(key, created_s + self.settings.completion_timeout_s):
                self.stats.completed += 1
                now_s = self.elapsed_s()
                self.stats.latencies_s.append(now_s - created_s)
                self.stats.last_completed_s = now_s
        finally:
            self.stats.in_flight -= 1
            self.in_flight.release()

    async def await_completion(self, key: str, deadline_s: float) -> bool:
        for delay_s in poll_delays_s():
            remaining_s = deadline_s - self.elapsed_s()
            if remaining_s <= 0 or await self.wait_or_stop(min(delay_s, remaining_s)):
                return False
            async with self.polls:
                try:
                    if await self.api.instance_state(key) == "COMPLETED":
                        return True
                except RestCallError as exc:
                    self.count_error(exc)
        raise AssertionError("poll_delays_s is endless")

    async def work_jobs(self) -> None:
        """The shared job worker: activate in batches, complete concurrently, back off when idle."""
        idle_s = ACTIVATION_IDLE_INITIAL_S
        async with asyncio.TaskGroup() as completions:
            while True:
                try:
                    jobs = await self.api.activate_jobs(
                        JOB_TYPE, JOBS_PER_ACTIVATION_MAX, JOB_TIMEOUT_MS
                    )
                except RestCallError as exc:
                    self.count_error(exc)
                    jobs = []
                for job in jobs:
                    await self.completions.acquire()
                    completions.create_task(self.complete(job))
                if len(jobs) < JOBS_PER_ACTIVATION_MAX:
                    await asyncio.sleep(idle_s)
                    idle_s = idle_s * 2 if not jobs else ACTIVATION_IDLE_INITIAL_S
                    idle_s = min(idle_s, ACTIVATION_IDLE_MAX_S)

    async def complete(self, job: Any) -> None:
        try:
            if not isinstance(job, dict) or "jobKey" not in job:
                self.count_error(RestCallError("activate jobs: malformed job"))
                return
            key = str(job["jobKey"])
            # A completion taken twice is refused as 404 (the job is gone).
            done = {"demoTaskDone": True}
            if not await self.until_taken(lambda: self.api.complete_job(key, done), 404):
                return
            variables = job.get("variables")
            correlation_key = (
                variables.get("correlationKey") if isinstance(variables, dict) else None
            )
            if isinstance(correlation_key, str) and correlation_key in self.publish_after_job:
                self.publish_after_job.discard(correlation_key)
                await self.publish(correlation_key)
        finally:
            self.completions.release()

    async def drive(self, reporter: Reporter | None) -> None:
        """Start, work and wait until every instance task has ended."""
        async with asyncio.TaskGroup() as background:
            worker = background.create_task(self.work_jobs())
            report = background.create_task(self.report(reporter)) if reporter else None
            async with asyncio.TaskGroup() as instances:
                await self.start_all(instances)
            # Every instance has ended (completed, failed or past its deadline): nothing is left
            # for the worker, and the last frame is drawn by the caller.
            worker.cancel()
            if report is not None:
                report.cancel()

    def view(self) -> ProgressView:
        return progress_view(self.stats, self.schedule, self.elapsed_s())

    async def report(self, reporter: Reporter) -> None:
        while True:
            reporter.update(self.view())
            await asyncio.sleep(REPORT_INTERVAL_S)


async def run_load(
    settings: LoadSettings, reporter: Reporter | None = None, *, handle_sigint: bool = False
) -> LoadSummary:
    """Run the demo workload against ``settings.rest_url`` and summarize it.

    With ``handle_sigint``, Ctrl-C stops starting and waiting, and the summary of what happened so
    far is returned (marked interrupted). Raises :class:`LoadError` if the demo process cannot be
    deployed (gateway unreachable, deployment refused); any later failure is counted, not raised.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_sigint:
        try:
            loop.add_signal_handler(signal.SIGINT, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
            handle_sigint = False
    connections_max = settings.concurrency + POLLS_IN_FLIGHT_MAX + JOB_COMPLETIONS_IN_FLIGHT_MAX
    run: _Run | None = None
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=connections_max),
        ) as session:
            api = RestApi(session, settings.rest_url)
            try:
                await api.deploy(BPMN_RESOURCE, demo_bpmn())
            except RestCallError as exc:
                raise LoadError(
                    f"cannot deploy {PROCESS_ID} at {settings.rest_url}: {exc.kind}"
                ) from exc
            # The clock starts after the deployment: rates and latencies are about instances.
            run = _Run(settings, api, stop)
            await run.drive(reporter)
            return summarize(
                run.stats, settings.rate_per_s, run.elapsed_s(), interrupted=stop.is_set()
            )
    finally:
        if reporter is not None:
            reporter.close(None if run is None else run.view())
        if handle_sigint:
            loop.remove_signal_handler(signal.SIGINT)
