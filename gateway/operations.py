"""Request logic shared by the gateway's client APIs (gRPC now; REST can call the same).

Theory of operation
-------------------
Job activation follows Zeebe's gateway (REFERENCE C.3). A *round* asks the partitions one after
another, from a rotating first one, until ``maxJobsToActivate`` jobs are found or every partition
was asked; each non-empty batch is handed out as soon as it arrives. When a round finds nothing
and long polling is on, the request is *parked*: it asks every partition ``await-jobs`` for its
type at once (see ``broker/waiters.py``), and the first partition to say a job is activatable
wakes it for another round. The request ends with zero jobs when its ``requestTimeout`` passes.
The brokers check their state before they park, so a job that appears between the empty round
and the parking still wakes the request.

A creation that waits for the instance's result creates it, then asks its partition
``await-instance`` until it ends or the request timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import attrs

from gateway.client import BrokerClient
from gateway.errors import ERROR_BY_REJECTION
from zeebe_sim.ground.errors import (
    InvalidArgument,
    InvalidState,
    RequestTimeout,
    ResourceExhausted,
    ZeebeSimError,
)
from zeebe_sim.ground.ids import PartitionId
from zeebe_sim.ground.protocol import ExecuteCommandResponse
from zeebe_sim.ground.records import ValueType

# Zeebe's gateway defaults (ConfigurationDefaults): long polling on, 10 s.
LONG_POLLING_TIMEOUT_MS = 10_000
# The first partition a round asks rotates. Its own rotation: sharing the client's, which
# spreads instance creations, would let polling workers skew where instances land.
_first_partition = itertools.count()
# Extra time given to a broker to answer a long-held query after its own timeout.
AWAIT_ANSWER_SLACK_S = 5.0


def check(response: ExecuteCommandResponse) -> ExecuteCommandResponse:
    """The response, or its rejection raised as the matching error."""
    if response.rejection_type is not None:
        error = ERROR_BY_REJECTION.get(response.rejection_type, InvalidArgument)
        raise error(response.rejection_reason or response.rejection_type)
    return response


@attrs.frozen
class JobActivation:
    """What a worker asks for (ActivateJobsRequest / POST /v2/jobs/activation)."""

    job_type: str
    worker: str
    timeout_ms: int
    max_jobs: int
    fetch_variables: tuple[str, ...] = ()
    # 0: the gateway's long-polling timeout; < 0: no long polling
    request_timeout_ms: int = 0

    def validate(self) -> None:
        """Raises InvalidArgument for what Zeebe's gateway refuses before asking a broker."""
        if not self.job_type.strip():
            raise InvalidArgument("Expected to activate jobs, but no job type was given")
        if not self.worker.strip():
            raise InvalidArgument("Expected to activate jobs, but no worker name was given")
        if self.timeout_ms < 1:
            raise InvalidArgument(
                f"Expected to activate jobs with a timeout of at least 1 ms, but it was "
                f"{self.timeout_ms}"
            )
        if self.max_jobs < 1:
            raise InvalidArgument(
                f"Expected to activate at least 1 job, but maxJobsToActivate was {self.max_jobs}"
            )

    def visible(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job with only the variables the worker asked for (all when none named)."""
        if not self.fetch_variables:
            return job
        variables = job["variables"]
        wanted = {n: variables[n] for n in self.fetch_variables if n in variables}
        return {**job, "variables": wanted}


async def activation_round(
    client: BrokerClient, activation: JobActivation, max_jobs: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """Ask each partition once, from a rotating first one; yield each non-empty batch.

    Raises:
        ResourceExhausted: no jobs, and at least one partition answered RESOURCE_EXHAUSTED.
    """
    wanted = activation.max_jobs if max_jobs is None else max_jobs
    count = max(client.partition_count, 1)
    first = next(_first_partition) % count + 1
    found = 0
    exhausted = False
    for offset in range(count):
        if found >= wanted:
            break
        partition = (first - 1 + offset) % count + 1
        value = {
            "type": activation.job_type,
            "worker": activation.worker,
            "timeout": activation.timeout_ms,
            "maxJobsToActivate": wanted - found,
        }
        try:
            response = check(
                await client.execute(
                    PartitionId(partition), ValueType.JOB_BATCH, "ACTIVATE", -1, value
                )
            )
        except ResourceExhausted:
            exhausted = True
            continue
        jobs = [activation.visible(job) for job in response.value["jobs"]]
        if jobs:
            found += len(jobs)
            yield jobs
    if found == 0 and exhausted:
        raise ResourceExhausted(
            f"Expected to activate jobs of type '{activation.job_type}', but no jobs available "
            "and at least one broker returned 'RESOURCE_EXHAUSTED'. Please try again later."
        )


async def activate_jobs(
    client: BrokerClient, activation: JobActivation
) -> AsyncIterator[list[dict[str, Any]]]:
    """Activate jobs with long polling; yields batches, ends after the first round that found
    jobs, or with nothing when the request timeout passes."""
    loop = asyncio.get_running_loop()
    timeout_ms = activation.request_timeout_ms or LONG_POLLING_TIMEOUT_MS
    deadline = loop.time() + timeout_ms / 1000
    while True:
        found = 0
        async for jobs in activation_round(client, activation):
            found += len(jobs)
            yield jobs
        if found or activation.request_timeout_ms < 0:
            return
        remaining_ms = int((deadline - loop.time()) * 1000)
        if remaining_ms <= 0 or not await wait_for_jobs(client, activation.job_type, remaining_ms):
            return


async def stream_jobs(
    client: BrokerClient, activation: JobActivation
) -> AsyncIterator[dict[str, Any]]:
    """Push jobs one by one as they become activatable, until the caller stops (a job stream:
    StreamActivatedJobs)."""
    while True:
        found = 0
        async for jobs in activation_round(client, activation):
            found += len(jobs)
            for job in jobs:
                yield job
        if not found:
            await wait_for_jobs(client, activation.job_type, LONG_POLLING_TIMEOUT_MS)


async def wait_for_jobs(client: BrokerClient, job_type: str, timeout_ms: int) -> bool:
    """True as soon as any partition has an activatable job of ``job_type``; False when none
    has one within ``timeout_ms`` (or no partition could be asked)."""
    arguments = {"type": job_type, "timeoutMs": timeout_ms}
    answer_s = timeout_ms / 1000 + AWAIT_ANSWER_SLACK_S

    async def ask(partition: int) -> bool:
        try:
            return bool(
                await client.query(PartitionId(partition), "await-jobs", arguments, answer_s)
            )
        except ZeebeSimError:
            return False

    waiting = {asyncio.ensure_future(ask(p)) for p in client.partition_ids()}
    try:
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if any(task.result() for task in done):
                return True
        return False
    finally:
        for task in waiting:
            task.cancel()
        for task in waiting:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def await_instance_result(
    client: BrokerClient, partition: int, instance_key: int, timeout_ms: int
) -> dict[str, Any]:
    """The ended instance (its variables), once it has completed.

    Raises:
        RequestTimeout: it did not end within ``timeout_ms``.
        InvalidState: it was terminated (cancelled) instead of completing.
    """
    arguments = {"key": instance_key, "timeoutMs": timeout_ms}
    answer_s = timeout_ms / 1000 + AWAIT_ANSWER_SLACK_S
    instance = await client.query(PartitionId(partition), "await-instance", arguments, answer_s)
    state = instance["state"] if instance else None
    if state == "COMPLETED":
        result: dict[str, Any] = instance
        return result
    if state == "TERMINATED":
        raise InvalidState(
            f"Expected to receive the result of process instance '{instance_key}', but it was "
            "terminated"
        )
    raise RequestTimeout(
        f"Expected process instance '{instance_key}' to complete within {timeout_ms} ms, but "
        "it did not"
    )
