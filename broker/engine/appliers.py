"""Event appliers: the only code that changes partition state.

Each applier takes the state and one event and replaces values in the column families; it never
mutates a stored value in place (see ``state.py``). Live processing and replay after a restart
run exactly the same appliers, which is what makes state a pure function of the log.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from broker.engine.state import State
from zeebe_sim.ground.ids import KEY_LOCAL_MAX, NO_CHECKPOINT
from zeebe_sim.ground.records import Record, ValueType

Applier = Callable[[State, Record], None]


def sub_key(element_instance_key: int, message_name: str) -> str:
    return f"{element_instance_key}\0{message_name}"


def message_id_key(name: str, correlation_key: str, message_id: str) -> str:
    return f"{name}\0{correlation_key}\0{message_id}"


def _with(value: dict[str, Any], **changes: Any) -> dict[str, Any]:
    updated = dict(value)
    updated.update(changes)
    return updated


# -- deployments ------------------------------------------------------------------------------


def _process_created(state: State, event: Record) -> None:
    value = event.value
    state.processes[event.key] = value
    latest = state.latest_process.get(value["bpmnProcessId"])
    if latest is None or state.processes[latest]["version"] < value["version"]:
        state.latest_process[value["bpmnProcessId"]] = event.key


def _deployment_created(state: State, event: Record) -> None:
    state.deployments[event.key] = event.value


def _distribution_started(state: State, event: Record) -> None:
    state.distributions[event.key] = tuple(event.value["partitions"])


def _distribution_acknowledged(state: State, event: Record) -> None:
    pending = state.distributions.get(event.key, ())
    remaining = tuple(p for p in pending if p != event.value["partitionId"])
    state.distributions[event.key] = remaining


def _distribution_finished(state: State, event: Record) -> None:
    state.distributions.pop(event.key, None)


# -- process instances ------------------------------------------------------------------------


def _element_activated(state: State, event: Record) -> None:
    value = event.value
    if value["bpmnElementType"] == "PROCESS":
        state.instances[event.key] = {
            "processInstanceKey": event.key,
            "processDefinitionKey": value["processDefinitionKey"],
            "bpmnProcessId": value["bpmnProcessId"],
            "version": value["version"],
            "state": "ACTIVE",
            "variables": value.get("variables", {}),
            "elementId": None,
            "elementInstanceKey": None,
            "startDate": event.timestamp_ms,
            "endDate": None,
        }
        return
    instance = state.instances[value["processInstanceKey"]]
    state.instances[value["processInstanceKey"]] = _with(
        instance, elementId=value["elementId"], elementInstanceKey=event.key, localVariables={}
    )


def _element_completed(state: State, event: Record) -> None:
    value = event.value
    instance = state.instances[value["processInstanceKey"]]
    if value["bpmnElementType"] == "PROCESS":
        state.instances[event.key] = _with(
            instance,
            state="COMPLETED",
            endDate=event.timestamp_ms,
            elementId=None,
            elementInstanceKey=None,
        )
        return
    variables = value.get("variables")
    if variables:
        instance = _with(instance, variables={**instance["variables"], **variables})
    state.instances[value["processInstanceKey"]] = _with(
        instance, elementId=None, elementInstanceKey=None, localVariables={}
    )


def _element_terminated(state: State, event: Record) -> None:
    value = event.value
    instance = state.instances[value["processInstanceKey"]]
    changes: dict[str, Any] = {"elementId": None, "elementInstanceKey": None, "localVariables": {}}
    if value["bpmnElementType"] == "PROCESS":
        changes.update(state="TERMINATED", endDate=event.timestamp_ms)
    state.instances[value["processInstanceKey"]] = _with(instance, **changes)


def _variable_document_updated(state: State, event: Record) -> None:
    """Set variables on a scope: the process instance, or its active element (whose local
    variables live until the element ends). Propagating from an element keeps a variable where
    it already exists locally and otherwise sets it on the process, as Zeebe does for the
    nearest scope holding it."""
    value = event.value
    instance = state.instances[value["processInstanceKey"]]
    variables: dict[str, Any] = value["variables"]
    local: dict[str, Any] = instance.get("localVariables") or {}
    if value["scopeKey"] == value["processInstanceKey"]:
        to_process, to_local = variables, {}
    elif value["updateSemantics"] == "LOCAL":
        to_process, to_local = {}, variables
    else:
        to_local = {k: v for k, v in variables.items() if k in local}
        to_process = {k: v for k, v in variables.items() if k not in local}
    state.instances[value["processInstanceKey"]] = _with(
        instance,
        variables={**instance["variables"], **to_process},
        localVariables={**local, **to_local},
    )


# -- jobs -------------------------------------------------------------------------------------


def _job_created(state: State, event: Record) -> None:
    state.jobs[event.key] = _with(event.value, state="ACTIVATABLE", deadline=-1, worker="")
    state.activatable_jobs.setdefault(event.value["type"], {})[event.key] = None


def _job_batch_activated(state: State, event: Record) -> None:
    deadline = event.value["deadline"]
    worker = event.value["worker"]
    for key in event.value["jobKeys"]:
        job = state.jobs[key]
        state.jobs[key] = _with(job, state="ACTIVATED", deadline=deadline, worker=worker)
        state.activatable_jobs.get(job["type"], {}).pop(key, None)
        heapq.heappush(state.job_deadlines, (deadline, key))


def _job_completed(state: State, event: Record) -> None:
    job = state.jobs.pop(event.key)
    state.activatable_jobs.get(job["type"], {}).pop(event.key, None)


def _job_timed_out(state: State, event: Record) -> None:
    _make_activatable(state, event.key)


def _make_activatable(state: State, key: int) -> None:
    job = state.jobs[key]
    state.jobs[key] = _with(job, state="ACTIVATABLE", deadline=-1, worker="", recurAt=-1)
    state.activatable_jobs.setdefault(job["type"], {})[key] = None


def _job_failed(state: State, event: Record) -> None:
    """Retries left and no back-off: activatable again at once. Retries left and a back-off:
    FAILED until ``recurAt`` (a RECUR_AFTER_BACKOFF command then). No retries left: FAILED
    with an incident until the incident is resolved."""
    value = event.value
    job = state.jobs[event.key]
    recur_at = value["recurAt"]
    state.jobs[event.key] = _with(
        job,
        state="FAILED",
        retries=value["retries"],
        errorMessage=value["errorMessage"],
        deadline=-1,
        worker="",
        recurAt=recur_at,
    )
    state.activatable_jobs.get(job["type"], {}).pop(event.key, None)
    if value.get("variables"):
        _set_local_variables(state, job, value["variables"])
    if value["retries"] > 0 and recur_at < 0:
        _make_activatable(state, event.key)
    elif recur_at >= 0:
        heapq.heappush(state.job_backoffs, (recur_at, event.key))


def _set_local_variables(state: State, job: dict[str, Any], variables: dict[str, Any]) -> None:
    instance = state.instances[job["processInstanceKey"]]
    if instance["elementInstanceKey"] == job["elementInstanceKey"]:
        local = instance.get("localVariables") or {}
        state.instances[job["processInstanceKey"]] = _with(
            instance, localVariables={**local, **variables}
        )


def _job_recurred(state: State, event: Record) -> None:
    _make_activatable(state, event.key)


def _job_error_thrown(state: State, event: Record) -> None:
    job = state.jobs[event.key]
    state.jobs[event.key] = _with(
        job,
        state="ERROR_THROWN",
        errorCode=event.value["errorCode"],
        errorMessage=event.value["errorMessage"],
        deadline=-1,
        worker="",
    )
    state.activatable_jobs.get(job["type"], {}).pop(event.key, None)
    if event.value.get("variables"):
        _set_local_variables(state, job, event.value["variables"])


def _job_retries_updated(state: State, event: Record) -> None:
    state.jobs[event.key] = _with(state.jobs[event.key], retries=event.value["retries"])


def _job_timeout_updated(state: State, event: Record) -> None:
    deadline = event.value["deadline"]
    state.jobs[event.key] = _with(state.jobs[event.key], deadline=deadline)
    heapq.heappush(state.job_deadlines, (deadline, event.key))


# -- incidents --------------------------------------------------------------------------------


def _incident_created(state: State, event: Record) -> None:
    value = event.value
    state.incidents[event.key] = value
    instance = state.instances.get(value["processInstanceKey"])
    if instance is not None:
        state.instances[value["processInstanceKey"]] = _with(instance, incident=True)


def _incident_resolved(state: State, event: Record) -> None:
    """The incident goes; a job it held (no retries, or an uncaught error) becomes activatable
    again, as Zeebe's resolution does."""
    incident = state.incidents.pop(event.key)
    instance_key = incident["processInstanceKey"]
    instance = state.instances.get(instance_key)
    if instance is not None:
        open_ = any(i["processInstanceKey"] == instance_key for i in state.incidents.values())
        state.instances[instance_key] = _with(instance, incident=open_)
    job_key = incident.get("jobKey", -1)
    if job_key > 0 and job_key in state.jobs:
        _make_activatable(state, job_key)


