"""The declared value of every command that may arrive over the wire.

Commands reach a partition from the gateway (``ExecuteCommandRequest``) and from other
partitions (``InterPartitionCommandSent``) with a ``value`` map that the engine reads by
Zeebe's field names. Each (value type, intent) the engine processes declares its value here as a
``TypedDict``; the codec checks a command's value against it on decode
(:func:`check_command_value`), so a value with a missing key, a wrong type or an integer out of
range is a malformed message and never reaches the engine, where it would fail mid-processing.

A command the engine does not know has no schema; its value is only checked to be plain data,
and the engine rejects the command itself (a rejection, not a failure).
``tests/protocol/test_command_values.py`` fails when the engine handles a command that has no
schema here.
"""

# No "from __future__ import annotations": TypedDict reads NotRequired from evaluated
# annotations to know which keys are required.
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from zeebe_sim.ground.ids import INT64_MAX, Key, PartitionId
from zeebe_sim.ground.records import ValueType
from zeebe_sim.ground.shapes import IntRange, NewBackupId, check

# Durations (job time-out, message time to live) are added to a record's timestamp to make a
# deadline, which must still be an int64: a bound of 2**62 ms (146 million years) leaves room
# for any timestamp before the year 146,000,000.
DURATION_MS_MAX = 2**62
DurationMs = Annotated[int, IntRange(0, DURATION_MS_MAX)]
# Zeebe's request limits are Java ints.
INT32_MAX = 2**31 - 1
Count = Annotated[int, IntRange(1, INT32_MAX)]
Version = Annotated[int, IntRange(-1, INT32_MAX)]
# A key that names something (not the -1 "none").
ExistingKey = Annotated[Key, IntRange(1, INT64_MAX)]
Variables = dict[str, Any]


# -- from the gateway -------------------------------------------------------------------------


class DeploymentResource(TypedDict):
    resourceName: str
    resource: bytes


class DeploymentCreate(TypedDict):
    resources: list[DeploymentResource]


class ProcessInstanceCreate(TypedDict):
    variables: NotRequired[Variables]
    processDefinitionKey: NotRequired[Key]
    bpmnProcessId: NotRequired[str]
    version: NotRequired[Version]


class JobBatchActivate(TypedDict):
    type: str
    worker: NotRequired[str]
    timeout: DurationMs
    maxJobsToActivate: Count


class JobComplete(TypedDict):
    variables: NotRequired[Variables]


class MessagePublish(TypedDict):
    name: str
    correlationKey: str
    timeToLive: NotRequired[DurationMs]
    messageId: NotRequired[str]
    variables: NotRequired[Variables]


CheckpointTypeName = Literal["MARKER", "SCHEDULED_BACKUP", "MANUAL_BACKUP"]


class CheckpointCreate(TypedDict):
    checkpointId: NewBackupId
    checkpointType: NotRequired[CheckpointTypeName]  # absent: MANUAL_BACKUP


class CheckpointId(TypedDict):
    """DELETE_BACKUP: which backup."""

    checkpointId: NewBackupId


class CheckpointConfirm(TypedDict):
    """CONFIRM_BACKUP, written by the leader once the backup is in the store."""

    checkpointId: NewBackupId
    checkpointPosition: Annotated[int, IntRange(0, INT64_MAX)]
    checkpointType: CheckpointTypeName
    firstLogPosition: Annotated[int, IntRange(-1, INT64_MAX)]  # -1: unknown


class JobFail(TypedDict):
    retries: int
    errorMessage: NotRequired[str]
    retryBackOff: NotRequired[int]
    variables: NotRequired[Variables]


class JobThrowError(TypedDict):
    errorCode: str
    errorMessage: NotRequired[str]
    variables: NotRequired[Variables]


class JobUpdateRetries(TypedDict):
    retries: int  # the engine rejects < 1 with Zeebe's reason


class JobUpdateTimeout(TypedDict):
    timeout: int


class VariableDocumentUpdate(TypedDict):
    scopeKey: int
    variables: Variables
    local: NotRequired[bool]


class SignalBroadcast(TypedDict):
    signalName: str
    variables: NotRequired[Variables]


class MessageSubscriptionDelete(TypedDict):
    elementInstanceKey: ExistingKey
    messageName: str


class NoValue(TypedDict):
    """Commands whose key says everything (job time-out, message expiry)."""


# -- between partitions -----------------------------------------------------------------------


class ProcessMetadata(TypedDict):
    processDefinitionKey: ExistingKey
    bpmnProcessId: str
    version: Version
    resourceName: str
    checksum: str
    isDuplicate: bool


