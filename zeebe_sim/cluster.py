"""Starting real broker and gateway processes: ``zeebe-sim up`` and the test harness.

Each process is ``python -m zeebe_sim broker|gateway ...``. When it is listening it prints one
line ``ZEEBE_SIM_READY {json}`` on stdout with the ports it really bound (so port 0 works); its
logs go to stderr. Broker 0 starts first; the others use it as their contact point, and the
gateway gets every broker as a contact point.

No orphans: each child runs in its own session (so Ctrl-C in a terminal reaches the launcher
only), which also means nothing kills it when the launcher dies. So every child is started with
``--parent-pid <launcher>`` and its stdin a pipe whose write end only the launcher holds, and it
watches its launcher two ways (:func:`watch_parent`), stopping cleanly when either fires:

- EOF on stdin: the kernel closes the launcher's end when the launcher dies, however it dies
  (SIGKILL included). Works everywhere.
- Linux ``PR_SET_PDEATHSIG``: a signal at the very moment the parent goes, even if the pipe were
  held open by something else. Its caveat: the signal is sent when the *thread* that forked the
  child exits, not the process (a launcher whose event loop runs in a thread that ends while the
  process goes on). So the signal only *triggers a check*: the child stops when its parent pid is
  no longer the launcher's, and ignores a signal from a mere thread exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs

from zeebe_sim.ground import layout

log = logging.getLogger(__name__)

READY_MARKER = "ZEEBE_SIM_READY "
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# prctl(2) option number (linux/prctl.h), and the signal asked for when the parent dies: not
# SIGTERM, so that the handler can tell "my parent died" from "stop" and check which it is.
PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGHUP


class ClusterError(Exception):
    pass


def announce_ready(**fields: Any) -> None:
    """Tell the launcher this process is listening (one line on stdout)."""
    # A launcher that died meanwhile closed the pipe; the parent watch stops this process.
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(READY_MARKER + json.dumps(fields) + "\n")
        sys.stdout.flush()


def watch_parent(parent_pid: int, stop: Callable[[], None]) -> None:
    """Call ``stop`` (in the running loop) as soon as the launcher ``parent_pid`` is gone.

    The launcher holds the only write end of this process's stdin (see :func:`spawn`): EOF
    there means it died. On Linux, ``PR_SET_PDEATHSIG`` also signals the death at once; the
    signal handler checks the parent pid because the signal also comes when merely the
    launcher's forking thread exits (module docstring).
    """
    loop = asyncio.get_running_loop()
    stdin = sys.stdin.fileno()
    stopped = False

    def parent_gone() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            log.warning("the launcher (pid %d) is gone: stopping", parent_pid)
            stop()

    def readable() -> None:
        try:
            data = os.read(stdin, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: the launcher's end is closed; anything else it writes is ignored
            loop.remove_reader(stdin)
            parent_gone()

    def signalled() -> None:
        if os.getppid() != parent_pid:
            parent_gone()
        else:
            log.info("launcher thread ended, launcher (pid %d) alive: staying up", parent_pid)

    loop.add_reader(stdin, readable)
    if sys.platform == "linux":
        # The handler first, so that the signal never takes the default action (terminate).
        loop.add_signal_handler(PARENT_DEATH_SIGNAL, signalled)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    # The launcher may have died before the watch was set up (then nothing would signal it).
    if os.getppid() != parent_pid:
        parent_gone()


@attrs.define
class ManagedProcess:
    name: str
    args: list[str]
    process: asyncio.subprocess.Process
    ready: dict[str, Any]
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


async def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
    """Start ``python -m zeebe_sim ARGS --parent-pid <this pid>`` and wait for its ready line.

    ARGS is a ``broker`` or ``gateway`` command: it watches this process through its stdin
    pipe, whose write end only this process holds (``close_fds`` keeps it out of every other
    child), and stops when this process dies.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zeebe_sim",
        *args,
        "--parent-pid",
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # Ctrl-C in a terminal reaches the launcher only
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise ClusterError(f"{name} exited with code {code} before it was ready")
                text = line.decode(errors="replace")
                if text.startswith(READY_MARKER):
                    return ManagedProcess(
                        name, args, process, json.loads(text[len(READY_MARKER) :])
                    )
    except TimeoutError as exc:
        process.kill()
        raise ClusterError(f"{name} was not ready within {STARTUP_TIMEOUT_S:g}s") from exc


@attrs.define
class ClusterSpec:
    brokers: int = 3
    partitions: int = 3
    data_dir: Path = Path("./zeebe-data")
    host: str = "127.0.0.1"
    broker_port: int = 26501
    management_port: int = 9600
    rest_port: int = 8080
    grpc_port: int = 26500
    # further flags passed to every broker / to the gateway, e.g. ["--snapshot-period", "1s"]
    broker_args: list[str] = attrs.Factory(list)
    gateway_args: list[str] = attrs.Factory(list)
    env: dict[str, str] = attrs.Factory(dict)