# -- messages ---------------------------------------------------------------------------------


def _message_published(state: State, event: Record) -> None:
    value = event.value
    state.messages[event.key] = value
    if value.get("messageId"):
        key = message_id_key(value["name"], value["correlationKey"], value["messageId"])
        state.message_ids[key] = event.key
    heapq.heappush(state.message_deadlines, (value["deadline"], event.key))
    state.index_message(event.key, value)


def _message_expired(state: State, event: Record) -> None:
    value = state.messages.pop(event.key, None)
    if value is not None:
        if value.get("messageId"):
            state.message_ids.pop(
                message_id_key(value["name"], value["correlationKey"], value["messageId"]), None
            )
        _unindex(state.messages_by_name_key, (value["name"], value["correlationKey"]), event.key)
    state.correlated.pop(event.key, None)


def _message_subscription_created(state: State, event: Record) -> None:
    value = event.value
    key = sub_key(value["elementInstanceKey"], value["messageName"])
    state.message_subscriptions[key] = _with(value, state="OPENED", messageKey=-1)
    state.index_subscription(key, value)


def _message_subscription_correlating(state: State, event: Record) -> None:
    value = event.value
    key = sub_key(value["elementInstanceKey"], value["messageName"])
    state.message_subscriptions[key] = _with(
        state.message_subscriptions[key],
        state="CORRELATING",
        messageKey=value["messageKey"],
        variables=value["variables"],
    )
    message_key = value["messageKey"]
    state.correlated[message_key] = (*state.correlated.get(message_key, ()), value["bpmnProcessId"])


