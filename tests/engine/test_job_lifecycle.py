"""Job failures, retries with back-off, incidents and their resolution, timeouts, cancellation,
variables, signals: the engine operations behind the gRPC gateway, on an in-process cluster
with a clock the test moves (no sockets, no sleeps)."""

from __future__ import annotations

from typing import Any

from broker.engine.processor import Engine, ProcessingResult
from broker.engine.state import COLUMN_FAMILIES, State
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.records import ValueType
from zeebe_sim.simulation import SimulatedCluster


def _ok(result: ProcessingResult) -> dict[str, Any]:
    assert result.response is not None
    assert result.response.rejection_type is None, result.response
    return result.response.value


def _rejected(result: ProcessingResult) -> tuple[str, str]:
    assert result.response is not None and result.response.rejection_type is not None
    return result.response.rejection_type, result.response.rejection_reason or ""


def _cluster(**kwargs: Any) -> SimulatedCluster:
    cluster = SimulatedCluster(1)
    xml = process_xml("p", **kwargs)
    _ok(
        cluster.command(
            1,
            ValueType.DEPLOYMENT,
            "CREATE",
            resources=[{"resourceName": "p.bpmn", "resource": xml}],
        )
    )
    return cluster


def _create(cluster: SimulatedCluster, **variables: Any) -> int:
    value = _ok(
        cluster.command(
            1,
            ValueType.PROCESS_INSTANCE_CREATION,
            "CREATE",
            bpmnProcessId="p",
            version=-1,
            variables=variables,
        )
    )
    return int(value["processInstanceKey"])


def _activate(cluster: SimulatedCluster, timeout_ms: int = 60_000) -> list[dict[str, Any]]:
    value = _ok(
        cluster.command(
            1,
            ValueType.JOB_BATCH,
            "ACTIVATE",
            type="work",
            worker="w",
            timeout=timeout_ms,
            maxJobsToActivate=10,
        )
    )
    jobs: list[dict[str, Any]] = value["jobs"]
    return jobs


def _due(cluster: SimulatedCluster) -> None:
    """Write the commands whose deadline passed at the cluster's current time (the timer)."""
    engine = cluster.partitions[1].engine
    for value_type, intent, key in engine.due_commands(cluster.now_ms):
        cluster.command(1, value_type, intent, key)


def _replayed(cluster: SimulatedCluster) -> State:
    partition = cluster.partitions[1]
    engine = Engine(State(1), 1)
    engine.replay(partition.records, 0, 0)
    return engine.state


def _same_state(a: State, b: State) -> bool:
    return all(getattr(a, n) == getattr(b, n) for n in COLUMN_FAMILIES)


def test_failed_job_with_retries_left_is_activatable_again_after_its_back_off() -> None:
    """FailJob with retries > 0 and a back-off hides the job until the back-off has passed,
    then RECUR_AFTER_BACKOFF makes it activatable (and wakes waiting workers)."""
    cluster = _cluster(message=None)
    _create(cluster)
    [job] = _activate(cluster)
    failed = cluster.command(
        1, ValueType.JOB, "FAIL", job["jobKey"], retries=2, errorMessage="boom", retryBackOff=5000
    )
    _ok(failed)
    assert failed.wakeups == set()
    assert _activate(cluster) == []
    cluster.now_ms += 4999
    _due(cluster)
    assert _activate(cluster) == []
    cluster.now_ms += 1
    engine = cluster.partitions[1].engine
    assert engine.due_commands(cluster.now_ms) == [
        (ValueType.JOB, "RECUR_AFTER_BACKOFF", job["jobKey"])
    ]
    recurred = cluster.command(1, ValueType.JOB, "RECUR_AFTER_BACKOFF", job["jobKey"])
    assert recurred.wakeups == {("jobs", "work")}
    [again] = _activate(cluster)
    assert again["jobKey"] == job["jobKey"] and again["retries"] == 2


def test_failed_job_without_back_off_is_activatable_at_once() -> None:
    """retryBackOff 0: the failed job can be activated again right away."""
    cluster = _cluster(message=None)
    _create(cluster)
    [job] = _activate(cluster)
    failed = cluster.command(1, ValueType.JOB, "FAIL", job["jobKey"], retries=1, errorMessage="x")
    assert failed.wakeups == {("jobs", "work")}
    [again] = _activate(cluster)
    assert again["retries"] == 1


