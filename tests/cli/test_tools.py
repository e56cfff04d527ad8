"""``zeebe-sim load`` and ``zeebe-sim backup``: pure parts first, then both commands end to end
against small in-test aiohttp servers that imitate the gateway's HTTP APIs (fakes of an external
API at the edge, with canned answers).

The CLI tests host the fake in a thread with its own event loop, because the commands run their
own ``asyncio.run``; the async tests share the test's loop. Nothing waits with sleeps: waiting
is polled by the code under test (fast poll intervals) or driven by a fake clock.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import click
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from zeebe_sim import backup_client as bc
from zeebe_sim import workload as wl
from zeebe_sim.ground.ids import BackupId, PartitionId
from zeebe_sim.tools_cli import backup, load

# --------------------------------------------------------------------------------------------
# Helpers: hosting a fake, running the CLI, rendering rich output
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in the running loop; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` from a thread with its own loop, for commands that call ``asyncio.run``."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop = asyncio.Event()
        async with serve(app) as url:
            box["url"] = url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "fake server did not start"
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
        assert not thread.is_alive()


@contextmanager
def refusing_url() -> Iterator[str]:
    """A URL whose port is bound but not listening: connections are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def invoke(command: click.Command, args: list[str]) -> Result:
    # A wide terminal, so that rich does not wrap table cells the assertions look for.
    return CliRunner(env={"COLUMNS": "200"}).invoke(command, args, catch_exceptions=False)


def render(renderable: Any, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


# --------------------------------------------------------------------------------------------
# Pure: pacing
# --------------------------------------------------------------------------------------------


def test_schedule_due_times_are_computed_from_the_index() -> None:
    """Start i is due at exactly i / rate: far into a run there is no accumulated drift."""
    schedule = wl.Schedule(rate_per_s=30.0, duration_s=None, instances_max=None)
    assert schedule.due_s(0) == 0.0
    assert schedule.due_s(3) == 0.1
    assert schedule.due_s(3_000_000) == 100_000.0


def test_schedule_stops_at_the_instance_count() -> None:
    """With --instances N the schedule holds exactly starts 0..N-1."""
    schedule = wl.Schedule(rate_per_s=100.0, duration_s=None, instances_max=20)
    assert schedule.due_s(19) == 0.19
    assert schedule.due_s(20) is None
    assert schedule.planned() == 20
    assert schedule.end_s(20) == 0.2


def test_schedule_stops_at_the_duration() -> None:
    """With --duration S only starts due strictly before S are made; the phase ends at S."""
    schedule = wl.Schedule(rate_per_s=10.0, duration_s=1.0, instances_max=None)
    assert schedule.due_s(9) == 0.9
    assert schedule.due_s(10) is None
    assert schedule.planned() == 10
    assert schedule.end_s(10) == 1.0
    assert schedule.end_s(4) == 0.4


def test_schedule_whichever_limit_comes_first() -> None:
    """Both limits given: the earlier one ends the schedule."""
    by_count = wl.Schedule(rate_per_s=10.0, duration_s=10.0, instances_max=5)
    by_time = wl.Schedule(rate_per_s=10.0, duration_s=0.5, instances_max=500)
    assert by_count.planned() == 5 and by_count.due_s(5) is None
    assert by_time.planned() == 5 and by_time.due_s(5) is None


def test_schedule_is_over_when_the_duration_passes_even_behind_schedule() -> None:
    """A run that fell behind (index 3 of 10 due) still stops starting once the duration is up."""
    schedule = wl.Schedule(rate_per_s=10.0, duration_s=1.0, instances_max=None)
    assert not schedule.is_over(3, elapsed_s=0.99)
    assert schedule.is_over(3, elapsed_s=1.0)
    assert schedule.is_over(10, elapsed_s=0.5)


@given(
    rate=st.floats(min_value=0.1, max_value=10_000),
    duration=st.one_of(st.none(), st.floats(min_value=0.001, max_value=100)),
    instances=st.one_of(st.none(), st.integers(min_value=1, max_value=2_000)),
)
def test_schedule_planned_matches_the_due_times(
    rate: float, duration: float | None, instances: int | None
) -> None:
    """planned() is the number of due times, which increase, and all fit in the limits."""
    if duration is None and instances is None:
        instances = 1
    schedule = wl.Schedule(rate, duration, instances)
    planned = schedule.planned()
    if planned > 5_000:
        return
    dues = [schedule.due_s(i) for i in range(planned + 1)]
    assert dues[-1] is None
    times = [d for d in dues[:-1] if d is not None]
    assert len(times) == planned
    assert times == sorted(times)
    assert duration is None or all(t < duration for t in times)


def test_poll_delays_grow_and_are_capped() -> None:
    """Status polls back off exponentially up to the cap."""
    delays = wl.poll_delays_s(initial_s=0.1, factor=2.0, maximum_s=0.5)
    assert [next(delays) for _ in range(6)] == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


# --------------------------------------------------------------------------------------------
# Pure: stats, percentiles, summary, progress
# --------------------------------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    """Nearest rank: p50 of 1..100 is 50, p95 is 95, p99 is 99, p100 the maximum."""
    values = [float(v) for v in range(1, 101)]
    assert wl.percentile(values, 0.50) == 50
    assert wl.percentile(values, 0.95) == 95
    assert wl.percentile(values, 0.99) == 99
    assert wl.percentile(values, 1.0) == 100
    assert wl.percentile([7.0], 0.5) == 7.0
    assert wl.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


@given(
    values=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200),
    fraction=st.floats(min_value=0.01, max_value=1.0),
)
def test_percentile_property(values: list[float], fraction: float) -> None:
    """The percentile is one of the values, with at least that fraction at or below it and
    fewer than that fraction strictly below it."""
    ordered = sorted(values)
    p = wl.percentile(ordered, fraction)
    assert p in ordered
    assert sum(v <= p for v in ordered) >= fraction * len(ordered)
    assert sum(v < p for v in ordered) < fraction * len(ordered)


def test_percentile_of_nothing_is_a_bug() -> None:
    """Asking for a percentile of no values is our bug, caught by an assertion."""
    with pytest.raises(AssertionError):
        wl.percentile([], 0.5)