def _remove_subscription(state: State, value: dict[str, Any]) -> None:
    key = sub_key(value["elementInstanceKey"], value["messageName"])
    if state.message_subscriptions.pop(key, None) is not None:
        _unindex(
            state.subscriptions_by_name_key, (value["messageName"], value["correlationKey"]), key
        )


def _message_subscription_correlated(state: State, event: Record) -> None:
    _remove_subscription(state, event.value)


def _message_subscription_rejected(state: State, event: Record) -> None:
    value = event.value
    _remove_subscription(state, value)
    remaining = tuple(
        p for p in state.correlated.get(value["messageKey"], ()) if p != value["bpmnProcessId"]
    )
    if remaining:
        state.correlated[value["messageKey"]] = remaining
    else:
        state.correlated.pop(value["messageKey"], None)


def _unindex(
    index: dict[tuple[str, str], dict[Any, None]], name_key: tuple[str, str], key: Any
) -> None:
    entries = index.get(name_key)
    if entries is not None:
        entries.pop(key, None)
        if not entries:
            del index[name_key]


def _process_subscription_creating(state: State, event: Record) -> None:
    state.process_subscriptions[event.value["elementInstanceKey"]] = _with(
        event.value, state="CREATING"
    )


def _process_subscription_created(state: State, event: Record) -> None:
    key = event.value["elementInstanceKey"]
    state.process_subscriptions[key] = _with(state.process_subscriptions[key], state="CREATED")


