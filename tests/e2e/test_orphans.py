"""No orphans: every broker and gateway process stops by itself, cleanly, when the launcher that
started it (`zeebe-sim up`, the test harness) dies, however it dies.

The children run in their own sessions, so nothing else would stop them: a CI job that kills a
test's process group would otherwise leak a whole cluster holding ports and CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.test_up import alive
from zeebe_sim.cluster import READY_MARKER
from zeebe_sim.harness import eventually

pytestmark = pytest.mark.slow

GONE_MESSAGE = "is gone: stopping"
# The contract: gone "within a few seconds"; generous for a loaded machine.
EXIT_DEADLINE_S = 10.0


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


async def all_gone(pids: list[int], deadline_s: float = EXIT_DEADLINE_S) -> list[int]:
    """Poll until none of ``pids`` is alive or the deadline passes; the ones still alive."""

    async def none_alive() -> bool:
        return not any(alive(p) for p in pids)

    with contextlib.suppress(TimeoutError):
        await eventually(none_alive, timeout_s=deadline_s)
    return [p for p in pids if alive(p)]


def kill_all(pids: list[int]) -> None:
    """Clean up after a failed test, so that it does not leak what it found leaking."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def drain(stream: asyncio.StreamReader, into: list[str]) -> None:
    """Keep reading a pipe (so that the writers never block on a full one)."""
    while line := await stream.readline():
        into.append(line.decode(errors="replace"))


async def test_kill_9_of_up_leaves_no_process_of_its_cluster(tmp_path: Path) -> None:
    """SIGKILL of `zeebe-sim up`: its three brokers and its gateway notice, stop cleanly (each
    says so in its log) and are all gone within 10 s."""
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zeebe_sim", "up", "--data-dir", str(tmp_path),
        "--broker-port", "0", "--management-port", "0", "--rest-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert up.stdout is not None and up.stderr is not None
    logs: list[str] = []
    draining = asyncio.create_task(drain(up.stderr, logs))
    banner = ""
    async with asyncio.timeout(60):
        while "Press Ctrl-C to stop." not in banner:
            line = await up.stdout.readline()
            assert line, f"up exited before it was ready: {''.join(logs)}"
            banner += line.decode()
    cluster = children(up.pid)
    assert len(cluster) == 4, (cluster, banner)  # three brokers and the gateway

    up.kill()
    assert await up.wait() == -signal.SIGKILL
    left = await all_gone(cluster)
    kill_all(left)
    assert not left, f"still running {EXIT_DEADLINE_S:g}s after up was killed: {left}"
    # Every child wrote to up's stderr, which this test holds: EOF once all are gone.
    async with asyncio.timeout(30):
        await draining
    assert sum(GONE_MESSAGE in line for line in logs) == 4, "".join(logs)


HARNESS_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from zeebe_sim.harness import running_cluster

    async def main() -> None:
        async with running_cluster(Path(sys.argv[1])) as cluster:
            assert cluster.gateway is not None
            pids = [cluster.gateway.pid, *(b.pid for b in cluster.brokers.values())]
            print(" ".join(map(str, pids)), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_harness_children_exit_when_the_harness_process_is_killed(tmp_path: Path) -> None:
    """A process running the test harness is killed with SIGKILL while its cluster runs:
    every broker and the gateway it started are gone within 10 s."""
    harness = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HARNESS_SCRIPT, str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert harness.stdout is not None
    async with asyncio.timeout(60):
        line = await harness.stdout.readline()
    pids = [int(p) for p in line.split()]
    assert len(pids) == 4 and all(alive(p) for p in pids), line

    harness.kill()
    await harness.wait()
    left = await all_gone(pids)
    kill_all(left)
    assert not left, f"still running {EXIT_DEADLINE_S:g}s after the harness was killed: {left}"


def gateway_args() -> list[str]:
    """A gateway is the cheapest child: it starts without any broker being up."""
    return [
        "-m", "zeebe_sim", "gateway", "--contact-point", "127.0.0.1:9",
        "--management-port", "0", "--rest-port", "0",
    ]  # fmt: skip


async def test_a_child_stops_cleanly_at_eof_on_its_launcher_pipe() -> None:
    """The pipe alone: when the write end of its stdin closes (as when the launcher dies, on
    any OS), a child stops cleanly and exits with code 0; its launcher is still alive."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, *gateway_args(), "--parent-pid", str(os.getpid()),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    async with asyncio.timeout(60):
        assert (await child.stdout.readline()).decode().startswith(READY_MARKER)
    child.stdin.close()
    async with asyncio.timeout(EXIT_DEADLINE_S):
        code = await child.wait()
    stderr = (await child.stderr.read()).decode()
    assert code == 0, stderr
    assert GONE_MESSAGE in stderr


LAUNCHER_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys
    stdin = int(sys.argv[1])
    child = subprocess.Popen(
        [sys.executable, *sys.argv[2:], "--parent-pid", str(os.getpid())],
        stdin=stdin, start_new_session=True,
    )
    os.close(stdin)
    print(child.pid, flush=True)
    child.wait()
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
async def test_a_child_stops_when_its_launcher_dies_even_if_its_pipe_stays_open() -> None:
    """The death signal alone: the child's stdin pipe is also held open by this test, so no
    EOF comes; SIGKILL of the launcher still stops the child within 10 s."""
    read_end, write_end = os.pipe()
    try:
        launcher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCHER_SCRIPT, str(read_end), *gateway_args(),
            stdout=asyncio.subprocess.PIPE, pass_fds=(read_end,),
        )  # fmt: skip
        os.close(read_end)
        assert launcher.stdout is not None
        async with asyncio.timeout(30):
            pid = int(await launcher.stdout.readline())
            # The child inherited the launcher's stdout: its ready line says it is watching.
            assert (await launcher.stdout.readline()).decode().startswith(READY_MARKER)
        launcher.kill()
        await launcher.wait()
        left = await all_gone([pid])
        kill_all(left)
        assert not left, "the child outlived its launcher although only the pipe was open"
    finally:
        os.close(write_end)


THREAD_LAUNCHER_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, threading

    children = []

    def start() -> None:
        child = subprocess.Popen(
            [sys.executable, *sys.argv[1:], "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )
        children.append(child)
        print(child.stdout.readline().decode().strip(), flush=True)  # the ready line

    # The thread that forks the child ends once the child is ready (and has its death signal
    # set): Linux then sends that signal, although this process lives on.
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    print("thread ended", flush=True)
    sys.stdin.read()  # until the test closes this process's stdin
    children[0].stdin.close()
    sys.exit(children[0].wait())
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
async def test_a_child_stays_up_when_only_its_launchers_forking_thread_ends() -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: the child checks
    its parent pid, says it stays up, and does; it still stops cleanly (code 0) at EOF."""
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", THREAD_LAUNCHER_SCRIPT, *gateway_args(), "--log-level", "info",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert launcher.stdin and launcher.stdout and launcher.stderr
    logs: list[str] = []
    draining = asyncio.create_task(drain(launcher.stderr, logs))
    async with asyncio.timeout(60):
        assert (await launcher.stdout.readline()).decode().startswith(READY_MARKER)
        assert await launcher.stdout.readline() == b"thread ended\n"
    (child,) = children(launcher.pid)

    async def said_staying_up() -> bool:
        return any("staying up" in line for line in logs)

    await eventually(said_staying_up, timeout_s=30)
    assert alive(child)
    assert not any(GONE_MESSAGE in line for line in logs), logs
    launcher.stdin.close()
    async with asyncio.timeout(30):
        assert await launcher.wait() == 0, "".join(logs)
        await draining