def test_summarize_computes_rates_and_latencies() -> None:
    """Start rate = starts / start phase; completion throughput = completions / time to the last
    completion; latencies in ms by nearest rank; ok only without errors and all completed."""
    stats = wl.LoadStats(
        started=10,
        completed=10,
        latencies_s=[0.01 * i for i in range(10, 0, -1)],
        start_phase_s=0.5,
        last_completed_s=2.0,
    )
    summary = wl.summarize(stats, target_rate_per_s=20.0, elapsed_s=2.5)
    assert summary.start_rate_per_s == 20.0
    assert summary.completion_rate_per_s == 5.0
    assert summary.latency_ms == {"p50": 50.0, "p95": 100.0, "p99": 100.0, "max": 100.0}
    assert summary.not_completed == 0
    assert summary.ok
    as_json = summary.to_json()
    assert as_json["started"] == 10 and as_json["completed"] == 10 and as_json["ok"] is True
    assert as_json["errorsTotal"] == 0 and as_json["errors"] == {}
    assert json.loads(json.dumps(as_json)) == as_json


@pytest.mark.parametrize(
    ("stats", "interrupted"),
    [
        (wl.LoadStats(started=3, completed=2, start_phase_s=1.0, last_completed_s=1.0), False),
        (
            wl.LoadStats(
                started=3, completed=3, start_phase_s=1.0, errors={"get instance: 503": 1}
            ),
            False,
        ),
        (wl.LoadStats(started=0, completed=0, start_phase_s=1.0), False),
        (wl.LoadStats(started=2, completed=2, start_phase_s=1.0), True),
    ],
)
def test_summary_is_not_ok(stats: wl.LoadStats, interrupted: bool) -> None:
    """Not ok (exit 1): an instance not completed, any error, nothing started, or Ctrl-C."""
    summary = wl.summarize(stats, 10.0, 1.0, interrupted=interrupted)
    assert not summary.ok
    assert summary.not_completed == stats.started - stats.completed


def test_summary_without_completions_has_no_latency() -> None:
    """No completed instance: no percentiles and a zero throughput, not a division error."""
    summary = wl.summarize(wl.LoadStats(started=1, start_phase_s=0.0), 10.0, 0.0)
    assert summary.latency_ms is None
    assert summary.completion_rate_per_s == 0.0
    assert summary.start_rate_per_s == 0.0
    assert summary.to_json()["latencyMs"] is None


def test_error_kind_uses_the_problem_details_title() -> None:
    """Errors are counted by operation, status and Problem Details title; other bodies give
    operation and status only."""
    body = json.dumps({"type": "about:blank", "title": "RESOURCE_EXHAUSTED", "status": 503})
    assert wl.error_kind("create instance", 503, body.encode()) == (
        "create instance: 503 RESOURCE_EXHAUSTED"
    )
    assert wl.error_kind("get instance", 502, b"<html>Bad Gateway</html>") == "get instance: 502"
    assert wl.error_kind("get instance", 500, b"") == "get instance: 500"


def test_progress_line_shows_target_and_achieved_rate_and_counters() -> None:
    """The progress line carries achieved/target rate, started of planned, in flight,
    completed and errors."""
    view = wl.ProgressView(
        elapsed_s=2.0,
        target_rate_per_s=50.0,
        planned=1500,
        started=98,
        in_flight=7,
        completed=91,
        errors=2,
    )
    assert wl.progress_line(view) == (
        "rate 49.0/50 per s  started 98/1500  in flight 7  completed 91  errors 2"
    )


def test_progress_view_freezes_the_rate_window_after_the_start_phase() -> None:
    """While starting, the achieved rate is over the time so far; afterwards over the phase, so
    it does not decay while the run waits for completions."""
    schedule = wl.Schedule(100.0, None, 20)
    starting = wl.progress_view(wl.LoadStats(started=10), schedule, elapsed_s=0.1)
    assert starting.achieved_rate_per_s == pytest.approx(100.0)
    done = wl.progress_view(wl.LoadStats(started=20, start_phase_s=0.2), schedule, elapsed_s=5.0)
    assert done.achieved_rate_per_s == pytest.approx(100.0)


def test_plain_reporter_prints_periodically_and_at_the_end() -> None:
    """Plain mode (no TTY) prints the first frame, then one line per interval, then a last."""
    lines: list[str] = []
    reporter = wl.PlainReporter(lines.append, interval_s=1.0)

    def view(elapsed: float) -> wl.ProgressView:
        return wl.ProgressView(elapsed, 10.0, 100, int(elapsed * 10), 0, 0, 0)

    for elapsed in (0.0, 0.25, 0.5, 1.0, 1.5, 2.25):
        reporter.update(view(elapsed))
    reporter.close(view(2.5))
    assert [line.split("]")[0] for line in lines] == [
        "[   0.0s",
        "[   1.0s",
        "[   2.2s",
        "[   2.5s",
    ]


def test_render_summary_lists_numbers_and_errors_by_kind() -> None:
    """The human summary shows the counts, rates, percentiles, and a table of errors by kind."""
    stats = wl.LoadStats(
        started=4,
        completed=3,
        errors={"create instance: 503 RESOURCE_EXHAUSTED": 2},
        latencies_s=[0.1, 0.2, 0.3],
        start_phase_s=1.0,
        last_completed_s=1.5,
    )
    text = render(wl.render_summary(wl.summarize(stats, 5.0, 2.0)))
    for expected in (
        "started",
        "not completed",
        "4.0/s (target 5/s)",
        "2.0/s",
        "latency p50",
        "200.0 ms",
        "create instance: 503 RESOURCE_EXHAUSTED",
        "FAILED",
    ):
        assert expected in text, (expected, text)


def test_demo_bpmn_is_packaged() -> None:
    """The demo model is read from the installed package, not from the source tree."""
    bpmn = wl.demo_bpmn()
    assert b'id="demo-process"' in bpmn
    assert b'type="demo-task"' in bpmn
    assert b'name="demo-message"' in bpmn


# --------------------------------------------------------------------------------------------
# Pure: backup tables, parsing, waiting verdicts
# --------------------------------------------------------------------------------------------