class Deployment(TypedDict):
    deploymentKey: ExistingKey
    resources: list[DeploymentResource]
    processesMetadata: list[ProcessMetadata]


class DistributedProcess(TypedDict):
    bpmnProcessId: str
    version: Version
    resourceName: str
    checksum: str
    deploymentKey: ExistingKey
    model: dict[str, Any]


class DeploymentDistribute(TypedDict):
    """A deployment sent by partition 1 to another partition (``DEPLOYMENT CREATE`` too)."""

    distributed: Literal[True]
    deployment: Deployment
    # process definition key, in decimal (msgpack map keys of plain data are strings)
    processes: dict[str, DistributedProcess]


class DistributionAcknowledge(TypedDict):
    partitionId: PartitionId
    distributionKey: ExistingKey


class MessageSubscriptionCreate(TypedDict):
    processInstanceKey: ExistingKey
    elementInstanceKey: ExistingKey
    messageName: str
    correlationKey: str
    bpmnProcessId: str


class MessageSubscriptionAnswer(TypedDict):
    """The process partition's answer to a correlation: CORRELATE (confirm) or REJECT."""

    elementInstanceKey: ExistingKey
    messageName: str
    messageKey: ExistingKey
    bpmnProcessId: str


class ProcessMessageSubscriptionCreate(TypedDict):
    """The message partition's acknowledgement that the subscription is open."""

    elementInstanceKey: ExistingKey
    messageName: str


class ProcessMessageSubscriptionCorrelate(TypedDict):
    processInstanceKey: ExistingKey
    elementInstanceKey: ExistingKey
    messageName: str
    correlationKey: str
    bpmnProcessId: str
    messageKey: ExistingKey
    variables: Variables
    messagePartitionId: PartitionId


COMMAND_VALUES: dict[tuple[str, str], Any] = {
    (ValueType.DEPLOYMENT, "CREATE"): DeploymentCreate | DeploymentDistribute,
    (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGE"): DistributionAcknowledge,
    (ValueType.PROCESS_INSTANCE_CREATION, "CREATE"): ProcessInstanceCreate,
    (ValueType.JOB_BATCH, "ACTIVATE"): JobBatchActivate,
    (ValueType.JOB, "COMPLETE"): JobComplete,
    (ValueType.JOB, "TIME_OUT"): NoValue,
    (ValueType.MESSAGE, "PUBLISH"): MessagePublish,
    (ValueType.MESSAGE, "EXPIRE"): NoValue,
    (ValueType.MESSAGE_SUBSCRIPTION, "CREATE"): MessageSubscriptionCreate,
    (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATE"): MessageSubscriptionAnswer,
    (ValueType.MESSAGE_SUBSCRIPTION, "REJECT"): MessageSubscriptionAnswer,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATE"): ProcessMessageSubscriptionCreate,
    (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATE"): ProcessMessageSubscriptionCorrelate,
    (ValueType.CHECKPOINT, "CREATE"): CheckpointCreate,
    (ValueType.CHECKPOINT, "CONFIRM_BACKUP"): CheckpointConfirm,
    (ValueType.CHECKPOINT, "DELETE_BACKUP"): CheckpointId,
    (ValueType.CHECKPOINT, "RESET_STATE"): NoValue,
    (ValueType.PROCESS_INSTANCE_CREATION, "CREATE_WITH_AWAITING_RESULT"): ProcessInstanceCreate,
    (ValueType.PROCESS_INSTANCE, "CANCEL"): NoValue,
    (ValueType.VARIABLE_DOCUMENT, "UPDATE"): VariableDocumentUpdate,
    (ValueType.JOB, "FAIL"): JobFail,
    (ValueType.JOB, "RECUR_AFTER_BACKOFF"): NoValue,
    (ValueType.JOB, "THROW_ERROR"): JobThrowError,
    (ValueType.JOB, "UPDATE_RETRIES"): JobUpdateRetries,
    (ValueType.JOB, "UPDATE_TIMEOUT"): JobUpdateTimeout,
    (ValueType.INCIDENT, "RESOLVE"): NoValue,
    (ValueType.SIGNAL, "BROADCAST"): SignalBroadcast,
    (ValueType.MESSAGE_SUBSCRIPTION, "DELETE"): MessageSubscriptionDelete,
}


def check_command_value(value_type: str, intent: str, value: Any, path: str) -> dict[str, Any]:
    """``value`` checked against the schema of ``value_type intent`` (plain data if it has none).

    Raises:
        ProtocolError: the value does not match.
    """
    schema = COMMAND_VALUES.get((value_type, intent), dict[str, Any])
    checked: dict[str, Any] = check(schema, value, path)
    return checked