def test_last_failure_raises_an_incident_resolved_after_retries_are_raised() -> None:
    """Failing with no retries left raises a JOB_NO_RETRIES incident carrying the message; the
    job cannot be activated until retries are raised and the incident is resolved."""
    cluster = _cluster(message=None)
    instance_key = _create(cluster)
    [job] = _activate(cluster)
    _ok(cluster.command(1, ValueType.JOB, "FAIL", job["jobKey"], retries=0, errorMessage="no"))
    state = cluster.partitions[1].state
    [(incident_key, incident)] = state.incidents.items()
    assert incident["errorType"] == "JOB_NO_RETRIES"
    assert incident["errorMessage"] == "no"
    assert incident["jobKey"] == job["jobKey"]
    assert state.instances[instance_key]["incident"] is True
    assert _activate(cluster) == []
    # Completing a failed job is refused, as Zeebe's precondition check does.
    assert _rejected(cluster.command(1, ValueType.JOB, "COMPLETE", job["jobKey"])) == (
        "INVALID_STATE",
        f"Expected to complete job with key '{job['jobKey']}', but it is in state 'FAILED'",
    )
    _ok(cluster.command(1, ValueType.JOB, "UPDATE_RETRIES", job["jobKey"], retries=3))
    assert _activate(cluster) == []
    resolved = cluster.command(1, ValueType.INCIDENT, "RESOLVE", incident_key)
    _ok(resolved)
    assert resolved.wakeups == {("jobs", "work")}
    assert state.incidents == {} and state.instances[instance_key]["incident"] is False
    [again] = _activate(cluster)
    assert again["retries"] == 3
    _ok(cluster.command(1, ValueType.JOB, "COMPLETE", job["jobKey"], variables={}))
    assert state.instances[instance_key]["state"] == "COMPLETED"
    assert _same_state(_replayed(cluster), state)


def test_uncaught_error_raises_an_incident() -> None:
    """ThrowError with no error catch event in scope (the subset has none) raises an
    UNHANDLED_ERROR_EVENT incident with Zeebe's message."""
    cluster = _cluster(message=None)
    _create(cluster)
    [job] = _activate(cluster)
    _ok(
        cluster.command(
            1, ValueType.JOB, "THROW_ERROR", job["jobKey"], errorCode="E1", errorMessage="bad"
        )
    )
    [incident] = cluster.partitions[1].state.incidents.values()
    assert incident["errorType"] == "UNHANDLED_ERROR_EVENT"
    assert incident["errorMessage"] == (
        "Expected to throw an error event with the code 'E1' with message 'bad', but it was "
        "not caught. No error events are available in the scope."
    )
    assert cluster.partitions[1].state.jobs[job["jobKey"]]["state"] == "ERROR_THROWN"


def test_job_commands_are_rejected_with_zeebes_reasons() -> None:
    """Unknown jobs are NOT_FOUND, non-positive retries INVALID_ARGUMENT, failing a job that is
    not activated INVALID_STATE; the reasons are Zeebe's."""
    cluster = _cluster(message=None)
    _create(cluster)
    job_key = next(iter(cluster.partitions[1].state.jobs))
    missing = job_key + 1000
    assert _rejected(cluster.command(1, ValueType.JOB, "COMPLETE", missing)) == (
        "NOT_FOUND",
        f"Expected to complete job with key '{missing}', but no such job was found",
    )
    assert _rejected(cluster.command(1, ValueType.JOB, "UPDATE_RETRIES", job_key, retries=0)) == (
        "INVALID_ARGUMENT",
        f"Expected to update retries for job with key '{job_key}' with a positive amount of "
        "retries, but the amount given was '0'",
    )
    assert _rejected(cluster.command(1, ValueType.JOB, "FAIL", job_key, retries=1)) == (
        "INVALID_STATE",
        f"Expected to fail job with key '{job_key}', but it is in state 'ACTIVATABLE'",
    )
    assert _rejected(cluster.command(1, ValueType.INCIDENT, "RESOLVE", 77))[0] == "NOT_FOUND"


def test_job_timeout_update_moves_the_deadline() -> None:
    """UpdateJobTimeout sets the deadline to now + timeout: the job times out then, not at its
    first deadline."""
    cluster = _cluster(message=None)
    _create(cluster)
    [job] = _activate(cluster, timeout_ms=1000)
    _ok(cluster.command(1, ValueType.JOB, "UPDATE_TIMEOUT", job["jobKey"], timeout=10_000))
    cluster.now_ms += 1000
    _due(cluster)
    assert cluster.partitions[1].state.jobs[job["jobKey"]]["state"] == "ACTIVATED"
    cluster.now_ms += 9000
    _due(cluster)
    assert cluster.partitions[1].state.jobs[job["jobKey"]]["state"] == "ACTIVATABLE"