COMPLETED_INFO = {
    "backupId": 100,
    "state": "COMPLETED",
    "details": [
        {
            "partitionId": 2,
            "state": "COMPLETED",
            "createdAt": "2022-12-08T13:00:55.900000000Z",
            "lastUpdatedAt": "2022-12-08T13:00:56.805351556Z",
            "snapshotId": "2-1-3-2",
            "checkpointPosition": 7,
            "brokerId": 1,
            "brokerVersion": "8.8.0-zeebe-sim",
        },
        {
            "partitionId": 1,
            "state": "COMPLETED",
            "createdAt": "2022-12-08T13:00:55.344276672Z",
            "lastUpdatedAt": "2022-12-08T13:00:55.805351556Z",
            "checkpointPosition": 5,
            "brokerId": 0,
            "brokerVersion": "8.8.0-zeebe-sim",
        },
    ],
}

FAILED_INFO = {
    "backupId": 101,
    "state": "FAILED",
    "failureReason": "Backup on partition 2 failed due to disk full. ",
    "details": [
        {"partitionId": 1, "state": "COMPLETED", "createdAt": "2022-12-09T10:00:00.000Z"},
        {
            "partitionId": 2,
            "state": "FAILED",
            "failureReason": "disk full",
            "createdAt": "2022-12-09T10:00:01.000Z",
        },
    ],
}


def info(state: str, backup_id: int = 7, partitions: int = 3) -> dict[str, Any]:
    return {
        "backupId": backup_id,
        "state": state,
        "details": [{"partitionId": p, "state": state} for p in range(1, partitions + 1)],
    }


def test_parse_backup_info_sorts_partitions_and_keeps_absent_fields_absent() -> None:
    """Parsing keeps every field, sorts details by partition and leaves absent ones None."""
    parsed = bc.parse_backup_info(COMPLETED_INFO)
    assert parsed.backup_id == 100 and parsed.state == "COMPLETED"
    assert [d.partition_id for d in parsed.details] == [1, 2]
    assert parsed.details[0].snapshot_id is None
    assert parsed.details[1].snapshot_id == "2-1-3-2"
    assert parsed.created_at == "2022-12-08T13:00:55.344276672Z"


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"state": "COMPLETED"},
        {"backupId": "x", "state": "COMPLETED"},
        {"backupId": 1, "state": "COMPLETED", "details": {}},
        {"backupId": 1, "state": "COMPLETED", "details": [{"partitionId": 1}]},
    ],
)
def test_parse_backup_info_rejects_malformed_answers(raw: Any) -> None:
    """Anything that is not a BackupInfo is a MalformedAnswer (one line, exit 1), not a crash."""
    with pytest.raises(bc.MalformedAnswer):
        bc.parse_backup_info(raw)


def test_format_time_trims_to_seconds() -> None:
    """Nanosecond ISO times are shown to the second; other text is shown as is."""
    assert bc.format_time("2022-12-08T13:00:55.344276672Z") == "2022-12-08 13:00:55Z"
    assert bc.format_time("2022-12-08T13:00:55Z") == "2022-12-08 13:00:55Z"
    assert bc.format_time("yesterday") == "yesterday"
    assert bc.format_time(None) == ""


def test_status_table_has_a_row_per_partition() -> None:
    """The status table names the backup and its state, then one row per partition with its
    state, times, position, snapshot, broker and failure reason."""
    text = render(bc.status_table(bc.parse_backup_info(FAILED_INFO)))
    assert "Backup 101: FAILED" in text
    assert "Backup on partition 2 failed due to disk full." in text
    rows = [line for line in text.splitlines() if line.startswith("│ ")]
    assert len(rows) == 2
    assert "COMPLETED" in rows[0] and "2022-12-09 10:00:00Z" in rows[0]
    assert "FAILED" in rows[1] and "disk full" in rows[1]
    text = render(bc.status_table(bc.parse_backup_info(COMPLETED_INFO)))
    assert "2-1-3-2" in text and "2022-12-08 13:00:55Z" in text


def test_list_table_summarizes_partition_states() -> None:
    """The list shows one row per backup: id, state, per-partition states (collapsed when they
    agree), earliest creation time and failure reason."""
    infos = [bc.parse_backup_info(FAILED_INFO), bc.parse_backup_info(COMPLETED_INFO)]
    text = render(bc.list_table(infos))
    rows = [line for line in text.splitlines() if line.startswith("│ ")]
    assert len(rows) == 2
    assert "101" in rows[0] and "1:COMPLETED 2:FAILED" in rows[0]
    assert "2022-12-09 10:00:00Z" in rows[0] and "disk full" in rows[0]
    assert "100" in rows[1] and "COMPLETED x2" in rows[1] and "2022-12-08 13:00:55Z" in rows[1]


def test_take_progress_verdicts() -> None:
    """COMPLETED succeeds, FAILED fails, IN_PROGRESS and DOES_NOT_EXIST wait, INCOMPLETE waits
    for its grace period (reset when the state changes) and then fails."""
    judge = bc.TakeProgress(incomplete_grace_s=10.0)
    assert judge.observe("DOES_NOT_EXIST", 0.0) is bc.Verdict.WAITING
    assert judge.observe("INCOMPLETE", 1.0) is bc.Verdict.WAITING
    assert judge.observe("INCOMPLETE", 10.9) is bc.Verdict.WAITING
    assert judge.observe("IN_PROGRESS", 11.0) is bc.Verdict.WAITING
    assert judge.observe("INCOMPLETE", 12.0) is bc.Verdict.WAITING
    assert judge.observe("INCOMPLETE", 22.0) is bc.Verdict.FAILED
    assert bc.TakeProgress().observe("COMPLETED", 0.0) is bc.Verdict.SUCCEEDED
    assert bc.TakeProgress().observe("FAILED", 0.0) is bc.Verdict.FAILED