def _process_subscription_correlated(state: State, event: Record) -> None:
    # Kept (not deleted) so that a re-sent CORRELATE for the same message is recognised and
    # confirmed again instead of being rejected: that is what makes correlation exactly-once
    # when the confirmation to the message partition is lost.
    key = event.value["elementInstanceKey"]
    state.process_subscriptions[key] = _with(
        state.process_subscriptions[key], state="CORRELATED", messageKey=event.value["messageKey"]
    )


def _process_subscription_deleted(state: State, event: Record) -> None:
    state.process_subscriptions.pop(event.value["elementInstanceKey"], None)


# -- checkpoints ------------------------------------------------------------------------------


def _checkpoint_created(state: State, event: Record) -> None:
    # CREATED events written before checkpoint types existed carry neither type nor timestamp.
    value = event.value
    checkpoint_id = value["checkpointId"]
    state.checkpoint_id = checkpoint_id
    state.checkpoint_position = value["checkpointPosition"]
    info = {
        "checkpointId": checkpoint_id,
        "checkpointPosition": value["checkpointPosition"],
        "checkpointTimestamp": value.get("checkpointTimestamp", event.timestamp_ms),
        "checkpointType": value.get("checkpointType", "MANUAL_BACKUP"),
    }
    state.backup_info["checkpoint"] = info
    state.checkpoints[checkpoint_id] = _with(state.checkpoints.get(checkpoint_id, {}), **info)


def _backup_confirmed(state: State, event: Record) -> None:
    """The range rule (reference A.4): a backup whose log reaches back to the position right
    after the latest backup's checkpoint extends that backup's range; any other starts one."""
    value = event.value
    backup_id = value["checkpointId"]
    first = value["firstLogPosition"]
    latest = state.backup_info.get("backup")
    start = None
    if latest is not None and 0 <= first <= latest["checkpointPosition"] + 1:
        start = range_of(state, latest["checkpointId"])
    state.backup_ranges[backup_id if start is None else start] = backup_id
    info = _with(state.checkpoints.get(backup_id, {}), **value)
    state.checkpoints[backup_id] = info
    state.backup_info["backup"] = info


def _backup_deleted(state: State, event: Record) -> None:
    """Reference A.4 DELETE_BACKUP: the backup leaves its range (which shrinks or splits),
    checkpoints no backup covers any more go, and the latest backup rolls back."""
    backup_id = event.value["checkpointId"]
    start = range_of(state, backup_id)
    if start is not None:
        end = state.backup_ranges.pop(start)
        backups = sorted(k for k in backup_ids(state) if start <= k <= end and k != backup_id)
        before = [k for k in backups if k < backup_id]
        after = [k for k in backups if k > backup_id]
        if before:
            state.backup_ranges[start] = before[-1]
        if after:
            state.backup_ranges[after[0]] = end
    state.checkpoints.pop(backup_id, None)
    if state.backup_ranges:
        first = state.checkpoints.get(min(state.backup_ranges), {}).get("firstLogPosition", -1)
        for checkpoint_id, info in list(state.checkpoints.items()):
            if info["checkpointPosition"] < first:
                del state.checkpoints[checkpoint_id]
    latest = state.backup_info.get("backup")
    if latest is not None and latest["checkpointId"] == backup_id:
        older = [k for k in backup_ids(state) if k < backup_id]
        if older:
            state.backup_info["backup"] = state.checkpoints[max(older)]
        else:
            del state.backup_info["backup"]


def _backup_state_reset(state: State, event: Record) -> None:
    state.checkpoints.clear()
    state.backup_ranges.clear()
    state.backup_info.clear()
    state.checkpoint_id = NO_CHECKPOINT
    state.checkpoint_position = -1