class LocalCluster:
    """A cluster of real processes on this machine; ``async with`` starts and stops it."""

    def __init__(
        self, spec: ClusterSpec, on_exit: Callable[[ManagedProcess, int], None] | None = None
    ):
        self.spec = spec
        self.brokers: dict[int, ManagedProcess] = {}
        self.gateway: ManagedProcess | None = None
        self._on_exit = on_exit
        self._watchers: set[asyncio.Task[None]] = set()

    # -- addresses ----------------------------------------------------------------------------

    def broker_address(self, node: int) -> str:
        return str(self.brokers[node].ready["address"])

    @property
    def management_url(self) -> str:
        assert self.gateway is not None
        return f"http://{self.spec.host}:{self.gateway.ready['management_port']}"

    @property
    def rest_url(self) -> str:
        assert self.gateway is not None
        return f"http://{self.spec.host}:{self.gateway.ready['rest_port']}"

    @property
    def grpc_address(self) -> str:
        """host:port of the gateway's gRPC API (what pyzeebe and zbctl connect to)."""
        assert self.gateway is not None
        return f"{self.spec.host}:{self.gateway.ready['grpc_port']}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _broker_args(self, node: int, exact_port: int | None) -> list[str]:
        spec = self.spec
        args = [
            "broker",
            "--node-id",
            str(node),
            "--brokers",
            str(spec.brokers),
            "--partitions",
            str(spec.partitions),
            "--data-dir",
            str(spec.data_dir),
            "--host",
            spec.host,
            "--broker-port",
            str(spec.broker_port),
            *spec.broker_args,
        ]
        if exact_port is not None:
            args += ["--exact-port", str(exact_port)]
        if node != 0:
            args += ["--contact-point", self.broker_address(0)]
        return args

    async def start(self) -> None:
        spec = self.spec
        for node in range(spec.brokers):
            await self.start_broker(node)
        contact_points = [
            a for n in sorted(self.brokers) for a in ("--contact-point", self.broker_address(n))
        ]
        self.gateway = await spawn(
            "gateway",
            [
                "gateway",
                "--host",
                spec.host,
                "--management-port",
                str(spec.management_port),
                "--rest-port",
                str(spec.rest_port),
                "--grpc-port",
                str(spec.grpc_port),
                *contact_points,
                *spec.gateway_args,
            ],
            spec.env,
        )
        self._watch(self.gateway)
        self._note_process(
            "gateway",
            self.gateway.pid,
            {"managementUrl": self.management_url, "restUrl": self.rest_url},
        )
        await self.wait_ready()

    async def start_broker(self, node: int) -> ManagedProcess:
        """Start broker ``node``; a restart reuses the port it had, so peers find it again."""
        port = None
        if node in self.brokers:
            port = int(self.broker_address(node).rpartition(":")[2])
        managed = await spawn(f"broker {node}", self._broker_args(node, port), self.spec.env)
        self.brokers[node] = managed
        self._watch(managed)
        self._note_process(f"broker-{node}", managed.pid, {"address": self.broker_address(node)})
        return managed

    def _note_process(self, name: str, pid: int, fields: dict[str, Any]) -> None:
        """Note a running process in the data directory, for ``zeebe-sim chaos`` (a separate
        process) to find its pid and addresses; replaced whole (write, then rename)."""
        path = layout.process_file(self.spec.data_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"pid": pid, **fields}))
        os.replace(temp, path)

    async def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Poll the gateway's readiness until every partition has a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.management_url}/actuator/health/readiness") as r:
                        if r.status == 200:
                            return
                if loop.time() > deadline:
                    raise ClusterError(f"partitions had no leader within {timeout_s:g}s")
                await asyncio.sleep(0.05)

    def _watch(self, managed: ManagedProcess) -> None:
        async def watch() -> None:
            code = await managed.process.wait()
            if not managed.expected_exit and self._on_exit is not None:
                self._on_exit(managed, code)

        task = asyncio.get_running_loop().create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def kill_broker(self, node: int, sig: int = signal.SIGKILL) -> None:
        managed = self.brokers[node]
        managed.expected_exit = True
        managed.process.send_signal(sig)

    async def wait_exit(self, managed: ManagedProcess) -> int:
        return await managed.process.wait()

    async def stop(self) -> None:
        """SIGTERM everything (gateway first), SIGKILL what has not exited in time."""
        processes = [p for p in [self.gateway, *self.brokers.values()] if p is not None]
        for managed in processes:
            managed.expected_exit = True
            if managed.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    # A paused (SIGSTOP) process would handle SIGTERM only once continued.
                    managed.process.send_signal(signal.SIGCONT)
                    managed.process.terminate()
        for managed in processes:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await managed.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    managed.process.kill()
                await managed.process.wait()
        for task in list(self._watchers):
            task.cancel()
        shutil.rmtree(self.spec.data_dir / layout.PROCESSES_DIR, ignore_errors=True)