def test_progress_text_counts_completed_partitions() -> None:
    """The spinner text says how many partitions are done."""
    parsed = bc.parse_backup_info(FAILED_INFO)
    assert bc.progress_text(parsed, BackupId(101)) == (
        "Backup 101: FAILED (1/2 partitions completed)"
    )
    assert bc.progress_text(None, BackupId(5)) == "Backup 5: not visible yet"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message": "Backup with id 9 does not exist"}', "Backup with id 9 does not exist"),
        (b'{"detail": "no such thing", "title": "NOT_FOUND"}', "no such thing"),
        (
            b"<html>\n  <body>Bad\n Gateway</body>\n</html>",
            "<html> <body>Bad Gateway</body> </html>",
        ),
        (b"", "HTTP 502 Bad Gateway"),
        (b"x" * 500, "x" * 197 + "..."),
    ],
)
def test_error_message_is_one_line(body: bytes, expected: str) -> None:
    """The server's message, else its body on one clipped line, else the HTTP reason."""
    assert bc.error_message(502, "Bad Gateway", body) == expected


# --------------------------------------------------------------------------------------------
# The fake actuator
# --------------------------------------------------------------------------------------------


class FakeActuator:
    """Imitates ``/actuator/backups`` with scripted answers.

    ``statuses[id]`` is the sequence of (status, body) answers to GET of that id; each GET takes
    the next, the last one repeats. Unknown ids answer 404 with Zeebe's message.
    """

    def __init__(self) -> None:
        self.statuses: dict[int, list[tuple[int, Any]]] = {}
        self.take_answers: dict[int, tuple[int, Any]] = {}
        self.list_answer: tuple[int, Any] = (200, [])
        self.delete_answer: tuple[int, Any] = (204, None)
        self.requests: list[tuple[str, str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/actuator/backups", self.take)
        self.app.router.add_get("/actuator/backups", self.list_all)
        self.app.router.add_get("/actuator/backups/{id}", self.get)
        self.app.router.add_delete("/actuator/backups/{id}", self.delete)

    @staticmethod
    def answer(status: int, body: Any) -> web.Response:
        if status == 204:
            return web.Response(status=204)
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)

    async def take(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", request.path, body))
        backup_id = body["backupId"]
        default = (
            202,
            {
                "message": f"A backup with id {backup_id} has been scheduled. Use GET "
                f"actuator/backups/{backup_id} to monitor the status."
            },
        )
        return self.answer(*self.take_answers.get(backup_id, default))

    async def list_all(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, None))
        return self.answer(*self.list_answer)

    async def get(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", request.path, None))
        raw = request.match_info["id"]
        if raw.endswith("*"):
            return self.answer(*self.list_answer)
        backup_id = int(raw)
        script = self.statuses.get(backup_id)
        if not script:
            return self.answer(404, {"message": f"Backup with id {backup_id} does not exist"})
        return self.answer(*(script.pop(0) if len(script) > 1 else script[0]))

    async def delete(self, request: web.Request) -> web.Response:
        self.requests.append(("DELETE", request.path, None))
        return self.answer(*self.delete_answer)


@pytest.fixture
def actuator() -> Iterator[tuple[FakeActuator, str]]:
    fake = FakeActuator()
    with serve_in_thread(fake.app) as url:
        yield fake, url


FAST = ["--poll-interval", "10ms"]


# --------------------------------------------------------------------------------------------
# backup CLI
# --------------------------------------------------------------------------------------------


def test_backup_take_schedules(actuator: tuple[FakeActuator, str]) -> None:
    """take ID posts {"backupId": ID}, says it is scheduled, exit 0."""
    fake, url = actuator
    result = invoke(backup, ["take", "7", "--management-url", url])
    assert result.exit_code == 0, result.output
    assert "Backup 7 scheduled" in result.stdout
    assert fake.requests == [("POST", "/actuator/backups", {"backupId": 7})]


def test_backup_take_json_prints_the_raw_answer(actuator: tuple[FakeActuator, str]) -> None:
    """take --json prints the API's 202 body unchanged."""
    _, url = actuator
    result = invoke(backup, ["take", "7", "--json", "--management-url", url])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "message": "A backup with id 7 has been scheduled. Use GET actuator/backups/7 to "
        "monitor the status."
    }


def test_backup_take_conflict_prints_the_server_message(
    actuator: tuple[FakeActuator, str],
) -> None:
    """A 409 prints the server's message on one line on stderr, exit 1."""
    fake, url = actuator
    message = (
        "Requested backup has id 3. The latest backup has id 5. Id of new backups must be "
        "higher than the previous one."
    )
    fake.take_answers[3] = (409, {"message": message})
    result = invoke(backup, ["take", "3", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr == f"zeebe-sim: {message} (HTTP 409)\n"
    assert result.stdout == ""


def test_backup_take_wait_until_completed(actuator: tuple[FakeActuator, str]) -> None:
    """take --wait polls through 404 (not visible yet) and IN_PROGRESS until COMPLETED, shows the
    table and exits 0; progress goes to stderr."""
    fake, url = actuator
    fake.statuses[7] = [
        (404, {"message": "Backup with id 7 does not exist"}),
        (200, info("IN_PROGRESS")),
        (200, info("IN_PROGRESS")),
        (200, info("COMPLETED")),
    ]
    result = invoke(backup, ["take", "7", "--wait", *FAST, "--management-url", url])
    assert result.exit_code == 0, result.output
    assert "Backup 7: COMPLETED" in result.stdout
    assert "Backup 7: IN_PROGRESS (0/3 partitions completed)" in result.stderr
    assert [r[1] for r in fake.requests].count("/actuator/backups/7") == 4


def test_backup_take_wait_json_prints_the_final_status(
    actuator: tuple[FakeActuator, str],
) -> None:
    """take --wait --json prints the last raw BackupInfo."""
    fake, url = actuator
    fake.statuses[7] = [(200, info("IN_PROGRESS")), (200, COMPLETED_INFO)]
    result = invoke(backup, ["take", "7", "--wait", "--json", *FAST, "--management-url", url])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == COMPLETED_INFO


def test_backup_take_wait_failed_exits_1(actuator: tuple[FakeActuator, str]) -> None:
    """take --wait on a backup that FAILED shows it, names the reason, exit 1."""
    fake, url = actuator
    fake.statuses[101] = [(200, info("IN_PROGRESS", 101)), (200, FAILED_INFO)]
    result = invoke(backup, ["take", "101", "--wait", *FAST, "--management-url", url])
    assert result.exit_code == 1
    assert "Backup 101: FAILED" in result.stdout
    assert "backup 101 is FAILED: Backup on partition 2 failed due to disk full." in result.stderr


def test_backup_take_wait_incomplete_for_long_exits_1(
    actuator: tuple[FakeActuator, str],
) -> None:
    """INCOMPLETE that outlasts --incomplete-grace counts as failed, exit 1."""
    fake, url = actuator
    fake.statuses[7] = [(200, info("INCOMPLETE"))]
    args = ["take", "7", "--wait", *FAST, "--incomplete-grace", "30ms", "--management-url", url]
    result = invoke(backup, args)
    assert result.exit_code == 1
    assert "backup 7 is INCOMPLETE" in result.stderr


def test_backup_take_wait_times_out(actuator: tuple[FakeActuator, str]) -> None:
    """A backup still IN_PROGRESS at --timeout: exit 1 naming the last state."""
    fake, url = actuator
    fake.statuses[7] = [(200, info("IN_PROGRESS"))]
    result = invoke(
        backup, ["take", "7", "--wait", *FAST, "--timeout", "50ms", "--management-url", url]
    )
    assert result.exit_code == 1
    assert "did not complete within 0.05s (last state: IN_PROGRESS)" in result.stderr


def test_backup_take_wait_retries_gateway_errors(actuator: tuple[FakeActuator, str]) -> None:
    """While waiting, 502/503/504 are retried (a broker restarting) until COMPLETED."""
    fake, url = actuator
    fake.statuses[7] = [
        (504, {"message": "Request timed out"}),
        (502, "<html>Bad Gateway</html>"),
        (200, info("COMPLETED")),
    ]
    result = invoke(backup, ["take", "7", "--wait", *FAST, "--management-url", url])
    assert result.exit_code == 0, result.output
    assert "retrying: Request timed out" in result.stderr


def test_backup_take_wait_stops_on_other_errors(actuator: tuple[FakeActuator, str]) -> None:
    """While waiting, a 500 is not retried: its message, exit 1."""
    fake, url = actuator
    fake.statuses[7] = [(500, {"message": "store exploded"})]
    result = invoke(backup, ["take", "7", "--wait", *FAST, "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "zeebe-sim: store exploded (HTTP 500)"


def test_backup_status_table(actuator: tuple[FakeActuator, str]) -> None:
    """status ID shows the backup's state and a row per partition."""
    fake, url = actuator
    fake.statuses[101] = [(200, FAILED_INFO)]
    result = invoke(backup, ["status", "101", "--management-url", url])
    assert result.exit_code == 0
    assert "Backup 101: FAILED" in result.stdout
    assert "disk full" in result.stdout


def test_backup_status_json_is_raw(actuator: tuple[FakeActuator, str]) -> None:
    """status --json prints the BackupInfo exactly as the API sent it."""
    fake, url = actuator
    fake.statuses[100] = [(200, COMPLETED_INFO)]
    result = invoke(backup, ["status", "100", "--json", "--management-url", url])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == COMPLETED_INFO


def test_backup_status_not_found(actuator: tuple[FakeActuator, str]) -> None:
    """status of an unknown id prints the server's 404 message on one line, exit 1."""
    _, url = actuator
    result = invoke(backup, ["status", "9", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr == "zeebe-sim: Backup with id 9 does not exist (HTTP 404)\n"


def test_backup_status_non_json_error_body(actuator: tuple[FakeActuator, str]) -> None:
    """An error whose body is not JSON (a proxy's HTML) still gives one line, exit 1."""
    fake, url = actuator
    fake.statuses[9] = [(502, "<html>\n<body>Bad Gateway</body>\n</html>")]
    result = invoke(backup, ["status", "9", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr == "zeebe-sim: <html> <body>Bad Gateway</body> </html> (HTTP 502)\n"


def test_backup_list_table(actuator: tuple[FakeActuator, str]) -> None:
    """list shows one row per backup."""
    fake, url = actuator
    fake.list_answer = (200, [FAILED_INFO, COMPLETED_INFO])
    result = invoke(backup, ["list", "--management-url", url])
    assert result.exit_code == 0
    assert "1:COMPLETED 2:FAILED" in result.stdout
    assert "COMPLETED x2" in result.stdout
    assert fake.requests == [("GET", "/actuator/backups", None)]


@pytest.mark.parametrize("prefix", ["10", "10*"])
def test_backup_list_prefix(actuator: tuple[FakeActuator, str], prefix: str) -> None:
    """list PREFIX asks for /actuator/backups/PREFIX* (a trailing * is accepted too)."""
    fake, url = actuator
    fake.list_answer = (200, [FAILED_INFO, COMPLETED_INFO])
    result = invoke(backup, ["list", prefix, "--json", "--management-url", url])
    assert result.exit_code == 0
    assert fake.requests == [("GET", "/actuator/backups/10*", None)]
    assert json.loads(result.stdout) == [FAILED_INFO, COMPLETED_INFO]


def test_backup_list_empty(actuator: tuple[FakeActuator, str]) -> None:
    """An empty list says so, exit 0."""
    _, url = actuator
    result = invoke(backup, ["list", "17", "--management-url", url])
    assert result.exit_code == 0
    assert result.stdout == "No backups with ids starting with 17.\n"


def test_backup_list_no_store_configured(actuator: tuple[FakeActuator, str]) -> None:
    """Without a backup store every call is a 400 with Zeebe's message, printed, exit 1."""
    fake, url = actuator
    message = (
        "Cannot process backup requests. No backup store is configured. To use this feature, "
        "configure backup in broker configuration."
    )
    fake.list_answer = (400, {"message": message})
    result = invoke(backup, ["list", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr == f"zeebe-sim: {message} (HTTP 400)\n"


def test_backup_delete(actuator: tuple[FakeActuator, str]) -> None:
    """delete ID sends DELETE, exit 0; --json prints a parseable line although 204 has no body."""
    fake, url = actuator
    result = invoke(backup, ["delete", "7", "--management-url", url])
    assert result.exit_code == 0
    assert "Backup 7 deleted" in result.stdout
    result = invoke(backup, ["delete", "7", "--json", "--management-url", url])
    assert json.loads(result.stdout) == {"backupId": 7, "status": 204}
    assert fake.requests == [("DELETE", "/actuator/backups/7", None)] * 2


def test_backup_delete_wait_until_gone(actuator: tuple[FakeActuator, str]) -> None:
    """delete --wait polls the status until it is 404, exit 0."""
    fake, url = actuator
    fake.statuses[7] = [
        (200, info("COMPLETED")),
        (200, info("COMPLETED")),
        (404, {"message": "Backup with id 7 does not exist"}),
    ]
    result = invoke(backup, ["delete", "7", "--wait", *FAST, "--management-url", url])
    assert result.exit_code == 0, result.output
    assert "Backup 7 deleted; its status is now 404." in result.stdout
    assert [r[1] for r in fake.requests].count("/actuator/backups/7") == 4


def test_backup_delete_wait_times_out(actuator: tuple[FakeActuator, str]) -> None:
    """delete --wait on a backup that stays: exit 1 at --timeout."""
    fake, url = actuator
    fake.statuses[7] = [(200, info("COMPLETED"))]
    args = ["delete", "7", "--wait", *FAST, "--timeout", "50ms", "--management-url", url]
    result = invoke(backup, args)
    assert result.exit_code == 1
    assert "backup 7 still exists after 0.05s (state: COMPLETED)" in result.stderr


def test_backup_delete_error(actuator: tuple[FakeActuator, str]) -> None:
    """A failed DELETE prints the server's message, exit 1."""
    fake, url = actuator
    fake.delete_answer = (503, {"message": "Broker is out of disk space"})
    result = invoke(backup, ["delete", "7", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr == "zeebe-sim: Broker is out of disk space (HTTP 503)\n"


@pytest.mark.parametrize(
    "args",
    [
        ["take", "abc"],
        ["take", "0"],
        ["take", "-3"],
        ["take", "9223372036854775808"],
        ["status", "1.5"],
        ["delete", "x"],
        ["list", "abc"],
        ["take", "5", "--wait", "--timeout", "soon"],
        ["take", "5", "--wait", "--timeout", "0s"],
    ],
)
def test_backup_bad_arguments_are_usage_errors(args: list[str]) -> None:
    """Bad arguments are click usage errors, exit 2, and nothing is sent."""
    with refusing_url() as url:
        result = invoke(backup, [*args, "--management-url", url])
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr


@pytest.mark.parametrize("command", [["take", "5"], ["status", "5"], ["list"], ["delete", "5"]])
def test_backup_unreachable_gateway(command: list[str]) -> None:
    """An unreachable gateway: one line naming the URL, exit 1."""
    with refusing_url() as url:
        result = invoke(backup, [*command, "--management-url", url])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"zeebe-sim: cannot reach the gateway at {url}")


def test_backup_malformed_success_answer(actuator: tuple[FakeActuator, str]) -> None:
    """A 200 that is not a BackupInfo (a wrong URL, say) is one line, exit 1, not a traceback."""
    fake, url = actuator
    fake.statuses[5] = [(200, {"status": "UP"})]
    result = invoke(backup, ["status", "5", "--management-url", url])
    assert result.exit_code == 1
    assert result.stderr.startswith("zeebe-sim: unexpected answer from the gateway")


# --------------------------------------------------------------------------------------------
# Waiting with a fake clock (async, fake actuator in the test's loop)
# --------------------------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds


async def test_wait_for_backup_times_out_on_the_clock() -> None:
    """With a backup stuck IN_PROGRESS, waiting polls every interval and gives up exactly at the
    timeout (the last sleep is shortened to land on it)."""
    fake = FakeActuator()
    fake.statuses[7] = [(200, info("IN_PROGRESS"))]
    clock = FakeClock()
    updates: list[str] = []
    async with serve(fake.app) as url, bc.BackupClient(url) as client:
        result = await bc.wait_for_backup(
            client,
            BackupId(7),
            timeout_s=2.5,
            poll_interval_s=1.0,
            incomplete_grace_s=30.0,
            clock=clock,
            sleep=clock.sleep,
            on_update=updates.append,
        )
    assert result.verdict is bc.Verdict.TIMED_OUT
    assert clock.sleeps == [1.0, 1.0, 0.5]
    assert len(updates) == 4
    assert result.info is not None and result.info.state == "IN_PROGRESS"


async def test_wait_for_backup_incomplete_grace_on_the_clock() -> None:
    """INCOMPLETE turns into FAILED once it has lasted the grace period."""
    fake = FakeActuator()
    fake.statuses[7] = [(200, info("IN_PROGRESS")), (200, info("INCOMPLETE"))]
    clock = FakeClock()
    async with serve(fake.app) as url, bc.BackupClient(url) as client:
        result = await bc.wait_for_backup(
            client,
            BackupId(7),
            timeout_s=300.0,
            poll_interval_s=1.0,
            incomplete_grace_s=5.0,
            clock=clock,
            sleep=clock.sleep,
            on_update=lambda text: None,
        )
    assert result.verdict is bc.Verdict.FAILED
    assert clock.now_s == 6.0  # IN_PROGRESS at 0, INCOMPLETE from 1, failed at 1 + 5


async def test_wait_for_deletion_on_the_clock() -> None:
    """Waiting for a deletion ends at the first 404."""
    fake = FakeActuator()
    fake.statuses[7] = [(200, info("COMPLETED")), (503, {"message": "busy"}), (404, {})]
    clock = FakeClock()
    updates: list[str] = []
    async with serve(fake.app) as url, bc.BackupClient(url) as client:
        result = await bc.wait_for_deletion(
            client,
            BackupId(7),
            timeout_s=60.0,
            poll_interval_s=2.0,
            clock=clock,
            sleep=clock.sleep,
            on_update=updates.append,
        )
    assert result.verdict is bc.Verdict.SUCCEEDED
    assert clock.now_s == 4.0
    assert updates == ["Backup 7: still COMPLETED", "Backup 7: retrying: busy"]


async def test_backup_client_returns_raw_json() -> None:
    """The client's methods return the API's JSON unchanged."""
    fake = FakeActuator()
    fake.statuses[100] = [(200, COMPLETED_INFO)]
    fake.list_answer = (200, [COMPLETED_INFO])
    async with serve(fake.app) as url, bc.BackupClient(url + "/") as client:
        assert await client.status(BackupId(100)) == COMPLETED_INFO
        assert await client.list_backups() == [COMPLETED_INFO]
        assert await client.list_backups("1") == [COMPLETED_INFO]
        assert await client.delete(BackupId(100)) is None
    assert [r[1] for r in fake.requests] == [
        "/actuator/backups/100",
        "/actuator/backups",
        "/actuator/backups/1*",
        "/actuator/backups/100",
    ]
    assert PartitionId(1) in {d.partition_id for d in bc.parse_backup_info(COMPLETED_INFO).details}


# --------------------------------------------------------------------------------------------
# The fake REST API and `zeebe-sim load`
# --------------------------------------------------------------------------------------------


class FakeRestApi:
    """Imitates the ``/v2`` subset with a tiny engine: an instance has one job, and it completes
    once its job is completed and a ``demo-message`` with its correlationKey was published (in
    either order, like a buffered message or an open subscription).

    ``fail_creation_every`` makes every n-th creation a 503 Problem Details;
    the first ``messages_to_lose`` messages are accepted and dropped (their instance never
    completes). A failover gap, as the gateway answers it: the first ``publications_to_refuse``
    publications are refused 503 (not taken); the first ``completion_answers_to_lose``
    completions are taken but answered 504. As the engine, a completed job is gone (404) and a
    message id is taken once (409).
    """

    def __init__(self) -> None:
        self.deployments: list[bytes] = []
        self.deploy_answer: tuple[int, Any] | None = None
        self.instances: dict[str, dict[str, Any]] = {}
        self.pending_jobs: list[str] = []
        self.messages: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.creations = 0
        self.fail_creation_every = 0
        self.messages_to_lose = 0
        self.publications_to_refuse = 0
        self.completion_answers_to_lose = 0
        self.message_ids: set[str] = set()
        self.app = web.Application()
        self.app.router.add_post("/v2/deployments", self.deploy)
        self.app.router.add_post("/v2/process-instances", self.create)
        self.app.router.add_get("/v2/process-instances/{key}", self.get)
        self.app.router.add_post("/v2/jobs/activation", self.activate)
        self.app.router.add_post("/v2/jobs/{key}/completion", self.complete)
        self.app.router.add_post("/v2/messages/publication", self.publish)

    @staticmethod
    def problem(status: int, title: str, detail: str) -> web.Response:
        body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
        return web.json_response(body, status=status, content_type="application/problem+json")

    async def deploy(self, request: web.Request) -> web.Response:
        if self.deploy_answer is not None:
            return web.json_response(self.deploy_answer[1], status=self.deploy_answer[0])
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader) and part.name == "resources"
        self.deployments.append(bytes(await part.read()))
        return web.json_response({"deploymentKey": "1", "deployments": []})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["processDefinitionId"] == "demo-process"
        self.creations += 1
        if self.fail_creation_every and self.creations % self.fail_creation_every == 0:
            return self.problem(503, "RESOURCE_EXHAUSTED", "backpressure")
        key = str(2251799813685248 + len(self.instances))
        correlation_key = body["variables"]["correlationKey"]
        self.instances[key] = {
            "correlationKey": correlation_key,
            "job_done": False,
            "message": False,
            "state": "ACTIVE",
        }
        self.pending_jobs.append(key)
        return web.json_response({"processInstanceKey": key, "processDefinitionId": "demo-process"})

    def advance(self, instance: dict[str, Any]) -> None:
        if instance["job_done"] and instance["message"]:
            instance["state"] = "COMPLETED"

    async def get(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["key"])
        if instance is None:
            return self.problem(404, "NOT_FOUND", "no such instance")
        return web.json_response({"state": instance["state"]})

    async def activate(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["type"] == "demo-task" and body["timeout"] == 30_000
        batch = self.pending_jobs[: body["maxJobsToActivate"]]
        del self.pending_jobs[: len(batch)]
        jobs = [
            {
                "jobKey": f"job-{key}",
                "processInstanceKey": key,
                "variables": {"correlationKey": self.instances[key]["correlationKey"]},
            }
            for key in batch
        ]
        return web.json_response({"jobs": jobs})

    async def complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["variables"]
        key = request.match_info["key"].removeprefix("job-")
        instance = self.instances[key]
        if instance["job_done"]:
            return self.problem(404, "NOT_FOUND", "no such job")
        instance["job_done"] = True
        self.events.append(("job", instance["correlationKey"]))
        self.advance(instance)
        if self.completion_answers_to_lose:
            self.completion_answers_to_lose -= 1
            return self.problem(504, "DEADLINE_EXCEEDED", "the leader did not answer in time")
        return web.Response(status=204)

    async def publish(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["name"] == "demo-message" and body["timeToLive"] == 60_000
        correlation_key = body["correlationKey"]
        if self.publications_to_refuse:
            self.publications_to_refuse -= 1
            return self.problem(503, "UNAVAILABLE", "no leader for the partition")
        if body["messageId"] in self.message_ids:
            return self.problem(409, "ALREADY_EXISTS", "message id taken")
        self.message_ids.add(body["messageId"])
        self.messages.append(correlation_key)
        self.events.append(("message", correlation_key))
        if self.messages_to_lose:
            self.messages_to_lose -= 1
        else:
            for instance in self.instances.values():
                if instance["correlationKey"] == correlation_key:
                    instance["message"] = True
                    self.advance(instance)
        return web.json_response({"messageKey": "1"})


@pytest.fixture
def rest_api() -> Iterator[tuple[FakeRestApi, str]]:
    fake = FakeRestApi()
    with serve_in_thread(fake.app) as url:
        yield fake, url


def test_load_completes_every_instance(rest_api: tuple[FakeRestApi, str]) -> None:
    """load --instances 20 --rate 100 deploys the demo model, starts 20 instances with unique
    correlation keys, completes 20 jobs, publishes 20 messages (even-numbered instances right
    after creation, before their job is done; odd-numbered after), sees 20 completions, reports
    a start rate of 100/s at most, and exits 0."""
    fake, url = rest_api
    result = invoke(load, ["--instances", "20", "--rate", "100", "--rest-url", url, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert summary["started"] == 20 and summary["completed"] == 20
    assert summary["notCompleted"] == 0 and summary["errorsTotal"] == 0
    # 20 slots of 10 ms: the start phase lasts at least 0.2 s, so never above the target.
    assert 20 <= summary["startRatePerS"] <= 100.0 + 1e-6
    assert summary["completionRatePerS"] > 0
    latency = summary["latencyMs"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert fake.deployments == [wl.demo_bpmn()]
    keys = [i["correlationKey"] for i in fake.instances.values()]
    assert len(set(keys)) == 20
    assert sorted(fake.messages) == sorted(keys)
    for key in keys:
        index = int(key.rsplit("-", 1)[1])
        order = [kind for kind, k in fake.events if k == key]
        assert order == (["message", "job"] if index % 2 == 0 else ["job", "message"]), key
    assert "completed 20" in result.stderr  # the plain progress line (no TTY here)


def test_load_human_summary(rest_api: tuple[FakeRestApi, str]) -> None:
    """Without --json the summary is a table on stdout."""
    _, url = rest_api
    result = invoke(load, ["--instances", "4", "--rate", "200", "--rest-url", url])
    assert result.exit_code == 0, result.output
    assert "completion throughput" in result.stdout and "latency p99" in result.stdout
    assert "OK" in result.stdout


def test_load_counts_errors_by_kind_and_fails(rest_api: tuple[FakeRestApi, str]) -> None:
    """Failed creations are counted by kind (status and title) and do not stop the run; every
    instance that did start still completes; the exit code is 1 because of the errors."""
    fake, url = rest_api
    fake.fail_creation_every = 4
    result = invoke(load, ["--instances", "12", "--rate", "200", "--rest-url", url, "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["errors"] == {"create instance: 503 RESOURCE_EXHAUSTED": 3}
    assert summary["started"] == 9 and summary["completed"] == 9
    assert summary["ok"] is False


def test_load_instance_that_never_completes(rest_api: tuple[FakeRestApi, str]) -> None:
    """An instance whose message is lost is given up after --completion-timeout: counted as not
    completed, exit 1, and the run still ends."""
    fake, url = rest_api
    fake.messages_to_lose = 1
    args = ["--instances", "3", "--rate", "100", "--completion-timeout", "300ms"]
    result = invoke(load, [*args, "--rest-url", url, "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["started"] == 3 and summary["completed"] == 2
    assert summary["notCompleted"] == 1 and summary["errorsTotal"] == 0


def test_load_retries_what_a_failover_gap_refused(rest_api: tuple[FakeRestApi, str]) -> None:
    """Publications refused 503 and completions taken but answered 504 (a failover gap) are
    tried again: the publication is taken then, the completion's 404 says it was taken before.
    Every instance completes, once; the gap's errors are counted (exit 1)."""
    fake, url = rest_api
    fake.publications_to_refuse = 2
    fake.completion_answers_to_lose = 2
    result = invoke(load, ["--instances", "6", "--rate", "200", "--rest-url", url, "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["errors"] == {
        "publish message: 503 UNAVAILABLE": 2,
        "complete job: 504 DEADLINE_EXCEEDED": 2,
    }
    assert summary["started"] == 6 and summary["completed"] == 6 and summary["notCompleted"] == 0
    assert sorted(fake.messages) == sorted(i["correlationKey"] for i in fake.instances.values())
    assert sum(kind == "job" for kind, _ in fake.events) == 6


def test_load_deploy_refused(rest_api: tuple[FakeRestApi, str]) -> None:
    """A refused deployment ends the command before any start: one line, exit 1."""
    fake, url = rest_api
    fake.deploy_answer = (400, {"title": "INVALID_ARGUMENT", "status": 400, "detail": "bad"})
    result = invoke(load, ["--instances", "5", "--rest-url", url])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"zeebe-sim: cannot deploy demo-process at {url}: deploy: 400 INVALID_ARGUMENT"
    ]
    assert fake.creations == 0


def test_load_unreachable_gateway() -> None:
    """No gateway: one line, exit 1."""
    with refusing_url() as url:
        result = invoke(load, ["--instances", "5", "--rest-url", url])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"zeebe-sim: cannot deploy demo-process at {url}: deploy: connection error"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "0"],
        ["--rate", "fast"],
        ["--duration", "forever"],
        ["--duration", "0"],
        ["--instances", "0"],
        ["--concurrency", "0"],
    ],
)
def test_load_bad_arguments_are_usage_errors(args: list[str]) -> None:
    """Bad flags are click usage errors, exit 2."""
    with refusing_url() as url:
        result = invoke(load, [*args, "--rest-url", url])
    assert result.exit_code == 2, result.output


async def test_run_load_by_duration_and_bounded_concurrency() -> None:
    """run_load with --duration stops starting at the duration: no more starts than the schedule
    holds; with a concurrency of 2 there are never more than 2 instances in flight."""
    fake = FakeRestApi()
    in_flight_seen: list[int] = []
    lines: list[str] = []

    class Recorder(wl.PlainReporter):
        def update(self, view: wl.ProgressView) -> None:
            in_flight_seen.append(view.in_flight)
            super().update(view)

    async with serve(fake.app) as url:
        settings = wl.LoadSettings(
            rate_per_s=100.0, duration_s=0.1, instances_max=None, concurrency=2, rest_url=url
        )
        summary = await wl.run_load(settings, Recorder(lines.append, interval_s=0.0))
    assert 1 <= summary.started <= settings.schedule.planned() == 10
    assert summary.completed == summary.started
    assert summary.ok
    assert max(in_flight_seen) <= 2
    assert lines and "errors 0" in lines[-1]
    assert sum(i["state"] == "COMPLETED" for i in fake.instances.values()) == summary.completed