def test_cancel_terminates_the_instance_and_removes_its_job_and_incidents() -> None:
    """CancelProcessInstance terminates the waiting element and the instance, removes the job and
    resolves the instance's incidents; a second cancel is NOT_FOUND."""
    cluster = _cluster(message=None)
    instance_key = _create(cluster)
    [job] = _activate(cluster)
    _ok(cluster.command(1, ValueType.JOB, "FAIL", job["jobKey"], retries=0, errorMessage="x"))
    result = cluster.command(1, ValueType.PROCESS_INSTANCE, "CANCEL", instance_key)
    _ok(result)
    assert result.wakeups == {("instance", instance_key)}
    state = cluster.partitions[1].state
    assert state.instances[instance_key]["state"] == "TERMINATED"
    assert state.jobs == {} and state.incidents == {}
    assert _rejected(cluster.command(1, ValueType.PROCESS_INSTANCE, "CANCEL", instance_key)) == (
        "NOT_FOUND",
        f"Expected to cancel a process instance with key '{instance_key}', but no such process "
        "was found",
    )
    assert _same_state(_replayed(cluster), state)


def test_cancel_while_waiting_for_a_message_closes_the_subscription_on_both_sides() -> None:
    """Cancelling an instance waiting at a message catch event deletes the subscription on the
    message partition too, so a later message does not correlate to it."""
    cluster = SimulatedCluster(1)
    xml = process_xml("p", job_type=None)
    resource = [{"resourceName": "p.bpmn", "resource": xml}]
    _ok(cluster.command(1, ValueType.DEPLOYMENT, "CREATE", resources=resource))
    instance_key = _create(cluster, key="k")
    cluster.settle()
    state = cluster.partitions[1].state
    assert state.message_subscriptions
    _ok(cluster.command(1, ValueType.PROCESS_INSTANCE, "CANCEL", instance_key))
    cluster.settle()
    assert state.message_subscriptions == {} and state.process_subscriptions == {}


def test_set_variables_local_and_propagated() -> None:
    """SetVariables on the instance sets process variables; local on the task's element keeps
    them for that element (the job sees them) until it ends; propagated ones reach the process."""
    cluster = _cluster(message=None)
    instance_key = _create(cluster, a=1)
    element_key = cluster.partitions[1].state.instances[instance_key]["elementInstanceKey"]
    _ok(
        cluster.command(
            1,
            ValueType.VARIABLE_DOCUMENT,
            "UPDATE",
            scopeKey=element_key,
            variables={"l": 1},
            local=True,
        )
    )
    _ok(
        cluster.command(
            1, ValueType.VARIABLE_DOCUMENT, "UPDATE", scopeKey=element_key, variables={"p": 2}
        )
    )
    _ok(
        cluster.command(
            1, ValueType.VARIABLE_DOCUMENT, "UPDATE", scopeKey=instance_key, variables={"a": 3}
        )
    )
    [job] = _activate(cluster)
    assert job["variables"] == {"a": 3, "p": 2, "l": 1}
    _ok(cluster.command(1, ValueType.JOB, "COMPLETE", job["jobKey"], variables={"done": True}))
    assert cluster.partitions[1].state.instances[instance_key]["variables"] == {
        "a": 3,
        "p": 2,
        "done": True,
    }
    assert _rejected(
        cluster.command(1, ValueType.VARIABLE_DOCUMENT, "UPDATE", scopeKey=5, variables={})
    ) == (
        "NOT_FOUND",
        "Expected to update variables for element with key '5', but no such element was found",
    )


def test_correlation_key_incident_is_resolved_after_the_variable_is_set() -> None:
    """A missing correlation key raises EXTRACT_VALUE_ERROR; after SetVariables provides it,
    resolving the incident opens the subscription, and a message completes the instance."""
    cluster = SimulatedCluster(1)
    xml = process_xml("p", job_type=None)
    resource = [{"resourceName": "p.bpmn", "resource": xml}]
    _ok(cluster.command(1, ValueType.DEPLOYMENT, "CREATE", resources=resource))
    instance_key = _create(cluster)
    state = cluster.partitions[1].state
    [(incident_key, incident)] = state.incidents.items()
    assert incident["errorType"] == "EXTRACT_VALUE_ERROR"
    _ok(
        cluster.command(
            1, ValueType.VARIABLE_DOCUMENT, "UPDATE", scopeKey=instance_key, variables={"key": "k"}
        )
    )
    _ok(cluster.command(1, ValueType.INCIDENT, "RESOLVE", incident_key))
    cluster.settle()
    _ok(
        cluster.command(
            1, ValueType.MESSAGE, "PUBLISH", name="ping", correlationKey="k", timeToLive=0
        )
    )
    cluster.settle()
    assert state.instances[instance_key]["state"] == "COMPLETED"


def test_broadcast_signal_is_recorded_and_answered_with_a_key() -> None:
    """BroadcastSignal writes SIGNAL BROADCASTED and answers its key."""
    cluster = SimulatedCluster(1)
    result = cluster.command(1, ValueType.SIGNAL, "BROADCAST", signalName="s", variables={})
    _ok(result)
    assert result.response is not None and result.response.key > 0
    assert result.records[-1].intent == "BROADCASTED"