def backup_ids(state: State) -> list[int]:
    """The checkpoints whose backup was confirmed (they carry a first log position)."""
    return [k for k, info in state.checkpoints.items() if "firstLogPosition" in info]


def range_of(state: State, checkpoint_id: int) -> int | None:
    """The start of the backup range holding ``checkpoint_id``, if any."""
    for start, end in state.backup_ranges.items():
        if start <= checkpoint_id <= end:
            return start
    return None


APPLIERS: dict[tuple[str, str], Applier] = {
    (ValueType.PROCESS, "CREATED"): _process_created,
    (ValueType.DEPLOYMENT, "CREATED"): _deployment_created,
    (ValueType.COMMAND_DISTRIBUTION, "STARTED"): _distribution_started,
    (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGED"): _distribution_acknowledged,
    (ValueType.COMMAND_DISTRIBUTION, "FINISHED"): _distribution_finished,
    (ValueType.PROCESS_INSTANCE, "ELEMENT_ACTIVATED"): _element_activated,
    (ValueType.PROCESS_INSTANCE, "ELEMENT_COMPLETED"): _element_completed,
    (ValueType.JOB, "CREATED"): _job_created,
    (ValueType.JOB_BATCH, "ACTIVATED"): _job_batch_activated,
    (ValueType.JOB, "COMPLETED"): _job_completed,
    (ValueType.JOB, "TIMED_OUT"): _job_timed_out,
    (ValueType.JOB, "FAILED"): _job_failed,
    (ValueType.JOB, "RECURRED_AFTER_BACKOFF"): _job_recurred,
    (ValueType.JOB, "ERROR_THROWN"): _job_error_thrown,
    (ValueType.JOB, "RETRIES_UPDATED"): _job_retries_updated,
    (ValueType.JOB, "TIMEOUT_UPDATED"): _job_timeout_updated,
    (ValueType.JOB, "CANCELED"): _job_completed,
    (ValueType.INCIDENT, "CREATED"): _incident_created,
    (ValueType.INCIDENT, "RESOLVED"): _incident_resolved,
    (ValueType.PROCESS_INSTANCE, "ELEMENT_TERMINATED"): _element_terminated,
    (ValueType.VARIABLE_DOCUMENT, "UPDATED"): _variable_document_updated,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "DELETED"): _process_subscription_deleted,
    (ValueType.MESSAGE_SUBSCRIPTION, "DELETED"): _message_subscription_correlated,
    (ValueType.MESSAGE, "PUBLISHED"): _message_published,
    (ValueType.MESSAGE, "EXPIRED"): _message_expired,
    (ValueType.MESSAGE_SUBSCRIPTION, "CREATED"): _message_subscription_created,
    (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATING"): _message_subscription_correlating,
    (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATED"): _message_subscription_correlated,
    (ValueType.MESSAGE_SUBSCRIPTION, "REJECTED"): _message_subscription_rejected,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATING"): _process_subscription_creating,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATED"): _process_subscription_created,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATED"): _process_subscription_correlated,
    (ValueType.CHECKPOINT, "CREATED"): _checkpoint_created,
    (ValueType.CHECKPOINT, "CONFIRMED_BACKUP"): _backup_confirmed,
    (ValueType.CHECKPOINT, "DELETED_BACKUP"): _backup_deleted,
    (ValueType.CHECKPOINT, "STATE_RESET"): _backup_state_reset,
}


def apply_event(state: State, event: Record) -> None:
    """Apply one event; events without an applier (e.g. SEQUENCE_FLOW_TAKEN) change nothing."""
    # Every key this partition handed out is in some event, so the key generator is derived
    # from the events too and replay reproduces the same keys.
    if event.key > 0 and (event.key & KEY_LOCAL_MAX) >= state.next_key_local:
        if (event.key >> 51) == state.partition_id:
            state.next_key_local = (event.key & KEY_LOCAL_MAX) + 1
    applier = APPLIERS.get((event.value_type, event.intent))
    if applier is not None:
        applier(state, event)
